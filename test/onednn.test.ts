// LibTorch fp32 on the CPU with the convolutions run by oneDNN directly (native/onednn_conv.cc): every
// convolution of the frozen graph is replaced, the wide 3x3 ones are Winograd candidates, the outputs equal
// LibTorch's own convolutions' up to float32 rounding at any shape and batch, other precisions keep
// LibTorch's, and the option is checked. In a build without oneDNN (a LibTorch with its own copy) the
// engine reports none, which is what is tested there.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector } from '../src';
import { cpuHasBf16 } from '../src/cpu';
import { NativeInferenceEngine, type Shape4 } from '../src/engine';
import { loadBinding } from '../src/native';
import { rejects } from './helpers/assert';
import {
  MOBILENET_DIR,
  RESNET50_SYNTHETIC_DIR,
  imageLikeInput,
  maxAbsDiff,
  requireModel,
} from './helpers/model';

const mobilenet = requireModel(MOBILENET_DIR);
const resnet = requireModel(RESNET50_SYNTHETIC_DIR);
const built = loadBinding().build.onednn !== undefined;

const load = (dir: string, options: { onednn?: boolean; precision?: 'fp32' | 'int8' | 'bf16' } = {}) =>
  NativeInferenceEngine.load({
    modelPath: path.join(dir, options.precision === 'int8' ? 'model.int8.pt' : 'model.pt'),
    backend: 'torch',
    device: 'cpu',
    precision: options.precision ?? 'fp32',
    threads: 2,
    ...(options.onednn === undefined ? {} : { onednn: options.onednn }),
  });

const test = suite('oneDNN convolutions (LibTorch fp32 on the CPU)');

test('the build says whether it has them, and the engine how many convolutions they run', async () => {
  const on = await load(mobilenet);
  const off = await load(mobilenet, { onednn: false });
  try {
    assert.is(off.info().onednn, 0);
    assert.is(off.info().winograd, 0);
    if (!built) {
      assert.is(on.info().onednn, 0);
      return;
    }
    assert.match(loadBinding().build.onednn!, /^\d+\.\d+\.\d+$/);
    // MobileNet0.25: all 56 convolutions (depthwise ones too); Winograd candidates: the FPN's two 64->64
    // 3x3 merges (their LeakyReLU runs after them) and the SSH's three 64->32 ones (the 16-channel ones
    // stay direct).
    assert.is(on.info().onednn, 56);
    assert.is(on.info().winograd, 5);
  } finally {
    await on.dispose();
    await off.dispose();
  }
  const r50 = await load(resnet);
  try {
    assert.is(r50.info().onednn, built ? 82 : 0);
    assert.is(r50.info().winograd, built ? 30 : 0);
  } finally {
    await r50.dispose();
  }
});

/** Runs each shape through LibTorch with and without oneDNN; the outputs must agree to float32 rounding. */
async function compareWithLibTorch(dir: string, shapes: Shape4[]) {
  const on = await load(dir);
  const off = await load(dir, { onednn: false });
  try {
    const outputs = [];
    for (const shape of shapes) {
      const input = imageLikeInput(shape);
      const a = await on.infer(input, shape);
      const b = await off.infer(input, shape);
      const label = shape.join('x');
      assert.equal(a.shapes, b.shapes);
      for (const [key, bound] of [
        ['loc', 1e-4],
        ['conf', 1e-5],
        ['landmarks', 1e-4],
      ] as const) {
        const d = maxAbsDiff(a[key], b[key]);
        assert.ok(d < bound, `${label} ${key}: ${d}`);
      }
      outputs.push({ label, ...a });
    }
    return outputs;
  } finally {
    await on.dispose();
    await off.dispose();
  }
}

test("MobileNet0.25's outputs equal LibTorch's own convolutions' at any shape and batch", async () => {
  // Square, wide, and odd sizes in the SSH levels with a batch of 3.
  const outputs = await compareWithLibTorch(mobilenet, [
    [1, 3, 512, 512],
    [1, 3, 576, 1024],
    [3, 3, 96, 160],
  ]);
  for (const { label, conf, loc } of outputs) {
    // Not vacuous: the outputs vary over the anchors.
    const scores = conf.filter((_, i) => i % 2 === 1);
    assert.ok(Math.max(...scores) - Math.min(...scores) > 1e-3, `${label}: flat scores`);
    assert.ok(Math.max(...loc.map(Math.abs)) > 0.5, `${label}: flat boxes`);
  }
});

