// The safe URL fetcher: real HTTP against fixture servers on loopback only (127.0.0.1, 127.0.0.2,
// ::1). Host names other than localhost are answered by injected resolvers, so nothing leaves the
// machine; every refusal of a non-public address is also checked to open no socket at all.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import dc from 'node:diagnostics_channel';
import type { LookupAddress } from 'node:dns';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import {
  FETCH_IMAGE_ERROR_CODES,
  FETCH_IMAGE_ERROR_STATUS,
  FetchImageError,
  type FetchImageErrorCode,
  type FetchImageOptions,
  type LookupAll,
  createImageFetcher,
  fetchImage,
  fetchImageWithMetadata,
} from '../src/server/fetch-image';
import { addressKey, classifyAddress, isPublicAddress, parseIPv6 } from '../src/server/ip-policy';

// ---------------------------------------------------------------------------------------------
// Watching client sockets: every socket net.connect opens (http.request's) is published on
// `net.client.socket`; tls.connect (https) calls Socket.prototype.connect without publishing, so that
// is observed too (wrapped only while watching, behaviour unchanged). Each socket is recorded with the
// address it reached.

interface Watched {
  socket: net.Socket;
  remote: string | undefined;
}

/** Runs `fn`, returning its outcome and the client sockets opened meanwhile. */
async function watch<T>(
  fn: () => Promise<T>,
): Promise<{ value: T | undefined; error: unknown; opened: Watched[] }> {
  const opened: Watched[] = [];
  const track = (socket: net.Socket) => {
    if (opened.some((w) => w.socket === socket)) return;
    const entry: Watched = { socket, remote: undefined };
    socket.once('connect', () => (entry.remote = socket.remoteAddress));
    opened.push(entry);
  };
  const onSocket = (message: unknown) => track((message as { socket: net.Socket }).socket);
  const originalConnect = net.Socket.prototype.connect;
  dc.subscribe('net.client.socket', onSocket);
  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
    track(this);
    return (originalConnect as (...a: unknown[]) => net.Socket).apply(this, args);
  } as typeof net.Socket.prototype.connect;
  let value: T | undefined;
  let error: unknown;
  try {
    value = await fn();
  } catch (e) {
    error = e;
  } finally {
    net.Socket.prototype.connect = originalConnect;
    dc.unsubscribe('net.client.socket', onSocket);
  }
  return { value, error, opened };
}

async function fetchError(promise: Promise<unknown>, code: FetchImageErrorCode): Promise<FetchImageError> {
  try {
    await promise;
  } catch (error) {
    assert.instance(error, FetchImageError);
    const e = error as FetchImageError;
    assert.is(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    assert.is(e.status, FETCH_IMAGE_ERROR_STATUS[code]);
    return e;
  }
  throw new assert.Assertion({
    message: `expected ${code}`,
    operator: 'rejects',
    expects: code,
    actual: 'ok',
  });
}

/** Expects a refusal (url_host_forbidden) that opened no socket at all. */
async function refusedWithoutConnecting(
  url: string,
  options: FetchImageOptions = {},
): Promise<FetchImageError> {
  const { error, opened } = await watch(() => fetchImage(url, { timeoutMs: 2000, ...options }));
  assert.is(opened.length, 0, `${url}: a socket was opened`);
  assert.instance(error, FetchImageError, `${url}: ${String(error)}`);
  assert.is((error as FetchImageError).code, 'url_host_forbidden', `${url}: ${(error as Error).message}`);
  return error as FetchImageError;
}

/** A resolver answering from a table (name -> addresses, in order per call), logging every call. */
function resolver(table: Record<string, string[] | string[][]>) {
  const calls: string[] = [];
  const lookup: LookupAll = (hostname, options, callback) => {
    calls.push(hostname);
    assert.equal(options, { all: true });
    const entry = table[hostname];
    const n = calls.filter((h) => h === hostname).length;
    const answer =
      entry === undefined ? undefined : Array.isArray(entry[0]) ? (entry as string[][])[n - 1] : entry;
    setImmediate(() => {
      if (answer === undefined) {
        callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), []);
      } else {
        callback(
          null,
          (answer as string[]).map((address): LookupAddress => ({ address, family: net.isIP(address) })),
        );
      }
    });
  };
  return { lookup, calls };
}

// ---------------------------------------------------------------------------------------------
// Fixture servers.

const LIMIT = 64 * 1024;

interface Seen {
  path: string;
  headers: http.IncomingHttpHeaders;
}

interface Server {
  server: http.Server;
  port: number;
  seen: Seen[];
  base: string;
}

let png: Buffer;
let main: Server;
let internal: Server;

function listen(host: string, handler: http.RequestListener): Promise<Server> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ path: req.url ?? '', headers: req.headers });
    handler(req, res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      const port = (server.address() as AddressInfo).port;
      const base = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
      resolve({ server, port, seen, base });
    });
  });
}

function close(s: Server | undefined): Promise<void> {
  if (!s) return Promise.resolve();
  s.server.closeAllConnections();
  return new Promise((resolve) => s.server.close(() => resolve()));
}

function redirect(res: http.ServerResponse, location: string, status = 302) {
  res.writeHead(status, { location });
  res.end();
}

