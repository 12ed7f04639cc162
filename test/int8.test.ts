// The int8 CPU models (export_model.py --int8): model.int8.pt (scripts/quantize_int8.py) through the real
// addon and model.int8.onnx (scripts/quantize_onnx.py) through the ONNX Runtime engine. Each loads with
// precision 'int8', its raw outputs stay close to PyTorch's float outputs at any input shape, the detector
// finds the same faces as fp32, ONNX Runtime really runs int8 kernels, and the bad calls fail cleanly.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, FacedetError, type ImageResult } from '../src';
import { type InferenceEngine, NativeInferenceEngine, type Shape4 } from '../src/engine';
import { OnnxRuntimeEngine } from '../src/engines/onnxruntime';
import { loadBinding } from '../src/native';
import { rejects } from './helpers/assert';
import { matchFaces, toRef } from './helpers/faces';
import {
  FIXTURES,
  MOBILENET_DIR,
  RESNET50_SYNTHETIC_DIR,
  assertSilentLikeFp32,
  imageLikeInput,
  rawReference,
  requireModel,
} from './helpers/model';

interface Card {
  files: Record<string, string | null | undefined>;
  int8?: { engine: string; calibration: { inputs: number; sizes: number[] }; float_modules: string[] };
  int8_onnx?: {
    calibration: { inputs: number; sizes: number[] };
    quantized_convolutions: number;
    float_node_prefixes: string[];
  };
}
const readCard = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8')) as Card;
const modelDir = requireModel(MOBILENET_DIR);
const resnetDir = requireModel(RESNET50_SYNTHETIC_DIR);
const card = readCard(modelDir);
const int8File = card.files.torchscript_int8;
const onnxInt8File = card.files.onnx_int8;
if (!int8File || !onnxInt8File) {
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

/**
 * `engine`'s outputs on the exporter's reference input against PyTorch float. Bounds: export measures
 * mean |conf diff| ~0.001 and max ~0.13 on this input (two 320x256 crops of a group photo) for both int8
 * files; loc/landmark offsets are in anchor units (x0.1 x anchor size px), mean ~0.1-0.2.
 */
async function assertCloseToFloat(engine: InferenceEngine): Promise<void> {
  const ref = rawReference(modelDir);
  const out = await engine.infer(ref.input.data, ref.input.shape as Shape4);
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
}

/** The int8 engine on `shapes`, one after the other: fp32's anchors, finite and close scores. */
async function assertShapesLikeFp32(int8: InferenceEngine, fp32: InferenceEngine, shapes: Shape4[]) {
  for (const shape of shapes) {
    const input = imageLikeInput(shape);
    const got = await int8.infer(input, shape);
    const want = await fp32.infer(input, shape);
    assert.equal(got.shapes, want.shapes, `output shapes at ${shape.join('x')}`);
    assert.ok(got.conf.every(Number.isFinite), `finite scores at ${shape.join('x')}`);
    const conf = meanAbsDiff(got.conf, want.conf);
    assert.ok(conf < 0.01, `mean |conf - fp32| ${conf} at ${shape.join('x')}`);
  }
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

raw('raw outputs on the reference input stay close to PyTorch float', () => assertCloseToFloat(int8Engine));

raw('any height, width and batch size, one after the other: same anchors as fp32', () =>
  assertShapesLikeFp32(int8Engine, fp32Engine, [
    [1, 3, 1088, 800],
    [1, 3, 64, 64],
    [2, 3, 333, 417],
    [1, 3, 100, 140],
    [3, 3, 96, 160],
    [1, 3, 704, 1024],
  ]),
);

raw.run();

const ort = suite('int8: model.int8.onnx through ONNX Runtime');
let ortInt8: OnnxRuntimeEngine;
let ortFp32: OnnxRuntimeEngine;
let tmpOrt = '';
ort.before(async () => {
  tmpOrt = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-int8-ort-'));
  ortInt8 = await OnnxRuntimeEngine.load({
    modelPath: path.join(modelDir, onnxInt8File),
    precision: 'int8',
    threads: 2,
  });
  ortFp32 = await OnnxRuntimeEngine.load({ modelPath: path.join(modelDir, card.files.onnx!), threads: 2 });
});
ort.after(async () => {
  await ortInt8.dispose();
  await ortFp32.dispose();
  fs.rmSync(tmpOrt, { recursive: true, force: true });
});

// Calibration runs the float graph through the exporter's own ONNX interpreter (torch ops; ONNX Runtime
// has no Python package here): if it computed anything else than the graph, the ranges would be wrong.
ort("the exporter's calibration interpreter computes model.onnx as PyTorch does (both backbones)", () => {
  const script = `
import json, os, sys
import numpy as np, onnx, torch
sys.path.insert(0, sys.argv[1])
from quantize_onnx import OnnxTorchRunner, inline_identity_initializers
worst = 0.0
for d in sys.argv[2:]:
    ref = os.path.join(d, 'reference')
    meta = json.load(open(os.path.join(ref, 'raw.json')))
    load = lambda k: torch.from_numpy(np.fromfile(os.path.join(ref, meta[k]['file']), np.float32).reshape(meta[k]['shape']))
    proto = onnx.load(os.path.join(d, 'model.onnx'))
    inline_identity_initializers(proto)
    got = OnnxTorchRunner(proto).run(load('input'), lambda _n, _t: None)
    worst = max(worst, *(float((got[k] - load(k)).abs().max()) for k in ('loc', 'conf', 'landmarks')))
print(worst)
`;
  const worst = Number(
    execFileSync(
      '/usr/bin/python3',
      ['-c', script, path.join(__dirname, '..', 'scripts'), modelDir, resnetDir],
      {
        encoding: 'utf8',
      },
    ).trim(),
  );
  assert.ok(worst <= 1e-4, `max |interpreter - PyTorch| ${worst}`);
});

ort('the model card records the quantisation', () => {
  const q = card.int8_onnx!;
  assert.ok(q.calibration.inputs >= 50, 'calibrated on at least 50 inputs');
  assert.equal(q.calibration.sizes, [1080, 640]);
  // MobileNet0.25's stem and the nine head convolutions stay float: 56 - 2 - 9
  assert.is(q.quantized_convolutions, 45);
  assert.ok(q.float_node_prefixes.includes('/body/stage1/stage1.0/'));
  assert.is(card.files.onnx_int8_uint8, 'model.int8.u8.onnx');
  assert.is(ortInt8.info().precision, 'int8');
});

// ONNX Runtime fuses the QuantizeLinear/DequantizeLinear pairs into int8 kernels only for the patterns
// it knows: if the exporter's graph stops matching them, the model silently runs in float (slower).
ort(
  'ONNX Runtime runs the quantised convolutions as int8 kernels (QLinearConv), for both models',
  async () => {
    const ortNode = await import('onnxruntime-node');
    for (const [dir, want] of [
      [modelDir, 45],
      [resnetDir, 73],
    ] as const) {
      const optimized = path.join(tmpOrt, `${path.basename(dir)}.onnx`);
      const session = await ortNode.InferenceSession.create(
        path.join(dir, readCard(dir).files.onnx_int8_uint8!),
        {
          graphOptimizationLevel: 'all',
          intraOpNumThreads: 1,
          optimizedModelFilePath: optimized,
          logSeverityLevel: 3,
        },
      );
      await session.release();
      const script = `
import sys, collections, onnx
ops = collections.Counter(n.op_type for n in onnx.load(sys.argv[1]).graph.node)
print(ops['QLinearConv'], ops['Conv'], ops['QuantizeLinear'])
`;
      const [qconv, conv, quantize] = execFileSync('/usr/bin/python3', ['-c', script, optimized], {
        encoding: 'utf8',
      })
        .trim()
        .split(' ')
        .map(Number);
      assert.is(qconv, want, `${path.basename(dir)}: QLinearConv nodes`);
      // float convolutions left: the heads (9) and MobileNet's stem (2); few requantisations
      assert.is(conv, dir === modelDir ? 11 : 9, `${path.basename(dir)}: float Conv nodes`);
      assert.ok(quantize! <= 8, `${path.basename(dir)}: ${quantize} QuantizeLinear nodes left`);
    }
  },
);

ort('raw outputs on the reference input stay close to PyTorch float', () => assertCloseToFloat(ortInt8));

ort('any height, width and batch size: same anchors as fp32, close scores', () =>
  assertShapesLikeFp32(ortInt8, ortFp32, [
    [1, 3, 1088, 800],
    [1, 3, 64, 64],
    [2, 3, 333, 417],
    [1, 3, 33, 47],
    [3, 3, 96, 160],
  ]),
);

ort(
  'ResNet50 (SYNTHETIC weights) int8: the shapes of fp32, and its silent heads still find no face',
  async () => {
    const { files } = readCard(resnetDir);
    const int8 = await OnnxRuntimeEngine.load({
      modelPath: path.join(resnetDir, files.onnx_int8!),
      precision: 'int8',
      threads: 2,
    });
    const fp32 = await OnnxRuntimeEngine.load({ modelPath: path.join(resnetDir, files.onnx!), threads: 2 });
    try {
      await assertSilentLikeFp32(int8, fp32);
    } finally {
      await Promise.all([int8.dispose(), fp32.dispose()]);
    }
  },
);

ort.run();

for (const backend of ['torch', 'onnxruntime'] as const) {
  const faces = suite(`int8: FaceDetector with precision int8, backend ${backend}`);
  let int8: FaceDetector;
  let fp32: FaceDetector;
  faces.before(async () => {
    int8 = await FaceDetector.create({ model: modelDir, precision: 'int8', backend, warmup: [[640, 640]] });
    fp32 = await FaceDetector.create({ model: modelDir, warmup: [] });
  });
  faces.after(async () => {
    await int8.dispose();
    await fp32.dispose();
  });

  faces('reports the int8 engine', () => {
    const info = int8.info();
    assert.is(info.engine.precision, 'int8');
    assert.is(info.engine.backend, backend);
    assert.is(info.options.precision, 'int8');
    assert.is(info.engine.device, 'cpu');
  });

  // Tolerance: on the seed photos (default resize, 1080) every fp32 face scoring >= 0.7 is found by int8
  // and scores differ by at most 0.06 (measured); the worst IoU is 0.90 with model.int8.pt and 0.77
  // with model.int8.onnx (surgical_mask.jpg: its best-scoring box is a taller one; the others >= 0.85).
  // We require IoU >= 0.8 and 0.75, and allow faces within 0.1 of the threshold to be missing either way.
  const minIou = backend === 'torch' ? 0.8 : 0.75;
  faces('finds the same faces as fp32 on the seed images', async () => {
    const dir = path.join(FIXTURES, 'seed-images');
    let matched = 0;
    for (const name of fs.readdirSync(dir).sort()) {
      const file = path.join(dir, name);
      const options = { confidenceThreshold: 0.5 };
      const want = ((await fp32.detect(file, options)) as ImageResult).faces.map(toRef);
      const got = ((await int8.detect(file, options)) as ImageResult).faces.map(toRef);
      const report = matchFaces(want, got, { minScore: 0.7, minIou, scoreSlack: 0.1 });
      assert.equal(report.missing, [], `${name}: fp32 faces int8 missed`);
      assert.equal(report.extra, [], `${name}: int8 faces fp32 does not have`);
      matched += report.matched;
    }
    assert.ok(matched >= 50, `${matched} faces compared`);
  });

  faces.run();
}

const bad = suite('int8: bad calls');
let tmp = '';
bad.before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-int8-'));
});
bad.after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

