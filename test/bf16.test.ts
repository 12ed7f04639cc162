// precision 'bf16': model.pt through the real addon with its weights rounded to bfloat16 at load (but the
// first convolution), on CPUs that compute in bf16 natively. Its raw outputs stay close to PyTorch's float
// outputs at any input shape, the detector finds the same faces as fp32, and the bad calls fail cleanly.
// On a CPU without AVX512-BF16/AMX-BF16 the refusal is what is tested. Its WIDER FACE AP is tested in
// eval-accuracy.test.ts.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, FacedetError, type ImageResult } from '../src';
import { cpuHasBf16 } from '../src/cpu';
import { NativeInferenceEngine, type RawOutputs, type Shape4 } from '../src/engine';
import { rejects } from './helpers/assert';
import { iou, matchFaces, toRef } from './helpers/faces';
import {
  FIXTURES,
  MOBILENET_DIR,
  RESNET50_SYNTHETIC_DIR,
  assertSilentLikeFp32,
  imageLikeInput,
  rawReference,
  requireModel,
} from './helpers/model';

const modelDir = requireModel(MOBILENET_DIR);
const resnetDir = requireModel(RESNET50_SYNTHETIC_DIR);

function diffs(a: Float32Array, b: Float32Array): { mean: number; max: number } {
  assert.is(a.length, b.length);
  let sum = 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    sum += d;
    max = Math.max(max, d);
  }
  return { mean: sum / a.length, max };
}

const load = (dir: string, precision: 'fp32' | 'bf16') =>
  NativeInferenceEngine.load({
    modelPath: path.join(dir, 'model.pt'),
    backend: 'torch',
    device: 'cpu',
    precision,
    threads: 2,
  });