const routes: Record<string, (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void> = {
  '/img.png': (_req, res) => {
    res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length });
    res.end(png);
  },
  '/headers': (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(req.headers));
  },
  '/missing': (_req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not here');
  },
  '/error': (_req, res) => {
    res.writeHead(500);
    res.end();
  },
  '/empty': (_req, res) => {
    res.writeHead(204);
    res.end();
  },
  // Declares a body far over the limit, then sends nothing: only an early refusal avoids a timeout.
  '/large-declared': (_req, res) => {
    res.writeHead(200, { 'content-type': 'image/png', 'content-length': 100 * LIMIT });
    res.flushHeaders();
  },
  // Chunked (no Content-Length), endless: only counting the streamed bytes stops it.
  '/large-chunked': (_req, res) => {
    res.writeHead(200, { 'content-type': 'image/png' });
    const chunk = Buffer.alloc(8192, 1);
    const pump = () => {
      while (!res.destroyed && res.write(chunk));
      if (!res.destroyed) res.once('drain', pump);
    };
    pump();
  },
  // Chunked bodies of exactly ?n bytes.
  '/sized': (_req, res, url) => {
    const n = Number(url.searchParams.get('n'));
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.write(Buffer.alloc(Math.floor(n / 2), 2));
    setImmediate(() => res.end(Buffer.alloc(n - Math.floor(n / 2), 3)));
  },
  // Never answers.
  '/hang': () => undefined,
  // Headers and a little body, then nothing.
  '/slow-body': (_req, res) => {
    res.writeHead(200, { 'content-type': 'image/png' });
    res.write(Buffer.alloc(10));
  },
  // Declares 100 bytes, sends 50 and hangs up.
  '/truncated': (req, res) => {
    res.writeHead(200, { 'content-type': 'image/png', 'content-length': 100 });
    res.write(Buffer.alloc(50), () => req.socket.destroy());
  },
  // Redirects after ?ms, ?n more times, then to the image.
  '/slow-redirect': (_req, res, url) => {
    const n = Number(url.searchParams.get('n'));
    setTimeout(
      () => redirect(res, n > 0 ? `/slow-redirect?n=${n - 1}&ms=${url.searchParams.get('ms')}` : '/img.png'),
      Number(url.searchParams.get('ms')),
    );
  },
  '/redirect/relative': (_req, res) => redirect(res, '../img.png'),
  '/redirect/query-relative': (_req, res) => redirect(res, '?x=1'),
  '/redirect/absolute': (req, res) => redirect(res, `http://${req.headers.host}/img.png`),
  '/redirect/status': (_req, res, url) => redirect(res, '/img.png', Number(url.searchParams.get('s'))),
  '/redirect/no-location': (_req, res) => {
    res.writeHead(302);
    res.end();
  },
  '/loop': (_req, res) => redirect(res, '/loop'),
  // ?to=<absolute or relative URL>
  '/go': (_req, res, url) => redirect(res, url.searchParams.get('to') ?? '/'),
};

function handler(req: http.IncomingMessage, res: http.ServerResponse) {
  const url = new URL(req.url ?? '/', 'http://fixture');
  if (url.pathname.startsWith('/chain/')) {
    // /chain/N: N redirects (/chain/N-1, ..., /chain/0), then the image.
    const n = Number(url.pathname.slice('/chain/'.length));
    return n > 0 ? redirect(res, `/chain/${n - 1}`) : routes['/img.png']?.(req, res, url);
  }
  const route = routes[url.pathname];
  if (route) return route(req, res, url);
  res.writeHead(404);
  res.end();
}

async function startFixtures() {
  png ??= await sharp({ create: { width: 4, height: 4, channels: 3, background: 'red' } })
    .png()
    .toBuffer();
  main = await listen('127.0.0.1', handler);
  internal = await listen('127.0.0.2', handler);
}

async function stopFixtures() {
  await close(main);
  await close(internal);
}

function withFixtures(name: string) {
  const s = suite(name);
  s.before(startFixtures);
  s.after(stopFixtures);
  return s;
}

const trusted: FetchImageOptions = { allowPrivate: true, timeoutMs: 5000 };

// ---------------------------------------------------------------------------------------------

const classifier = suite('ip policy: address classification');

