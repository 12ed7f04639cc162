// The raw addon: equivalence with PyTorch, the bad-call table, the event loop, concurrency, disposal.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readModel } from '../src/model';
import { type DecodedImage, packBatch } from '../src/preprocess';
import { NativeInferenceEngine } from '../src/engine';
import { loadBinding, type NativeEngine } from '../src/native';
import { rejects } from './helpers/assert';
import { eventLoopTurnsDuring } from './helpers/event-loop';
import { MOBILENET_DIR, maxAbsDiff, rawReference, requireModel } from './helpers/model';

const binding = loadBinding();
const dir = requireModel(MOBILENET_DIR);
const card = readModel(dir).card;
const cpuModel = path.join(dir, card.files.torchscript);
const reference = rawReference(dir);

const equivalence = suite('addon: equals PyTorch');

for (const threads of [1, 2]) {
  equivalence(`${threads} thread(s): raw outputs within 1e-4 of PyTorch on the reference input`, async () => {
    const engine = await binding.Engine.load({ modelPath: cpuModel, threads });
    const out = await engine.infer(
      reference.input.data,
      reference.input.shape as [number, number, number, number],
    );
    for (const key of ['loc', 'conf', 'landmarks'] as const) {
      assert.equal(out.shapes[key], reference[key].shape, key);
      const err = maxAbsDiff(out[key], reference[key].data);
      assert.ok(err <= 1e-4, `${key}: max abs error ${err}`);
    }
    await engine.dispose();
  });
}

equivalence('an array of CHW images gives the same outputs as the packed batch', async () => {
  const engine = await binding.Engine.load({ modelPath: cpuModel });
  const [n, c, h, w] = reference.input.shape as [number, number, number, number];
  const size = c * h * w;
  const images = Array.from({ length: n }, (_, i) => reference.input.data.slice(i * size, (i + 1) * size));
  const packed = await engine.infer(reference.input.data, [n, c, h, w]);
  const separate = await engine.infer(images, [c, h, w]);
  for (const key of ['loc', 'conf', 'landmarks'] as const) {
    assert.is(maxAbsDiff(packed[key], separate[key]), 0, key);
  }
  await engine.dispose();
});

// uint8 input (what the detector uses on the CPU): the addon converts the decoded RGB pixels itself, and
// must compute exactly what packBatch computes in JS from the same pixels.
equivalence(
  'uint8 RGB NHWC input gives the outputs of the float tensor packBatch makes from it',
  async () => {
    const mean = card.input.mean;
    const [n, h, w] = [2, 96, 128];
    const pixels = new Uint8Array(n * h * w * 3);
    let seed = 3;
    for (let i = 0; i < pixels.length; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      pixels[i] = seed >>> 24;
    }
    const images: DecodedImage[] = Array.from({ length: n }, (_, i) => ({
      data: Buffer.from(pixels.subarray(i * h * w * 3, (i + 1) * h * w * 3)),
      width: w,
      height: h,
      originalWidth: w,
      originalHeight: h,
    }));
    const { tensor, shape } = packBatch(images, { mean, padMultiple: 32 });
    const float = await binding.Engine.load({ modelPath: cpuModel, threads: 2 });
    const bytes = await binding.Engine.load({ modelPath: cpuModel, threads: 2, uint8Mean: mean });
    assert.is(float.info().input, 'float32-nchw');
    assert.is(bytes.info().input, 'uint8-nhwc');
    const want = await float.infer(tensor, shape);
    const got = await bytes.infer(pixels, [n, 3, h, w]);
    for (const key of ['loc', 'conf', 'landmarks'] as const) {
      assert.equal(got.shapes[key], want.shapes[key], key);
      assert.ok(maxAbsDiff(got[key], want[key]) <= 1e-5, `${key}: ${maxAbsDiff(got[key], want[key])}`);
    }
    assert.throws(
      () => bytes.infer(tensor, shape),
      (e: Error) =>
        e instanceof TypeError &&
        /^infer\(input\): this engine takes a Uint8Array \(RGB, NHWC\), got Float32Array$/.test(e.message),
    );
    assert.throws(
      () => bytes.infer(pixels.subarray(1), [n, 3, h, w]),
      (e: Error) =>
        e instanceof RangeError &&
        /^infer\(input\): length 73727 does not match shape \[2,3,96,128\] \(73728 bytes\)$/.test(e.message),
    );
    await Promise.all([float.dispose(), bytes.dispose()]);
  },
);

