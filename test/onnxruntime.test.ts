// The ONNX Runtime engine (src/engines/onnxruntime.ts): equivalence with PyTorch and with the LibTorch
// addon (raw outputs at several dynamic shapes, detections on fixtures), the event loop, concurrency,
// input transfer, disposal, the bad-call table, and the message when onnxruntime-node is missing.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, FacedetError, type ImageResult } from '../src';
import { NativeInferenceEngine, type Shape4 } from '../src/engine';
import { OnnxRuntimeEngine } from '../src/engines/onnxruntime';
import { readModel } from '../src/model';
import { decodeImage, packBatch, packBatchUint8 } from '../src/preprocess';
import type { RawOutputs } from '../src/native';
import { eventLoopTurnsDuring } from './helpers/event-loop';
import { rejects } from './helpers/assert';
import { matchFaces, toRef } from './helpers/faces';
import {
  FIXTURES,
  MOBILENET_DIR,
  RESNET50_SYNTHETIC_DIR,
  maxAbsDiff,
  rawReference,
  requireModel,
} from './helpers/model';

const mobilenet = requireModel(MOBILENET_DIR);
const resnet = requireModel(RESNET50_SYNTHETIC_DIR);
const onnxOf = (dir: string) => path.join(dir, readModel(dir).card.files.onnx!);
const torchOf = (dir: string) => {
  const { files } = readModel(dir).card;
  return path.join(dir, files.torchscript);
};
const loadTorch = (dir: string) =>
  NativeInferenceEngine.load({
    modelPath: torchOf(dir),
    backend: 'torch',
    device: 'cpu',
    precision: 'fp32',
    threads: 2,
  });
const f32 = (n: number) => new Float32Array(n);
const KEYS = ['loc', 'conf', 'landmarks'] as const;

/** Image-like values, -123..132, from a fixed linear congruential sequence. */
function pseudoImage(shape: Shape4): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = (s / 2 ** 32) * 255 - 123;
  }
  return out;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-ort-'));

/** A small ONNX graph with fixed input [1, 3, 32, 32] and three Identity outputs of these names. */
function tinyOnnx(name: string, outputs: string[]): string {
  const file = path.join(tmp, `${name}.onnx`);
  const script = `
import sys, onnx
from onnx import helper, TensorProto
names = sys.argv[2].split(',')
x = helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, 32, 32])
outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 32, 32]) for n in names]
nodes = [helper.make_node('Identity', ['input'], [n]) for n in names]
graph = helper.make_graph(nodes, 'tiny', [x], outs)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
model.ir_version = 8
onnx.save(model, sys.argv[1])
`;
  execFileSync('/usr/bin/python3', ['-c', script, file, outputs.join(',')]);
  return file;
}

const equivalence = suite('onnxruntime engine: equals PyTorch and the LibTorch addon');

for (const [name, dir] of [
  ['MobileNet0.25', mobilenet],
  ['ResNet50 (synthetic)', resnet],
] as const) {
  equivalence(`${name}: raw outputs within 1e-4 of PyTorch on the reference input`, async () => {
    const reference = rawReference(dir);
    const engine = await OnnxRuntimeEngine.load({ modelPath: onnxOf(dir), threads: 2 });
    const out = await engine.infer(reference.input.data, reference.input.shape as Shape4);
    for (const key of KEYS) {
      assert.equal(out.shapes[key], reference[key].shape, key);
      const err = maxAbsDiff(out[key], reference[key].data);
      assert.ok(err <= 1e-4, `${key}: max abs error ${err}`);
    }
    assert.ok(out.inferMs > 0);
    await engine.dispose();
  });
}

