// The GPU paths: LibTorch on CUDA and the TensorRT backend, each where it exists (an addon built against a
// CUDA LibTorch, or with TensorRT, and an NVIDIA GPU). Elsewhere this file registers one test that checks
// and documents that the CUDA path is unavailable here and fails cleanly. scripts/gpu-check.sh runs it on a
// GPU machine with FACEDET_REQUIRE_GPU=1, which turns "no GPU seen" into a failure.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, type ImageResult } from '../src';
import { readModel } from '../src/model';
import { loadBinding, type NativeEngine, type RawOutputs } from '../src/native';
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

const binding = loadBinding();
const cudaDevices = binding.cudaDeviceCount();
const torchCuda = binding.build.cuda && cudaDevices > 0;
// A TensorRT build on a CPU-only LibTorch cannot count GPUs through LibTorch: FACEDET_TEST_TENSORRT=1
// says one is there.
const tensorRt =
  binding.build.backends.includes('tensorrt') &&
  (cudaDevices > 0 || process.env.FACEDET_TEST_TENSORRT === '1');
const requireGpu = process.env.FACEDET_REQUIRE_GPU === '1';

const dir = requireModel(MOBILENET_DIR);
const card = readModel(dir).card;
const cpuModel = path.join(dir, card.files.torchscript);
const portableModel = path.join(dir, card.files.torchscript);
const fixtures = process.env.FACEDET_FIXTURES ?? FIXTURES;

type Shape4 = [number, number, number, number];
const KEYS = ['loc', 'conf', 'landmarks'] as const;

function finite(a: Float32Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return false;
  return true;
}

/** Images with faces: the seed images and the WIDER validation fixtures. */
function faceImages(): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    if (!fs.existsSync(d)) return;
    for (const entry of fs
      .readdirSync(d, { withFileTypes: true })
      .sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (/\.(jpe?g|png|gif)$/i.test(entry.name)) found.push(full);
    }
  };
  walk(path.join(fixtures, 'seed-images'));
  walk(path.join(fixtures, 'wider-val', 'images'));
  return found;
}

/** Runs `detector` and `reference` on every image; every face at >= 0.5 must match at IoU >= 0.9. */
async function assertSameFaces(
  reference: FaceDetector,
  detector: FaceDetector,
  label: string,
): Promise<void> {
  const images = faceImages();
  assert.ok(images.length >= 5, `only ${images.length} fixture images under ${fixtures}`);
  let matched = 0;
  let worstIou = 1;
  // Every image is compared; the differences are reported together at the end.
  const differences: string[] = [];
  for (const image of images) {
    const want = (await reference.detect(image)) as ImageResult;
    const got = (await detector.detect(image)) as ImageResult;
    assert.not.ok(want.error ?? got.error, `${image}: ${JSON.stringify(want.error ?? got.error)}`);
    const report = matchFaces(want.faces.map(toRef), got.faces.map(toRef), { minScore: 0.5, minIou: 0.9 });
    const name = path.basename(image);
    for (const face of report.missing) differences.push(`${name}: CPU face not found ${face}`);
    for (const face of report.extra) differences.push(`${name}: face the CPU does not find ${face}`);
    matched += report.matched;
    worstIou = Math.min(worstIou, report.worstIou);
  }
  console.log(
    `    ${label}: ${matched} faces matched over ${images.length} images, worst IoU ${worstIou.toFixed(4)}` +
      differences.map((d) => `\n      ${d}`).join(''),
  );
  assert.equal(differences, [], `${label}: faces that differ`);
  assert.ok(matched >= 50, `only ${matched} faces compared`);
}

function inputs(count: number, shape: Shape4, seed: number): Float32Array[] {
  const size = shape.reduce((a, b) => a * b, 1);
  let s = seed;
  return Array.from({ length: count }, () => {
    const a = new Float32Array(size);
    for (let i = 0; i < size; i++) {
      s = (s * 1103515245 + 12345) >>> 0;
      a[i] = ((s >>> 8) % 256) - 110;
    }
    return a;
  });
}