equivalence.run();

const badCalls = suite('addon: bad calls');

let engine: NativeEngine;
badCalls.before(async () => {
  engine = await binding.Engine.load({ modelPath: cpuModel });
});
badCalls.after(() => engine.dispose());

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-native-'));
const corrupt = path.join(tmp, 'corrupt.pt');
fs.writeFileSync(corrupt, 'this is not a TorchScript archive');

type LoadArgs = Parameters<typeof binding.Engine.load>[0];
const loadCases: [string, unknown, RegExp, new (...args: never[]) => Error][] = [
  ['no options', undefined, /^Engine\.load\(options\): expected an object, got undefined$/, TypeError],
  [
    'options is a string',
    'model.pt',
    /^Engine\.load\(options\): expected an object, got a string$/,
    TypeError,
  ],
  ['no modelPath', {}, /^Engine\.load\(options\.modelPath\): expected the path of a model file$/, TypeError],
  [
    'modelPath is a number',
    { modelPath: 5 },
    /^Engine\.load\(options\.modelPath\): expected a string, got a number$/,
    TypeError,
  ],
  [
    'threads is NaN',
    { modelPath: cpuModel, threads: NaN },
    /options\.threads\): expected an integer between 0 and 1024, got NaN$/,
    RangeError,
  ],
  [
    'threads is negative',
    { modelPath: cpuModel, threads: -2 },
    /options\.threads\): expected an integer between 0 and 1024/,
    RangeError,
  ],
  [
    'threads is a string',
    { modelPath: cpuModel, threads: '2' },
    /options\.threads\): expected an integer, got a string$/,
    TypeError,
  ],
  [
    'float32Convolutions is negative',
    { modelPath: cpuModel, float32Convolutions: -1 },
    /options\.float32Convolutions\): expected an integer between 0 and 1048576, got -1$/,
    RangeError,
  ],
  [
    'uint8Mean is not three bytes',
    { modelPath: cpuModel, uint8Mean: [104, 117] },
    /^Engine\.load\(options\.uint8Mean\): expected an array of 3 numbers between 0 and 255$/,
    TypeError,
  ],
  [
    'unknown backend',
    { modelPath: cpuModel, backend: 'onnx' },
    /options\.backend\): expected 'torch' or 'tensorrt', got 'onnx'$/,
    RangeError,
  ],
];

for (const [name, options, message, errorClass] of loadCases) {
  badCalls(`Engine.load: ${name} -> ${errorClass.name}`, () => {
    assert.throws(
      () => binding.Engine.load(options as LoadArgs),
      (e: Error) => e instanceof errorClass && message.test(e.message),
    );
  });
}

const asyncLoadCases: [string, LoadArgs, RegExp, new (...args: never[]) => Error][] = [
  [
    'a missing file',
    { modelPath: path.join(tmp, 'missing.pt') },
    /^model file not found or unreadable: .*missing\.pt$/,
    Error,
  ],
  [
    'a corrupt file',
    { modelPath: corrupt },
    /^could not load TorchScript model .*corrupt\.pt: PytorchStreamReader failed/,
    Error,
  ],
  [
    'cuda on a CPU-only LibTorch',
    { modelPath: cpuModel, device: 'cuda' },
    /^device 'cuda' was requested, but LibTorch sees no CUDA device/,
    RangeError,
  ],
  [
    'an unknown device',
    { modelPath: cpuModel, device: 'tpu' },
    /^device 'tpu' is not 'cpu', 'cuda' or 'cuda:N'$/,
    RangeError,
  ],
  [
    'fp16 on CPU',
    { modelPath: cpuModel, precision: 'fp16' },
    /^precision 'fp16' needs a CUDA device/,
    RangeError,
  ],
  [
    'an unknown precision',
    { modelPath: cpuModel, precision: 'fp8' as 'fp16' },
    /^precision 'fp8' is not 'fp32', 'fp16', 'bf16' or 'int8'$/,
    RangeError,
  ],
];
if (!binding.build.backends.includes('tensorrt')) {
  asyncLoadCases.push([
    'tensorrt without TensorRT',
    { modelPath: cpuModel, backend: 'tensorrt' },
    /this build of the addon has no TensorRT backend/,
    Error,
  ]);
}