// prettier-ignore
const TABLE: [string, string][] = [
  // IPv4, public, including the first/last address around each blocked range
  ['8.8.8.8', 'public'], ['1.1.1.1', 'public'], ['93.184.216.34', 'public'], ['223.255.255.255', 'public'],
  ['9.255.255.255', 'public'], ['11.0.0.0', 'public'], ['126.255.255.255', 'public'], ['128.0.0.0', 'public'],
  ['172.15.255.255', 'public'], ['172.32.0.0', 'public'], ['100.63.255.255', 'public'], ['100.128.0.0', 'public'],
  ['169.253.255.255', 'public'], ['169.255.0.0', 'public'], ['192.167.255.255', 'public'], ['192.169.0.0', 'public'],
  ['198.17.255.255', 'public'], ['198.20.0.0', 'public'], ['1.0.0.0', 'public'],
  // IPv4, blocked
  ['0.0.0.0', 'unspecified'], ['0.255.255.255', 'unspecified'],
  ['10.0.0.0', 'private'], ['10.0.0.1', 'private'], ['10.255.255.255', 'private'],
  ['100.64.0.0', 'cgnat'], ['100.64.0.1', 'cgnat'], ['100.127.255.255', 'cgnat'],
  ['127.0.0.0', 'loopback'], ['127.0.0.1', 'loopback'], ['127.255.255.255', 'loopback'],
  ['169.254.0.0', 'link-local'], ['169.254.169.254', 'link-local'], ['169.254.255.255', 'link-local'],
  ['172.16.0.0', 'private'], ['172.16.0.1', 'private'], ['172.31.255.255', 'private'],
  ['192.168.0.0', 'private'], ['192.168.1.1', 'private'], ['192.168.255.255', 'private'],
  ['192.0.0.8', 'reserved'], ['192.0.2.1', 'documentation'], ['192.88.99.1', 'reserved'],
  ['198.18.0.0', 'benchmarking'], ['198.19.255.255', 'benchmarking'],
  ['198.51.100.7', 'documentation'], ['203.0.113.9', 'documentation'],
  ['224.0.0.0', 'multicast'], ['224.0.0.1', 'multicast'], ['239.255.255.255', 'multicast'],
  ['240.0.0.0', 'reserved'], ['255.255.255.254', 'reserved'], ['255.255.255.255', 'broadcast'],
  // IPv6, public
  ['2001:4860:4860::8888', 'public'], ['2606:4700:4700::1111', 'public'], ['2a00:1450:4001::1', 'public'],
  ['2001:200::1', 'public'], ['3ffe::1', 'public'],
  ['::ffff:8.8.8.8', 'public'], ['::ffff:808:808', 'public'], ['64:ff9b::8.8.8.8', 'public'], ['2002:808:808::1', 'public'],
  // IPv6, blocked
  ['::', 'unspecified'], ['0:0:0:0:0:0:0:0', 'unspecified'], ['::1', 'loopback'], ['0:0::1', 'loopback'],
  ['::ffff:127.0.0.1', 'loopback'], ['::ffff:7f00:1', 'loopback'], ['::FFFF:7F00:1', 'loopback'],
  ['::ffff:10.0.0.1', 'private'], ['::ffff:0.0.0.0', 'unspecified'], ['0:0:0:0:0:ffff:a9fe:a9fe', 'link-local'],
  ['::ffff:100.64.0.1', 'cgnat'], ['::ffff:255.255.255.255', 'broadcast'],
  ['::127.0.0.1', 'reserved'], ['::8.8.8.8', 'reserved'],
  ['64:ff9b::127.0.0.1', 'loopback'], ['64:ff9b::a00:1', 'private'], ['64:ff9b::a9fe:a9fe', 'link-local'],
  ['64:ff9b:1::1', 'private'],
  ['2002:7f00:1::1', 'loopback'], ['2002:a9fe:a9fe::', 'link-local'], ['2002:c0a8:101::1', 'private'],
  ['2001::1', 'teredo'], ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'teredo'],
  ['2001:2::1', 'benchmarking'], ['2001:10::1', 'reserved'], ['2001:1ff::1', 'reserved'],
  ['2001:db8::1', 'documentation'], ['3fff::1', 'documentation'], ['5f00::1', 'reserved'], ['100::1', 'reserved'],
  ['fc00::', 'private'], ['fc00::1', 'private'], ['fd12:3456:789a::1', 'private'], ['fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'private'],
  ['fe80::', 'link-local'], ['fe80::1', 'link-local'], ['fe80::1%eth0', 'link-local'], ['febf:ffff::1', 'link-local'],
  ['fec0::1', 'reserved'], ['ff00::', 'multicast'], ['ff02::1', 'multicast'], ['ff05::1:3', 'multicast'],
  ['1fff:ffff::1', 'reserved'], ['4000::1', 'reserved'], ['fbff::1', 'reserved'], ['1:2:3:4:5:6:7:8', 'reserved'],
];

classifier('every address of the table falls in its range; only public ones are allowed', () => {
  for (const [address, range] of TABLE) {
    const c = classifyAddress(address);
    assert.ok(c, `${address} was not read as an address`);
    assert.is(c.range, range, address);
    assert.is(c.family, address.includes(':') ? 6 : 4, address);
    assert.is(c.allowed, range === 'public', address);
    assert.is(isPublicAddress(address), range === 'public', address);
  }
});

classifier('IPv6 addresses carrying IPv4 report how, and which IPv4 address was judged', () => {
  assert.equal(classifyAddress('::ffff:7f00:1')?.embedded, { kind: 'ipv4-mapped', address: '127.0.0.1' });
  assert.equal(classifyAddress('64:ff9b::a00:1')?.embedded, { kind: 'nat64', address: '10.0.0.1' });
  assert.equal(classifyAddress('2002:a9fe:a9fe::1')?.embedded, { kind: '6to4', address: '169.254.169.254' });
  assert.is(classifyAddress('2001:4860::1')?.embedded, undefined);
});

classifier('strings that are not plain addresses are never allowed (no inet_aton forms)', () => {
  // prettier-ignore
  const texts = [
    '', 'localhost', 'example.com', '0177.0.0.1', '127.1', '0x7f.1', '0x7f000001', '2130706433', '010.0.0.1',
    '256.0.0.1', '1.2.3.4.5', '1.2.3', ' 8.8.8.8', '8.8.8.8 ', '[::1]', '1::2::3', '12345::', ':::',
    '::ffff:1.2.3', '::ffff:1.2.3.4.5', 'fe80::1%', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7::8', 'g::1',
  ];
  for (const text of texts) {
    assert.is(classifyAddress(text), undefined, JSON.stringify(text));
    assert.is(isPublicAddress(text), false, JSON.stringify(text));
  }
});

classifier('the IPv6 reader accepts exactly what net.isIPv6 accepts (zone-less forms)', () => {
  // prettier-ignore
  const samples = [
    '::', '::1', '1::', '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', '1::8', '1:2::7:8',
    '::ffff:1.2.3.4', '1:2:3:4:5:6:1.2.3.4', '1::1.2.3.4', 'FFFF::', '0000:0000::0001',
    '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', ':1::', '1::2:', '::ffff:01.2.3.4', '1:2:3:4:5:6:7:1.2.3.4',
    '1.2.3.4', 'x::', '',
  ];
  for (const text of samples) assert.is(parseIPv6(text) !== undefined, net.isIPv6(text), text);
});

classifier('addressKey identifies an address however it is written', () => {
  assert.is(addressKey('::1'), addressKey('0:0:0:0:0:0:0:1'));
  assert.is(addressKey('::ffff:127.0.0.1'), addressKey('127.0.0.1'));
  assert.is(addressKey('::ffff:7f00:1'), addressKey('127.0.0.1'));
  assert.is(addressKey('fe80::1%eth0'), addressKey('fe80::1'));
  assert.is.not(addressKey('127.0.0.1'), addressKey('127.0.0.2'));
  assert.is(addressKey('localhost'), undefined);
});