test('ResNet50 (SYNTHETIC) runs at any shape and batch with its heads silent, as with LibTorch alone', async () => {
  // 512²: Winograd at the stride-8 level (64² positions) and in stage 1 (128²); 160x224: direct only.
  const outputs = await compareWithLibTorch(resnet, [
    [1, 3, 512, 512],
    [2, 3, 160, 224],
  ]);
  for (const { label, conf } of outputs) {
    const faces = conf.filter((_, i) => i % 2 === 1);
    assert.ok(Math.max(...faces) < 0.01, `${label}: a face score of ${Math.max(...faces)}`);
  }
});

test('bf16 (CPUs with AVX512-BF16/AMX): oneDNN runs the convolutions too, close to LibTorch bf16 own', async () => {
  if (!built || !cpuHasBf16()) return;
  const on = await load(mobilenet, { precision: 'bf16' });
  const off = await load(mobilenet, { precision: 'bf16', onednn: false });
  try {
    assert.is(on.info().onednn, 56);
    assert.is(on.info().winograd, 0);
    assert.is(off.info().onednn, 0);
    const shape: Shape4 = [1, 3, 512, 512];
    const input = imageLikeInput(shape);
    const a = await on.infer(input, shape);
    const b = await off.infer(input, shape);
    // Both round to bfloat16, at different places (oneDNN fuses the LeakyReLU before rounding): measured
    // 0.004 on scores and 0.08 on box deltas, as far apart as LibTorch bf16 is from fp32 (0.005, 0.27).
    assert.ok(maxAbsDiff(a.conf, b.conf) < 0.02, `conf ${maxAbsDiff(a.conf, b.conf)}`);
    assert.ok(maxAbsDiff(a.loc, b.loc) < 0.3, `loc ${maxAbsDiff(a.loc, b.loc)}`);
  } finally {
    await on.dispose();
    await off.dispose();
  }
});

test("int8 keeps LibTorch's convolutions; engines released one by one keep the others working", async () => {
  const int8 = await load(mobilenet, { precision: 'int8' });
  try {
    assert.is(int8.info().onednn, 0);
  } finally {
    await int8.dispose();
  }
  const first = await load(mobilenet);
  const second = await load(mobilenet);
  const shape: Shape4 = [1, 3, 128, 128];
  const input = imageLikeInput(shape);
  const before = await second.infer(input, shape);
  await first.dispose();
  const after = await second.infer(input, shape);
  assert.is(maxAbsDiff(before.conf, after.conf), 0);
  await second.dispose();
});

test('a detector in fp32 on the CPU picks LibTorch when the addon has them, else ONNX Runtime', async () => {
  for (const [model, convolutions] of [
    [resnet, 82],
    [mobilenet, 56],
  ] as const) {
    const detector = await FaceDetector.create({ model, warmup: [] });
    try {
      const { engine } = detector.info();
      assert.is(engine.backend, built ? 'torch' : 'onnxruntime', model);
      if (built) assert.is(engine.onednn, convolutions);
    } finally {
      await detector.dispose();
    }
  }
});

test('FACEDET_CPU_TENSOR_CACHE_MB: 0 turns the tensor cache off, a bad value is a RangeError', () => {
  if (!built) return;
  // Process-wide and read once: each case in a process of its own, loading the built addon.
  const script =
    `const { loadBinding } = require(${JSON.stringify(path.resolve(__dirname, '..', 'dist', 'native'))});` +
    `loadBinding().Engine.load({ modelPath: ${JSON.stringify(path.join(mobilenet, 'model.pt'))}, threads: 1 })` +
    `.then(async (e) => { const r = await e.infer(new Float32Array(3 * 64 * 64), [1, 3, 64, 64]);` +
    ` console.log('ran ' + r.conf.length); }, (e) => console.log(e.constructor.name + ': ' + e.message));`;
  const run = (value: string) =>
    spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, FACEDET_CPU_TENSOR_CACHE_MB: value },
      encoding: 'utf8',
    }).stdout.trim();
  assert.is(run('0'), 'ran 336');
  assert.is(run('256'), 'ran 336');
  assert.is(
    run('lots'),
    'RangeError: FACEDET_CPU_TENSOR_CACHE_MB=lots is not an integer between 0 and 1048576',
  );
});

