// GET /docs in a real browser: Debian's Chromium (headless, through playwright-core) loads Swagger UI
// from the server itself (no CDN: any other host is blocked and recorded) and "Try it out" on
// /detect_faces_from_base64/ with a real face image shows the detection result.
import fs from 'node:fs';
import sharp from 'sharp';
import { chromium, type Browser } from 'playwright-core';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, type ImageResult } from '../src';
import { MOBILENET_DIR, requireModel } from './helpers/model';
import { type TestServer, listen, request, seedBytes, testConfig, viaJson } from './helpers/server';

const CHROMIUM = process.env.FACEDET_TEST_CHROMIUM ?? '/usr/bin/chromium';
const modelDir = requireModel(MOBILENET_DIR);

let detector: FaceDetector;
let server: TestServer;
let browser: Browser;

const docs = suite('server: /docs (Swagger UI) in headless Chromium');
docs.before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium missing at ${CHROMIUM}: sudo apt-get install chromium (or set FACEDET_TEST_CHROMIUM)`,
    );
  }
  detector = await FaceDetector.create({ model: modelDir, warmup: [] });
  server = await listen({ detector, config: testConfig() });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});
docs.after(async () => {
  await browser?.close();
  await server?.close();
  await detector?.dispose();
});

docs('the assets come from the swagger-ui-dist package; nothing else is served from /docs/', async () => {
  const js = await request<string>(`${server.url}/docs/swagger-ui-bundle.js`);
  assert.is(js.status, 200);
  assert.match(js.headers.get('content-type') ?? '', /javascript/);
  const packaged = fs.readFileSync(require.resolve('swagger-ui-dist/swagger-ui-bundle.js'), 'utf8');
  assert.is(js.text.length, packaged.length);
  for (const path of ['/docs/package.json', '/docs/%2e%2e%2fpackage.json', '/docs/..%2F..%2Fpackage.json']) {
    assert.is((await request(`${server.url}${path}`)).status, 404, path);
  }
});

docs('the page loads and "Try it out" on /detect_faces_from_base64/ shows the result', async () => {
  const face = await sharp(seedBytes('single_face.gif')).resize(160).jpeg({ quality: 85 }).toBuffer();
  const expected = viaJson(await detector.detect([face]));
  assert.is(expected[0]!.faces_count, 1);

  const page = await browser.newPage();
  const offHost: string[] = [];
  const pageErrors: string[] = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  await page.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === '127.0.0.1') return route.continue();
    offHost.push(url.href);
    return route.abort();
  });
  try {
    await page.goto(`${server.url}/docs`);
    const op = page.locator('#operations-detection-detectFacesFromBase64');
    await op.waitFor({ timeout: 20_000 });
    assert.match((await page.locator('.info .title').textContent()) ?? '', /facedet-native/);
    await op.locator('.opblock-summary').click();
    await op.locator('button.try-out__btn').click();
    const body = op.locator('textarea.body-param__text');
    assert.match(await body.inputValue(), /images_base64/, 'the documented example is prefilled');
    await body.fill(JSON.stringify({ images_base64: [face.toString('base64')], confidence_threshold: 0.5 }));
    await op.locator('button.execute').click();
    const status = op.locator('.live-responses-table .response .response-col_status').first();
    await status.waitFor({ timeout: 20_000 });
    assert.is((await status.textContent())?.trim(), '200');
    const shown = await op
      .locator('.live-responses-table .response-col_description pre')
      .first()
      .textContent();
    const result = JSON.parse(shown ?? '') as { result: ImageResult[] };
    assert.equal(result, { result: expected });
    assert.equal(offHost, [], 'the page requested other hosts');
    assert.equal(pageErrors, []);
  } finally {
    await page.close();
  }
});

docs.run();