classifier.run();

// ---------------------------------------------------------------------------------------------

const downloads = withFixtures('fetch: downloads with allowPrivate (loopback fixture)');

downloads('an image comes back byte for byte, with its metadata', async () => {
  const { value, opened } = await watch(() => fetchImageWithMetadata(`${main.base}/img.png`, trusted));
  assert.ok(value);
  assert.ok(value.body.equals(png));
  assert.is(value.url, `${main.base}/img.png`);
  assert.is(value.contentType, 'image/png');
  assert.is(value.status, 200);
  assert.is(value.redirects, 0);
  assert.is(value.address, '127.0.0.1');
  // The socket watch sees the connection (so "no socket" elsewhere means something).
  assert.is(opened.length, 1);
  assert.is(opened[0]?.remote, '127.0.0.1');
  const meta = await sharp(await fetchImage(`${main.base}/img.png`, trusted)).metadata();
  assert.is(meta.format, 'png');
  assert.is(meta.width, 4);
});

downloads(
  'the request carries Host, User-Agent, Accept and identity encoding; no fragment is sent',
  async () => {
    const body = await fetchImage(`${main.base}/headers?q=1#frag`, {
      ...trusted,
      userAgent: 'facedet-test/1.0',
    });
    const headers = JSON.parse(body.toString()) as Record<string, string>;
    assert.is(headers.host, `127.0.0.1:${main.port}`);
    assert.is(headers['user-agent'], 'facedet-test/1.0');
    assert.is(headers['accept-encoding'], 'identity');
    assert.match(headers.accept ?? '', /^image\/\*/);
    assert.is(main.seen.at(-1)?.path, '/headers?q=1');
    const plain = JSON.parse((await fetchImage(`${main.base}/headers`, trusted)).toString()) as Record<
      string,
      string
    >;
    assert.is(plain['user-agent'], 'facedet-native');
  },
);

downloads('a 204 gives an empty body (the server turns it into empty_image)', async () => {
  const body = await fetchImage(`${main.base}/empty`, trusted);
  assert.is(body.length, 0);
});

downloads('IPv6 loopback works when allowed', async () => {
  let v6: Server | undefined;
  try {
    v6 = await listen('::1', handler);
  } catch (error) {
    console.warn(`  (skipped: cannot listen on ::1: ${(error as Error).message})`);
    return;
  }
  try {
    const result = await fetchImageWithMetadata(`${v6.base}/img.png`, trusted);
    assert.ok(result.body.equals(png));
    assert.is(result.address, '::1');
    assert.is(v6.seen[0]?.headers.host, `[::1]:${v6.port}`);
  } finally {
    await close(v6);
  }
});

downloads('non-2xx answers are url_http_status with the upstream status', async () => {
  const e404 = await fetchError(fetchImage(`${main.base}/missing`, trusted), 'url_http_status');
  assert.is(e404.upstreamStatus, 404);
  assert.is(e404.message, 'the server answered with status 404');
  const e500 = await fetchError(fetchImage(`${main.base}/error`, trusted), 'url_http_status');
  assert.is(e500.upstreamStatus, 500);
});

downloads('connection refused is url_fetch_failed, without the address in the message', async () => {
  const probe = await listen('127.0.0.1', handler);
  const port = probe.port;
  await close(probe);
  const error = await fetchError(fetchImage(`http://127.0.0.1:${port}/img.png`, trusted), 'url_fetch_failed');
  assert.is(error.message, 'the connection failed or broke off (ECONNREFUSED)');
  assert.ok(error.cause);
});

downloads('a body cut short of its Content-Length is url_fetch_failed', async () => {
  await fetchError(fetchImage(`${main.base}/truncated`, trusted), 'url_fetch_failed');
});

downloads('createImageFetcher binds options and takes the signal per call', async () => {
  const fetchSource = createImageFetcher({ allowPrivate: true, maxBytes: 10 });
  await fetchError(fetchSource(`${main.base}/img.png`, new AbortController().signal), 'url_too_large');
  const open = createImageFetcher({ allowPrivate: true });
  assert.ok((await open(`${main.base}/img.png`)).equals(png));
  const strict = createImageFetcher();
  await fetchError(strict(`${main.base}/img.png`), 'url_host_forbidden');
  assert.throws(() => createImageFetcher({ maxBytes: -1 }), /Expected a positive integer for maxBytes/);
});

downloads.run();

// ---------------------------------------------------------------------------------------------

const limits = withFixtures('fetch: size and time limits');

limits('a Content-Length over maxBytes is refused at once, before any body arrives', async () => {
  const t0 = performance.now();
  const error = await fetchError(
    fetchImage(`${main.base}/large-declared`, { ...trusted, maxBytes: LIMIT, timeoutMs: 3000 }),
    'url_too_large',
  );
  assert.ok(performance.now() - t0 < 1500);
  assert.is(error.message, `the download is larger than the limit of ${LIMIT} bytes`);
});

limits('an endless chunked body is cut off once it passes maxBytes', async () => {
  const t0 = performance.now();
  await fetchError(
    fetchImage(`${main.base}/large-chunked`, { ...trusted, maxBytes: LIMIT }),
    'url_too_large',
  );
  assert.ok(performance.now() - t0 < 1500);
});

