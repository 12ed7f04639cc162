// The library end to end with the real addon and model: equivalence with the PyTorch/NumPy
// reference pipeline, orientation, mixed-size batches, ResNet50, the bad-call table.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, FacedetError, OverloadedError, type ImageResult } from '../src';
import { loadBinding } from '../src/native';
import { rejects } from './helpers/assert';
import { matchFaces, toRef, type RefFace } from './helpers/faces';
import { FIXTURES, MOBILENET_DIR, RESNET50_SYNTHETIC_DIR, requireModel } from './helpers/model';

const modelDir = requireModel(MOBILENET_DIR);
const seed = (name: string) => path.join(FIXTURES, 'seed-images', name);

interface RefImage {
  source: string;
  root: number;
  png: string;
  scale: [number, number];
  'threshold_0.5': RefFace[];
  'threshold_0.02': RefFace[];
}
const reference = JSON.parse(
  fs.readFileSync(path.join(modelDir, 'reference', 'detections.json'), 'utf8'),
) as {
  roots: string[];
  images: RefImage[];
};

let detector: FaceDetector;

for (const backend of ['torch', 'onnxruntime'] as const) {
  const equivalence = suite(`detector (${backend}): equals the PyTorch/NumPy reference pipeline`);
  equivalence.before(async () => {
    detector = await FaceDetector.create({ model: modelDir, backend, warmup: [] });
    assert.is(detector.info().engine.backend, backend);
  });
  equivalence.after(() => detector.dispose());

  equivalence('the reference covers the seed images and the WIDER fixtures', () => {
    const sources = reference.images.map((i) => i.source);
    for (const name of fs.readdirSync(path.join(FIXTURES, 'seed-images')))
      assert.ok(sources.includes(name), name);
    assert.ok(sources.filter((s) => s.includes('--')).length >= 6, 'WIDER images');
  });

  equivalence(
    'same image tensor: every face at score >= 0.5 matched at IoU >= 0.95, landmarks within 1 px',
    async () => {
      let total = 0;
      for (const image of reference.images) {
        const png = path.join(modelDir, 'reference', image.png);
        const result = (await detector.detect(png, { maxSize: 0 })) as ImageResult;
        const report = matchFaces(image['threshold_0.5'], result.faces.map(toRef), {
          minScore: 0.5,
          minIou: 0.95,
        });
        assert.equal(report.missing, [], `${image.source}: reference faces we missed`);
        assert.equal(report.extra, [], `${image.source}: faces the reference does not have`);
        assert.ok(
          report.worstLandmarkPx <= 1,
          `${image.source}: landmark off by ${report.worstLandmarkPx} px`,
        );
        total += report.matched;
      }
      assert.ok(total > 250, `only ${total} faces compared`);
    },
  );

  equivalence('at the evaluation threshold (0.02) the candidates match too (top 200 by score)', async () => {
    for (const image of reference.images) {
      const png = path.join(modelDir, 'reference', image.png);
      const result = await detector.detect(png, { maxSize: 0, confidenceThreshold: 0.02 });
      const ours = result.faces.map(toRef).slice(0, image['threshold_0.02'].length);
      const report = matchFaces(image['threshold_0.02'], ours, { minScore: 0.1, minIou: 0.95 });
      // NMS may order near-equal scores differently: allow one face either way per image.
      assert.ok(
        report.missing.length <= 1 && report.extra.length <= 1,
        `${image.source}: ${JSON.stringify(report)}`,
      );
    }
  });

  equivalence('from the original files (sharp decoding and resizing), the faces still match', async () => {
    for (const image of reference.images) {
      const file = path.join(reference.roots[image.root]!, image.source);
      const result = await detector.detect(file);
      const [sx, sy] = image.scale;
      const expected = image['threshold_0.5'].map((f) => ({
        ...f,
        box: [f.box[0]! / sx, f.box[1]! / sy, f.box[2]! / sx, f.box[3]! / sy],
        landmarks: f.landmarks.map((p) => [p[0]! / sx, p[1]! / sy]),
      }));
      const report = matchFaces(expected, result.faces.map(toRef), {
        minScore: 0.6,
        minIou: 0.8,
        scoreSlack: 0.1,
      });
      assert.equal(report.missing, [], `${image.source}: missed`);
      assert.equal(report.extra, [], `${image.source}: extra`);
    }
  });

  equivalence('a batch tensor reused from an earlier image gives the faces a fresh one gives', async () => {
    // 630x470 and 470x630 pad to 640x480 and 480x640: tensors of one length, laid out differently, so
    // the second reuses the first's array (pixels and padding in other places).
    const photo = seed('diverse_group.jpg');
    const crop = (width: number, height: number) =>
      sharp(photo).extract({ left: 0, top: 0, width, height }).png().toBuffer();
    const [wide, tall] = await Promise.all([crop(630, 470), crop(470, 630)]);
    const fresh = await FaceDetector.create({ model: modelDir, backend, warmup: [] });
    const expected = await fresh.detect(tall);
    await fresh.dispose();
    assert.ok(expected.faces_count > 0, 'the crop has faces');
    await detector.detect(wide);
    assert.equal(await detector.detect(tall), expected);
  });

  equivalence.run();
}