test('the tensor cache keeps every block of a large run; FACEDET_CPU_TENSOR_CACHE_MB fixes its limit', () => {
  if (!built) return;
  // MobileNet0.25 at 4 x 2048²: 1.06 GiB of blocks (a run's blocks add up to more than it has in use at
  // once), over the 1 GiB the cache used to keep. Each case in a process of its own (the cache is
  // process-wide); outputs collected between runs.
  const script = (size: number, batch: number) =>
    `const b = require(${JSON.stringify(path.resolve(__dirname, '..', 'dist', 'native'))}).loadBinding();` +
    `b.Engine.load({ modelPath: ${JSON.stringify(path.join(mobilenet, 'model.pt'))}, threads: 2 })` +
    `.then(async (e) => { const runs = []; const x = new Float32Array(${batch * 3 * size * size});` +
    ` for (let i = 0; i < 4; i++) { const before = b.tensorCache().fresh;` +
    ` await e.infer(x, [${batch}, 3, ${size}, ${size}]); runs.push(b.tensorCache().fresh - before); global.gc(); }` +
    ` console.log(JSON.stringify({ ...b.tensorCache(), runs })); });`;
  const run = (limit: string | undefined, size: number, batch: number) => {
    const env = { ...process.env };
    delete env.FACEDET_CPU_TENSOR_CACHE_MB;
    if (limit !== undefined) env.FACEDET_CPU_TENSOR_CACHE_MB = limit;
    const child = spawnSync(process.execPath, ['--expose-gc', '-e', script(size, batch)], {
      env,
      encoding: 'utf8',
    });
    assert.is(child.stderr, '');
    return JSON.parse(child.stdout) as { runs: number[] } & ReturnType<
      ReturnType<typeof loadBinding>['tensorCache']
    >;
  };
  const large = run(undefined, 2048, 4);
  assert.is(large.floorBytes, 2 ** 30);
  assert.is(large.fixed, false);
  assert.ok(large.peakInUseBytes > 2 ** 28, `${large.peakInUseBytes}`);
  assert.is(large.budgetBytes, 4 * large.peakInUseBytes);
  assert.ok(large.cachedBytes > 2 ** 30 && large.cachedBytes <= large.budgetBytes, `${large.cachedBytes}`);
  assert.equal(large.runs.slice(2), [0, 0]);
  // Fixed at 1 GiB (as the cache used to be): that run takes blocks anew every time.
  const fixed = run('1024', 2048, 4);
  assert.is(fixed.fixed, true);
  assert.is(fixed.budgetBytes, 2 ** 30);
  assert.ok(fixed.runs[2]! > 0 && fixed.runs[3]! > 0, `${fixed.runs}`);
  // Fixed at 1 MiB: nothing of a 512² run is kept.
  const tiny = run('1', 512, 1);
  assert.is(tiny.budgetBytes, 2 ** 20);
  assert.ok(
    tiny.runs.every((fresh) => fresh > 0),
    `${tiny.runs}`,
  );
  // Off: LibTorch's own allocator, nothing counted.
  const off = run('0', 512, 1);
  assert.equal(off.runs, [0, 0, 0, 0]);
  assert.is(off.budgetBytes + off.cachedBytes + off.peakInUseBytes, 0);
});

test('two copies of the addon in one process each run their own convolutions', () => {
  if (!built) return;
  // Each copy registers its operator in a namespace of its own: a shared one would abort the process
  // while the second copy loads, or mix the two copies' convolutions.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-copies-'));
  try {
    const addon = path.resolve(__dirname, '..', 'build', 'Release', 'facedet.node');
    const copies = [1, 2].map((i) => path.join(dir, `facedet-${i}.node`));
    for (const copy of copies) fs.copyFileSync(addon, copy);
    const script =
      `(async () => { const m = ${JSON.stringify(path.join(mobilenet, 'model.pt'))};` +
      ` const x = new Float32Array(3 * 128 * 128).map((_, i) => (i % 251) - 120); const out = [];` +
      ` for (const file of ${JSON.stringify(copies)}) {` +
      `   const e = await require(file).Engine.load({ modelPath: m, threads: 1 });` +
      `   out.push({ onednn: e.info().onednn, loc: Array.from((await e.infer(x, [1, 3, 128, 128])).loc) }); }` +
      ` const d = Math.max(...out[0].loc.map((v, i) => Math.abs(v - out[1].loc[i])));` +
      ` console.log(out[0].onednn + ' ' + out[1].onednn + ' ' + d); })().catch((e) => console.log(e.message));`;
    const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.is(result.status, 0, result.stderr);
    assert.is(result.stdout.trim(), '56 56 0');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a bad option is a TypeError with its exact message', async () => {
  await rejects(
    () =>
      loadBinding().Engine.load({
        modelPath: path.join(mobilenet, 'model.pt'),
        onednn: 'yes' as unknown as boolean,
      }),
    'Engine.load(options.onednn): expected a boolean, got a string',
    TypeError,
  );
});

test.run();
