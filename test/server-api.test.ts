// The REST server end to end: a real server on 127.0.0.1 with the real model, real HTTP. Each
// endpoint returns the library's results; the error table answers exact statuses and codes; the
// OpenAPI document, metrics, request ids and the error middleware.
import type { LookupAddress } from 'node:dns';
import http from 'node:http';
import Koa from 'koa';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, type ImageResult } from '../src';
import { nativeCaches } from '../src/native';
import { isPublicAddress } from '../src/server/ip-policy';
import { IMAGE_ERRORS, REQUEST_ERRORS } from '../src/server/errors';
import { Metrics } from '../src/server/metrics';
import { errorHandler } from '../src/server/middleware/error-handler';
import { requestId } from '../src/server/middleware/request-id';
import { EXAMPLE_BASE64_IMAGE } from '../src/server/routes/detect.schema';
import { rejects } from './helpers/assert';
import { pngHeaderClaiming } from './helpers/images';
import { MOBILENET_DIR, requireModel } from './helpers/model';
import {
  type ErrorBody,
  type FixtureServer,
  type LoopbackGuard,
  type TestServer,
  captureLogs,
  fixtureServer,
  guardLoopback,
  listen,
  metricValue,
  postFiles,
  postJson,
  request,
  seedBytes,
  testConfig,
  viaJson,
} from './helpers/server';

const modelDir = requireModel(MOBILENET_DIR);

type Detect = { result: ImageResult[] };

const cartoon = seedBytes('cartoon.jpg');
const group = seedBytes('diverse_group.jpg');
const gif = seedBytes('single_face.gif');
const mask = seedBytes('mask.jpg');
const truncatedJpeg = cartoon.subarray(0, Math.floor(cartoon.length * 0.4));
const bomb = pngHeaderClaiming(20000, 20000);
const textFile = Buffer.from('this is a text file, not an image\n');

let detector: FaceDetector;
let metrics: Metrics;
let api: TestServer; // default settings, images per request 4
let tight: TestServer; // small size limits
let fixtures: FixtureServer;
let guard: LoopbackGuard;
const logs = captureLogs('info');
let hangClosed: () => void = () => {};