const behaviour = suite('detector: behaviour');
behaviour.before(async () => {
  detector = await FaceDetector.create({ model: modelDir, warmup: [] });
});
behaviour.after(() => detector.dispose());

behaviour(
  'EXIF orientation: pixels stored rotated with a tag that undoes it give the same faces',
  async () => {
    const upright = await sharp(seed('diverse_group.jpg')).png().toBuffer();
    const expected = (await detector.detect(upright)) as ImageResult;
    assert.ok(expected.faces_count >= 5);
    for (const [angle, tag] of [
      [-90, 6],
      [90, 8],
      [180, 3],
    ] as const) {
      const rotated = await sharp(upright).rotate(angle).png().toBuffer();
      const tagged = await sharp(rotated).withMetadata({ orientation: tag }).png().toBuffer();
      const result = (await detector.detect(tagged)) as ImageResult;
      assert.equal(result, expected, `orientation ${tag}`);
      // without the tag, the faces are elsewhere (the test would notice an ignored tag)
      const untagged = (await detector.detect(rotated)) as ImageResult;
      assert.not.equal(untagged, expected);
    }
  },
);

behaviour('mixed sizes in one batch give the same faces as each image alone', async () => {
  const files = ['diverse_group.jpg', 'single_face.gif', 'cartoon.jpg', 'surgical_mask.jpg'].map(seed);
  const alone: ImageResult[] = [];
  for (const file of files) alone.push((await detector.detect(file)) as ImageResult);
  const batched = await FaceDetector.create({
    model: modelDir,
    maxBatchSize: 4,
    maxQueueDelayMs: 50,
    warmup: [],
  });
  const together = await batched.detect(files);
  assert.is(batched.batches, 1, 'one native batch');
  together.forEach((result, i) => {
    const report = matchFaces(alone[i]!.faces.map(toRef), result.faces.map(toRef), {
      minScore: 0.5,
      minIou: 0.9,
      scoreSlack: 0.05,
    });
    assert.equal(report.missing, [], files[i]);
    assert.equal(report.extra, [], files[i]);
    assert.ok(report.worstLandmarkPx < 2, `${files[i]}: ${report.worstLandmarkPx}`);
  });
  await batched.dispose();
});

behaviour('one undecodable image gets an error naming its index; the others succeed', async () => {
  const results = await detector.detect([
    seed('single_face.gif'),
    Buffer.from('not an image'),
    '/nonexistent.jpg',
  ]);
  assert.is(results[0]!.faces_count, 1);
  assert.is(results[0]!.error, undefined);
  assert.equal(results[1]!.faces, []);
  assert.is(results[1]!.faces_count, 0);
  assert.is(results[1]!.error!.code, 'image_decode_failed');
  assert.match(results[1]!.error!.message, /^image 1: cannot read the image: /);
  assert.is(results[2]!.error!.code, 'image_unreadable');
  assert.match(results[2]!.error!.message, /^image 2: /);
});

behaviour('options: threshold, clipping, maxSize, keepTopK', async () => {
  const file = seed('many_faces.jpg');
  const strict = (await detector.detect(file, { confidenceThreshold: 0.5 })) as ImageResult;
  const loose = (await detector.detect(file, { confidenceThreshold: 0.02 })) as ImageResult;
  assert.ok(strict.faces_count < loose.faces_count);
  assert.ok(strict.faces.every((f) => f.confidence > 0.5));
  const top3 = (await detector.detect(file, { confidenceThreshold: 0.02, keepTopK: 3 })) as ImageResult;
  assert.equal(
    top3.faces.map((f) => f.confidence),
    loose.faces.slice(0, 3).map((f) => f.confidence),
  );
  // the sorted-by-score contract
  loose.faces.forEach((f, i) => i && assert.ok(f.confidence <= loose.faces[i - 1]!.confidence));
  // coordinates are in the original 3000x2171 image whatever maxSize is
  const small = (await detector.detect(file, { maxSize: 640 })) as ImageResult;
  assert.ok(small.faces.some((f) => f.bounding_box[2] > 2000));
  const { width, height } = await sharp(file).metadata();
  for (const f of loose.faces) {
    const [x1, y1, x2, y2] = f.bounding_box;
    assert.ok(x1 >= 0 && y1 >= 0 && x2 <= width && y2 <= height);
  }
});