equivalence(
  'the graph is dynamic: batch 1-3, non-square sizes that are not multiples of 32, same as LibTorch',
  async () => {
    const ort = await OnnxRuntimeEngine.load({ modelPath: onnxOf(mobilenet), threads: 2 });
    const torch = await loadTorch(mobilenet);
    const shapes: Shape4[] = [
      [1, 3, 33, 17],
      [2, 3, 100, 140],
      [3, 3, 257, 383],
      [1, 3, 480, 320],
      [1, 3, 250, 700],
    ];
    for (const shape of shapes) {
      const input = pseudoImage(shape);
      const a = await ort.infer(input, shape);
      const b = await torch.infer(input, shape);
      const [, , h, w] = shape;
      const anchors = [8, 16, 32].reduce((sum, s) => sum + Math.ceil(h / s) * Math.ceil(w / s) * 2, 0);
      for (const key of KEYS) {
        assert.equal(a.shapes[key], b.shapes[key], `${shape.join('x')} ${key}`);
        assert.is(a.shapes[key][0], shape[0]);
        assert.is(a.shapes[key][1], anchors);
        const err = maxAbsDiff(a[key], b[key]);
        assert.ok(err <= 1e-3, `${shape.join('x')} ${key}: max abs difference ${err}`);
      }
    }
    // ResNet50's heads are silent (synthetic weights): only the shapes say something there.
    const r50 = await OnnxRuntimeEngine.load({ modelPath: onnxOf(resnet), threads: 2 });
    const out = await r50.infer(pseudoImage([2, 3, 100, 140]), [2, 3, 100, 140]);
    assert.equal(out.shapes.loc, [2, 634, 4]);
    await Promise.all([ort.dispose(), torch.dispose(), r50.dispose()]);
  },
);

equivalence(
  'model.u8.onnx (preprocessing in the graph, uint8 NHWC) gives exactly what model.onnx gives on packBatch',
  async () => {
    const { card } = readModel(mobilenet);
    assert.is(card.files.onnx_uint8, 'model.u8.onnx');
    const float = await OnnxRuntimeEngine.load({ modelPath: onnxOf(mobilenet), threads: 2 });
    const u8 = await OnnxRuntimeEngine.load({
      modelPath: path.join(mobilenet, card.files.onnx_uint8!),
      input: 'uint8',
      threads: 2,
    });
    assert.is(float.info().input, 'float32-nchw');
    assert.is(u8.info().input, 'uint8-nhwc');
    // Two real photos of different sizes in one batch: the smaller one is padded.
    const images = await Promise.all(
      ['diverse_group.jpg', 'cartoon.jpg'].map(async (name) =>
        decodeImage(fs.readFileSync(path.join(FIXTURES, 'seed-images', name)), {
          maxSize: 320,
          maxPixels: 1e8,
        }),
      ),
    );
    const pack = { mean: card.input.mean, padMultiple: 32 };
    const a = packBatch(images, pack);
    const b = packBatchUint8(images, pack);
    assert.equal(a.shape, b.shape);
    const outA = await float.infer(a.tensor, a.shape);
    const outB = await u8.infer(b.tensor, b.shape);
    for (const key of KEYS) {
      assert.equal(outB.shapes[key], outA.shapes[key], key);
      const err = maxAbsDiff(outA[key], outB[key]);
      assert.ok(err <= 1e-5, `${key}: max abs difference ${err}`);
    }
    await Promise.all([float.dispose(), u8.dispose()]);
  },
);

equivalence(
  "model.onnx's MobileNet0.25 stem is 16 channels wide (ONNX Runtime's blocks); model.pt's is 8",
  () => {
    // The raw-output tests above show the padded network equals PyTorch; this one fails if the export
    // stops padding (ONNX Runtime then runs the 8-channel stem in slower NCHW kernels).
    const script = `
import sys, onnx, torch
g = onnx.load(sys.argv[1]).graph
dims = {t.name: list(t.dims) for t in g.initializer}
convs = [n for n in g.node if n.op_type == 'Conv'][:3]
print([dims[n.input[1]] for n in convs])
sd = torch.jit.load(sys.argv[2]).state_dict()
print(list(sd['body.stage1.0.0.weight'].shape))
`;
    const out = execFileSync('/usr/bin/python3', ['-c', script, onnxOf(mobilenet), torchOf(mobilenet)], {
      encoding: 'utf8',
    }).trim();
    assert.equal(out.split('\n'), ['[[16, 3, 3, 3], [16, 1, 3, 3], [16, 16, 1, 1]]', '[8, 3, 3, 3]']);
  },
);

equivalence.run();