for (const [name, options, message, errorClass] of asyncLoadCases) {
  badCalls(`Engine.load: ${name} -> rejects with ${errorClass.name}`, async () => {
    // Errors found while loading reject the promise (the load runs on a worker thread); a build
    // without TensorRT knows at once and throws.
    await rejects(async () => binding.Engine.load(options), message, errorClass);
  });
}

badCalls('new Engine() directly -> TypeError', () => {
  const Engine = binding.Engine as unknown as new () => unknown;
  assert.throws(() => new Engine(), /Engine cannot be constructed directly: use Engine\.load\(options\)/);
});

const f32 = (n: number) => new Float32Array(n);
const inferCases: [string, unknown[], RegExp, new (...args: never[]) => Error][] = [
  [
    'no arguments',
    [],
    /^infer\(input\): expected a Float32Array or an array of Float32Array, got nothing$/,
    TypeError,
  ],
  [
    'a Float64Array',
    [new Float64Array(3 * 32 * 32), [1, 3, 32, 32]],
    /^infer\(input\): expected a Float32Array or an array of Float32Array, got Float64Array$/,
    TypeError,
  ],
  ['a Buffer', [Buffer.alloc(12), [1, 3, 1, 1]], /got Uint8Array$/, TypeError],
  [
    'no shape',
    [f32(3 * 32 * 32)],
    /^infer\(shape\): expected \[n, c, h, w\] of positive integers, got undefined$/,
    TypeError,
  ],
  ['a 3-d shape for a packed batch', [f32(3 * 32 * 32), [3, 32, 32]], /got 3 dimension\(s\)$/, RangeError],
  ['a NaN size', [f32(3 * 32 * 32), [1, 3, NaN, 32]], /^infer\(shape\): .* got NaN at index 2$/, RangeError],
  ['a fractional size', [f32(3 * 32 * 32), [1, 3, 32.5, 32]], /got 32\.5 at index 2$/, RangeError],
  ['a zero batch', [f32(0), [0, 3, 32, 32]], /got 0 at index 0$/, RangeError],
  ['a string size', [f32(3 * 32 * 32), [1, 3, '32', 32]], /got a string at index 2$/, TypeError],
  [
    '4 channels',
    [f32(4 * 32 * 32), [1, 4, 32, 32]],
    /^infer\(shape\): channels must be 3, got 4$/,
    RangeError,
  ],
  [
    'a length that does not match',
    [f32(100), [1, 3, 32, 32]],
    /^infer\(input\): length 100 does not match shape \[1,3,32,32\] \(3072 floats\)$/,
    RangeError,
  ],
  [
    'a side over the limit',
    [f32(3), [1, 3, 20000, 1]],
    /^infer\(shape\): height and width must be at most 16384, got 20000x1$/,
    RangeError,
  ],
  [
    'a batch over the limit',
    [f32(3), [2000, 3, 1, 1]],
    /^infer\(shape\): batch size 2000 is over the limit of 1024$/,
    RangeError,
  ],
  ['an empty array', [[], [3, 32, 32]], /^infer\(input\): the batch is empty$/, RangeError],
  [
    'an array with a non-Float32Array',
    [
      [f32(3 * 32 * 32), 'x'],
      [3, 32, 32],
    ],
    /^infer\(input\[1\]\): expected a Float32Array, got a string$/,
    TypeError,
  ],
  [
    'an array item of the wrong length',
    [[f32(7)], [3, 32, 32]],
    /^infer\(input\[0\]\): length 7 does not match shape \[3,32,32\]/,
    RangeError,
  ],
  [
    'threads 0',
    [f32(3 * 32 * 32), [1, 3, 32, 32], 0],
    /^infer\(threads\): expected an integer between 1 and \d+, got 0$/,
    RangeError,
  ],
  [
    'fractional threads',
    [f32(3 * 32 * 32), [1, 3, 32, 32], 1.5],
    /^infer\(threads\): .*, got 1\.5$/,
    RangeError,
  ],
  [
    "more threads than the engine's",
    [f32(3 * 32 * 32), [1, 3, 32, 32], 1025],
    /^infer\(threads\): expected an integer between 1 and \d+, got 1025$/,
    RangeError,
  ],
  [
    'threads as a string',
    [f32(3 * 32 * 32), [1, 3, 32, 32], '1'],
    /^infer\(threads\): expected an integer, got a string$/,
    TypeError,
  ],
  [
    'an array with a 4-d shape',
    [[f32(3 * 32 * 32)], [1, 3, 32, 32]],
    /^infer\(shape\): expected \[c, h, w\] of positive integers for an array of images, got 4 dimension\(s\)$/,
    RangeError,
  ],
];

