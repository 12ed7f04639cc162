// The server's life: configuration (defaults < FACEDET_* < flags), `/ready/` flipping from 503 to
// 200 once the model is loaded, a failed load, and `facedet serve` (dist/cli.js, built by `npm test`
// first) finishing a request in flight on SIGTERM and exiting 0, and the V8 heap growth it sets.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';
import sharp from 'sharp';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, type FaceDetectorOptions, type ImageResult } from '../src';
import { ConfigError, SETTINGS, defaultConfig, loadConfig } from '../src/server/config';
import { startServer } from '../src/server/server';
import { rejects } from './helpers/assert';
import { MOBILENET_DIR, requireModel } from './helpers/model';
import {
  type ErrorBody,
  captureLogs,
  postJson,
  request,
  seedBytes,
  testConfig,
  viaJson,
} from './helpers/server';

const modelDir = requireModel(MOBILENET_DIR);
const cli = path.resolve(__dirname, '..', 'dist', 'cli.js');
type Detect = { result: ImageResult[] };

// ---------------------------------------------------------------------------------------------
const config = suite('server: configuration');

config('defaults: port 8080, 10 requests/s per client, private sources refused', () => {
  const c = defaultConfig();
  assert.is(c.port, 8080);
  assert.is(c.rateLimit, 10);
  assert.is(c.allowPrivateSources, false);
  assert.equal(loadConfig({}, {}), c);
  for (const s of SETTINGS) assert.match(s.env, /^FACEDET_[A-Z0-9_]+$/);
});

config('FACEDET_* variables override the defaults, flags override both', () => {
  const env = {
    FACEDET_PORT: '9000',
    FACEDET_ALLOW_PRIVATE_SOURCES: '1',
    FACEDET_MAX_QUEUE_DELAY_MS: '2.5',
    FACEDET_HOST: '127.0.0.1',
    FACEDET_LOG_LEVEL: 'warn',
  };
  const c = loadConfig(env, { port: '9100', 'max-images': '8' });
  assert.is(c.port, 9100);
  assert.is(c.host, '127.0.0.1');
  assert.is(c.allowPrivateSources, true);
  assert.is(c.maxQueueDelayMs, 2.5);
  assert.is(c.maxImagesPerRequest, 8);
  assert.is(c.logLevel, 'warn');
  assert.is(loadConfig({}, { 'allow-private-sources': true }).allowPrivateSources, true);
  assert.is(loadConfig({ FACEDET_ALLOW_PRIVATE_SOURCES: '0' }).allowPrivateSources, false);
});

config('bad values name the variable or flag', () => {
  assert.throws(
    () => loadConfig({ FACEDET_PORT: 'http' }),
    (e: Error) =>
      e instanceof ConfigError &&
      e.message === "FACEDET_PORT expects an integer between 0 and 65535, got 'http'",
  );
  assert.throws(
    () => loadConfig({}, { 'rate-limit': '-1' }),
    /^--rate-limit expects a number between 0 and 1000000, got '-1'$/,
  );
  assert.throws(
    () => loadConfig({ FACEDET_ALLOW_PRIVATE_SOURCES: 'maybe' }),
    /FACEDET_ALLOW_PRIVATE_SOURCES expects 1\/0/,
  );
  assert.throws(
    () => loadConfig({ FACEDET_LOG_LEVEL: 'loud' }),
    /FACEDET_LOG_LEVEL expects one of fatal, error/,
  );
});