const detections = suite('onnxruntime engine: detections equal the LibTorch engine');

detections('on the seed images and dlib fixtures: every face >= 0.5 matched at IoU >= 0.95', async () => {
  const [ort, torch] = await Promise.all([
    FaceDetector.create({ model: mobilenet, backend: 'onnxruntime', threads: 2, warmup: [] }),
    FaceDetector.create({ model: mobilenet, backend: 'torch', threads: 2, warmup: [] }),
  ]);
  assert.is(ort.info().engine.backend, 'onnxruntime');
  assert.is(ort.info().options.backend, 'onnxruntime');
  // Both take the decoded pixels: model.u8.onnx converts them in its graph, the addon in LibTorch ops.
  assert.is(ort.info().engine.input, 'uint8-nhwc');
  assert.is(torch.info().engine.input, 'uint8-nhwc');
  const files = [
    ...fs.readdirSync(path.join(FIXTURES, 'seed-images')).map((f) => path.join(FIXTURES, 'seed-images', f)),
    ...fs
      .readdirSync(path.join(FIXTURES, 'dlib-faces'))
      .filter((f) => f.endsWith('.jpg'))
      .map((f) => path.join(FIXTURES, 'dlib-faces', f)),
  ];
  let total = 0;
  for (const file of files) {
    const a = (await ort.detect(file)) as ImageResult;
    const b = (await torch.detect(file)) as ImageResult;
    assert.is(a.error, undefined, file);
    const report = matchFaces(b.faces.map(toRef), a.faces.map(toRef), { minScore: 0.5, minIou: 0.95 });
    assert.equal(report.missing, [], `${file}: LibTorch faces that ONNX Runtime missed`);
    assert.equal(report.extra, [], `${file}: ONNX Runtime faces LibTorch does not have`);
    assert.ok(report.worstLandmarkPx <= 1, `${file}: landmark off by ${report.worstLandmarkPx} px`);
    total += report.matched;
  }
  assert.ok(total > 40, `only ${total} faces compared`);
  // Batched (mixed sizes in one batch) gives the same faces as one at a time.
  const batched = await FaceDetector.create({
    model: mobilenet,
    backend: 'onnxruntime',
    maxBatchSize: 4,
    maxQueueDelayMs: 200,
    warmup: [],
  });
  const some = files.slice(0, 4);
  const together = await batched.detect(some);
  assert.is(batched.batches, 1);
  for (const [i, file] of some.entries()) {
    const alone = (await ort.detect(file)) as ImageResult;
    const report = matchFaces(alone.faces.map(toRef), together[i]!.faces.map(toRef), {
      minScore: 0.5,
      minIou: 0.99,
    });
    assert.equal([report.missing, report.extra], [[], []], file);
  }
  await Promise.all([ort.dispose(), torch.dispose(), batched.dispose()]);
});

detections.run();

const runtime = suite('onnxruntime engine: runtime behaviour');

runtime('the event loop keeps turning during a large inference', async () => {
  const engine = await OnnxRuntimeEngine.load({ modelPath: onnxOf(mobilenet), threads: 2 });
  const shape: Shape4 = [4, 3, 1024, 1024];
  const input = f32(shape.reduce((a, b) => a * b));
  const { result: out, turns, ms: elapsed } = await eventLoopTurnsDuring(() => engine.infer(input, shape));
  // onnxruntime-node's own session.run() allows one turn here; on the worker the loop runs all along.
  assert.ok(turns > 20, `only ${turns} event-loop turns in ${elapsed.toFixed(0)} ms`);
  assert.ok(out.inferMs > 0 && out.inferMs <= elapsed, `inferMs ${out.inferMs} vs ${elapsed}`);
  await engine.dispose();
});