async function setup() {
  guard = guardLoopback();
  metrics = new Metrics({ defaultMetrics: false });
  detector = await FaceDetector.create({ model: modelDir, warmup: [], onBatch: metrics.observeBatch });
  api = await listen({
    detector,
    metrics,
    logger: logs.logger,
    config: testConfig({ maxImagesPerRequest: 4 }),
  });
  tight = await listen({
    detector,
    config: testConfig({
      maxBodyBytes: 100_000,
      maxBase64Length: 2000,
      maxImageBytes: 50_000,
    }),
  });
  fixtures = await fixtureServer({
    '/face.jpg': (res) => res.writeHead(200, { 'content-type': 'image/jpeg' }).end(cartoon),
    '/group.jpg': (res) => res.writeHead(200, { 'content-type': 'image/jpeg' }).end(group),
    '/page.html': (res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>hello</html>'),
    '/to-loopback': (res) => res.writeHead(302, { location: `${fixtures.url}/face.jpg` }).end(),
    '/hang': (res) => res.socket!.once('close', () => hangClosed()), // never answers
  });
}

async function teardown() {
  await Promise.all([api.close(), tight.close(), fixtures.close()]);
  await detector.dispose();
  guard.restore();
}

const b64 = (bytes: Buffer) => bytes.toString('base64');

// ---------------------------------------------------------------------------------------------
const endpoints = suite('server: each endpoint returns the library results');
endpoints.before(setup);

endpoints('POST /detect_faces_from_base64/: plain base64 and a data: URL', async () => {
  const expected = await detector.detect([cartoon, gif, group]);
  const res = await postJson<Detect>(`${api.url}/detect_faces_from_base64/`, {
    images_base64: [b64(cartoon), `data:image/gif;base64,${b64(gif)}`, b64(group)],
  });
  assert.is(res.status, 200, res.text);
  assert.equal(res.body, viaJson({ result: expected }));
  assert.equal(
    res.body.result.map((r) => r.faces_count),
    [12, 1, 10],
  );
});

endpoints(
  'the options are passed on (confidence_threshold, clip_boxes, max_size, nms_iou, top_k, keep_top_k)',
  async () => {
    const options = {
      confidenceThreshold: 0.9,
      clipBoxes: false,
      maxSize: 320,
      nmsIou: 0.3,
      topK: 100,
      keepTopK: 5,
    };
    const expected = await detector.detect([group], options);
    const res = await postJson<Detect>(`${api.url}/detect_faces_from_base64`, {
      images_base64: [b64(group)],
      confidence_threshold: 0.9,
      clip_boxes: false,
      max_size: 320,
      nms_iou: 0.3,
      top_k: 100,
      keep_top_k: 5,
    });
    assert.is(res.status, 200, res.text);
    assert.equal(res.body, viaJson({ result: expected }));
    assert.is(res.body.result[0]!.faces_count, 5);
  },
);

endpoints('max_size 0 (original size) is bounded by the server limit', async () => {
  const limited = await listen({ detector, config: testConfig({ maxSizeLimit: 320 }) });
  try {
    const expected = await detector.detect([group], { maxSize: 320 });
    const res = await postJson<Detect>(`${limited.url}/detect_faces_from_base64/`, {
      images_base64: [b64(group)],
      max_size: 0,
    });
    assert.is(res.status, 200, res.text);
    assert.equal(res.body, viaJson({ result: expected }));
    const original = await detector.detect([group], { maxSize: 0 });
    assert.not.equal(res.body.result, viaJson(original));
  } finally {
    await limited.close();
  }
});

endpoints('POST /detect_faces_from_files/: several files, options as form fields', async () => {
  const expected = await detector.detect([mask, cartoon, gif], {
    confidenceThreshold: 0.7,
    clipBoxes: false,
  });
  const res = await postFiles<Detect>(
    `${api.url}/detect_faces_from_files/`,
    [{ data: mask }, { data: cartoon }, { data: gif, type: 'image/gif', name: 'face.gif' }],
    { confidence_threshold: '0.7', clip_boxes: 'false' },
  );
  assert.is(res.status, 200, res.text);
  assert.equal(res.body, viaJson({ result: expected }));
  assert.is(res.body.result.length, 3);
});

endpoints('POST /detect_faces_from_files/: one file, without the trailing slash', async () => {
  const expected = await detector.detect([gif]);
  const res = await postFiles<Detect>(`${api.url}/detect_faces_from_files`, [{ data: gif }]);
  assert.is(res.status, 200, res.text);
  assert.equal(res.body, viaJson({ result: expected }));
});

endpoints(
  'POST /detect_faces_from_urls/ against a loopback fixture server, allowed by the switch',
  async () => {
    const allowed = await listen({ detector, config: testConfig({ allowPrivateSources: true }) });
    try {
      const expected = await detector.detect([cartoon, group]);
      const res = await postJson<Detect>(`${allowed.url}/detect_faces_from_urls/`, {
        images_url: [`${fixtures.url}/face.jpg`, `${fixtures.url}/group.jpg`],
      });
      assert.is(res.status, 200, res.text);
      assert.equal(res.body, viaJson({ result: expected }));
    } finally {
      await allowed.close();
    }
  },
);

endpoints(
  'POST /detect_faces_from_urls/: the same loopback URL is refused without the switch, unfetched',
  async () => {
    const before = fixtures.hits.length;
    const res = await postJson<Detect>(`${api.url}/detect_faces_from_urls`, {
      images_url: [`${fixtures.url}/face.jpg`],
    });
    assert.is(res.status, 200, res.text);
    assert.is(res.body.result[0]!.error?.code, 'url_host_forbidden');
    assert.equal(res.body.result[0]!.faces, []);
    assert.is(fixtures.hits.length, before, 'the fixture server was contacted');
  },
);

// ---------------------------------------------------------------------------------------------
const table = suite('server: the error table (exact status and code)');

interface Row {
  name: string;
  send: () => Promise<{ status: number; body: unknown; headers: Headers }>;
  status: number;
  /** A request-level code, or per-image codes (null: the image succeeded). */
  code?: string;
  images?: (string | null)[];
}

const rows: Row[] = [
  {
    name: 'broken JSON',
    send: () => postJson(`${api.url}/detect_faces_from_base64/`, '{"images_base64": ["abc"'),
    status: 400,
    code: 'invalid_json',
  },
  {
    name: 'a JSON string instead of an object',
    send: () => postJson(`${api.url}/detect_faces_from_base64/`, '"abc"'),
    status: 400,
    code: 'invalid_json',
  },
  {
    name: 'wrong field type: images_base64 a string',
    send: () => postJson(`${api.url}/detect_faces_from_base64/`, { images_base64: b64(gif) }),
    status: 400,
    code: 'validation_error',
  },
  {
    name: 'wrong field type: a number in images_url',
    send: () => postJson(`${api.url}/detect_faces_from_urls/`, { images_url: [42] }),
    status: 400,
    code: 'validation_error',
  },
  {
    name: 'wrong field type: confidence_threshold a string',
    send: () =>
      postJson(`${api.url}/detect_faces_from_base64/`, {
        images_base64: [b64(gif)],
        confidence_threshold: 'high',
      }),
    status: 400,
    code: 'validation_error',
  },
  {
    name: 'out of range: confidence_threshold 2',
    send: () =>
      postJson(`${api.url}/detect_faces_from_base64/`, {
        images_base64: [b64(gif)],
        confidence_threshold: 2,
      }),
    status: 400,
    code: 'validation_error',
  },
  {
    name: 'max_size above the limit (2048)',
    send: () =>
      postJson(`${api.url}/detect_faces_from_base64/`, { images_base64: [b64(gif)], max_size: 4000 }),
    status: 400,
    code: 'validation_error',
  },
  {
    name: 'wrong form field: clip_boxes=maybe',
    send: () => postFiles(`${api.url}/detect_faces_from_files/`, [{ data: gif }], { clip_boxes: 'maybe' }),
    status: 400,
    code: 'validation_error',
  },
  {
    name: 'a file in another field than files',
    send: () => postFiles(`${api.url}/detect_faces_from_files/`, [{ data: gif, field: 'image' }]),
    status: 400,
    code: 'validation_error',
  },
  {
    name: 'missing images_url',
    send: () => postJson(`${api.url}/detect_faces_from_urls/`, { confidence_threshold: 0.5 }),
    status: 400,
    code: 'validation_error',
  },
  {
    name: 'empty list (JSON)',
    send: () => postJson(`${api.url}/detect_faces_from_base64/`, { images_base64: [] }),
    status: 422,
    code: 'no_images',
  },
  {
    name: 'empty list (multipart without files)',
    send: () => postFiles(`${api.url}/detect_faces_from_files/`, [], { confidence_threshold: '0.5' }),
    status: 422,
    code: 'no_images',
  },
  {
    name: 'too many images (JSON, 5 > 4)',
    send: () =>
      postJson(`${api.url}/detect_faces_from_urls/`, { images_url: Array(5).fill('http://x.test/a.jpg') }),
    status: 422,
    code: 'too_many_images',
  },
  {
    name: 'too many images (multipart, 5 > 4)',
    send: () => postFiles(`${api.url}/detect_faces_from_files/`, Array(5).fill({ data: gif })),
    status: 422,
    code: 'too_many_images',
  },
  {
    name: 'text/plain to a JSON endpoint',
    send: () =>
      request(`${api.url}/detect_faces_from_base64/`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain' },
        body: JSON.stringify({ images_base64: [b64(gif)] }),
      }),
    status: 415,
    code: 'unsupported_media_type',
  },
  {
    name: 'JSON to the files endpoint',
    send: () => postJson(`${api.url}/detect_faces_from_files/`, { files: [] }),
    status: 415,
    code: 'unsupported_media_type',
  },
  {
    name: 'body over the limit',
    send: () => postJson(`${tight.url}/detect_faces_from_urls/`, { images_url: ['x'.repeat(120_000)] }),
    status: 413,
    code: 'payload_too_large',
  },
  {
    name: 'base64 string over the limit',
    send: () => postJson(`${tight.url}/detect_faces_from_base64/`, { images_base64: ['A'.repeat(2004)] }),
    status: 413,
    code: 'payload_too_large',
  },
  {
    name: 'file over the limit',
    send: () => postFiles(`${tight.url}/detect_faces_from_files/`, [{ data: Buffer.alloc(60_000, 1) }]),
    status: 413,
    code: 'payload_too_large',
  },
  {
    name: 'files over the body limit together',
    send: () =>
      postFiles(`${tight.url}/detect_faces_from_files/`, Array(3).fill({ data: Buffer.alloc(40_000, 1) })),
    status: 413,
    code: 'payload_too_large',
  },
  {
    name: 'garbage base64 (the other image succeeds)',
    send: () =>
      postJson(`${api.url}/detect_faces_from_base64/`, { images_base64: [b64(gif), '%%% not base64 %%%'] }),
    status: 200,
    images: [null, 'invalid_base64'],
  },
  {
    name: 'a data: URL that is not base64',
    send: () => postJson(`${api.url}/detect_faces_from_base64/`, { images_base64: ['data:image/png,abc'] }),
    status: 200,
    images: ['invalid_base64'],
  },
  {
    name: 'truncated JPEG (base64)',
    send: () =>
      postJson(`${api.url}/detect_faces_from_base64/`, { images_base64: [b64(truncatedJpeg), b64(gif)] }),
    status: 200,
    images: ['image_decode_failed', null],
  },
  {
    name: 'truncated JPEG (file)',
    send: () => postFiles(`${api.url}/detect_faces_from_files/`, [{ data: truncatedJpeg }]),
    status: 200,
    images: ['image_decode_failed'],
  },
  {
    name: 'a text file',
    send: () =>
      postFiles(`${api.url}/detect_faces_from_files/`, [
        { data: gif },
        { data: textFile, type: 'text/plain' },
      ]),
    status: 200,
    images: [null, 'image_decode_failed'],
  },
  {
    name: 'zero-byte file',
    send: () => postFiles(`${api.url}/detect_faces_from_files/`, [{ data: Buffer.alloc(0) }, { data: gif }]),
    status: 200,
    images: ['empty_image', null],
  },
  {
    name: 'empty base64 string',
    send: () => postJson(`${api.url}/detect_faces_from_base64/`, { images_base64: [''] }),
    status: 200,
    images: ['empty_image'],
  },
  {
    name: 'a 20000x20000 PNG header (file)',
    send: () => postFiles(`${api.url}/detect_faces_from_files/`, [{ data: bomb, type: 'image/png' }]),
    status: 200,
    images: ['image_too_large'],
  },
  {
    name: 'a 20000x20000 PNG header (base64)',
    send: () => postJson(`${api.url}/detect_faces_from_base64/`, { images_base64: [b64(bomb)] }),
    status: 200,
    images: ['image_too_large'],
  },
  {
    name: 'unknown path',
    send: () => request(`${api.url}/detect_faces`),
    status: 404,
    code: 'not_found',
  },
  {
    name: 'GET on a POST endpoint',
    send: () => request(`${api.url}/detect_faces_from_base64/`),
    status: 405,
    code: 'method_not_allowed',
  },
];