config('facedet serve: a bad flag is a usage error (exit 2); --help lists every setting', () => {
  const bad = spawnSync(process.execPath, [cli, 'serve', '--port', 'abc'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.is(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /facedet serve: --port expects an integer between 0 and 65535, got 'abc'/);
  const help = spawnSync(process.execPath, [cli, 'serve', '--help'], { encoding: 'utf8', timeout: 30_000 });
  assert.is(help.status, 0);
  for (const s of SETTINGS)
    assert.ok(help.stdout.includes(`--${s.flag}`) && help.stdout.includes(s.env), s.flag);
});

// ---------------------------------------------------------------------------------------------
const ready = suite('server: readiness');

ready(
  'listens at once; /ready/ and detection are 503 not_ready until the model is loaded, then 200',
  async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let given: FaceDetectorOptions | undefined;
    const logs = captureLogs('info');
    const running = await startServer({
      config: testConfig({ maxSize: 640, maxQueueSize: 64 }),
      logger: logs.logger,
      load: async (options) => {
        given = options;
        await gate;
        return FaceDetector.create({ ...options, model: modelDir, warmup: [] });
      },
    });
    try {
      const notYet = await request<ErrorBody>(`${running.url}/ready/`);
      assert.is(notYet.status, 503);
      assert.is(notYet.body.error.code, 'not_ready');
      assert.is(notYet.headers.get('retry-after'), '1');
      assert.is((await request(`${running.url}/ready`)).status, 503, 'without the trailing slash');
      assert.is((await request(`${running.url}/health`)).status, 200);
      const early = await postJson<ErrorBody>(`${running.url}/detect_faces_from_base64/`, {
        images_base64: ['AAAA'],
      });
      assert.is(early.status, 503);
      assert.is(early.body.error.code, 'not_ready');
      assert.match((await request<string>(`${running.url}/metrics`)).body, /^facedet_ready 0$/m);

      release();
      await running.ready;
      const now = await request<{ ready: boolean; model: string }>(`${running.url}/ready/`);
      assert.is(now.status, 200);
      assert.equal(now.body, { ready: true, model: 'retinaface-mobilenet0.25', device: 'cpu' });
      assert.is(given?.maxSize, 640, 'the detector gets the configured options');
      assert.is(given?.maxQueueSize, 64);
      assert.type(given?.onBatch, 'function');
      const res = await postJson<Detect>(`${running.url}/detect_faces_from_base64/`, {
        images_base64: [seedBytes('single_face.gif').toString('base64')],
      });
      assert.is(res.status, 200);
      assert.is(res.body.result[0]!.faces_count, 1);
      assert.is(
        logs.lines.filter((l) => l.msg === 'configuration').length,
        1,
        'the configuration is logged once',
      );
      assert.ok(logs.lines.some((l) => l.msg === 'model ready'));
    } finally {
      release();
      await running.shutdown();
    }
    await rejects(request(`${running.url}/health`), /fetch failed/, TypeError);
  },
);

ready('a model that fails to load: /ready/ stays 503 and says why; ready rejects', async () => {
  const logs = captureLogs('info');
  const running = await startServer({
    config: testConfig(),
    logger: logs.logger,
    load: () => FaceDetector.create({ model: '/nonexistent/model', warmup: [] }),
  });
  try {
    await rejects(running.ready, /nonexistent/);
    const res = await request<ErrorBody>(`${running.url}/ready/`);
    assert.is(res.status, 503);
    assert.is(res.body.error.code, 'not_ready');
    assert.match(res.body.error.message, /^the model failed to load: /);
    assert.ok(
      logs.lines.some((l) => l.level === 60),
      'a fatal log line',
    );
  } finally {
    await running.shutdown();
  }
});

// ---------------------------------------------------------------------------------------------
const shutdown = suite('server: facedet serve and SIGTERM');

interface Child {
  proc: ChildProcess;
  lines: Record<string, unknown>[];
  exit: Promise<number | null>;
  waitFor(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

function serve(args: string[], env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Child {
  const proc = spawn(process.execPath, [...nodeArgs, cli, 'serve', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  const waiters: { msg: string; resolve: (line: Record<string, unknown>) => void }[] = [];
  readline.createInterface({ input: proc.stdout! }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      line = { msg: text };
    }
    lines.push(line);
    for (const w of waiters.filter((w) => w.msg === line.msg)) w.resolve(line);
  });
  let stderr = '';
  proc.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exit = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    lines,
    exit,
    waitFor: (msg, timeoutMs = 60_000) => {
      const seen = lines.find((l) => l.msg === msg);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no '${msg}' log line; stderr: ${stderr}`)),
          timeoutMs,
        );
        waiters.push({
          msg,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        void exit.then((code) => reject(new Error(`exited ${code} before '${msg}'; stderr: ${stderr}`)));
      });
    },
  };
}

shutdown('SIGTERM during a request: the request finishes, new connections are refused, exit 0', async () => {
  const child = serve(['--host', '127.0.0.1', '--port', '0', '--model', modelDir, '--max-size', '640'], {
    FACEDET_RATE_LIMIT: '0',
    FACEDET_LOG_LEVEL: 'info',
  });
  try {
    const { url } = (await child.waitFor('listening')) as { url: string };
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    await child.waitFor('model ready');
    assert.is((await request(`${url}/ready/`)).status, 200);
    assert.is(child.lines.filter((l) => l.msg === 'configuration').length, 1);
    assert.is(
      (child.lines.find((l) => l.msg === 'configuration')!.config as { maxSize: number }).maxSize,
      640,
    );

    // A request whose body is still arriving when SIGTERM comes.
    const image = seedBytes('diverse_group.jpg');
    const body = Buffer.from(JSON.stringify({ images_base64: [image.toString('base64')] }));
    const { port } = new URL(url);
    const response = new Promise<{ status: number; text: string; connection: string | undefined }>(
      (resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port: Number(port),
            method: 'POST',
            path: '/detect_faces_from_base64/',
            headers: { 'content-type': 'application/json', 'content-length': body.length },
          },
          (res) => {
            let text = '';
            res.on('data', (chunk: Buffer) => (text += chunk.toString()));
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, text, connection: res.headers.connection }),
            );
          },
        );
        req.on('error', reject);
        req.write(body.subarray(0, 1000));
        setTimeout(() => {
          child.proc.kill('SIGTERM');
          void child.waitFor('shutting down: finishing in-flight requests').then(async (line) => {
            assert.is(line.inFlight, 1);
            // The listening socket is closed: a new connection is refused.
            await rejects(request(`${url}/health`), /fetch failed/, TypeError);
            req.end(body.subarray(1000));
          }, reject);
        }, 300);
      },
    );
    const res = await response;
    assert.is(res.status, 200, res.text);
    assert.is(res.connection, 'close');
    const detector = await FaceDetector.create({ model: modelDir, warmup: [], maxSize: 640 });
    const expected = await detector.detect([image]);
    await detector.dispose();
    assert.equal(JSON.parse(res.text), viaJson({ result: expected }));
    assert.is(await child.exit, 0);
    assert.ok(child.lines.some((l) => l.msg === 'stopped'));
  } finally {
    if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
  }
});

shutdown('SIGINT on an idle server: exit 0', async () => {
  const child = serve(['--host', '127.0.0.1', '--port', '0', '--model', modelDir], {
    FACEDET_LOG_LEVEL: 'info',
  });
  try {
    await child.waitFor('listening');
    await child.waitFor('model ready');
    child.proc.kill('SIGINT');
    assert.is(await child.exit, 0);
  } finally {
    if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
  }
});

shutdown(
  'V8 heap growth: set for the server unless node has its own; far fewer full collections',
  async () => {
    // 1080p JPEGs posted one after another: with V8's own growing factor the server's heap ran a full
    // mark-compact every few requests (see src/server/heap.ts); counted by the server's own GC metric.
    // 300 of them: V8's own collections come more often as the server runs (over 100 requests 2-13 of
    // them, once as few as with the setting; over 300, 29-36 against 5-6 with it, four runs).
    const jpeg = await sharp(seedBytes('diverse_group.jpg'))
      .resize(1920, 1080, { fit: 'cover' })
      .jpeg({ quality: 90 })
      .toBuffer();
    const majorCollections = async (url: string) => {
      const text = (await request<string>(`${url}/metrics`)).text;
      return Number(/^facedet_nodejs_gc_duration_seconds_count\{kind="major"\} (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    const run = async (nodeArgs: string[]) => {
      const child = serve(
        ['--host', '127.0.0.1', '--port', '0', '--model', modelDir],
        {
          FACEDET_RATE_LIMIT: '0',
          FACEDET_LOG_LEVEL: 'info',
        },
        nodeArgs,
      );
      try {
        const { url } = (await child.waitFor('listening')) as { url: string };
        await child.waitFor('model ready');
        const { heapGrowingPercent } = (await child.waitFor('v8 heap growth')) as {
          heapGrowingPercent: unknown;
        };
        const before = await majorCollections(url);
        for (let i = 0; i < 300; i++) {
          const form = new FormData();
          form.append('files', new Blob([jpeg], { type: 'image/jpeg' }), 'photo.jpg');
          const reply = await request<Detect>(`${url}/detect_faces_from_files/`, {
            method: 'POST',
            body: form,
          });
          assert.is(reply.status, 200);
        }
        const major = (await majorCollections(url)) - before;
        child.proc.kill('SIGTERM');
        assert.is(await child.exit, 0);
        return { heapGrowingPercent, major };
      } finally {
        if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
      }
    };
    const tuned = await run([]);
    const own = await run(['--heap-growing-percent=0']);
    assert.is(tuned.heapGrowingPercent, 300);
    assert.is(own.heapGrowingPercent, null);
    assert.ok(
      own.major >= 6 && tuned.major * 3 <= own.major,
      `major collections: ${JSON.stringify({ tuned, own })}`,
    );
  },
);

config.run();
ready.run();
shutdown.run();