behaviour('boxes reach outside the image only when clipBoxes is false', async () => {
  // a face cut by the left edge
  const crop = await sharp(seed('diverse_group.jpg'))
    .extract({ left: 100, top: 200, width: 400, height: 300 })
    .toBuffer();
  const clipped = (await detector.detect(crop, { confidenceThreshold: 0.3 })) as ImageResult;
  const free = (await detector.detect(crop, { confidenceThreshold: 0.3, clipBoxes: false })) as ImageResult;
  assert.ok(free.faces.some((f) => f.bounding_box[0] < 0));
  assert.ok(clipped.faces.every((f) => f.bounding_box[0] >= 0));
});

behaviour('overload: more images than maxQueueSize are refused at once with OverloadedError', async () => {
  const small = await FaceDetector.create({ model: modelDir, maxQueueSize: 2, warmup: [] });
  const error = await rejects(
    small.detect([seed('mask.jpg'), seed('mask.jpg'), seed('mask.jpg')]),
    'the detector is busy: 0 image(s) in progress, limit 2',
    OverloadedError,
  );
  assert.is((error as OverloadedError).code, 'overloaded');
  const busy = small.detect([seed('mask.jpg'), seed('mask.jpg')]);
  await rejects(
    small.detect(seed('mask.jpg')),
    /the detector is busy: 2 image\(s\) in progress/,
    OverloadedError,
  );
  await busy;
  await small.dispose();
});

behaviour('dispose() lets detections in flight finish, then refuses new ones', async () => {
  const d = await FaceDetector.create({ model: modelDir, warmup: [] });
  const pending = d.detect([seed('diverse_group.jpg'), seed('many_faces.jpg')]);
  const disposed = d.dispose();
  const results = await pending;
  assert.is(results[0]!.faces_count, 10);
  await disposed;
  await rejects(d.detect(seed('mask.jpg')), 'the detector is disposed', FacedetError);
});

behaviour('info() reports the engine and the model card', () => {
  const info = detector.info();
  // On CPU in fp32 the default is LibTorch where the addon runs its convolutions with oneDNN directly,
  // ONNX Runtime otherwise (installed as an optional dependency).
  const backend = loadBinding().build.onednn !== undefined ? 'torch' : 'onnxruntime';
  assert.is(info.engine.backend, backend);
  assert.is(info.options.backend, backend);
  assert.is(info.engine.device, 'cpu');
  // Either takes the decoded pixels: LibTorch converts them in the addon, ONNX Runtime in model.u8.onnx.
  assert.is(info.engine.input, 'uint8-nhwc');
  assert.is(info.model.backbone, 'mobilenet0.25');
  assert.is(info.model.synthetic, false);
  // MobileNet0.25's first stage (11 convolutions) stays float32 in fp16 on CUDA.
  assert.equal(info.model.fp16, { float32_convolutions: 11 });
  // Its convolutions: 1.26 GFLOP for a 512x512 image (counted by the exporter, multiply-add = 2).
  assert.is(info.model.conv_flops_per_pixel, 4790.75);
  assert.is(info.options.maxSize, 1080);
});

behaviour(
  'a model folder without model.u8.onnx: ONNX Runtime on model.onnx, float32 input, same faces',
  async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-no-u8-'));
    const card = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8'));
    for (const file of ['model.json', card.files.onnx, card.files.torchscript]) {
      fs.copyFileSync(path.join(modelDir, file), path.join(dir, file));
    }
    const options = { backend: 'onnxruntime' as const, warmup: [] };
    const [float, bytes] = await Promise.all([
      FaceDetector.create({ model: dir, ...options }),
      FaceDetector.create({ model: modelDir, ...options }),
    ]);
    try {
      assert.is(float.info().engine.input, 'float32-nchw');
      assert.is(bytes.info().engine.input, 'uint8-nhwc');
      const image = seed('diverse_group.jpg');
      const a = (await bytes.detect(image)) as ImageResult;
      const b = (await float.detect(image)) as ImageResult;
      assert.ok(a.faces.length > 0);
      assert.equal(b.faces, a.faces);
    } finally {
      await Promise.all([float.dispose(), bytes.dispose()]);
    }
  },
);