limits('a chunked body of exactly maxBytes is accepted, one byte more is not', async () => {
  const body = await fetchImage(`${main.base}/sized?n=${LIMIT}`, { ...trusted, maxBytes: LIMIT });
  assert.is(body.length, LIMIT);
  await fetchError(
    fetchImage(`${main.base}/sized?n=${LIMIT + 1}`, { ...trusted, maxBytes: LIMIT }),
    'url_too_large',
  );
  const png1 = await fetchImage(`${main.base}/img.png`, { ...trusted, maxBytes: png.length });
  assert.ok(png1.equals(png));
  await fetchError(
    fetchImage(`${main.base}/img.png`, { ...trusted, maxBytes: png.length - 1 }),
    'url_too_large',
  );
});

limits('no answer within timeoutMs is url_timeout', async () => {
  const t0 = performance.now();
  const error = await fetchError(
    fetchImage(`${main.base}/hang`, { ...trusted, timeoutMs: 300 }),
    'url_timeout',
  );
  const elapsed = performance.now() - t0;
  assert.ok(elapsed >= 290 && elapsed < 1500, `${elapsed} ms`);
  assert.is(error.message, 'the download took longer than 300 ms');
});

limits('a body that stalls after the headers is url_timeout', async () => {
  await fetchError(fetchImage(`${main.base}/slow-body`, { ...trusted, timeoutMs: 300 }), 'url_timeout');
});

limits('the deadline covers all redirects together, not each hop', async () => {
  // Three hops of ~150 ms each: every hop is within 350 ms, the whole is not.
  const url = `${main.base}/slow-redirect?n=2&ms=150`;
  const ok = await fetchImageWithMetadata(url, { ...trusted, timeoutMs: 3000 });
  assert.is(ok.redirects, 3);
  await fetchError(fetchImage(url, { ...trusted, timeoutMs: 350 }), 'url_timeout');
});

limits('a resolver that never answers runs into the deadline, and nothing is connected', async () => {
  const { error, opened } = await watch(() =>
    fetchImage('http://never.test/img.png', { ...trusted, timeoutMs: 200, lookup: () => undefined }),
  );
  assert.instance(error, FetchImageError);
  assert.is((error as FetchImageError).code, 'url_timeout');
  assert.is(opened.length, 0);
});

limits("the caller's signal cancels: url_fetch_failed, or url_timeout for a TimeoutError", async () => {
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  const cancelled = await fetchError(
    fetchImage(`${main.base}/hang`, { ...trusted, signal: controller.signal }),
    'url_fetch_failed',
  );
  assert.is(cancelled.message, 'the download was cancelled');
  await fetchError(
    fetchImage(`${main.base}/hang`, { ...trusted, signal: AbortSignal.timeout(100) }),
    'url_timeout',
  );
  const before = main.seen.length;
  const { opened } = await watch(() =>
    fetchImage(`${main.base}/img.png`, { ...trusted, signal: AbortSignal.abort() }).catch(() => undefined),
  );
  assert.is(opened.length, 0);
  assert.is(main.seen.length, before);
});

limits.run();

// ---------------------------------------------------------------------------------------------

const redirects = withFixtures('fetch: redirects');

redirects('relative, query-only and absolute Location headers are followed', async () => {
  for (const path of ['/redirect/relative', '/redirect/absolute']) {
    const result = await fetchImageWithMetadata(`${main.base}${path}`, trusted);
    assert.ok(result.body.equals(png), path);
    assert.is(result.url, `${main.base}/img.png`, path);
    assert.is(result.redirects, 1, path);
  }
  // '?x=1' from /redirect/query-relative goes to /redirect/query-relative?x=1, which redirects again.
  await fetchError(fetchImage(`${main.base}/redirect/query-relative`, trusted), 'url_too_many_redirects');
  assert.is(main.seen.at(-1)?.path, '/redirect/query-relative?x=1');
});

redirects('301, 302, 303, 307 and 308 are followed; other 3xx are url_http_status', async () => {
  for (const status of [301, 302, 303, 307, 308]) {
    const result = await fetchImageWithMetadata(`${main.base}/redirect/status?s=${status}`, trusted);
    assert.ok(result.body.equals(png), String(status));
  }
  for (const status of [300, 304, 305]) {
    const error = await fetchError(
      fetchImage(`${main.base}/redirect/status?s=${status}`, trusted),
      'url_http_status',
    );
    assert.is(error.upstreamStatus, status);
  }
  const noLocation = await fetchError(
    fetchImage(`${main.base}/redirect/no-location`, trusted),
    'url_http_status',
  );
  assert.is(noLocation.upstreamStatus, 302);
});

redirects('at most maxRedirects are followed; a loop ends in url_too_many_redirects', async () => {
  const three = await fetchImageWithMetadata(`${main.base}/chain/3`, trusted);
  assert.is(three.redirects, 3);
  assert.ok(three.body.equals(png));
  const before = main.seen.length;
  const error = await fetchError(fetchImage(`${main.base}/chain/4`, trusted), 'url_too_many_redirects');
  assert.is(error.message, 'more than 3 redirects');
  assert.is(main.seen.length - before, 4, 'the 4th redirect is not followed');
  await fetchError(fetchImage(`${main.base}/loop`, trusted), 'url_too_many_redirects');
  await fetchError(
    fetchImage(`${main.base}/chain/1`, { ...trusted, maxRedirects: 0 }),
    'url_too_many_redirects',
  );
  const one = await fetchImageWithMetadata(`${main.base}/chain/1`, { ...trusted, maxRedirects: 1 });
  assert.is(one.redirects, 1);
  await fetchError(
    fetchImage(`${main.base}/loop`, { ...trusted, maxRedirects: 10 }),
    'url_too_many_redirects',
  );
});

redirects('a redirect to another loopback server is followed when private sources are allowed', async () => {
  const to = encodeURIComponent(`${internal.base}/img.png`);
  const result = await fetchImageWithMetadata(`${main.base}/go?to=${to}`, trusted);
  assert.ok(result.body.equals(png));
  assert.is(result.address, '127.0.0.2');
  assert.is(internal.seen.at(-1)?.path, '/img.png');
});