bad('a model exported without --int8: a clear error naming the fix', async () => {
  const noInt8 = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8')) as Card;
  delete noInt8.files.torchscript_int8;
  delete noInt8.files.onnx_int8;
  delete noInt8.files.onnx_int8_uint8;
  delete noInt8.int8;
  delete noInt8.int8_onnx;
  fs.writeFileSync(path.join(tmp, 'model.json'), JSON.stringify(noInt8));
  const error = await rejects<FacedetError>(
    FaceDetector.create({ model: tmp, precision: 'int8', warmup: [] }),
    /has no .*int8 TorchScript file for backend 'torch' .*re-export the model with --int8$/,
    FacedetError,
  );
  assert.is(error.code, 'model_not_found');
  const ortError = await rejects<FacedetError>(
    FaceDetector.create({ model: tmp, precision: 'int8', backend: 'onnxruntime', warmup: [] }),
    /has no int8 ONNX file for backend 'onnxruntime' .*re-export the model with --int8$/,
    FacedetError,
  );
  assert.is(ortError.code, 'model_not_found');
});

bad(
  'precision int8 without a backend: ONNX Runtime when the model has model.int8.onnx, else LibTorch',
  async () => {
    const auto = await FaceDetector.create({ model: modelDir, precision: 'int8', warmup: [] });
    assert.is(auto.info().engine.backend, 'onnxruntime');
    assert.is(auto.info().engine.precision, 'int8');
    await auto.dispose();
    const torchOnly = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8')) as Card;
    delete torchOnly.files.onnx_int8;
    delete torchOnly.files.onnx_int8_uint8;
    const dir = path.join(tmp, 'torch-only');
    fs.mkdirSync(dir);
    for (const name of fs.readdirSync(modelDir)) {
      if (name.endsWith('.pt') || name.endsWith('.onnx'))
        fs.symlinkSync(path.join(modelDir, name), path.join(dir, name));
    }
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(torchOnly));
    const torch = await FaceDetector.create({ model: dir, precision: 'int8', warmup: [] });
    assert.is(torch.info().engine.backend, 'torch');
    assert.is(torch.info().engine.precision, 'int8');
    await torch.dispose();
  },
);

bad("ResNet50 int8 with backend 'torch': it has only model.int8.onnx, and the error says so", async () => {
  const error = await rejects<FacedetError>(
    FaceDetector.create({ model: resnetDir, precision: 'int8', backend: 'torch', warmup: [] }),
    /has no int8 TorchScript file for backend 'torch' \(LibTorch cannot run this network in int8\); its int8 model is model\.int8\.onnx, for backend 'onnxruntime' \(install onnxruntime-node\)$/,
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
      ? /precision 'int8' is a CPU precision; on CUDA use 'fp16' or 'fp32'/
      : /^device 'cuda' was requested, but (LibTorch sees no CUDA device|the addon was built without CUDA)/,
    RangeError,
  );
});

bad.run();