behaviour(
  'LibTorch on the CPU: one image at a time runs on every thread; under load with images whose decoding costs like the network, on fewer, two batches at once (same faces)',
  async () => {
    const batches: { threads: number; size: number; from: number; to: number }[] = [];
    const torch = await FaceDetector.create({
      model: modelDir,
      backend: 'torch',
      threads: 2,
      warmup: [],
      // Each batch's network run, from when it ended and how long it took.
      onBatch: (b) => {
        const to = performance.now() - b.postprocessMs;
        batches.push({ threads: b.threads, size: b.size, from: to - b.inferMs, to });
      },
    });
    try {
      // A 1080p JPEG resized to 640x360: decoding it (≈ 10 ms here) costs more than the network's CPU
      // time (≈ 3 ms on 2 threads), so under load the policy gives the network 1 thread of 2 even on a
      // CPU whose network were several times slower relative to its decoding.
      const image = await sharp(seed('diverse_group.jpg'))
        .resize(1920, 1080, { fit: 'cover' })
        .jpeg({ quality: 90 })
        .toBuffer();
      const detect = async () => (await torch.detect(image, { maxSize: 640 })) as ImageResult;
      const alone = await detect();
      for (let i = 0; i < 3; i++) await detect();
      assert.equal(
        batches.map((b) => b.threads),
        [2, 2, 2, 2],
      );
      batches.length = 0;
      const results: ImageResult[] = [];
      const client = async () => {
        for (let i = 0; i < 10; i++) results.push(await detect());
      };
      await Promise.all([client(), client(), client(), client()]);
      const fewer = batches.filter((b) => b.threads === 1).length;
      assert.ok(fewer > batches.length / 2, `batches on 1 thread: ${fewer} of ${batches.length}`);
      // On 2 threads, one-thread batches run two at once (the second beside the addon's primary thread).
      const overlapping = batches.filter((a, i) =>
        batches.some((b, j) => i !== j && a.from < b.to && b.from < a.to),
      );
      assert.ok(
        overlapping.length > batches.length / 4,
        `batches overlapping another: ${overlapping.length} of ${batches.length}`,
      );
      assert.ok(alone.faces_count > 0);
      for (const r of results) assert.equal(r.faces, alone.faces);
    } finally {
      await torch.dispose();
    }
  },
);

behaviour.run();

const resnet = suite('detector: ResNet50 (synthetic weights)');

resnet('runs end to end through the same API: shapes, anchor count, no faces from silent heads', async () => {
  const dir = requireModel(RESNET50_SYNTHETIC_DIR);
  const card = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  assert.is(card.backbone, 'resnet50');
  assert.is(card.synthetic, true);
  assert.equal(card.fp16, { float32_convolutions: 0 }); // fp16 throughout (no real weights to check)
  assert.is(card.conv_flops_per_pixel, 216136); // 56.7 GFLOP of convolutions at 512x512
  const engine = await loadBinding().Engine.load({ modelPath: path.join(dir, card.files.torchscript) });
  const out = await engine.infer(new Float32Array(3 * 480 * 640), [1, 3, 480, 640]);
  const anchors = (60 * 80 + 30 * 40 + 15 * 20) * 2;
  assert.equal(out.shapes, { loc: [1, anchors, 4], conf: [1, anchors, 2], landmarks: [1, anchors, 10] });
  await engine.dispose();
  const r50 = await FaceDetector.create({ model: dir, warmup: [] });
  assert.is(r50.info().model.synthetic, true);
  const result = (await r50.detect(seed('diverse_group.jpg'), { confidenceThreshold: 0.02 })) as ImageResult;
  assert.is(result.faces_count, 0);
  await r50.dispose();
});

resnet.run();

const badCalls = suite('detector: bad calls');
badCalls.before(async () => {
  detector = await FaceDetector.create({ model: modelDir, warmup: [] });
});
badCalls.after(() => detector.dispose());