for (const [name, args, message, errorClass] of inferCases) {
  badCalls(`infer: ${name} -> ${errorClass.name}`, () => {
    const infer = engine.infer as unknown as (...a: unknown[]) => unknown;
    assert.throws(
      () => infer.apply(engine, args),
      (e: Error) => e instanceof errorClass && message.test(e.message),
    );
  });
}

badCalls('infer after dispose -> Error', async () => {
  const other = await binding.Engine.load({ modelPath: cpuModel });
  await other.dispose();
  assert.is(other.disposed, true);
  assert.throws(() => other.infer(f32(3 * 32 * 32), [1, 3, 32, 32]), /^infer\(\): the engine is disposed$/);
  await other.dispose(); // twice is fine
});

badCalls(
  'a TorchScript model that is not RetinaFace -> the batch rejects, the engine stays usable',
  async () => {
    const identity = path.join(tmp, 'identity.pt');
    execFileSync('/usr/bin/python3', [
      '-c',
      'import sys, torch; torch.jit.script(torch.nn.Identity()).save(sys.argv[1])',
      identity,
    ]);
    const wrong = await binding.Engine.load({ modelPath: identity });
    await rejects(
      wrong.infer(f32(3 * 32 * 32), [1, 3, 32, 32]),
      /^model did not return a tuple \(loc, conf, landmarks\)$/,
    );
    await rejects(wrong.infer(f32(3 * 32 * 32), [1, 3, 32, 32]), /did not return a tuple/);
    await wrong.dispose();
  },
);

badCalls('the engine interface checks threads in JS, with the message of every other option', async () => {
  const e = await NativeInferenceEngine.load({
    modelPath: cpuModel,
    backend: 'torch',
    device: 'cpu',
    precision: 'fp32',
    threads: 2,
  });
  try {
    for (const [threads, got] of [
      [3, '3 of type number'],
      [0.5, '0.5 of type number'],
      ['2', '2 of type string'],
    ] as const) {
      await rejects(
        e.infer(f32(3 * 32 * 32), [1, 3, 32, 32], { threads: threads as number }),
        `Expected integer between 1 and 2 for threads but received ${got}`,
      );
    }
    assert.is((await e.infer(f32(3 * 32 * 32), [1, 3, 32, 32], { threads: 1 })).conf.length, 21 * 2 * 2);
  } finally {
    await e.dispose();
  }
});

badCalls.run();

const runtime = suite('addon: runtime behaviour');

runtime('the event loop keeps turning during a large inference', async () => {
  const engine = await binding.Engine.load({ modelPath: cpuModel, threads: 2 });
  const shape: [number, number, number, number] = [4, 3, 1024, 1024];
  const input = f32(shape.reduce((a, b) => a * b));
  const { turns, ms: elapsed } = await eventLoopTurnsDuring(() => engine.infer(input, shape));
  // A blocking call would allow at most one or two turns; here the loop ran all along.
  assert.ok(turns > 20, `only ${turns} event-loop turns in ${elapsed.toFixed(0)} ms`);
  await engine.dispose();
});

runtime('concurrent infer calls are safe and give the same results as one at a time', async () => {
  const engine = await binding.Engine.load({ modelPath: cpuModel });
  const [n, c, h, w] = reference.input.shape as [number, number, number, number];
  const size = c * h * w;
  const images = Array.from({ length: n }, (_, i) => reference.input.data.slice(i * size, (i + 1) * size));
  const alone = await Promise.all(images.map((image) => engine.infer(image, [1, c, h, w])));
  const together = await Promise.all(
    Array.from({ length: 6 }, (_, k) => engine.infer(images[k % n]!, [1, c, h, w])),
  );
  together.forEach((out, k) => assert.is(maxAbsDiff(out.conf, alone[k % n]!.conf), 0));
  await engine.dispose();
});