redirects('redirect targets are checked like URLs: scheme, credentials, syntax', async () => {
  const go = (to: string) => fetchImage(`${main.base}/go?to=${encodeURIComponent(to)}`, trusted);
  const file = await fetchError(go('file:///etc/passwd'), 'url_scheme_not_allowed');
  assert.is(
    file.message,
    "the redirect target (redirect 1) has the scheme 'file'; only http and https URLs are fetched",
  );
  await fetchError(go('gopher://127.0.0.1:70/'), 'url_scheme_not_allowed');
  await fetchError(go('data:image/png;base64,AAAA'), 'url_scheme_not_allowed');
  await fetchError(go(`http://user:pw@127.0.0.1:${main.port}/img.png`), 'url_invalid');
  await fetchError(go('http://[::1'), 'url_invalid');
});

redirects.run();

// ---------------------------------------------------------------------------------------------

const urls = suite('fetch: URL checks (nothing is connected)');

urls('only absolute http and https URLs without credentials are fetched', async () => {
  const cases: [unknown, FetchImageErrorCode][] = [
    ['file:///etc/passwd', 'url_scheme_not_allowed'],
    ['ftp://127.0.0.1/x.png', 'url_scheme_not_allowed'],
    ['data:image/png;base64,iVBORw0KGgo=', 'url_scheme_not_allowed'],
    ['gopher://127.0.0.1:6379/_INFO', 'url_scheme_not_allowed'],
    ['javascript:alert(1)', 'url_scheme_not_allowed'],
    ['ws://127.0.0.1/', 'url_scheme_not_allowed'],
    ['/img.png', 'url_invalid'],
    ['img.png', 'url_invalid'],
    ['//127.0.0.1/img.png', 'url_invalid'],
    ['', 'url_invalid'],
    ['http://', 'url_invalid'],
    ['http://[::1/', 'url_invalid'],
    ['http://exa mple.com/', 'url_invalid'],
    ['http://256.256.256.256/', 'url_invalid'],
    ['http://user:pass@127.0.0.1/img.png', 'url_invalid'],
    ['http://user@example.test/img.png', 'url_invalid'],
    [42, 'url_invalid'],
  ];
  for (const [url, code] of cases) {
    const { error, opened } = await watch(() => fetchImage(url as string, trusted));
    assert.instance(error, FetchImageError, String(url));
    assert.is((error as FetchImageError).code, code, `${String(url)}: ${(error as Error).message}`);
    assert.is(opened.length, 0, String(url));
  }
  const creds = await fetchError(fetchImage('http://a:b@127.0.0.1/', trusted), 'url_invalid');
  assert.is(creds.message, 'the URL contains credentials (user:password@), which are not sent');
  const scheme = await fetchError(fetchImage('FILE:///etc/passwd', trusted), 'url_scheme_not_allowed');
  assert.is(scheme.message, "the URL has the scheme 'file'; only http and https URLs are fetched");
});

urls('a host name that does not resolve is url_dns_failed', async () => {
  const { lookup } = resolver({});
  const error = await fetchError(fetchImage('http://nowhere.test/img.png', { lookup }), 'url_dns_failed');
  assert.is(error.message, "the host 'nowhere.test' does not resolve");
  const empty = resolver({ 'empty.test': [] });
  await fetchError(fetchImage('http://empty.test/', { lookup: empty.lookup }), 'url_dns_failed');
  const junk = resolver({ 'junk.test': ['not-an-ip'] });
  await fetchError(fetchImage('http://junk.test/', { lookup: junk.lookup }), 'url_dns_failed');
  const throwing: LookupAll = () => {
    throw new Error('boom');
  };
  await fetchError(fetchImage('http://throws.test/', { lookup: throwing }), 'url_dns_failed');
});

urls('options are validated with the library sentence', async () => {
  const bad: [FetchImageOptions, RegExp][] = [
    [{ maxBytes: 0 }, /^Expected a positive integer for maxBytes but received 0 of type number$/],
    [{ maxBytes: 1.5 }, /for maxBytes/],
    [
      { maxRedirects: -1 },
      /^Expected a non-negative integer for maxRedirects but received -1 of type number$/,
    ],
    [{ timeoutMs: 0 }, /for timeoutMs/],
    [{ timeoutMs: Number.NaN }, /for timeoutMs/],
    [
      { allowPrivate: 'yes' as unknown as boolean },
      /^Expected a boolean for allowPrivate but received yes of type string$/,
    ],
    [{ userAgent: 'a\r\nX-Injected: 1' }, /for userAgent/],
    [{ lookup: 'dns' as unknown as LookupAll }, /for lookup/],
    [{ signal: {} as AbortSignal }, /for signal/],
  ];
  for (const [options, message] of bad) {
    try {
      await fetchImage('http://example.test/', options);
      assert.unreachable(JSON.stringify(options));
    } catch (error) {
      assert.instance(error, TypeError);
      assert.match((error as Error).message, message);
    }
  }
});

urls('the error codes are exported with a status hint each', () => {
  assert.equal(
    [...FETCH_IMAGE_ERROR_CODES],
    [
      'url_invalid',
      'url_scheme_not_allowed',
      'url_host_forbidden',
      'url_dns_failed',
      'url_too_many_redirects',
      'url_too_large',
      'url_timeout',
      'url_http_status',
      'url_fetch_failed',
    ],
  );
  for (const code of FETCH_IMAGE_ERROR_CODES) assert.ok(FETCH_IMAGE_ERROR_STATUS[code] >= 400, code);
  const error = new FetchImageError('url_http_status', 'x', { upstreamStatus: 418 });
  assert.instance(error, Error);
  assert.is(error.name, 'FetchImageError');
  assert.is(error.status, 502);
  assert.is(error.upstreamStatus, 418);
});