for (const row of rows) {
  table(
    `${row.name}: ${row.status} ${row.code ?? row.images!.map((c) => c ?? 'ok').join(', ')}`,
    async () => {
      const res = await row.send();
      assert.is(res.status, row.status, JSON.stringify(res.body));
      if (row.code) {
        const body = res.body as ErrorBody;
        assert.is(body.error.code, row.code, body.error.message);
        assert.type(body.error.message, 'string');
        assert.equal(Object.keys(body), ['error']);
        assert.not.match(body.error.message, /\n\s+at /, 'a stack trace');
      } else {
        const { result } = res.body as Detect;
        assert.equal(
          result.map((r) => r.error?.code ?? null),
          row.images,
        );
        result.forEach((r, i) => {
          if (r.error) {
            assert.is(r.faces_count, 0);
            assert.equal(r.faces, []);
            assert.match(r.error.message, new RegExp(`^image ${i}: `));
          } else assert.ok(r.faces_count > 0, `image ${i} found no face`);
        });
      }
    },
  );
}

table('405 names the allowed methods in Allow', async () => {
  const res = await request(`${api.url}/detect_faces_from_files/`);
  assert.is(res.status, 405);
  assert.is(res.headers.get('allow'), 'POST');
});

table('validation messages name the field', async () => {
  const res = await postJson<ErrorBody>(`${api.url}/detect_faces_from_base64/`, {
    images_base64: [b64(gif)],
    top_k: 1.5,
  });
  assert.is(res.status, 400);
  assert.match(res.body.error.message, /^top_k: /);
  const nested = await postJson<ErrorBody>(`${api.url}/detect_faces_from_urls/`, { images_url: ['a', 7] });
  assert.match(nested.body.error.message, /^images_url\[1\]: /);
});