runtime('concurrent infer calls give the same results as one at a time', async () => {
  const engine = await OnnxRuntimeEngine.load({ modelPath: onnxOf(mobilenet), threads: 2 });
  const shapes: Shape4[] = [
    [1, 3, 64, 96],
    [2, 3, 128, 64],
    [1, 3, 96, 96],
  ];
  const inputs = shapes.map(pseudoImage);
  const alone: RawOutputs[] = [];
  for (const [k, input] of inputs.entries()) alone.push(await engine.infer(input, shapes[k]!));
  const together = await Promise.all(
    Array.from({ length: 9 }, (_, k) => engine.infer(inputs[k % 3]!, shapes[k % 3]!)),
  );
  together.forEach((out, k) => {
    for (const key of KEYS) assert.is(maxAbsDiff(out[key], alone[k % 3]![key]), 0, `${k} ${key}`);
  });
  await engine.dispose();
});

runtime('transfer: true detaches an array that owns its buffer; otherwise the input is copied', async () => {
  const engine = await OnnxRuntimeEngine.load({ modelPath: onnxOf(mobilenet), threads: 2 });
  const shape: Shape4 = [1, 3, 64, 64];
  const original = pseudoImage(shape);
  const expected = await engine.infer(original, shape);
  assert.is(original.length, 3 * 64 * 64, 'copied: the caller keeps its array');

  const owned = original.slice();
  const moved = await engine.infer(owned, shape, { transfer: true });
  assert.is(owned.length, 0, 'transferred: detached');
  assert.is(maxAbsDiff(moved.conf, expected.conf), 0);
  // ... and handed back with the outputs, unchanged, for the caller to reuse.
  assert.ok(moved.input instanceof Float32Array);
  assert.is(maxAbsDiff(moved.input, original), 0);
  assert.is(expected.input, undefined, 'a copy is not handed back');

  // A view into a larger buffer is copied even with transfer: true (the rest of the buffer is not ours).
  const big = new Float32Array(original.length + 10);
  big.set(original, 10);
  const view = big.subarray(10);
  const fromView = await engine.infer(view, shape, { transfer: true });
  assert.is(view.length, original.length);
  assert.is(fromView.input, undefined);
  assert.is(maxAbsDiff(fromView.loc, expected.loc), 0);

  // Outputs are plain arrays that own their memory and outlive the engine.
  await engine.dispose();
  assert.is(expected.loc.byteOffset, 0);
  assert.is(
    expected.loc.length,
    expected.shapes.loc.reduce((a, b) => a * b, 1),
  );
});

runtime(
  "by default (spinning: 'exclusive') the CPUs stay idle between runs, exclusive or not; spinning: true keeps them busy",
  async () => {
    // CPU time of an engine's own threads (its worker and ONNX Runtime's pools: the threads that
    // appeared while it loaded), from the scheduler's per-thread counters: the process's total would
    // also count V8 collecting garbage in the idle windows (tens of ms after the other test files).
    const threads = () => new Set(fs.readdirSync('/proc/self/task'));
    const threadCpuMs = (tids: string[]) =>
      tids.reduce((sum, tid) => {
        try {
          return (
            sum + Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e6
          );
        } catch {
          return sum; // a thread that has exited
        }
      }, 0);
    const load = async (options: { spinning?: boolean }) => {
      const before = threads();
      const engine = await OnnxRuntimeEngine.load({ modelPath: onnxOf(mobilenet), threads: 2, ...options });
      return { engine, tids: [...threads()].filter((tid) => !before.has(tid)) };
    };
    const idleCpuMs = async (
      { engine, tids }: { engine: OnnxRuntimeEngine; tids: string[] },
      exclusive: boolean,
    ) => {
      assert.ok(tids.length >= 2, `${tids.length} threads started with the engine`);
      const shape: Shape4 = [1, 3, 256, 256];
      const input = pseudoImage(shape);
      const first = await engine.infer(input, shape, { exclusive });
      let burnt = 0;
      for (let i = 0; i < 5; i++) {
        await engine.infer(input, shape, { exclusive });
        const before = threadCpuMs(tids);
        await new Promise((resolve) => setTimeout(resolve, 60));
        burnt += threadCpuMs(tids) - before;
      }
      return { first, burnt };
    };
    const byDefault = await load({});
    const spinning = await load({ spinning: true });
    const a = await idleCpuMs(spinning, false);
    const b = await idleCpuMs(byDefault, false);
    const c = await idleCpuMs(byDefault, true);
    await Promise.all([spinning.engine.dispose(), byDefault.engine.dispose()]);
    // The two sessions behind 'exclusive' are the same model: the same outputs, bit for bit.
    assert.is(maxAbsDiff(a.first.conf, b.first.conf), 0);
    assert.is(maxAbsDiff(b.first.loc, c.first.loc), 0);
    assert.is(maxAbsDiff(b.first.conf, c.first.conf), 0);
    assert.is(maxAbsDiff(b.first.landmarks, c.first.landmarks), 0);
    assert.ok(b.burnt < a.burnt / 2, `CPU ms while idle: spinning ${a.burnt}, default ${b.burnt}`);
    assert.ok(
      c.burnt < a.burnt / 2,
      `CPU ms while idle: spinning ${a.burnt}, after exclusive runs ${c.burnt}`,
    );
  },
);

