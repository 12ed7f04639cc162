// SPDX-License-Identifier: MIT
// Downloads an image from a user-supplied URL without opening the server to SSRF.
//
// - Only absolute http: and https: URLs, without credentials (user:password@ is refused, not sent).
// - The host is resolved once per hop; every address it resolves to must pass the address policy
//   (public addresses only, see ip-policy.ts, unless `allowPrivate`), or nothing is connected at all.
//   The request then connects to exactly those checked addresses: they are handed to http(s).request
//   through its `lookup` option, so no second DNS query can rebind the name between check and
//   connect. IP-literal hosts (which http.request connects to without a lookup) are checked the same
//   way beforehand, and the socket's remote address is compared with the checked ones once connected.
//   Host header and TLS SNI stay the original host name, so virtual hosts and certificates work.
// - Redirects (301, 302, 303, 307, 308) are followed by hand, at most `maxRedirects`, each target
//   checked again from scratch (scheme, credentials, resolution, addresses).
// - One deadline covers everything (resolution, connect, headers, body, every redirect); a body over
//   `maxBytes` is refused from its Content-Length or as soon as the streamed bytes pass the limit.
// - No connection pooling (`agent: false`): a pooled socket would skip the address check.
// Errors are FetchImageError with a stable `code` (FETCH_IMAGE_ERROR_CODES); their messages are safe
// to show a client: they name the host, never the address it resolved to.
import dns, { type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { invalidParameterError } from '../errors';
import { addressKey, classifyAddress, isPublicAddress } from './ip-policy';

/** Every code a FetchImageError can carry (the server's per-image error codes for URLs). */
export const FETCH_IMAGE_ERROR_CODES = [
  'url_invalid',
  'url_scheme_not_allowed',
  'url_host_forbidden',
  'url_dns_failed',
  'url_too_many_redirects',
  'url_too_large',
  'url_timeout',
  'url_http_status',
  'url_fetch_failed',
] as const;
export type FetchImageErrorCode = (typeof FETCH_IMAGE_ERROR_CODES)[number];

/** The HTTP status that best describes each code (a hint: the server reports them per image). */
export const FETCH_IMAGE_ERROR_STATUS: Readonly<Record<FetchImageErrorCode, number>> = {
  url_invalid: 400,
  url_scheme_not_allowed: 400,
  url_host_forbidden: 403,
  url_dns_failed: 502,
  url_too_many_redirects: 502,
  url_too_large: 413,
  url_timeout: 504,
  url_http_status: 502,
  url_fetch_failed: 502,
};

export class FetchImageError extends Error {
  readonly code: FetchImageErrorCode;
  /** HTTP-ish status hint (FETCH_IMAGE_ERROR_STATUS). */
  readonly status: number;
  /** For url_http_status: the status the remote server answered. */
  readonly upstreamStatus: number | undefined;
  /** Details for the server's log only (e.g. the refused address and its range); never send them. */
  readonly detail: string | undefined;
  constructor(
    code: FetchImageErrorCode,
    message: string,
    extra: { upstreamStatus?: number; detail?: string; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'FetchImageError';
    this.code = code;
    this.status = FETCH_IMAGE_ERROR_STATUS[code];
    this.upstreamStatus = extra.upstreamStatus;
    this.detail = extra.detail;
  }
}

/** A resolver with the signature of `dns.lookup` called with `{ all: true }`. */
export type LookupAll = (
  hostname: string,
  options: { all: true },
  callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

/** Decides whether a resolved (or literal) address may be connected to. */
export type AddressPolicy = (address: string, family: 4 | 6, hostname: string) => boolean;

export interface FetchImageOptions {
  /** Allow every address (loopback, private, link-local, ...): trusted deployments only. Default false. */
  allowPrivate?: boolean;
  /** Largest body accepted, bytes. Default 20 MiB. */
  maxBytes?: number;
  /** Redirects followed. Default 3 (0: none). */
  maxRedirects?: number;
  /** Time for the whole download, redirects included, ms. Default 10000. */
  timeoutMs?: number;
  /** Resolver (default `dns.lookup`); called once per hop for host names, never for IP literals. */
  lookup?: LookupAll;
  /** User-Agent header. Default 'facedet-native'. */
  userAgent?: string;
  /** Cancels the download (rejects with url_fetch_failed, or url_timeout for a TimeoutError reason). */
  signal?: AbortSignal;
  /**
   * Replaces the address policy (default: public addresses only, or every address with
   * `allowPrivate`). Meant for tests; `allowPrivate` is ignored when it is given.
   */
  isAddressAllowed?: AddressPolicy;
}

export interface FetchedImage {
  body: Buffer;
  /** The URL the body came from (after redirects). */
  url: string;
  /** The Content-Type header, if any (not checked here: the decoder decides). */
  contentType: string | undefined;
  status: number;
  redirects: number;
  /** The address connected to, for logs (do not send it to clients). */
  address: string;
}

export const DEFAULT_MAX_BYTES = 20 * 1024 * 1024;
export const DEFAULT_MAX_REDIRECTS = 3;
export const DEFAULT_TIMEOUT_MS = 10_000;
export const DEFAULT_USER_AGENT = 'facedet-native';

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

interface Settings {
  maxBytes: number;
  maxRedirects: number;
  timeoutMs: number;
  lookup: LookupAll;
  userAgent: string;
  signal: AbortSignal | undefined;
  policy: AddressPolicy;
}

const allowAll: AddressPolicy = () => true;
const publicOnly: AddressPolicy = (address) => isPublicAddress(address);

function settings(options: FetchImageOptions | undefined): Settings {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null) {
    throw invalidParameterError('options', 'an object', options);
  }
  const {
    allowPrivate = false,
    maxBytes = DEFAULT_MAX_BYTES,
    maxRedirects = DEFAULT_MAX_REDIRECTS,
  } = options;
  const { timeoutMs = DEFAULT_TIMEOUT_MS, lookup = dns.lookup, userAgent = DEFAULT_USER_AGENT } = options;
  const { signal, isAddressAllowed } = options;
  if (typeof allowPrivate !== 'boolean') {
    throw invalidParameterError('allowPrivate', 'a boolean', allowPrivate);
  }
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) {
    throw invalidParameterError('maxBytes', 'a positive integer', maxBytes);
  }
  if (!Number.isSafeInteger(maxRedirects) || maxRedirects < 0) {
    throw invalidParameterError('maxRedirects', 'a non-negative integer', maxRedirects);
  }
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0 && timeoutMs <= MAX_TIMEOUT_MS)) {
    throw invalidParameterError('timeoutMs', `a number between 1 and ${MAX_TIMEOUT_MS}`, timeoutMs);
  }
  if (typeof lookup !== 'function') throw invalidParameterError('lookup', 'a function', lookup);
  // eslint-disable-next-line no-control-regex
  if (typeof userAgent !== 'string' || /[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]/.test(userAgent)) {
    throw invalidParameterError('userAgent', 'a string without control characters', userAgent);
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalidParameterError('signal', 'an AbortSignal', signal);
  }
  if (isAddressAllowed !== undefined && typeof isAddressAllowed !== 'function') {
    throw invalidParameterError('isAddressAllowed', 'a function', isAddressAllowed);
  }
  return {
    maxBytes,
    maxRedirects,
    timeoutMs,
    lookup: lookup as LookupAll,
    userAgent,
    signal,
    policy: isAddressAllowed ?? (allowPrivate ? allowAll : publicOnly),
  };
}