urls.run();

// ---------------------------------------------------------------------------------------------

const policy = withFixtures('fetch: non-public addresses are refused by default, before connecting');

policy('loopback in every spelling is refused, and the fixture never sees a request', async () => {
  const p = main.port;
  const before = main.seen.length;
  for (const url of [
    `http://127.0.0.1:${p}/img.png`,
    `http://127.0.0.2:${internal.port}/img.png`,
    `http://localhost:${p}/img.png`,
    `http://LOCALHOST:${p}/img.png`,
    `http://[::1]:${p}/img.png`,
    `http://0.0.0.0:${p}/img.png`,
    `http://0:${p}/img.png`,
    `http://[::]:${p}/img.png`,
    `http://2130706433:${p}/img.png`,
    `http://0177.0.0.1:${p}/img.png`,
    `http://0x7f.1:${p}/img.png`,
    `http://0x7f000001:${p}/img.png`,
    `http://127.1:${p}/img.png`,
    `http://[::ffff:127.0.0.1]:${p}/img.png`,
    `http://[0:0:0:0:0:ffff:7f00:1]:${p}/img.png`,
    `http://[::ffff:0:0]:${p}/img.png`,
    `http://[64:ff9b::7f00:1]:${p}/img.png`,
    `http://[2002:7f00:1::]:${p}/img.png`,
    `https://127.0.0.1:${p}/img.png`,
  ]) {
    await refusedWithoutConnecting(url);
  }
  assert.is(main.seen.length, before);
  assert.is(internal.seen.length, 0);
});

policy(
  'messages name the host but never the address it resolved to; the detail (for logs) does',
  async () => {
    const { lookup } = resolver({ 'intranet.test': ['10.0.0.1'] });
    const named = await refusedWithoutConnecting('http://intranet.test/img.png', { lookup });
    assert.is(
      named.message,
      "the host 'intranet.test' is not allowed: it resolves to a loopback, private, link-local or otherwise non-public address",
    );
    assert.not.match(named.message, '10.0.0.1');
    assert.is(named.detail, '10.0.0.1 (private)');
    const literal = await refusedWithoutConnecting(`http://127.0.0.1:${main.port}/`);
    assert.match(literal.message, /^the address '127\.0\.0\.1' is not allowed: it is a loopback/);
  },
);

policy('a name resolving to any non-public address is refused without a socket', async () => {
  // prettier-ignore
  const blocked = [
    '10.0.0.1', '192.168.1.1', '172.16.0.1', '169.254.169.254', '100.64.0.1', 'fe80::1', 'fc00::1',
    '::ffff:10.0.0.1', '224.0.0.1', '0.0.0.0', '::', '127.0.0.1', '::1', '255.255.255.255', '240.0.0.1',
    '64:ff9b::a9fe:a9fe', '2002:a00:1::1', '2001::1', '198.18.0.1', 'fe80::1%lo',
  ];
  for (const address of blocked) {
    const { lookup, calls } = resolver({ 'target.test': [address] });
    await refusedWithoutConnecting('http://target.test/img.png', { lookup });
    assert.equal(calls, ['target.test'], address);
  }
});

policy('one private address among public ones is enough to refuse (whatever the order)', async () => {
  for (const answer of [
    ['93.184.216.34', '10.0.0.1'],
    ['10.0.0.1', '93.184.216.34'],
    ['2606:4700::1', '8.8.8.8', '::1'],
    ['8.8.8.8', '::ffff:169.254.169.254'],
  ]) {
    const { lookup } = resolver({ 'mixed.test': answer });
    await refusedWithoutConnecting('http://mixed.test/img.png', { lookup });
  }
});

policy('allowPrivate still refuses bad schemes and credentials', async () => {
  await fetchError(fetchImage('file:///etc/passwd', { allowPrivate: true }), 'url_scheme_not_allowed');
  await fetchError(fetchImage(`http://u:p@127.0.0.1:${main.port}/`, { allowPrivate: true }), 'url_invalid');
});

policy.run();

// ---------------------------------------------------------------------------------------------

const pinning = withFixtures('fetch: pinned addresses (DNS rebinding) and redirects into private space');

// Stands in for a public host: exactly 127.0.0.1, and only for the name public.test / rebind.test.
const onlyFixture = (names: string[]) => (address: string, _family: 4 | 6, host: string) =>
  (names.includes(host) && address === '127.0.0.1') || isPublicAddress(address);

pinning(
  'the name is resolved once; the connection goes to the checked address with the original Host',
  async () => {
    // Later answers point into the private network: a second lookup anywhere would be caught.
    const { lookup, calls } = resolver({ 'rebind.test': [['127.0.0.1'], ['10.0.0.1'], ['10.0.0.1']] });
    const options = { lookup, isAddressAllowed: onlyFixture(['rebind.test']), timeoutMs: 3000 };
    const { value, error, opened } = await watch(() =>
      fetchImageWithMetadata(`http://rebind.test:${main.port}/headers`, options),
    );
    assert.is(error, undefined, String(error));
    assert.ok(value);
    assert.equal(calls, ['rebind.test'], 'exactly one lookup');
    assert.is(opened.length, 1);
    assert.is(opened[0]?.remote, '127.0.0.1');
    assert.is(value.address, '127.0.0.1');
    const headers = JSON.parse(value.body.toString()) as Record<string, string>;
    assert.is(headers.host, `rebind.test:${main.port}`);
  },
);