// ---------------------------------------------------------------------------------------------
const urls = suite('server: URL fetching refuses private addresses and redirects into them');

/** Host names the tests resolve themselves (no real DNS): images.test stands for a public host. */
const lookups: string[] = [];
function testLookup(
  hostname: string,
  _options: { all: true },
  callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
): void {
  lookups.push(hostname);
  const table: Record<string, string> = { 'images.test': '127.0.0.1', 'private.test': '10.0.0.1' };
  const address = table[hostname];
  if (address) callback(null, [{ address, family: 4 }]);
  else callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), []);
}

let resolving: TestServer;
urls.before(async () => {
  // The production policy (public addresses only), except that images.test -- which the test resolver
  // maps to the loopback fixture server -- counts as public.
  resolving = await listen({
    detector,
    config: testConfig(),
    fetchOptions: {
      lookup: testLookup,
      isAddressAllowed: (address, _family, host) => host === 'images.test' || isPublicAddress(address),
    },
  });
});
urls.after(() => resolving.close());

const port = () => new URL(fixtures.url).port;

urls('a URL to a 404: url_http_status; to a non-image: image_decode_failed', async () => {
  const res = await postJson<Detect>(`${resolving.url}/detect_faces_from_urls/`, {
    images_url: [
      `http://images.test:${port()}/missing.jpg`,
      `http://images.test:${port()}/page.html`,
      `http://images.test:${port()}/face.jpg`,
    ],
  });
  assert.is(res.status, 200, res.text);
  assert.equal(
    res.body.result.map((r) => r.error?.code ?? null),
    ['url_http_status', 'image_decode_failed', null],
  );
  assert.is(res.body.result[2]!.faces_count, 12);
});