// --------------------------------------------------------------------------------------------------
// No GPU here: one test that documents it.
// --------------------------------------------------------------------------------------------------

if (!torchCuda && !tensorRt) {
  const unavailable = suite('gpu: unavailable on this machine');
  const why = !binding.build.cuda
    ? `the addon links a CPU-only LibTorch ${binding.build.torch}`
    : 'no CUDA device is visible';
  unavailable(
    `device 'cuda' fails cleanly (${why}; TensorRT: ${binding.build.tensorrt ?? 'not built'})`,
    async () => {
      assert.not.ok(requireGpu, 'FACEDET_REQUIRE_GPU=1, but no usable GPU path was found: ' + why);
      assert.is(cudaDevices, 0);
      await rejects(
        binding.Engine.load({ modelPath: portableModel, device: 'cuda', precision: 'fp16' }),
        /^device 'cuda' was requested, but LibTorch sees no CUDA device/,
        RangeError,
      );
      await rejects(
        FaceDetector.create({ model: dir, device: 'cuda', warmup: [] }),
        /^device 'cuda' was requested, but LibTorch sees no CUDA device/,
        RangeError,
      );
      if (binding.build.backends.includes('tensorrt')) {
        await rejects(
          binding.Engine.load({
            modelPath: path.join(dir, 'model.onnx'),
            backend: 'tensorrt',
            device: 'cuda',
          }),
          /CUDA sees no GPU/,
          RangeError,
        );
      } else {
        assert.throws(
          () => binding.Engine.load({ modelPath: cpuModel, backend: 'tensorrt', device: 'cuda' }),
          /this build of the addon has no TensorRT backend/,
        );
      }
    },
  );
  unavailable.run();
}

// --------------------------------------------------------------------------------------------------
// LibTorch on CUDA
// --------------------------------------------------------------------------------------------------