runtime('dispose() waits for the runs in flight, which complete normally; later calls reject', async () => {
  const engine = await OnnxRuntimeEngine.load({ modelPath: onnxOf(mobilenet), threads: 2 });
  const reference = rawReference(mobilenet);
  const pending = [1, 2].map(() => engine.infer(reference.input.data, reference.input.shape as Shape4));
  const disposed = engine.dispose();
  assert.is(engine.disposed, true);
  for (const out of await Promise.all(pending)) assert.ok(maxAbsDiff(out.conf, reference.conf.data) <= 1e-4);
  await disposed;
  const error = await rejects<FacedetError>(
    engine.infer(f32(3 * 32 * 32), [1, 3, 32, 32]),
    'the engine is disposed',
    FacedetError,
  );
  assert.is(error.code, 'engine_disposed');
  await engine.dispose(); // twice is fine
});

runtime(
  'an error inside ONNX Runtime -> inference_failed with the caller stack; the engine stays usable',
  async () => {
    const fixed = tinyOnnx('fixed', ['loc', 'conf', 'landmarks']);
    const engine = await OnnxRuntimeEngine.load({ modelPath: fixed, threads: 1 });
    const error = await rejects<FacedetError>(
      engine.infer(f32(3 * 64 * 64), [1, 3, 64, 64]),
      /invalid dimensions for input: input/i,
      FacedetError,
    );
    assert.is(error.code, 'inference_failed');
    assert.match(String(error.stack), /onnxruntime\.test\.ts/);
    assert.not.match(String(error.stack), /onnxruntime-worker/);
    const out = await engine.infer(f32(3 * 32 * 32).fill(7), [1, 3, 32, 32]);
    assert.is(out.conf[0], 7);
    await engine.dispose();
  },
);