urls('a host resolving to a private address (10.0.0.1): url_host_forbidden, nothing connected', async () => {
  const before = lookups.length;
  const res = await postJson<Detect>(`${resolving.url}/detect_faces_from_urls/`, {
    images_url: [
      'http://private.test/face.jpg',
      'http://10.0.0.1/face.jpg',
      'http://[::ffff:10.0.0.1]/a.jpg',
    ],
  });
  assert.is(res.status, 200, res.text);
  assert.equal(
    res.body.result.map((r) => r.error?.code),
    ['url_host_forbidden', 'url_host_forbidden', 'url_host_forbidden'],
  );
  assert.equal(lookups.slice(before), ['private.test'], 'the resolver was asked once, for the host name');
  assert.not.match(res.body.result[0]!.error!.message, /10\.0\.0\.1/, 'the address is not disclosed');
  assert.equal(guard.refused, [], 'a connection to a non-loopback address was attempted');
});

urls('a redirect into loopback: url_host_forbidden, the target is never requested', async () => {
  const before = fixtures.hits.length;
  const res = await postJson<Detect>(`${resolving.url}/detect_faces_from_urls/`, {
    images_url: [`http://images.test:${port()}/to-loopback`],
  });
  assert.is(res.status, 200, res.text);
  assert.is(res.body.result[0]!.error?.code, 'url_host_forbidden');
  assert.match(res.body.result[0]!.error!.message, /redirect 1/);
  assert.equal(fixtures.hits.slice(before), ['/to-loopback']);
});

urls('a client that goes away cancels its downloads', async () => {
  const closed = new Promise<void>((resolve) => (hangClosed = resolve));
  const client = new AbortController();
  const res = postJson(
    `${resolving.url}/detect_faces_from_urls/`,
    { images_url: [`http://images.test:${port()}/hang`] },
    {},
    client.signal,
  );
  await new Promise((resolve) => setTimeout(resolve, 300));
  client.abort();
  await rejects(res, /aborted/);
  const start = performance.now();
  await closed; // the download timeout is 10 s
  assert.ok(performance.now() - start < 2000);
});