if (cpuHasBf16()) {
  const raw = suite('bf16: the network through the addon');
  let bf16: NativeInferenceEngine;
  let fp32: NativeInferenceEngine;
  raw.before(async () => {
    bf16 = await load(modelDir, 'bf16');
    fp32 = await load(modelDir, 'fp32');
  });
  raw.after(async () => {
    await bf16.dispose();
    await fp32.dispose();
  });

  raw('reports bf16', () => {
    assert.is(bf16.info().precision, 'bf16');
    assert.is(bf16.info().backend, 'torch');
  });

  // Measured on the exporter's reference input (two 320x256 crops of a group photo): |conf diff| mean
  // 7e-4, max 0.03; |loc diff| mean 0.022, max 0.31; |landmarks diff| mean 0.039 (offsets in anchor
  // units). Bounds: about twice that. float32 gives 0 (to 1e-5).
  raw('raw outputs on the reference input stay close to PyTorch float, and are not float', async () => {
    const ref = rawReference(modelDir);
    const out = await bf16.infer(ref.input.data, ref.input.shape as Shape4);
    assert.equal(out.shapes.conf, ref.conf.shape);
    const conf = diffs(out.conf, ref.conf.data);
    assert.ok(conf.mean < 1.5e-3 && conf.max < 0.07, `|conf - float| ${JSON.stringify(conf)}`);
    const loc = diffs(out.loc, ref.loc.data);
    assert.ok(loc.mean < 0.05, `|loc - float| ${JSON.stringify(loc)}`);
    const landmarks = diffs(out.landmarks, ref.landmarks.data);
    assert.ok(landmarks.mean < 0.08, `|landmarks - float| ${JSON.stringify(landmarks)}`);
    assert.ok(loc.max > 1e-4, 'bf16 outputs equal float ones: is it bf16?');
  });

  raw(
    'any height, width and batch size, one after the other: the anchors of fp32, close scores',
    async () => {
      for (const shape of [
        [1, 3, 1088, 800],
        [1, 3, 64, 64],
        [2, 3, 333, 417],
        [1, 3, 33, 47],
        [3, 3, 96, 160],
      ] as Shape4[]) {
        const input = imageLikeInput(shape, 11);
        const got = await bf16.infer(input, shape);
        const want = await fp32.infer(input, shape);
        assert.equal(got.shapes, want.shapes, `output shapes at ${shape.join('x')}`);
        assert.ok(got.conf.every(Number.isFinite), `finite scores at ${shape.join('x')}`);
        const conf = diffs(got.conf, want.conf);
        assert.ok(conf.mean < 0.002, `mean |conf - fp32| ${conf.mean} at ${shape.join('x')}`);
      }
    },
  );

  raw(
    'ResNet50 (SYNTHETIC weights) in bf16: the shapes of fp32, and its silent heads still find no face',
    async () => {
      const [r16, r32] = await Promise.all([load(resnetDir, 'bf16'), load(resnetDir, 'fp32')]);
      try {
        await assertSilentLikeFp32(r16, r32, 11);
      } finally {
        await Promise.all([r16.dispose(), r32.dispose()]);
      }
    },
  );

  raw('one-thread runs at once (two batches under load): the outputs of one at a time', async () => {
    const shape: Shape4 = [1, 3, 384, 512];
    const inputs = [1, 2, 3, 4].map((seed) => imageLikeInput(shape, seed));
    const alone: RawOutputs[] = [];
    for (const input of inputs) alone.push(await bf16.infer(input, shape, { threads: 1 }));
    for (let round = 0; round < 5; round++) {
      const together = await Promise.all(inputs.map((input) => bf16.infer(input, shape, { threads: 1 })));
      together.forEach((out, i) => {
        assert.equal(diffs(out.conf, alone[i]!.conf).max, 0, `round ${round}, image ${i}`);
        assert.equal(diffs(out.loc, alone[i]!.loc).max, 0, `round ${round}, image ${i}`);
      });
    }
  });

  raw.run();

  const faces = suite('bf16: FaceDetector with precision bf16');
  let detector16: FaceDetector;
  let detector32: FaceDetector;
  faces.before(async () => {
    detector16 = await FaceDetector.create({ model: modelDir, precision: 'bf16', warmup: [[640, 640]] });
    detector32 = await FaceDetector.create({ model: modelDir, backend: 'torch', warmup: [] });
  });
  faces.after(async () => {
    await detector16.dispose();
    await detector32.dispose();
  });

  faces('runs on LibTorch without being asked, and says bf16', () => {
    const info = detector16.info();
    assert.is(info.engine.backend, 'torch');
    assert.is(info.engine.precision, 'bf16');
    assert.is(info.options.precision, 'bf16');
  });

  // Measured on the seed photos (default resize, 1080), fp32 faces scoring >= 0.5: all found, scores
  // within 0.01, worst IoU 0.865 and landmarks up to 7.3% of the face's width apart (the largest faces:
  // single_face.gif, mask.jpg; among near-equal anchors NMS may keep another). Required: IoU >= 0.8,
  // landmarks within 12% of the width, faces within 0.03 of the threshold may be missing either way.
  faces('finds the same faces as fp32 on the seed images', async () => {
    const dir = path.join(FIXTURES, 'seed-images');
    let matched = 0;
    for (const name of fs.readdirSync(dir).sort()) {
      const file = path.join(dir, name);
      const options = { confidenceThreshold: 0.4 };
      const want = ((await detector32.detect(file, options)) as ImageResult).faces.map(toRef);
      const got = ((await detector16.detect(file, options)) as ImageResult).faces.map(toRef);
      const report = matchFaces(want, got, { minScore: 0.5, minIou: 0.8, scoreSlack: 0.03 });
      assert.equal(report.missing, [], `${name}: fp32 faces bf16 missed`);
      assert.equal(report.extra, [], `${name}: bf16 faces fp32 does not have`);
      for (const w of want.filter((f) => f.score >= 0.53)) {
        const g = got.reduce((best, f) => (iou(w.box, f.box) > iou(w.box, best.box) ? f : best));
        const apart = Math.max(
          ...w.landmarks.map((p, k) => Math.hypot(p[0]! - g.landmarks[k]![0]!, p[1]! - g.landmarks[k]![1]!)),
        );
        assert.ok(apart < 0.12 * (w.box[2]! - w.box[0]!), `${name}: landmarks ${apart} px apart`);
      }
      matched += report.matched;
    }
    assert.ok(matched >= 50, `${matched} faces compared`);
  });

  faces.run();
} else {
  const refused = suite('bf16: a CPU without bf16 instructions');
  refused('precision bf16 is refused, naming the missing instructions', async () => {
    const error = await rejects<FacedetError>(
      FaceDetector.create({ model: modelDir, precision: 'bf16', warmup: [] }),
      /^precision 'bf16' needs a CPU with AVX512-BF16 or AMX-BF16 instructions .* and this one has neither; use 'fp32'$/,
      FacedetError,
    );
    assert.is(error.code, 'invalid_argument');
  });
  refused.run();
}

const bad = suite('bf16: bad calls');

bad("backend 'onnxruntime' has no bf16: the error says which precisions it has", async () => {
  await rejects(
    FaceDetector.create({ model: modelDir, precision: 'bf16', backend: 'onnxruntime', warmup: [] }),
    /^Expected 'fp32' or 'int8' for precision \(backend 'onnxruntime'\) but received bf16 of type string$/,
  );
});

bad('bf16 is a CPU precision: on CUDA a clean error', async () => {
  await rejects(
    NativeInferenceEngine.load({
      modelPath: path.join(modelDir, 'model.pt'),
      backend: 'torch',
      device: 'cuda',
      precision: 'bf16',
      threads: 2,
    }),
    /precision 'bf16' is a CPU precision; on CUDA use 'fp16' or 'fp32'|^device 'cuda' was requested, but (LibTorch sees no CUDA device|the addon was built without CUDA)/,
    RangeError,
  );
});

bad.run();