// Child processes run the engine from the TypeScript sources through tsx, as the tests do.
const child = (script: string, env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, ['-e', `require('tsx/cjs/api').register();\n${script}`], {
    encoding: 'utf8',
    cwd: path.resolve(__dirname, '..'),
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
const engineModule = JSON.stringify(path.resolve(__dirname, '..', 'src', 'engines', 'onnxruntime.ts'));
const modelPath = JSON.stringify(onnxOf(mobilenet));

runtime('an idle engine does not keep the process alive', () => {
  const idle = child(`
    const { OnnxRuntimeEngine } = require(${engineModule});
    OnnxRuntimeEngine.load({ modelPath: ${modelPath}, threads: 1 }).then(async (e) => {
      await e.infer(new Float32Array(3 * 64 * 64), [1, 3, 64, 64]);
      process.stdout.write('done');
    });`);
  assert.is(idle.status, 0, idle.stderr);
  assert.is(idle.stdout, 'done');
});

runtime('process.exit() or an uncaught exception while loading or inferring ends the process cleanly', () => {
  // onnxruntime-node alone aborts the process (SIGABRT) when its thread is stopped mid-run.
  for (const [stage, ending, code] of [
    ['loading', 'process.exit(3)', 3],
    ['inferring', 'process.exit(3)', 3],
    ['inferring', "throw new Error('boom')", 1],
  ] as const) {
    const result = child(`
      const { OnnxRuntimeEngine } = require(${engineModule});
      const loading = OnnxRuntimeEngine.load({ modelPath: ${modelPath}, threads: 1 });
      if (${JSON.stringify(stage)} === 'loading') setImmediate(() => { ${ending}; });
      loading.then((e) => {
        e.infer(new Float32Array(3 * 1024 * 1024), [1, 3, 1024, 1024]);
        setTimeout(() => { ${ending}; }, 20);
      });`);
    assert.is(result.signal, null, `${stage}, ${ending}: killed by ${result.signal}: ${result.stderr}`);
    assert.is(result.status, code, `${stage}, ${ending}: ${result.stderr}`);
  }
});

runtime('without onnxruntime-node installed: native_unavailable, saying how to install it', () => {
  // Hides the package from module resolution, as in an install without the optional dependency.
  const result = child(`
    const Module = require('module');
    const resolve = Module._resolveFilename;
    Module._resolveFilename = function (request, ...rest) {
      if (request === 'onnxruntime-node') {
        const e = new Error("Cannot find module 'onnxruntime-node'");
        e.code = 'MODULE_NOT_FOUND';
        throw e;
      }
      return resolve.call(this, request, ...rest);
    };
    const { FaceDetector } = require(${JSON.stringify(path.resolve(__dirname, '..', 'src', 'index.ts'))});
    FaceDetector.create({ model: ${JSON.stringify(mobilenet)}, backend: 'onnxruntime', warmup: [] }).then(
      () => process.stdout.write('loaded'),
      (e) => process.stdout.write(JSON.stringify({ code: e.code, name: e.name, message: e.message })),
    );`);
  assert.is(result.status, 0, result.stderr);
  const error = JSON.parse(result.stdout) as { code: string; name: string; message: string };
  assert.is(error.code, 'native_unavailable');
  assert.is(error.name, 'FacedetError');
  assert.match(error.message, /^onnxruntime-node is not installed\./);
  assert.match(error.message, /npm install onnxruntime-node/);
  assert.match(error.message, /ONNXRUNTIME_NODE_INSTALL_CUDA=skip/);
});

runtime.run();

const badCalls = suite('onnxruntime engine: bad calls');

let engine: OnnxRuntimeEngine;
badCalls.before(async () => {
  engine = await OnnxRuntimeEngine.load({ modelPath: onnxOf(mobilenet), threads: 1 });
});
badCalls.after(() => engine.dispose());

const loadCases: [string, unknown, string | RegExp, string | (new (...args: never[]) => Error)][] = [
  [
    'no options',
    undefined,
    'Expected object for options but received undefined of type undefined',
    TypeError,
  ],
  [
    'no modelPath',
    {},
    'Expected path of an ONNX file for modelPath but received undefined of type undefined',
    TypeError,
  ],
  [
    'threads 0',
    { modelPath: 'x.onnx', threads: 0 },
    'Expected integer between 1 and 1024 for threads but received 0 of type number',
    TypeError,
  ],
  [
    'spinning a string',
    { modelPath: 'x.onnx', spinning: 'no' },
    "Expected boolean or 'exclusive' for spinning but received no of type string",
    TypeError,
  ],
  [
    'threads 1.5',
    { modelPath: 'x.onnx', threads: 1.5 },
    'Expected integer between 1 and 1024 for threads but received 1.5 of type number',
    TypeError,
  ],
  [
    'input neither float32 nor uint8',
    { modelPath: 'x.onnx', input: 'float16' },
    "Expected 'float32' or 'uint8' for input but received float16 of type string",
    TypeError,
  ],
  [
    'precision neither fp32 nor int8',
    { modelPath: 'x.onnx', precision: 'fp16' },
    "Expected 'fp32' or 'int8' for precision but received fp16 of type string",
    TypeError,
  ],
  [
    'a missing file',
    { modelPath: path.join(tmp, 'missing.onnx') },
    /^model file not found: .*missing\.onnx$/,
    'model_not_found',
  ],
];

for (const [name, options, message, expected] of loadCases) {
  badCalls(`load: ${name}`, async () => {
    const error = await rejects(
      OnnxRuntimeEngine.load(options as never),
      message,
      typeof expected === 'string' ? FacedetError : expected,
    );
    if (typeof expected === 'string') assert.is((error as FacedetError).code, expected);
  });
}

badCalls('load: a file that is not ONNX -> model_invalid', async () => {
  const corrupt = path.join(tmp, 'corrupt.onnx');
  fs.writeFileSync(corrupt, 'this is not an ONNX model');
  const error = await rejects<FacedetError>(
    OnnxRuntimeEngine.load({ modelPath: corrupt }),
    /^cannot load .*corrupt\.onnx: /,
    FacedetError,
  );
  assert.is(error.code, 'model_invalid');
  assert.match(String(error.stack), /onnxruntime\.test\.ts/);
});

badCalls('load: an ONNX model that is not RetinaFace -> model_invalid naming what it has', async () => {
  const other = tinyOnnx('other', ['boxes', 'scores']);
  const error = await rejects<FacedetError>(
    OnnxRuntimeEngine.load({ modelPath: other }),
    /is not a facedet RetinaFace model: expected 1 input and outputs loc, conf, landmarks, found inputs \[input\] and outputs \[boxes, scores\]$/,
    FacedetError,
  );
  assert.is(error.code, 'model_invalid');
});

const inferCases: [string, unknown[], string | RegExp, new (...args: never[]) => Error][] = [
  [
    'a Float64Array',
    [new Float64Array(3 * 32 * 32), [1, 3, 32, 32]],
    'Expected Float32Array for input but received Float64Array of type object',
    TypeError,
  ],
  [
    'no shape',
    [f32(3 * 32 * 32)],
    'Expected array of 4 positive integers [n, c, h, w] for shape but received undefined of type undefined',
    TypeError,
  ],
  [
    'a fractional size',
    [f32(3 * 32 * 32), [1, 3, 32.5, 32]],
    /^Expected array of 4 positive integers \[n, c, h, w\] for shape/,
    TypeError,
  ],
  [
    '4 channels',
    [f32(4 * 32 * 32), [1, 4, 32, 32]],
    'Expected 3 for shape[1] (channels) but received 4 of type number',
    TypeError,
  ],
  [
    'a length that does not match',
    [f32(100), [1, 3, 32, 32]],
    'Expected Float32Array of length 3072 for input of shape [1, 3, 32, 32] but received length 100',
    RangeError,
  ],
];

for (const [name, args, message, errorClass] of inferCases) {
  badCalls(`infer: ${name} -> ${errorClass.name}`, async () => {
    const infer = engine.infer as unknown as (...a: unknown[]) => Promise<unknown>;
    await rejects(infer.apply(engine, args), message, errorClass);
  });
}

badCalls('infer on a uint8 engine: a Float32Array, or a wrong length -> exact errors', async () => {
  const u8 = await OnnxRuntimeEngine.load({
    modelPath: path.join(mobilenet, readModel(mobilenet).card.files.onnx_uint8!),
    input: 'uint8',
    threads: 1,
  });
  await rejects(
    u8.infer(f32(3 * 32 * 32), [1, 3, 32, 32]),
    'Expected Uint8Array for input but received Float32Array of type object',
    TypeError,
  );
  await rejects(
    u8.infer(new Uint8Array(100), [1, 3, 32, 32]),
    'Expected Uint8Array of length 3072 for input of shape [1, 3, 32, 32] but received length 100',
    RangeError,
  );
  await u8.dispose();
});

const detectorCases: [string, unknown, string][] = [
  [
    'device cuda',
    { backend: 'onnxruntime', device: 'cuda' },
    "Expected 'cpu' for device (backend 'onnxruntime' runs on the CPU) but received cuda of type string",
  ],
  [
    'precision fp16',
    { backend: 'onnxruntime', precision: 'fp16' },
    "Expected 'fp32' or 'int8' for precision (backend 'onnxruntime') but received fp16 of type string",
  ],
  [
    'an unknown backend',
    { backend: 'onnx' },
    'Expected one of torch, tensorrt, onnxruntime for backend but received onnx of type string',
  ],
];
for (const [name, options, message] of detectorCases) {
  badCalls(`FaceDetector.create: ${name} -> TypeError`, async () => {
    await rejects(FaceDetector.create({ model: mobilenet, ...(options as object) }), message, TypeError);
  });
}

badCalls.run();