urls('an unresolvable host: url_dns_failed; another scheme: url_scheme_not_allowed', async () => {
  const res = await postJson<Detect>(`${resolving.url}/detect_faces_from_urls/`, {
    images_url: ['http://nowhere.test/a.jpg', 'ftp://images.test/a.jpg', 'not a url'],
  });
  assert.equal(
    res.body.result.map((r) => r.error?.code),
    ['url_dns_failed', 'url_scheme_not_allowed', 'url_invalid'],
  );
});

// ---------------------------------------------------------------------------------------------
const docs = suite('server: OpenAPI document, metrics, request ids, the error middleware');
docs.after(teardown);

/** The parts of the OpenAPI document the test reads. */
interface OpenApiDoc {
  openapi: string;
  paths: Record<
    string,
    {
      post: {
        requestBody: {
          content: Record<string, { schema: { properties: Record<string, { maxItems?: number }> } }>;
        };
        responses: Record<string, unknown>;
      };
    }
  >;
  components: { schemas: Record<string, { properties: Record<string, unknown> }> };
}

docs('/openapi.json describes every endpoint, its fields, responses and error codes', async () => {
  const res = await request<OpenApiDoc>(`${api.url}/openapi.json`);
  assert.is(res.status, 200);
  const doc = res.body;
  assert.is(doc.openapi, '3.1.0');
  for (const path of [
    '/detect_faces_from_urls/',
    '/detect_faces_from_base64/',
    '/detect_faces_from_files/',
    '/ready/',
    '/health',
    '/metrics',
    '/openapi.json',
    '/docs',
  ]) {
    assert.ok(doc.paths[path], path);
  }
  const text = JSON.stringify(doc);
  for (const code of [
    ...Object.keys(REQUEST_ERRORS).filter((c) => !['not_found', 'method_not_allowed'].includes(c)),
    ...Object.keys(IMAGE_ERRORS),
  ]) {
    assert.ok(text.includes(`\`${code}\``), `error code ${code} is not documented`);
  }
  for (const [path, field, content] of [
    ['/detect_faces_from_urls/', 'images_url', 'application/json'],
    ['/detect_faces_from_base64/', 'images_base64', 'application/json'],
    ['/detect_faces_from_files/', 'files', 'multipart/form-data'],
  ] as const) {
    const op = doc.paths[path]!.post;
    const props = op.requestBody.content[content]!.schema.properties;
    for (const name of [
      field,
      'confidence_threshold',
      'clip_boxes',
      'max_size',
      'nms_iou',
      'top_k',
      'keep_top_k',
    ]) {
      assert.ok(props[name], `${path} ${name}`);
    }
    assert.equal(Object.keys(op.responses), ['200', '400', '413', '415', '422', '429', '500', '503']);
  }
  assert.is(
    doc.paths['/detect_faces_from_base64/']!.post.requestBody.content['application/json']!.schema.properties
      .images_base64!.maxItems,
    4,
  );
  assert.ok(doc.components.schemas.DetectResponse!.properties.result);
});

docs("the base64 endpoint's documented example works as is", async () => {
  const res = await postJson<Detect>(`${api.url}/detect_faces_from_base64/`, {
    images_base64: [EXAMPLE_BASE64_IMAGE],
  });
  assert.is(res.status, 200, res.text);
  assert.equal(res.body, { result: [{ faces_count: 0, faces: [] }] });
});