pinning('each redirect hop resolves again (once) and is checked again', async () => {
  const { lookup, calls } = resolver({ 'rebind.test': [['127.0.0.1'], ['10.0.0.1']] });
  const options = { lookup, isAddressAllowed: onlyFixture(['rebind.test']) };
  const before = main.seen.length;
  const { error, opened } = await watch(() =>
    fetchImage(`http://rebind.test:${main.port}/redirect/relative`, options),
  );
  assert.instance(error, FetchImageError);
  assert.is((error as FetchImageError).code, 'url_host_forbidden');
  assert.match((error as Error).message, "the host 'rebind.test' (redirect 1) is not allowed");
  assert.equal(calls, ['rebind.test', 'rebind.test'], 'one lookup per hop');
  assert.is(opened.length, 1, 'only the first hop connected');
  assert.equal(
    main.seen.slice(before).map((s) => s.path),
    ['/redirect/relative'],
  );
  // The same chain with a stable answer succeeds, one lookup per hop.
  const stable = resolver({ 'public.test': ['127.0.0.1'] });
  const ok = await fetchImageWithMetadata(`http://public.test:${main.port}/chain/2`, {
    lookup: stable.lookup,
    isAddressAllowed: onlyFixture(['public.test']),
  });
  assert.is(ok.redirects, 2);
  assert.is(stable.calls.length, 3);
});

pinning(
  'a redirect from an allowed host into loopback or private space is refused before connecting',
  async () => {
    const { lookup } = resolver({
      'public.test': ['127.0.0.1'],
      localhost: ['127.0.0.1', '::1'],
      'internal.test': ['127.0.0.2'],
      'metadata.test': ['169.254.169.254'],
    });
    const options = { lookup, isAddressAllowed: onlyFixture(['public.test']), timeoutMs: 3000 };
    const targets = [
      `http://127.0.0.2:${internal.port}/img.png`,
      `http://internal.test:${internal.port}/img.png`,
      `http://localhost:${internal.port}/img.png`,
      `http://127.0.0.1:${main.port}/img.png`, // the fixture's own address, but not under the name public.test
      `http://2130706433:${main.port}/img.png`,
      `http://[::ffff:127.0.0.2]:${internal.port}/img.png`,
      `http://[::1]:${main.port}/img.png`,
      'http://metadata.test/latest/meta-data/',
      'http://169.254.169.254/latest/meta-data/',
    ];
    for (const target of targets) {
      const before = main.seen.length;
      const { error, opened } = await watch(() =>
        fetchImage(`http://public.test:${main.port}/go?to=${encodeURIComponent(target)}`, options),
      );
      assert.instance(error, FetchImageError, target);
      assert.is(
        (error as FetchImageError).code,
        'url_host_forbidden',
        `${target}: ${(error as Error).message}`,
      );
      assert.match((error as Error).message, '(redirect 1)');
      assert.is(opened.length, 1, `${target}: only the allowed first hop connected`);
      assert.is(opened[0]?.remote, '127.0.0.1');
      assert.is(main.seen.length - before, 1, target);
    }
    assert.is(internal.seen.length, 0, 'the internal server never saw a request');
  },
);

pinning.run();

// ---------------------------------------------------------------------------------------------
// https: no certificate is at hand, so a plain TCP server on 127.0.0.1 reads the TLS ClientHello
// (plaintext) to see which address was reached and which server name (SNI) was sent, then hangs up.

/** The SNI host name of a TLS ClientHello record, '' when it has none, undefined when unreadable. */
function sniOf(hello: Buffer): string | undefined {
  if (hello[0] !== 0x16 || hello[5] !== 0x01) return undefined; // handshake record, ClientHello
  let p = 5 + 4 + 2 + 32; // record header, handshake header, version, random
  p += 1 + hello.readUInt8(p); // session id
  p += 2 + hello.readUInt16BE(p); // cipher suites
  p += 1 + hello.readUInt8(p); // compression methods
  const end = p + 2 + hello.readUInt16BE(p);
  for (p += 2; p + 4 <= end;) {
    const type = hello.readUInt16BE(p);
    const length = hello.readUInt16BE(p + 2);
    if (type === 0) return hello.toString('latin1', p + 9, p + 9 + hello.readUInt16BE(p + 7));
    p += 4 + length;
  }
  return '';
}

const tls = suite('fetch: https keeps the host name for SNI while connecting to the checked address');

tls(
  'SNI is the URL host name (none for an IP literal); the handshake failure is url_fetch_failed',
  async () => {
    const hellos: { sni: string | undefined; local: string | undefined }[] = [];
    const server = net.createServer((socket) => {
      let data = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        if (data.length >= 5 && data.length >= 5 + data.readUInt16BE(3)) {
          hellos.push({ sni: sniOf(data), local: socket.localAddress });
          socket.destroy();
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const { lookup, calls } = resolver({ 'secure.test': ['127.0.0.1'] });
      const named = await watch(() =>
        fetchImage(`https://secure.test:${port}/img.png`, {
          lookup,
          isAddressAllowed: onlyFixture(['secure.test']),
          timeoutMs: 3000,
        }),
      );
      assert.instance(named.error, FetchImageError);
      assert.is((named.error as FetchImageError).code, 'url_fetch_failed');
      assert.equal(calls, ['secure.test']);
      assert.is(named.opened.length, 1);
      assert.equal(hellos[0], { sni: 'secure.test', local: '127.0.0.1' });

      const literal = await watch(() => fetchImage(`https://127.0.0.1:${port}/img.png`, trusted));
      assert.is((literal.error as FetchImageError).code, 'url_fetch_failed');
      assert.equal(hellos[1], { sni: '', local: '127.0.0.1' });

      // Refused addresses are refused for https too, before any socket.
      await refusedWithoutConnecting(`https://127.0.0.1:${port}/img.png`);
      assert.is(hellos.length, 2);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  },
);

tls.run();