if (torchCuda) {
  const cuda = suite('gpu: LibTorch on CUDA');
  const reference = rawReference(dir);
  const refShape = reference.input.shape as Shape4;
  let cpu: NativeEngine;
  let cpuOut: RawOutputs;
  cuda.before(async () => {
    cpu = await binding.Engine.load({ modelPath: cpuModel, threads: os.availableParallelism() });
    cpuOut = await cpu.infer(reference.input.data, refShape);
  });
  cuda.after(() => cpu.dispose());

  const leading = card.fp16?.float32_convolutions ?? 0;
  for (const [precision, tolerance, float32Convolutions] of [
    ['fp32', 1e-3, 0], // TF32 off: fp32 on CUDA is fp32
    ['fp16', 0.05, 0], // BatchNorm folded in fp32, then every weight and activation in fp16
    ['fp16', 0.05, leading], // the model card's leading convolutions in float32, as FaceDetector runs it
  ] as const) {
    const label = `${precision}${float32Convolutions ? ` (first ${float32Convolutions} convolutions float32)` : ''}`;
    cuda(
      `${label}: raw outputs close to the CPU's on the reference input (conf within ${tolerance})`,
      async () => {
        const engine = await binding.Engine.load({
          modelPath: portableModel,
          device: 'cuda',
          precision,
          float32Convolutions,
        });
        const info = engine.info();
        assert.match(info.device, /^cuda/);
        assert.is(info.precision, precision);
        const out = await engine.infer(reference.input.data, refShape);
        const diffs = KEYS.map((k) => maxAbsDiff(out[k], cpuOut[k]));
        console.log(`    ${label}: max |CUDA - CPU| loc ${diffs[0]} conf ${diffs[1]} landmarks ${diffs[2]}`);
        for (const k of KEYS) {
          assert.equal(out.shapes[k], cpuOut.shapes[k], k);
          assert.ok(finite(out[k]), `${k} has NaN or Inf`);
        }
        assert.ok(diffs[1]! <= tolerance, `conf differs by ${diffs[1]}`);
        await engine.dispose();
      },
    );
  }

  cuda('fp16 ResNet50 (synthetic weights): finite outputs, close to fp32 on CUDA', async () => {
    const r50 = requireModel(RESNET50_SYNTHETIC_DIR);
    const file = path.join(r50, readModel(r50).card.files.torchscript);
    const shape: Shape4 = [2, 3, 256, 320];
    const [x] = inputs(1, shape, 7);
    const fp32 = await binding.Engine.load({ modelPath: file, device: 'cuda', precision: 'fp32' });
    const fp16 = await binding.Engine.load({ modelPath: file, device: 'cuda', precision: 'fp16' });
    const a = await fp32.infer(x!, shape);
    const b = await fp16.infer(x!, shape);
    for (const k of KEYS) assert.ok(finite(b[k]), `fp16 ${k} has NaN or Inf`);
    console.log(`    R50 fp16 vs fp32: max |diff| conf ${maxAbsDiff(a.conf, b.conf)}`);
    assert.ok(maxAbsDiff(a.conf, b.conf) <= 0.05);
    await Promise.all([fp32.dispose(), fp16.dispose()]);
  });

  cuda('an already frozen TorchScript file runs in fp32 and fp16, like the unfrozen one', async () => {
    // Frozen by the PyTorch that exported the model (on the CPU: BatchNorm folded in float32 there).
    const frozen = path.join(os.tmpdir(), `facedet-frozen-${process.pid}.pt`);
    execFileSync(process.env.FACEDET_PYTHON ?? '/usr/bin/python3', [
      '-c',
      'import sys, torch; torch.jit.save(torch.jit.freeze(torch.jit.load(sys.argv[1]).eval()), sys.argv[2])',
      portableModel,
      frozen,
    ]);
    try {
      for (const [precision, tolerance] of [
        ['fp32', 1e-4],
        ['fp16', 0.01],
      ] as const) {
        const a = await binding.Engine.load({ modelPath: portableModel, device: 'cuda', precision });
        const b = await binding.Engine.load({ modelPath: frozen, device: 'cuda', precision });
        const outA = await a.infer(reference.input.data, refShape);
        const outB = await b.infer(reference.input.data, refShape);
        const diffs = KEYS.map((k) => maxAbsDiff(outA[k], outB[k]));
        console.log(`    ${precision}: frozen file vs unfrozen, max |diff| ${diffs.join(' ')}`);
        assert.ok(diffs[1]! <= tolerance, `${precision}: conf differs by ${diffs[1]}`);
        await Promise.all([a.dispose(), b.dispose()]);
      }
    } finally {
      fs.rmSync(frozen, { force: true });
    }
  });

  for (const precision of ['fp32', 'fp16'] as const) {
    cuda(`${precision} detector: every CPU face at score >= 0.5 matched at IoU >= 0.9`, async () => {
      // Same pad multiple on both sides, so that only the device and precision differ.
      const common = { model: dir, padMultiple: 128, warmup: [] as [number, number][] };
      const reference = await FaceDetector.create({ ...common, device: 'cpu' });
      const detector = await FaceDetector.create({ ...common, device: 'cuda', precision });
      try {
        await assertSameFaces(reference, detector, `CUDA ${precision}`);
      } finally {
        await Promise.all([reference.dispose(), detector.dispose()]);
      }
    });
  }

  cuda('a CUDA detector pads to 128-px shape buckets by default', async () => {
    const detector = await FaceDetector.create({ model: dir, device: 'cuda', warmup: [] });
    assert.is(detector.info().options.padMultiple, 128);
    await detector.dispose();
  });

  cuda('the event loop keeps turning during a large CUDA inference', async () => {
    const engine = await binding.Engine.load({ modelPath: portableModel, device: 'cuda', precision: 'fp16' });
    const shape: Shape4 = [16, 3, 1024, 1024];
    const [x] = inputs(1, shape, 3);
    await engine.infer(x!, shape); // first run: cuDNN plans, allocations
    const started = performance.now();
    const { turns } = await eventLoopTurnsDuring(() => engine.infer(x!, shape));
    const ms = performance.now() - started;
    assert.ok(turns > 20, `only ${turns} event-loop turns in ${ms.toFixed(0)} ms`);
    await engine.dispose();
  });

  for (const precision of ['fp32', 'fp16'] as const) {
    cuda(`${precision}: concurrent infer calls give the same results as one at a time`, async () => {
      const engine = await binding.Engine.load({ modelPath: portableModel, device: 'cuda', precision });
      const shape: Shape4 = [2, 3, 384, 512];
      const xs = inputs(8, shape, 11);
      const alone: RawOutputs[] = [];
      for (const x of xs) alone.push(await engine.infer(x, shape));
      const together = await Promise.all(xs.map((x) => engine.infer(x, shape)));
      together.forEach((out, i) => {
        for (const k of KEYS) assert.ok(maxAbsDiff(out[k], alone[i]![k]) <= 1e-4, `input ${i} ${k}`);
      });
      await engine.dispose();
    });
  }

  cuda('concurrent detect() calls are all served, with the same faces as one at a time', async () => {
    const detector = await FaceDetector.create({
      model: dir,
      device: 'cuda',
      precision: 'fp16',
      maxBatchSize: 4,
      maxConcurrentBatches: 2,
      maxQueueDelayMs: 2,
      warmup: [],
    });
    const images = faceImages().slice(0, 6);
    const alone: ImageResult[] = [];
    for (const image of images) alone.push((await detector.detect(image)) as ImageResult);
    const list = Array.from({ length: 24 }, (_, i) => images[i % images.length]!);
    const together = await Promise.all(list.map((image) => detector.detect(image)));
    together.forEach((result, i) => {
      const report = matchFaces(alone[i % images.length]!.faces.map(toRef), result.faces.map(toRef), {
        minScore: 0.5,
        minIou: 0.9,
      });
      assert.equal([report.missing, report.extra], [[], []], `request ${i}`);
    });
    assert.ok(detector.batches < alone.length + together.length, 'requests were batched');
    await detector.dispose();
  });

  cuda.run();
}

