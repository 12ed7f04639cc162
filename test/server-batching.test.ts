// The server under concurrency: images of concurrent requests share native batches (proven by the
// metrics), a full queue answers 503 + Retry-After at once, and the per-client rate limit answers 429.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, type ImageResult } from '../src';
import { Metrics } from '../src/server/metrics';
import { EXAMPLE_BASE64_IMAGE } from '../src/server/routes/detect.schema';
import { MOBILENET_DIR, requireModel } from './helpers/model';
import {
  type ErrorBody,
  type Reply,
  type TestServer,
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

let detector: FaceDetector;
let metrics: Metrics;
let server: TestServer;

const batching = suite('server: dynamic batching across requests, queue limit');
batching.before(async () => {
  metrics = new Metrics({ defaultMetrics: false });
  detector = await FaceDetector.create({
    model: modelDir,
    warmup: [],
    maxBatchSize: 8,
    maxQueueDelayMs: 25,
    maxQueueSize: 32,
    onBatch: metrics.observeBatch,
  });
  server = await listen({ detector, metrics, config: testConfig({ maxImagesPerRequest: 40 }) });
});

const scrape = async () => (await request<string>(`${server.url}/metrics`)).body;

batching('32 concurrent requests are served in fewer native batches than requests', async () => {
  const image = seedBytes('cartoon.jpg').toString('base64');
  const expected = viaJson({
    result: await detector.detect([Buffer.from(image, 'base64')], { maxSize: 320 }),
  });
  const before = await scrape();
  const replies = await Promise.all(
    Array.from({ length: 32 }, () =>
      postJson<Detect>(`${server.url}/detect_faces_from_base64/`, { images_base64: [image], max_size: 320 }),
    ),
  );
  for (const res of replies) {
    assert.is(res.status, 200, res.text);
    assert.equal(res.body, expected);
  }
  const after = await scrape();
  const delta = (name: string, labels?: Record<string, string>) =>
    metricValue(after, name, labels) - metricValue(before, name, labels);
  const batches = delta('facedet_batches_total');
  assert.is(delta('facedet_batch_size_sum'), 32, 'images through the batcher');
  assert.is(delta('facedet_batch_size_count'), batches);
  assert.ok(batches < 32, `${batches} batches for 32 requests`);
  assert.ok(batches <= 16, `${batches} batches: hardly any batching`);
  assert.ok(delta('facedet_batch_size_bucket', { le: '1' }) < batches, 'every batch held one image');
  const route = { method: 'POST', route: '/detect_faces_from_base64/', status: '200' };
  assert.is(delta('facedet_http_requests_total', route), 32);
  console.log(`    32 requests -> ${batches} native batches`);
});

batching(
  'a burst beyond the queue gets 503 overloaded + Retry-After at once; admitted requests finish',
  async () => {
    const group = seedBytes('diverse_group.jpg');
    const expected = viaJson({ result: await detector.detect(Array(8).fill(group), { maxSize: 480 }) });
    const pending: Promise<Reply<Detect | ErrorBody>>[] = [];
    let depthSeen = -1;
    let scraping: Promise<void> | undefined;
    for (let i = 0; i < 6; i++) {
      const reply = postFiles<Detect | ErrorBody>(
        `${server.url}/detect_faces_from_files/`,
        Array(8).fill({ data: group }),
        { max_size: '480' },
      );
      pending.push(reply);
      // At the first refusal admitted work is running: the queue depth gauge shows it.
      void reply.then((res) => {
        if (res.status === 503 && !scraping) {
          scraping = scrape().then((text) => {
            depthSeen = metricValue(text, 'facedet_queue_depth');
          });
        }
      });
    }
    const replies = await Promise.all(pending);
    await scraping;
    const ok = replies.filter((r) => r.status === 200);
    const refused = replies.filter((r) => r.status === 503);
    assert.is(ok.length + refused.length, 6, replies.map((r) => r.status).join(','));
    assert.ok(refused.length >= 2, `${refused.length} refused: 48 images cannot fit a queue of 32`);
    assert.ok(ok.length >= 1, 'nothing was admitted');
    for (const res of ok) assert.equal(res.body, expected);
    for (const res of refused) {
      assert.is((res.body as ErrorBody).error.code, 'overloaded');
      assert.is(res.headers.get('retry-after'), '1');
    }
    const slowestRefusal = Math.max(...refused.map((r) => r.ms));
    const fastestSuccess = Math.min(...ok.map((r) => r.ms));
    assert.ok(
      slowestRefusal < fastestSuccess,
      `refused after ${slowestRefusal} ms, served after ${fastestSuccess} ms`,
    );
    console.log(
      `    ${ok.length} served (fastest ${fastestSuccess.toFixed(0)} ms), ${refused.length} refused ` +
        `(slowest ${slowestRefusal.toFixed(0)} ms), queue depth at a refusal ${depthSeen}`,
    );
    assert.is(replies[0]!.status, 200, 'the first request was refused');
    assert.ok(depthSeen > 0, `queue depth ${depthSeen} while requests were in progress`);
    assert.is(detector.pending, 0);
  },
);

batching('a request with more images than the queue can ever hold: 422 too_many_images', async () => {
  const image = EXAMPLE_BASE64_IMAGE;
  const res = await postJson<ErrorBody>(`${server.url}/detect_faces_from_base64/`, {
    images_base64: Array(33).fill(image),
  });
  assert.is(res.status, 422);
  assert.is(res.body.error.code, 'too_many_images');
});

batching.after(() => server.close());

// ---------------------------------------------------------------------------------------------
const limits = suite('server: per-client rate limit');
limits.after(() => detector.dispose());

const tiny = { images_base64: [EXAMPLE_BASE64_IMAGE] };

limits(
  'the 4th request of a burst of 3 at 2/s is 429 rate_limited with Retry-After; others are unaffected',
  async () => {
    const limited = await listen({
      detector,
      config: testConfig({ rateLimit: 2, rateLimitBurst: 3, trustProxy: true }),
    });
    try {
      const asA = { 'x-forwarded-for': '203.0.113.7' };
      const statuses: number[] = [];
      let refusal: Reply<ErrorBody> | undefined;
      for (let i = 0; i < 5; i++) {
        const res = await postJson<ErrorBody>(`${limited.url}/detect_faces_from_base64/`, tiny, asA);
        statuses.push(res.status);
        if (res.status === 429) refusal ??= res;
      }
      assert.equal(statuses, [200, 200, 200, 429, 429]);
      assert.is(refusal!.body.error.code, 'rate_limited');
      assert.is(refusal!.headers.get('retry-after'), '1');
      // Another client has its own bucket; health checks are not limited.
      const asB = { 'x-forwarded-for': '198.51.100.9' };
      assert.is((await postJson(`${limited.url}/detect_faces_from_base64/`, tiny, asB)).status, 200);
      assert.is((await request(`${limited.url}/health`, { headers: asA })).status, 200);
      // Tokens come back at the rate.
      await new Promise((resolve) => setTimeout(resolve, 700));
      assert.is((await postJson(`${limited.url}/detect_faces_from_base64/`, tiny, asA)).status, 200);
      const m = (await request<string>(`${limited.url}/metrics`)).body;
      const labels = { method: 'POST', route: '/detect_faces_from_base64/', status: '429' };
      assert.is(metricValue(m, 'facedet_http_requests_total', labels), 2);
    } finally {
      await limited.close();
    }
  },
);

limits('without trust-proxy, X-Forwarded-For does not buy a fresh bucket', async () => {
  const limited = await listen({ detector, config: testConfig({ rateLimit: 1, rateLimitBurst: 1 }) });
  try {
    const first = await postJson(`${limited.url}/detect_faces_from_base64/`, tiny, {
      'x-forwarded-for': '192.0.2.1',
    });
    const second = await postJson<ErrorBody>(`${limited.url}/detect_faces_from_base64/`, tiny, {
      'x-forwarded-for': '192.0.2.2',
    });
    assert.is(first.status, 200);
    assert.is(second.status, 429);
    assert.is(second.body.error.code, 'rate_limited');
  } finally {
    await limited.close();
  }
});

batching.run();
limits.run();
