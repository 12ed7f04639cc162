// The int8 CPU model (export_model.py --int8, scripts/quantize_int8.py) through the real addon: it loads
// with precision 'int8', its raw outputs stay close to PyTorch's float outputs at any input shape, the
// detector finds the same faces as fp32, and the bad calls fail cleanly.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, FacedetError, type ImageResult } from '../src';
import { NativeInferenceEngine, type Shape4 } from '../src/engine';
import { loadBinding } from '../src/native';
import { rejects } from './helpers/assert';
import { matchFaces, toRef } from './helpers/faces';
import { FIXTURES, MOBILENET_DIR, rawReference, requireModel } from './helpers/model';

const modelDir = requireModel(MOBILENET_DIR);
const card = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8')) as {
  files: Record<string, string | null | undefined>;
  int8?: { engine: string; calibration: { inputs: number; sizes: number[] }; float_modules: string[] };
};
const int8File = card.files.torchscript_int8;
if (!int8File) {
  throw new Error(`${modelDir} has no int8 model: re-export it with --int8 (scripts/setup.sh does)`);
}

function meanAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.is(a.length, b.length);
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return sum / a.length;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.is(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** A deterministic image-like input (BGR minus mean, about -117..138). */
function pattern(shape: Shape4): Float32Array {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let seed = 7;
  for (let i = 0; i < data.length; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    data[i] = (seed >>> 24) - 117;
  }
  return data;
}

const raw = suite('int8: the quantised network through the addon');
let int8Engine: NativeInferenceEngine;
let fp32Engine: NativeInferenceEngine;
raw.before(async () => {
  const load = (file: string, precision: 'fp32' | 'int8') =>
    NativeInferenceEngine.load({
      modelPath: path.join(modelDir, file),
      backend: 'torch',
      device: 'cpu',
      precision,
      threads: 2,
    });
  int8Engine = await load(int8File, 'int8');
  fp32Engine = await load(card.files.torchscript!, 'fp32');
});
raw.after(async () => {
  await int8Engine.dispose();
  await fp32Engine.dispose();
});

raw('the model card records the quantisation', () => {
  assert.is(card.int8?.engine, 'onednn');
  assert.ok((card.int8?.calibration.inputs ?? 0) >= 50, 'calibrated on at least 50 inputs');
  assert.equal(card.int8?.calibration.sizes, [1080, 640]);
  assert.is(int8Engine.info().precision, 'int8');
});

// Bounds: export measures mean |conf diff| ~0.001 and max ~0.13 on this input (two 320x256 crops of a
// group photo); loc/landmark offsets are in anchor units (x0.1 x anchor size px), mean ~0.1-0.2.
raw('raw outputs on the reference input stay close to PyTorch float', async () => {
  const ref = rawReference(modelDir);
  const out = await int8Engine.infer(ref.input.data, ref.input.shape as Shape4);
  assert.equal(out.shapes.conf, ref.conf.shape);
  const conf = meanAbsDiff(out.conf, ref.conf.data);
  assert.ok(conf < 0.005, `mean |conf - float| ${conf}`);
  assert.ok(maxAbsDiff(out.conf, ref.conf.data) < 0.35, 'max |conf - float|');
  const loc = meanAbsDiff(out.loc, ref.loc.data);
  assert.ok(loc < 0.3, `mean |loc - float| ${loc}`);
  const landmarks = meanAbsDiff(out.landmarks, ref.landmarks.data);
  assert.ok(landmarks < 0.5, `mean |landmarks - float| ${landmarks}`);
  // and it is not the float model
  assert.ok(maxAbsDiff(out.loc, ref.loc.data) > 1e-3, 'int8 outputs equal float ones');
});

raw('any height, width and batch size, one after the other: same anchors as fp32', async () => {
  const shapes: Shape4[] = [
    [1, 3, 1088, 800],
    [1, 3, 64, 64],
    [2, 3, 333, 417],
    [1, 3, 100, 140],
    [3, 3, 96, 160],
    [1, 3, 704, 1024],
  ];
  for (const shape of shapes) {
    const input = pattern(shape);
    const got = await int8Engine.infer(input, shape);
    const want = await fp32Engine.infer(input, shape);
    assert.equal(got.shapes, want.shapes, `output shapes at ${shape.join('x')}`);
    assert.ok(got.conf.every(Number.isFinite), `finite scores at ${shape.join('x')}`);
    const conf = meanAbsDiff(got.conf, want.conf);
    assert.ok(conf < 0.01, `mean |conf - fp32| ${conf} at ${shape.join('x')}`);
  }
});

raw.run();

const faces = suite('int8: FaceDetector with precision int8');
let int8: FaceDetector;
let fp32: FaceDetector;
faces.before(async () => {
  int8 = await FaceDetector.create({ model: modelDir, precision: 'int8', warmup: [[640, 640]] });
  fp32 = await FaceDetector.create({ model: modelDir, warmup: [] });
});
faces.after(async () => {
  await int8.dispose();
  await fp32.dispose();
});

faces('reports the int8 engine', () => {
  const info = int8.info();
  assert.is(info.engine.precision, 'int8');
  assert.is(info.options.precision, 'int8');
  assert.is(info.engine.device, 'cpu');
});

// Tolerance: on the seed and dlib photos (default resize, 1080) every fp32 face scoring >= 0.7 is found
// by int8 at IoU >= 0.89 and scores differ by at most 0.06 (measured); we require IoU >= 0.8 and allow
// faces within 0.1 of the threshold to be missing on either side.
faces('finds the same faces as fp32 on the seed images', async () => {
  const dir = path.join(FIXTURES, 'seed-images');
  let matched = 0;
  for (const name of fs.readdirSync(dir).sort()) {
    const file = path.join(dir, name);
    const options = { confidenceThreshold: 0.5 };
    const want = ((await fp32.detect(file, options)) as ImageResult).faces.map(toRef);
    const got = ((await int8.detect(file, options)) as ImageResult).faces.map(toRef);
    const report = matchFaces(want, got, { minScore: 0.7, minIou: 0.8, scoreSlack: 0.1 });
    assert.equal(report.missing, [], `${name}: fp32 faces int8 missed`);
    assert.equal(report.extra, [], `${name}: int8 faces fp32 does not have`);
    matched += report.matched;
  }
  assert.ok(matched >= 50, `${matched} faces compared`);
});

faces.run();

const bad = suite('int8: bad calls');
let tmp = '';
bad.before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-int8-'));
});
bad.after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

bad('a model exported without --int8: a clear error naming the fix', async () => {
  const noInt8 = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8')) as {
    files: Record<string, unknown>;
    int8?: unknown;
  };
  delete noInt8.files.torchscript_int8;
  delete noInt8.int8;
  fs.writeFileSync(path.join(tmp, 'model.json'), JSON.stringify(noInt8));
  const error = await rejects<FacedetError>(
    FaceDetector.create({ model: tmp, precision: 'int8', warmup: [] }),
    /has no .*int8 TorchScript file for backend 'torch' .*re-export the model with --int8$/,
    FacedetError,
  );
  assert.is(error.code, 'model_not_found');
});

bad('int8 on a CUDA device: a clean error', async () => {
  const binding = loadBinding();
  const cuda = binding.build.cuda && binding.cudaDeviceCount() > 0;
  await rejects(
    FaceDetector.create({ model: modelDir, precision: 'int8', device: 'cuda', warmup: [] }),
    cuda
      ? /precision 'int8' is a CPU model; on CUDA use 'fp16' or 'fp32'/
      : /^device 'cuda' was requested, but (LibTorch sees no CUDA device|the addon was built without CUDA)/,
    RangeError,
  );
});

bad.run();