function clip(text: string, max = 100): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

/** Parses and checks a URL (the request's, or a redirect target relative to the current one). */
function checkUrl(text: unknown, what: string, base?: URL): URL {
  if (typeof text !== 'string') throw new FetchImageError('url_invalid', `${what} is not a string`);
  let url: URL;
  try {
    url = new URL(text, base);
  } catch {
    throw new FetchImageError('url_invalid', `${what} is not a valid absolute URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new FetchImageError(
      'url_scheme_not_allowed',
      `${what} has the scheme '${clip(url.protocol.slice(0, -1), 20)}'; only http and https URLs are fetched`,
    );
  }
  if (url.username !== '' || url.password !== '') {
    throw new FetchImageError(
      'url_invalid',
      `${what} contains credentials (user:password@), which are not sent`,
    );
  }
  return url;
}

/** The URL's host without IPv6 brackets (as http.request and the resolver want it). */
function bareHost(url: URL): string {
  const host = url.hostname;
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/** One deadline for the whole download, plus the caller's signal. */
class Deadline {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly onExternalAbort = () => this.controller.abort();
  timedOut = false;

  constructor(
    private readonly timeoutMs: number,
    private readonly external: AbortSignal | undefined,
  ) {
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.controller.abort();
    }, timeoutMs);
    if (external?.aborted) this.controller.abort();
    else external?.addEventListener('abort', this.onExternalAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.external?.removeEventListener('abort', this.onExternalAbort);
  }

  /** The FetchImageError for whatever ended the download. */
  translate(error: unknown): FetchImageError {
    if (error instanceof FetchImageError) return error;
    if (this.timedOut) {
      return new FetchImageError('url_timeout', `the download took longer than ${this.timeoutMs} ms`);
    }
    if (this.external?.aborted) {
      const reason: unknown = this.external.reason;
      if (reason instanceof Error && reason.name === 'TimeoutError') {
        return new FetchImageError('url_timeout', 'the download took longer than allowed', { cause: reason });
      }
      return new FetchImageError('url_fetch_failed', 'the download was cancelled', { cause: reason });
    }
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    return new FetchImageError(
      'url_fetch_failed',
      `the connection failed or broke off${typeof code === 'string' ? ` (${clip(code, 40)})` : ''}`,
      { cause: error },
    );
  }
}

function abortError(): Error {
  const error = new Error('aborted');
  error.name = 'AbortError';
  return error;
}

/** Resolves a host name once (all addresses), honouring the deadline. */
function resolveHost(host: string, lookup: LookupAll, signal: AbortSignal): Promise<LookupAddress[]> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(abortError());
    const onAbort = () => reject(abortError());
    signal.addEventListener('abort', onAbort, { once: true });
    const failed = (cause: unknown) =>
      reject(new FetchImageError('url_dns_failed', `the host '${clip(host)}' does not resolve`, { cause }));
    const done = (error: NodeJS.ErrnoException | null, addresses: unknown) => {
      signal.removeEventListener('abort', onAbort);
      if (error) return failed(error);
      if (!Array.isArray(addresses) || addresses.length === 0) return failed(undefined);
      const checked: LookupAddress[] = [];
      for (const entry of addresses as unknown[]) {
        const address = (entry as { address?: unknown } | null)?.address;
        const family = typeof address === 'string' ? net.isIP(address) : 0;
        if (family === 0) {
          return failed(new Error('the resolver returned something that is not an IP address'));
        }
        checked.push({ address: address as string, family });
      }
      resolve(checked);
    };
    try {
      lookup(host, { all: true }, done);
    } catch (error) {
      done(error as NodeJS.ErrnoException, undefined);
    }
  });
}

/** The addresses to connect to for `url`, every one of them checked; throws url_host_forbidden. */
async function checkedAddresses(url: URL, s: Settings, signal: AbortSignal, hop: number) {
  const host = bareHost(url);
  const literal = net.isIP(host);
  const addresses = literal
    ? [{ address: host, family: literal }]
    : await resolveHost(host, s.lookup, signal);
  for (const { address, family } of addresses) {
    if (!s.policy(address, family as 4 | 6, host)) {
      const what = literal ? `the address '${clip(host)}'` : `the host '${clip(host)}'`;
      const resolves = literal ? 'is' : 'resolves to';
      throw new FetchImageError(
        'url_host_forbidden',
        `${what}${hop > 0 ? ` (redirect ${hop})` : ''} is not allowed: it ${resolves} a loopback, private, ` +
          'link-local or otherwise non-public address',
        { detail: `${address} (${classifyAddress(address)?.range ?? 'not an address'})` },
      );
    }
  }
  return { host, addresses };
}

type Hop =
  | { kind: 'redirect'; location: string }
  | { kind: 'body'; body: Buffer; status: number; contentType: string | undefined; address: string };

/** One GET to the checked addresses: a redirect to follow, or the body. */
function get(
  url: URL,
  host: string,
  addresses: LookupAddress[],
  s: Settings,
  signal: AbortSignal,
): Promise<Hop> {
  return new Promise<Hop>((resolve, reject) => {
    const pinned = new Set(addresses.map((a) => addressKey(a.address)));
    // Hands the request the checked addresses instead of resolving the name again.
    const lookup: net.LookupFunction = (_hostname, options, callback) => {
      if (options.all) callback(null, addresses);
      else callback(null, (addresses[0] as LookupAddress).address, (addresses[0] as LookupAddress).family);
    };
    let settled = false;
    let remote = '';
    let req: http.ClientRequest | undefined;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      req?.destroy();
      reject(error);
    };
    const finish = (hop: Hop) => {
      if (settled) return;
      settled = true;
      resolve(hop);
    };
    const options: https.RequestOptions = {
      protocol: url.protocol,
      hostname: host,
      port: url.port === '' ? undefined : Number(url.port),
      path: `${url.pathname}${url.search}`,
      method: 'GET',
      headers: {
        host: url.host,
        'user-agent': s.userAgent,
        accept: 'image/*, */*;q=0.8',
        'accept-encoding': 'identity',
      },
      agent: false,
      lookup,
      signal,
    };
    if (url.protocol === 'https:' && !net.isIP(host)) options.servername = host;
    try {
      req = (url.protocol === 'https:' ? https : http).request(options);
    } catch (error) {
      return fail(error);
    }
    req.once('socket', (socket: net.Socket) => {
      const verify = () => {
        remote = socket.remoteAddress ?? '';
        if (!pinned.has(addressKey(remote))) {
          fail(
            new FetchImageError('url_host_forbidden', `the host '${clip(host)}' is not allowed`, {
              detail: `connected to ${remote}, which was not checked`,
            }),
          );
        }
      };
      if (socket.connecting || !socket.remoteAddress) socket.once('connect', verify);
      else verify();
    });
    req.on('error', fail);
    req.once('response', (res) => {
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (REDIRECT_STATUSES.has(status) && typeof location === 'string' && location !== '') {
        res.destroy();
        finish({ kind: 'redirect', location });
        return;
      }
      if (status < 200 || status > 299) {
        res.destroy();
        fail(
          new FetchImageError('url_http_status', `the server answered with status ${status}`, {
            upstreamStatus: status,
          }),
        );
        return;
      }
      const tooLarge = () =>
        new FetchImageError('url_too_large', `the download is larger than the limit of ${s.maxBytes} bytes`);
      const declared = res.headers['content-length'];
      if (declared !== undefined && Number(declared) > s.maxBytes) {
        res.destroy();
        fail(tooLarge());
        return;
      }
      const chunks: Buffer[] = [];
      let received = 0;
      res.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > s.maxBytes) {
          res.destroy();
          fail(tooLarge());
          return;
        }
        chunks.push(chunk);
      });
      res.once('end', () =>
        finish({
          kind: 'body',
          body: Buffer.concat(chunks, received),
          status,
          contentType: res.headers['content-type'],
          address: remote,
        }),
      );
      res.on('error', fail);
      res.once('close', () => {
        if (!res.complete) fail(new Error('the response ended early'));
      });
    });
    req.end();
  });
}

/** Downloads `url` under the SSRF rules (see the top of this file); returns the body and where it came from. */
export async function fetchImageWithMetadata(
  url: string,
  options?: FetchImageOptions,
): Promise<FetchedImage> {
  const s = settings(options);
  let current = checkUrl(url, 'the URL');
  const deadline = new Deadline(s.timeoutMs, s.signal);
  try {
    for (let redirects = 0; ; redirects++) {
      if (deadline.signal.aborted) throw abortError();
      const { host, addresses } = await checkedAddresses(current, s, deadline.signal, redirects);
      const hop = await get(current, host, addresses, s, deadline.signal);
      if (hop.kind === 'body') {
        return {
          body: hop.body,
          url: current.href,
          contentType: hop.contentType,
          status: hop.status,
          redirects,
          address: hop.address,
        };
      }
      if (redirects >= s.maxRedirects) {
        throw new FetchImageError(
          'url_too_many_redirects',
          `more than ${s.maxRedirects} redirect${s.maxRedirects === 1 ? '' : 's'}`,
        );
      }
      current = checkUrl(hop.location, `the redirect target (redirect ${redirects + 1})`, current);
    }
  } catch (error) {
    throw deadline.translate(error);
  } finally {
    deadline.dispose();
  }
}

/** Downloads `url` under the SSRF rules; resolves to the body. */
export async function fetchImage(url: string, options?: FetchImageOptions): Promise<Buffer> {
  return (await fetchImageWithMetadata(url, options)).body;
}

/**
 * A `(url, signal) => Promise<Buffer>` with fixed options (the shape of the detect route's
 * FetchSource), e.g. `createImageFetcher({ allowPrivate: config.allowPrivateSources,
 * maxBytes: config.maxDownloadBytes, timeoutMs: config.downloadTimeoutMs, maxRedirects: config.maxRedirects })`.
 */
export function createImageFetcher(
  defaults: Omit<FetchImageOptions, 'signal'> = {},
): (url: string, signal?: AbortSignal) => Promise<Buffer> {
  settings(defaults); // fail at start-up on a bad option
  return (url, signal) => fetchImage(url, { ...defaults, signal });
}