docs(
  '/metrics counts requests by route and status, images by outcome and decoder, faces, batches and stages',
  async () => {
    const res = await request<string>(`${api.url}/metrics`);
    assert.is(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    const m = res.body;
    const route = { method: 'POST', route: '/detect_faces_from_base64/' };
    assert.ok(metricValue(m, 'facedet_http_requests_total', { ...route, status: '200' }) >= 5);
    assert.ok(metricValue(m, 'facedet_http_requests_total', { ...route, status: '400' }) >= 3);
    assert.ok(
      metricValue(m, 'facedet_http_request_duration_seconds_count', { ...route, status: '200' }) >= 5,
    );
    assert.ok(metricValue(m, 'facedet_images_total', { endpoint: 'base64', outcome: 'invalid_base64' }) >= 1);
    assert.ok(metricValue(m, 'facedet_images_total', { endpoint: 'files', outcome: 'ok' }) >= 4);
    assert.ok(metricValue(m, 'facedet_faces_total', { endpoint: 'base64' }) >= 23);
    assert.ok(metricValue(m, 'facedet_batches_total') >= 10);
    const decoded = (decoder: string) => metricValue(m, 'facedet_images_decoded_total', { decoder });
    assert.ok(decoded('libjpeg-turbo') + decoded('sharp') >= 10);
    // The fixture JPEGs are plain ones: with the JPEG fast path (the addon's engines) it decodes them.
    if (detector.info().jpegDecoder !== 'sharp') assert.ok(decoded('libjpeg-turbo') >= 4);
    assert.ok(metricValue(m, 'facedet_batch_size_count') >= 10);
    assert.ok(metricValue(m, 'facedet_inference_duration_seconds_count') >= 10);
    for (const stage of [
      'body_parse',
      'base64_decode',
      'detect',
      'queue_wait',
      'pack',
      'infer',
      'postprocess',
      'serialize',
    ]) {
      assert.ok(metricValue(m, 'facedet_stage_duration_seconds_count', { stage }) >= 1, stage);
    }
    assert.match(m, /^facedet_queue_depth 0$/m);
    // The native caches' memory: LibTorch's tensor cache where the addon is loaded (its floor, 1 GiB, at
    // least; blocks kept from the networks run), and the colour tables (process-wide: other tests' JPEGs
    // with a profile may have left some).
    if (detector.info().engine.backend === 'torch' && nativeCaches().tensorCache?.floorBytes) {
      assert.ok(metricValue(m, 'facedet_cpu_tensor_cache_bytes', { kind: 'budget' }) >= 2 ** 30);
      assert.ok(metricValue(m, 'facedet_cpu_tensor_cache_bytes', { kind: 'cached' }) > 0);
    }
    assert.match(m, /^facedet_colour_tables \d+$/m);
    assert.is(metricValue(m, 'facedet_colour_tables'), nativeCaches().colourTables ?? 0);
    assert.match(m, /^facedet_ready 1$/m);
  },
);

docs('X-Request-Id is echoed (or made) and is on the log line of the request', async () => {
  const res = await request(`${api.url}/health`, { headers: { 'x-request-id': 'client-id-42' } });
  assert.is(res.status, 200);
  assert.is(res.headers.get('x-request-id'), 'client-id-42');
  const line = logs.lines.find((l) => l.reqId === 'client-id-42');
  assert.ok(line, 'no log line with the request id');
  assert.is(line!.status, 200);
  assert.is(line!.route, '/health');
  const odd = await request(`${api.url}/health`, { headers: { 'x-request-id': 'no spaces allowed' } });
  assert.match(odd.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
});

docs(
  'an unexpected error: 500 internal_error without details, logged with the request id and stack',
  async () => {
    const capture = captureLogs('info');
    const app = new Koa();
    app.use(requestId(capture.logger));
    app.use(errorHandler());
    app.use(() => {
      throw new Error('secret detail /etc/passwd');
    });
    const server = http.createServer(app.callback());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port: p } = server.address() as { port: number };
      const res = await request<ErrorBody>(`http://127.0.0.1:${p}/x`, {
        headers: { 'x-request-id': 'boom-1' },
      });
      assert.is(res.status, 500);
      assert.equal(res.body, { error: { code: 'internal_error', message: 'internal server error' } });
      assert.not.ok(res.text.includes('secret'));
      const line = capture.lines.find((l) => l.msg === 'unexpected error');
      assert.ok(line);
      assert.is(line!.reqId, 'boom-1');
      assert.match(String((line!.err as { stack: string }).stack), /secret detail/);
    } finally {
      server.close();
    }
  },
);

docs('/health is 200 and the JSON 404 for unknown paths', async () => {
  assert.equal((await request(`${api.url}/health`)).body, { status: 'ok' });
  const res = await request<ErrorBody>(`${api.url}/nothing/here`);
  assert.is(res.status, 404);
  assert.is(res.body.error.code, 'not_found');
});

endpoints.run();
table.run();
urls.run();
docs.run();