runtime(
  'one-thread CPU batches at once (one beside the primary thread): the outputs of one at a time',
  async () => {
    // The detector runs two one-thread batches at once under load on 2 CPUs (native/engine.cc); oneDNN's
    // shared scratchpad once mixed their convolutions' intermediate results (every fourth output wrong).
    const engine = await binding.Engine.load({ modelPath: cpuModel, threads: 2, uint8Mean: card.input.mean });
    const shape: [number, number, number, number] = [1, 3, 384, 512];
    let seed = 3;
    const images = Array.from({ length: 4 }, () =>
      new Uint8Array(3 * 384 * 512).map(() => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24),
    );
    const alone: Awaited<ReturnType<NativeEngine['infer']>>[] = [];
    for (const image of images) alone.push(await engine.infer(image, shape, 1));
    for (let round = 0; round < 10; round++) {
      const together = await Promise.all(images.map((image) => engine.infer(image, shape, 1)));
      together.forEach((out, i) => {
        for (const key of ['loc', 'conf', 'landmarks'] as const) {
          assert.ok(maxAbsDiff(out[key], alone[i]![key]) < 1e-4, `round ${round}, image ${i}, ${key}`);
        }
      });
    }
    await engine.dispose();
  },
);

runtime('dispose() waits for the batches in flight, which complete normally', async () => {
  const engine = await binding.Engine.load({ modelPath: cpuModel });
  const pending = engine.infer(
    reference.input.data,
    reference.input.shape as [number, number, number, number],
  );
  const disposed = engine.dispose();
  assert.is(engine.disposed, true);
  const out = await pending;
  assert.ok(maxAbsDiff(out.conf, reference.conf.data) <= 1e-4);
  await disposed;
});

runtime('outputs stay valid after the engine is disposed and garbage collected', async () => {
  const engine = await binding.Engine.load({ modelPath: cpuModel });
  const out = await engine.infer(
    reference.input.data,
    reference.input.shape as [number, number, number, number],
  );
  await engine.dispose();
  assert.ok(maxAbsDiff(out.loc, reference.loc.data) <= 1e-4);
});

const child = (script: string) =>
  spawnSync(process.execPath, ['--expose-gc', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, FACEDET_NATIVE: path.resolve('build/Release/facedet.node') },
    timeout: 120_000,
  });

runtime('the input stays alive on the worker thread after JS drops it (forced GC mid-inference)', () => {
  const result = child(`
    const b = require(process.env.FACEDET_NATIVE);
    b.Engine.load({ modelPath: ${JSON.stringify(cpuModel)} }).then(async (e) => {
      const expected = await e.infer(new Float32Array(3 * 512 * 512).fill(-50), [1, 3, 512, 512]);
      const p = e.infer(new Float32Array(3 * 512 * 512).fill(-50), [1, 3, 512, 512]);
      for (let i = 0; i < 5; i++) { global.gc(); new Float32Array(3 * 512 * 512).fill(99); }
      const out = await p;
      let diff = 0;
      for (let i = 0; i < out.conf.length; i++) diff = Math.max(diff, Math.abs(out.conf[i] - expected.conf[i]));
      process.stdout.write('diff ' + diff + String.fromCharCode(10));
    });`);
  assert.is(result.status, 0, result.stderr);
  assert.match(result.stdout, /diff 0\n/, `stdout: ${result.stdout} stderr: ${result.stderr}`);
});

// The threads of this process and the CPUs each may run on, as a child script prints them.
const threadsScript = `
  const fs = require('fs');
  const threads = () => fs.readdirSync('/proc/self/task').map((t) => ({ tid: Number(t),
    cpus: fs.readFileSync('/proc/self/task/' + t + '/status', 'utf8').match(/Cpus_allowed_list:\\s*(\\S+)/)[1] }));
  const print = (label) => process.stdout.write(JSON.stringify({ label, threads: threads() }) + String.fromCharCode(10));`;

interface ThreadsReport {
  label: string;
  threads: { tid: number; cpus: string }[];
}
const reports = (stdout: string) =>
  stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as ThreadsReport);

