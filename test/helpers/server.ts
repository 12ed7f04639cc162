// Helpers of the server tests: a real server on 127.0.0.1, HTTP calls, a loopback fixture server,
// a log capture and a Prometheus text reader. Traffic goes to loopback only.
import fs from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { type AppOptions, createApp, type FacedetApp } from '../../src/server/app';
import { defaultConfig, type ServerConfig } from '../../src/server/config';
import { FIXTURES } from './model';

export const seedPath = (name: string) => path.join(FIXTURES, 'seed-images', name);
export const seedBytes = (name: string) => fs.readFileSync(seedPath(name));

/** The defaults, on loopback, without rate limit or logs, with `overrides`. */
export function testConfig(overrides: Partial<ServerConfig> = {}): ServerConfig {
  return { ...defaultConfig(), host: '127.0.0.1', port: 0, rateLimit: 0, logLevel: 'silent', ...overrides };
}

export interface LogCapture {
  logger: Logger;
  lines: Record<string, unknown>[];
}

/** A pino logger whose JSON lines are kept in `lines`. */
export function captureLogs(level: pino.Level = 'debug'): LogCapture {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line));
      callback();
    },
  });
  return { logger: pino({ level }, stream), lines };
}

export interface TestServer extends FacedetApp {
  url: string;
  close(): Promise<void>;
}

/** createApp() listening on 127.0.0.1 at a free port. */
export async function listen(
  options: Omit<AppOptions, 'config' | 'logger'> & { config?: ServerConfig; logger?: Logger },
): Promise<TestServer> {
  const config = options.config ?? testConfig();
  const facedet = createApp({ ...options, config, logger: options.logger ?? pino({ level: 'silent' }) });
  const server = http.createServer(facedet.app.callback());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    ...facedet,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export interface Reply<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
  ms: number;
}

async function reply<T>(response: Response, start: number): Promise<Reply<T>> {
  const text = await response.text();
  let body: unknown = text;
  if ((response.headers.get('content-type') ?? '').includes('json')) body = JSON.parse(text);
  return {
    status: response.status,
    headers: response.headers,
    body: body as T,
    text,
    ms: performance.now() - start,
  };
}

export async function request<T = unknown>(url: string, init: RequestInit = {}): Promise<Reply<T>> {
  const start = performance.now();
  return reply<T>(await fetch(url, init), start);
}

export function postJson<T = unknown>(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
) {
  return request<T>(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

export interface Upload {
  name?: string;
  field?: string;
  data: Buffer;
  type?: string;
}

export function postFiles<T = unknown>(url: string, files: Upload[], fields: Record<string, string> = {}) {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  files.forEach((f, i) =>
    form.append(
      f.field ?? 'files',
      new Blob([f.data], { type: f.type ?? 'image/jpeg' }),
      f.name ?? `image${i}.jpg`,
    ),
  );
  return request<T>(url, { method: 'POST', body: form });
}

export interface ErrorBody {
  error: { code: string; message: string };
}

/** One sample of a Prometheus text exposition (0 when absent). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const found: Record<string, string> = {};
    for (const pair of (m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) found[pair[1]!] = pair[2]!;
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(m[4]);
  }
  return 0;
}

export interface FixtureServer {
  url: string;
  /** Requests received, by path. */
  hits: string[];
  close(): Promise<void>;
}

/** An HTTP server on 127.0.0.1 answering from a table of paths. */
export async function fixtureServer(
  routes: Record<string, (res: http.ServerResponse) => void>,
): Promise<FixtureServer> {
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? '');
    const route = routes[req.url ?? ''];
    if (route) route(res);
    else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The JSON round trip of a value (what a client reads back). */
export const viaJson = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

function isLoopback(address: string): boolean {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return /^127\.\d+\.\d+\.\d+$/.test(v4) || address === '::1';
}

export interface LoopbackGuard {
  /** Non-loopback destinations something tried to connect to (each refused before any packet). */
  refused: string[];
  restore(): void;
}

/**
 * Refuses every TCP connection of this process to a non-loopback address and records it: a safety
 * net (tests talk to loopback only) and the evidence that a refused URL was never connected to.
 */
export function guardLoopback(): LoopbackGuard {
  const refused: string[] = [];
  const original = net.Socket.prototype.connect;
  const refuse = (socket: net.Socket, what: string) => {
    refused.push(what);
    process.nextTick(() => socket.destroy(new Error(`test guard: connection to ${what} refused`)));
    return socket;
  };
  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
    const first = args[0];
    const normalized = Array.isArray(first);
    const options = (normalized ? first[0] : first) as net.TcpNetConnectOpts & { path?: string };
    if (options && typeof options === 'object' && !options.path) {
      const host = options.host ?? 'localhost';
      if (net.isIP(host)) {
        if (!isLoopback(host)) return refuse(this, host);
      } else if (options.lookup) {
        const lookup = options.lookup;
        const checked: net.LookupFunction = (hostname, lookupOptions, callback) =>
          lookup(hostname, lookupOptions, ((error: Error | null, address: unknown, family?: number) => {
            const list = Array.isArray(address)
              ? (address as { address: string }[]).map((a) => a.address)
              : [address as string];
            const bad = list.filter((a) => typeof a === 'string' && !isLoopback(a));
            if (!error && bad.length > 0) {
              refused.push(...bad);
              callback(new Error(`test guard: connection to ${bad.join(', ')} refused`), '', 4);
              return;
            }
            (callback as (...a: unknown[]) => void)(error, address, family);
          }) as never);
        const patched = { ...options, lookup: checked };
        if (normalized) (first as unknown[])[0] = patched;
        else args[0] = patched;
      } else if (host !== 'localhost') {
        return refuse(this, host);
      }
    }
    return (original as (...a: unknown[]) => net.Socket).apply(this, args);
  } as typeof original;
  return {
    refused,
    restore: () => {
      net.Socket.prototype.connect = original;
    },
  };
}