const createCases: [string, unknown, string][] = [
  ['options is a string', 'fast', 'Expected object for options but received fast of type string'],
  [
    'empty model path',
    { model: '' },
    'Expected path of a model folder for model but received  of type string',
  ],
  [
    'unknown device',
    { device: 'gpu' },
    "Expected 'cpu', 'cuda' or 'cuda:N' for device but received gpu of type string",
  ],
  [
    'unknown precision',
    { precision: 'fp64' },
    'Expected one of fp32, fp16, bf16, int8 for precision but received fp64 of type string',
  ],
  [
    'threads 0',
    { threads: 0 },
    'Expected integer between 1 and 1024 for threads but received 0 of type number',
  ],
  [
    'fractional maxSize',
    { maxSize: 10.5 },
    'Expected integer between 0 and 16384 for maxSize but received 10.5 of type number',
  ],
  [
    'NaN maxBatchSize',
    { maxBatchSize: NaN },
    'Expected integer between 1 and 1024 for maxBatchSize but received NaN of type number',
  ],
  [
    'negative delay',
    { maxQueueDelayMs: -1 },
    'Expected number between 0 and 60000 for maxQueueDelayMs but received -1 of type number',
  ],
  [
    'colourTables 9',
    { colourTables: 9 },
    'Expected integer between 0 and 8 for colourTables but received 9 of type number',
  ],
  [
    'bad warmup',
    { warmup: [[10, 10]] },
    'Expected array of [height, width] pairs of integers between 32 and 16384 for warmup but received array of length 1 of type object',
  ],
];
for (const [name, options, message] of createCases) {
  badCalls(`create: ${name} -> TypeError`, async () => {
    await rejects(FaceDetector.create(options as never), message, TypeError);
  });
}

badCalls('create: a folder that is not a model -> model_not_found, saying how to get one', async () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-empty-'));
  const error = await rejects<FacedetError>(
    FaceDetector.create({ model: empty }),
    /has no model\.json/,
    FacedetError,
  );
  assert.is(error.code, 'model_not_found');
  assert.match(error.message, /npm run setup/);
});

badCalls('create: a model card with a bad fp16.float32_convolutions -> model_invalid naming it', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-card-'));
  const card = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8'));
  fs.writeFileSync(
    path.join(dir, 'model.json'),
    JSON.stringify({ ...card, fp16: { float32_convolutions: -3 } }),
  );
  const error = await rejects<FacedetError>(
    FaceDetector.create({ model: dir }),
    /model\.json is not a facedet model card \(bad fp16\.float32_convolutions\)$/,
    FacedetError,
  );
  assert.is(error.code, 'model_invalid');
});

badCalls('create: a corrupt model file -> model_invalid, with the caller in the stack', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-corrupt-'));
  fs.copyFileSync(path.join(modelDir, 'model.json'), path.join(dir, 'model.json'));
  const card = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, card.files.torchscript), 'garbage');
  const error = await rejects<FacedetError>(
    FaceDetector.create({ model: dir }),
    /could not load TorchScript model/,
  );
  assert.is(error.code, 'model_invalid');
  assert.ok(error.stack!.includes('detector.test.ts'), error.stack);
});

const detectCases: [string, unknown[], string][] = [
  ['a number', [42], 'Expected Buffer, Uint8Array or file path for input but received 42 of type number'],
  ['null', [null], 'Expected Buffer, Uint8Array or file path for input but received null of type object'],
  [
    'an empty array',
    [[]],
    'Expected non-empty array of images for inputs but received array of length 0 of type object',
  ],
  [
    'an object in an array',
    [[Buffer.alloc(1), {}]],
    'Expected Buffer, Uint8Array or file path for inputs[1] but received object of type object',
  ],
  [
    'threshold above 1',
    ['x.jpg', { confidenceThreshold: 2 }],
    'Expected number between 0 and 1 for confidenceThreshold but received 2 of type number',
  ],
  [
    'threshold as a string',
    ['x.jpg', { confidenceThreshold: '0.5' }],
    'Expected number between 0 and 1 for confidenceThreshold but received 0.5 of type string',
  ],
  [
    'clipBoxes as a string',
    ['x.jpg', { clipBoxes: 'yes' }],
    'Expected boolean for clipBoxes but received yes of type string',
  ],
  [
    'negative nmsIou',
    ['x.jpg', { nmsIou: -0.1 }],
    'Expected number between 0 and 1 for nmsIou but received -0.1 of type number',
  ],
  [
    'fractional maxSize',
    ['x.jpg', { maxSize: 1.5 }],
    'Expected integer between 0 and 16384 for maxSize but received 1.5 of type number',
  ],
  [
    'topK 0',
    ['x.jpg', { topK: 0 }],
    'Expected integer between 1 and 1000000 for topK but received 0 of type number',
  ],
];
for (const [name, args, message] of detectCases) {
  badCalls(`detect: ${name} -> TypeError`, async () => {
    const detect = detector.detect as (...a: unknown[]) => Promise<unknown>;
    await rejects(detect.apply(detector, args), message, TypeError);
  });
}

badCalls.run();