runtime('every CPU engine of a process runs on one thread: a second engine adds no threads', () => {
  const result = child(`${threadsScript}
    const b = require(process.env.FACEDET_NATIVE);
    (async () => {
      const x = new Float32Array(3 * 64 * 64);
      const a = await b.Engine.load({ modelPath: ${JSON.stringify(cpuModel)}, threads: 2 });
      await a.infer(x, [1, 3, 64, 64]);
      print('one engine');
      const c = await b.Engine.load({ modelPath: ${JSON.stringify(cpuModel)}, threads: 2 });
      await Promise.all([a.infer(x, [1, 3, 64, 64]), c.infer(x, [1, 3, 64, 64])]);
      print('two engines');
    })();`);
  assert.is(result.status, 0, result.stderr);
  const [one, two] = reports(result.stdout);
  // A thread (and an OpenMP team) per engine is what made LibTorch slow on 2 CPUs (native/engine.cc).
  assert.is(two!.threads.length, one!.threads.length, result.stdout);
});

runtime('a LibTorch team as large as the CPUs gets one CPU per thread; the JS thread stays free', () => {
  const cpus = os.availableParallelism();
  for (const threads of [cpus, 1]) {
    const result = child(`${threadsScript}
      const b = require(process.env.FACEDET_NATIVE);
      b.Engine.load({ modelPath: ${JSON.stringify(cpuModel)}, threads: ${threads} }).then(async (e) => {
        await e.infer(new Float32Array(3 * 64 * 64), [1, 3, 64, 64]);
        print('after');
      });`);
    assert.is(result.status, 0, result.stderr);
    const [after] = reports(result.stdout);
    const all = `0-${cpus - 1}`;
    const main = after!.threads.find((t) => t.tid === result.pid)!;
    assert.is(main.cpus, cpus === 1 ? '0' : all, 'the JS thread is not pinned');
    const pinned = after!.threads.filter((t) => t.cpus !== all).map((t) => t.cpus);
    if (threads >= 2) {
      assert.equal(
        pinned.sort((p, q) => Number(p) - Number(q)),
        Array.from({ length: cpus }, (_, i) => String(i)),
        result.stdout,
      );
    } else {
      assert.equal(pinned, [], `a one-thread engine pins nothing: ${result.stdout}`);
    }
  }
});

// CPU time of each of this process's threads, in clock ticks (Linux).
function threadTicks(): Map<string, number> {
  const ticks = new Map<string, number>();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks.set(tid, Number(fields[11]) + Number(fields[12])); // utime + stime
    } catch {
      // the thread ended
    }
  }
  return ticks;
}

runtime(
  'infer with threads: 1 runs the network on one thread (per-thread CPU time), with the same outputs',
  async () => {
    if (process.platform !== 'linux' || os.availableParallelism() < 2) return;
    const e = await binding.Engine.load({ modelPath: cpuModel, threads: 2 });
    const shape: [number, number, number, number] = [1, 3, 320, 320];
    const input = new Float32Array(3 * 320 * 320).map((_, i) => ((i * 7919) % 255) - 120);
    const busy: Record<number, number> = {};
    const outputs: Record<number, Float32Array> = {};
    for (const threads of [2, 1, 2]) {
      outputs[threads] = (await e.infer(input, shape, threads)).conf; // plans this thread count's kernels
      const before = threadTicks();
      const start = performance.now();
      while (performance.now() - start < 700) await e.infer(input, shape, threads);
      // Threads that ran for at least 150 ms of the 700 (ticks are 10 ms): the network's.
      busy[threads] = [...threadTicks()].filter(([tid, t]) => t - (before.get(tid) ?? t) >= 15).length;
    }
    assert.is(busy[1], 1, 'threads: 1');
    assert.is(busy[2], 2, 'threads: 2');
    assert.is(maxAbsDiff(outputs[1]!, outputs[2]!) <= 1e-5, true);
    await e.dispose();
  },
);

runtime('process.exit() while an inference runs ends the process cleanly', () => {
  for (const stage of ['loading', 'inferring', 'disposing']) {
    const result = child(`
      const b = require(process.env.FACEDET_NATIVE);
      const p = b.Engine.load({ modelPath: ${JSON.stringify(cpuModel)} });
      if (${JSON.stringify(stage)} === 'loading') setImmediate(() => process.exit(0));
      p.then((e) => {
        e.infer(new Float32Array(3 * 1024 * 1024), [1, 3, 1024, 1024]);
        if (${JSON.stringify(stage)} === 'disposing') e.dispose();
        setTimeout(() => process.exit(0), 20);
      });`);
    assert.is(result.signal, null, `${stage}: killed by ${result.signal}`);
    assert.is(result.status, 0, `${stage}: ${result.stderr}`);
  }
});

runtime.run();