// --------------------------------------------------------------------------------------------------
// TensorRT
// --------------------------------------------------------------------------------------------------

if (tensorRt) {
  const trt = suite('gpu: TensorRT backend');
  const onnx = path.join(dir, card.files.onnx ?? 'model.onnx');
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-trt-'));
  const reference = rawReference(dir);
  const refShape = reference.input.shape as Shape4;
  const options = (precision: 'fp32' | 'fp16') => ({
    modelPath: onnx,
    backend: 'tensorrt' as const,
    device: 'cuda',
    precision,
    cacheDir,
    maxBatch: 4,
    maxSize: 640,
  });
  const planFiles = () => fs.readdirSync(cacheDir).filter((f) => f.endsWith('.plan'));
  let cpuOut: RawOutputs;
  trt.before(async () => {
    assert.ok(fs.existsSync(onnx), `${onnx} is missing: export the model without --skip-onnx`);
    const cpu = await binding.Engine.load({ modelPath: cpuModel });
    cpuOut = await cpu.infer(reference.input.data, refShape);
    await cpu.dispose();
  });
  trt.after(() => fs.rmSync(cacheDir, { recursive: true, force: true }));

  for (const [precision, tolerance] of [
    ['fp32', 0.02],
    ['fp16', 0.05],
  ] as const) {
    trt(
      `${precision}: builds and caches a plan; raw outputs close to the CPU's (conf within ${tolerance})`,
      async () => {
        const before = planFiles().length;
        const engine = await binding.Engine.load(options(precision));
        assert.match(engine.info().version, /plan built/);
        assert.is(planFiles().length, before + 1);
        const out = await engine.infer(reference.input.data, refShape);
        const diffs = KEYS.map((k) => maxAbsDiff(out[k], cpuOut[k]));
        console.log(
          `    TensorRT ${precision}: max |TRT - CPU| loc ${diffs[0]} conf ${diffs[1]} landmarks ${diffs[2]}`,
        );
        for (const k of KEYS) assert.equal(out.shapes[k], cpuOut.shapes[k], k);
        assert.ok(diffs[1]! <= tolerance, `conf differs by ${diffs[1]}`);
        await engine.dispose();
      },
    );
  }

  trt('a second load reuses the cached plan without rebuilding it', async () => {
    const [file] = planFiles().map((f) => path.join(cacheDir, f));
    const precision = fs.readFileSync(file!, 'latin1').includes('precision=fp16') ? 'fp16' : 'fp32';
    const mtime = fs.statSync(file!).mtimeMs;
    const engine = await binding.Engine.load(options(precision));
    assert.match(engine.info().version, /plan cache/);
    assert.is(fs.statSync(file!).mtimeMs, mtime);
    await engine.dispose();
  });

  trt('a plan with a stale key or a corrupt body is rebuilt, never loaded', async () => {
    const engine = await binding.Engine.load(options('fp32'));
    await engine.dispose();
    const file = planFiles()
      .map((f) => path.join(cacheDir, f))
      .find((f) => fs.readFileSync(f, 'latin1').includes('precision=fp32'))!;
    const bytes = fs.readFileSync(file, 'latin1');
    // Another TensorRT version wrote it.
    fs.writeFileSync(file, bytes.replace(/tensorrt=[^\n]*/, 'tensorrt=9.9.9'), 'latin1');
    const stale = await binding.Engine.load(options('fp32'));
    assert.match(stale.info().version, /plan rebuilt \(stale key\)/);
    assert.ok(
      fs.readFileSync(file, 'latin1').startsWith(bytes.slice(0, bytes.indexOf('\n\n'))),
      'key rewritten',
    );
    const out = await stale.infer(reference.input.data, refShape);
    assert.ok(maxAbsDiff(out.conf, cpuOut.conf) <= 0.02);
    await stale.dispose();
    // Half a plan.
    fs.writeFileSync(file, bytes.slice(0, Math.floor(bytes.length / 2)), 'latin1');
    const truncated = await binding.Engine.load(options('fp32'));
    assert.match(truncated.info().version, /plan rebuilt \(truncated plan\)/);
    await truncated.dispose();
  });

  trt('batches over maxBatch are split; shapes outside the profile are a RangeError', async () => {
    const engine = await binding.Engine.load(options('fp32'));
    const shape: Shape4 = [6, 3, 256, 320];
    const xs = inputs(6, [1, 3, 256, 320], 5);
    const packed = new Float32Array(xs.reduce((n, x) => n + x.length, 0));
    xs.forEach((x, i) => packed.set(x, i * x.length));
    const all = await engine.infer(packed, shape);
    const one = await engine.infer(xs[5]!, [1, 3, 256, 320]);
    const per = one.conf.length;
    // Another batch size may pick other kernels: equal up to rounding.
    assert.ok(maxAbsDiff(all.conf.subarray(5 * per), one.conf) <= 2e-3);
    await rejects(
      engine.infer(new Float32Array(3 * 704 * 704), [1, 3, 704, 704]),
      /outside the TensorRT engine's profile/,
      RangeError,
    );
    await engine.dispose();
  });

  trt('concurrent batches are served and equal one at a time', async () => {
    const engine = await binding.Engine.load(options('fp16'));
    const shape: Shape4 = [2, 3, 320, 320];
    const xs = inputs(6, shape, 9);
    const alone: RawOutputs[] = [];
    for (const x of xs) alone.push(await engine.infer(x, shape));
    const together = await Promise.all(xs.map((x) => engine.infer(x, shape)));
    together.forEach((out, i) => assert.ok(maxAbsDiff(out.conf, alone[i]!.conf) <= 1e-4, `input ${i}`));
    await engine.dispose();
  });

  trt('fp16 detector: every CPU face at score >= 0.5 matched at IoU >= 0.9', async () => {
    const common = { model: dir, padMultiple: 128, maxSize: 1024, warmup: [] as [number, number][] };
    const reference = await FaceDetector.create({ ...common, device: 'cpu' });
    const detector = await FaceDetector.create({
      ...common,
      device: 'cuda',
      backend: 'tensorrt',
      precision: 'fp16',
      cacheDir,
      maxBatchSize: 4,
    });
    try {
      await assertSameFaces(reference, detector, 'TensorRT fp16');
    } finally {
      await Promise.all([reference.dispose(), detector.dispose()]);
    }
  });

  trt.run();
}
