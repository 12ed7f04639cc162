// SPDX-License-Identifier: MIT
// `facedet bench`: per-image CPU times of the engine alone and of the whole library path (decode ->
// preprocess -> infer -> postprocess) over the original project's grid (batch 1/4/16 x 256..2048
// squared), for each model and each of our engines, with two baselines measured IN THE SAME RUN,
// interleaved round by round with ours: (1) the same network in eager PyTorch with the original
// project's style of pre/postprocessing (scripts/bench_pytorch.py), whole path and network only;
// (2) onnxruntime-node used directly on the same model.onnx (engine only).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FaceDetector } from '../detector';
import { type InferenceEngine, NativeInferenceEngine } from '../engine';
import { OnnxRuntimeEngine, onnxRuntimeVersion } from '../engines/onnxruntime';
import { type ModelSource, modelFile, readModel } from '../model';
import { loadBinding, loadJpegBinding } from '../native';
import { decodeImage, packBatch } from '../preprocess';
import { type BenchImage, benchImage, defaultSourceImage } from './images';
import { type CpuShare, type MachineFacts, cpuShare, cpuSnapshot, load1, machineFacts } from './machine';
import { PythonBaseline } from './python';
import { type Summary, summarize } from './stats';

/** Our engines: LibTorch in fp32 and in bf16 (CPUs with AVX512-BF16 or AMX), ONNX Runtime in fp32. */
export type Engine = 'torch' | 'torch-bf16' | 'onnxruntime';
export const OUR_ENGINES: readonly Engine[] = ['torch', 'torch-bf16', 'onnxruntime'];
export type Impl = Engine | 'ort-direct' | 'pytorch';
export type Measure = 'engine' | 'whole';

export const IMPL_LABELS: Record<Impl, string> = {
  torch: 'LibTorch addon',
  'torch-bf16': 'LibTorch addon, bf16',
  onnxruntime: 'ONNX Runtime engine',
  'ort-direct': 'onnxruntime-node direct',
  pytorch: 'eager PyTorch',
};

export const DEFAULT_SIZES = [256, 512, 1024, 2048];
export const DEFAULT_BATCHES = [1, 4, 16];

export interface BenchOptions {
  /** Model folders (default: the exported MobileNet0.25 and ResNet50-synthetic models). */
  models: string[];
  sizes: number[];
  batches: number[];
  /** Fixed number of measured rounds per cell (default: time-boxed, see cellSeconds). */
  iterations?: number;
  threads: number;
  engines: Engine[];
  measures: Measure[];
  /** Baseline 1: eager PyTorch from Python. */
  pytorch: boolean;
  /** Baseline 2: onnxruntime-node on the same ONNX, in this thread. */
  ortDirect: boolean;
  /** Run the cells the default plan skips. */
  full: boolean;
  /** Skip cells that would not finish within this many minutes from the start (0: no limit). */
  maxMinutes: number;
  /** Time box of the measured rounds of one cell (over all passes). */
  cellSeconds: number;
  /**
   * Passes over each batch size's cells (default 1): each gives every cell its share of the rounds and
   * of the time box, so that a cell's rounds are spread over minutes (at most one pass per round).
   */
  passes: number;
  minRounds: number;
  maxRounds: number;
  /** Photo the benchmark JPEGs are cut from. */
  image?: string;
  python: string;
  log: (line: string) => void;
}

export interface ImplResult extends Summary {
  /** Per-image milliseconds of each measured round. */
  samples: number[];
  /** Faces found per image (whole path). */
  faces?: number;
  error?: string;
  /**
   * Whole path, batch 1: the same implementation's first run after the machine idled IDLE_MS, i.e. a
   * sporadic request (the timed runs above are warm: each right after an untimed one).
   */
  afterIdle?: Summary & { samples: number[] };
}

export interface CellEnv {
  cpu: string;
  cpus: number;
  threads: number;
  libtorch: string | null;
  onnxruntime: string | null;
  pytorch: string | null;
  node: string;
}

export interface Cell {
  model: string;
  backbone: string;
  synthetic: boolean;
  size: number;
  batch: number;
  status: 'measured' | 'skipped';
  reason?: string;
  rounds?: number;
  warmup?: number;
  seconds?: number;
  /** 1-minute load average before and after the cell. */
  load?: [number, number];
  /** CPU used by other processes (and stolen by the hypervisor) while the cell's rounds ran. */
  others?: CpuShare;
  results?: Partial<Record<Measure, Partial<Record<Impl, ImplResult>>>>;
  /** Baseline median / ours median, by measure, "ours:baseline" (> 1: ours is faster). */
  speedups?: Partial<Record<Measure, Record<string, number>>>;
  /** Median over rounds of baseline ÷ ours within the same round: steadier when the load drifts. */
  pairedSpeedups?: Partial<Record<Measure, Record<string, number>>>;
  env?: CellEnv;
}

export interface BenchReport {
  tool: string;
  date: string;
  machine: MachineFacts;
  settings: {
    threads: number;
    engines: Engine[];
    measures: Measure[];
    baselines: string[];
    rounds: string;
    image: string;
    full: boolean;
    maxMinutes: number;
  };
  models: {
    name: string;
    dir: string;
    backbone: string;
    synthetic: boolean;
    label: string;
    /** From the model card (absent in cards older than the field). */
    convFlopsPerPixel?: number;
  }[];
  cells: Cell[];
  seconds: number;
  /** Highest 1-minute load average seen during the run. */
  maxLoad: number;
  /** Most CPU other processes used (and the hypervisor stole) in any cell, in CPUs. */
  maxOthers?: CpuShare;
  /** Whether other work competed for the CPUs enough to disturb the timings (see BUSY_CPUS). */
  busy: boolean;
  notes: string[];
}

export function modelLabel(card: { backbone: string; synthetic: boolean }): string {
  const name = card.backbone === 'mobilenet0.25' ? 'MobileNet0.25' : 'ResNet50';
  return card.synthetic ? `${name} (SYNTHETIC weights)` : name;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * How long to wait after a run of this implementation before the next one starts, so that what it
 * leaves running does not slow the next: ONNX Runtime's default threads spin for ≈ 20-30 ms after a
 * run; the Python baseline's OpenBLAS threads (eager PyTorch runs some convolutions through BLAS) for
 * ≈ 0.1 s; after a LibTorch run something (OpenMP threads, freed memory) disturbs the next run for more
 * than 30 ms. Measured on 2 CPUs, ResNet50 512²: our ONNX Runtime engine timed 158-162 ms right after
 * those two with a 30 ms pause, 123-129 ms on its own or with these pauses.
 */
function settleMs(runner: { impl: Impl }): number {
  if (runner.impl === 'pytorch' || runner.impl === 'torch' || runner.impl === 'torch-bf16') return 200;
  return runner.impl === 'ort-direct' ? 60 : 30;
}

/** Untimed runs of an implementation, back to back, before its timed runs in each round. */
export const WARM_MS = 150;

/**
 * Timed runs that follow, back to back, for at least this long (at least one): the round's sample is
 * their median, so one slow run does not make a round's figure (a MobileNet0.25 512² round gets ≈ 15
 * runs; a ResNet50 1024² round still one).
 */
export const TIMED_MS = 100;

/** How long the machine idles before the timed first run of a sporadic request (whole path, batch 1). */
export const IDLE_MS = 300;

/** Other processes using more than this many CPUs (or the hypervisor stealing it) disturb the timings. */
export const BUSY_CPUS = 0.2;

const packageRoot = path.resolve(__dirname, '..', '..');

/** The cells the default plan leaves out, and why (`--full` runs them). */
export function defaultSkip(backbone: string, size: number, batch: number): string | undefined {
  if (backbone === 'resnet50' && batch > 1) {
    return 'ResNet50 runs batch 1 only by default (a batch-16 round of the eager baseline takes minutes); --full runs it';
  }
  if (backbone === 'resnet50' && size > 1024) {
    return 'ResNet50 at 2048² takes ≈ 10 s per image in the eager baseline; --full runs it';
  }
  if (size >= 2048 && batch >= 16) {
    return 'batch 16 at 2048² needs ≈ 0.8 GB of input and several GB of activations per runtime, and ≈ 1 min per round for the eager baseline; --full runs it';
  }
  return undefined;
}

interface Runner {
  measure: Measure;
  impl: Impl;
  warmup: number;
  run(): Promise<{ ms: number; faces?: number }>;
}

interface ModelContext {
  source: ModelSource;
  label: string;
  torch?: InferenceEngine;
  'torch-bf16'?: InferenceEngine;
  onnxruntime?: InferenceEngine;
  ortSession?: { run(feeds: Record<string, unknown>): Promise<unknown>; release(): Promise<void> };
  ortTensor?: new (type: 'float32', data: Float32Array, dims: number[]) => unknown;
  ortInput?: string;
  python?: string;
  pythonError?: string;
  errors: Partial<Record<Impl, string>>;
}

/** A cell being measured: its runners and what their rounds gave so far. */
interface PlannedCell {
  base: Cell;
  runners: Runner[];
  /** Per runner, the per-image median of each round. */
  samples: Map<Runner, number[]>;
  /** Whole path at batch 1: each round's first run, after IDLE_MS of quiet. */
  idleSamples: Map<Runner, number[]>;
  faces: Map<Runner, number>;
  errors: Map<Runner, string>;
  rounds: number;
  /** Seconds spent in the cell's rounds. */
  seconds: number;
  load?: [number, number];
  /** CPU of other processes (and stolen) times seconds, over cpuSeconds of measuring. */
  others: CpuShare;
  cpuSeconds?: number;
}

/** One run; a runner that failed once is not run again (its error is reported). */
async function attemptRun(cell: PlannedCell, r: Runner): Promise<{ ms: number; faces?: number } | undefined> {
  if (cell.errors.has(r)) return undefined;
  try {
    return await r.run();
  } catch (error) {
    cell.errors.set(r, (error as Error).message.split('\n')[0]!);
    return undefined;
  }
}

/**
 * One round: every implementation once, the order rotating from round to round. The timed runs follow
 * untimed ones of the same implementation, back to back for at least WARM_MS: every runtime is timed
 * warm, as under steady traffic. Timing a run that follows a pause measures how fast the machine wakes
 * instead (on this VM, after 30 ms of idle the ONNX Runtime engine ran MobileNet0.25 512² in 8-9 ms,
 * back to back in 5.5 ms; eager PyTorch after ≈ 0.5 s idle ran the 256² whole path in 8-10 ms or 60-90
 * ms, at random). For the whole path at batch 1 the first run comes after IDLE_MS of quiet and is
 * recorded too: a sporadic request.
 */
async function measureRound(cell: PlannedCell): Promise<void> {
  const { runners } = cell;
  const batch = cell.base.batch;
  for (let k = 0; k < runners.length; k++) {
    const r = runners[(k + cell.rounds) % runners.length]!;
    const idle = cell.idleSamples.get(r);
    if (idle) await sleep(IDLE_MS);
    const warmFrom = performance.now();
    const first = await attemptRun(cell, r);
    if (idle && first) idle.push(first.ms / batch);
    while (first && performance.now() - warmFrom < WARM_MS) await attemptRun(cell, r);
    const timed: number[] = [];
    const timedFrom = performance.now();
    do {
      const out = await attemptRun(cell, r);
      if (!out) break;
      timed.push(out.ms / batch);
      if (out.faces !== undefined) cell.faces.set(r, out.faces);
    } while (performance.now() - timedFrom < TIMED_MS);
    if (timed.length) cell.samples.get(r)!.push(summarize(timed).median);
    await sleep(settleMs(r));
  }
  cell.rounds++;
}

/** Seconds the rounds of a cell should take, from one run of each implementation (ms per batch). */
function estimateSeconds(
  runners: Runner[],
  runMs: Map<Runner, number>,
  batch: number,
  rounds: number,
): number {
  let total = 0;
  for (const r of runners) {
    const ms = runMs.get(r);
    if (ms === undefined) continue; // failed: not run again
    const round = Math.max(ms, WARM_MS) + Math.max(ms, TIMED_MS) + settleMs(r);
    total += (round + (r.measure === 'whole' && batch === 1 ? IDLE_MS : 0)) * rounds;
  }
  return total / 1000;
}

/** Runs the benchmark; returns the report (the caller prints and writes it). */
export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const started = performance.now();
  const log = options.log;
  const models: ModelContext[] = options.models.map((dir) => {
    const source = readModel(dir);
    return { source, label: modelLabel(source.card), errors: {} };
  });
  const sourceImage = options.image ?? defaultSourceImage();
  const notes: string[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-bench-'));

  let libtorch: string | null = null;
  if (options.engines.includes('torch') || options.engines.includes('torch-bf16')) {
    try {
      const { build } = loadBinding();
      libtorch = build.torch + (build.onednn ? ` (fp32 convolutions: oneDNN ${build.onednn} directly)` : '');
    } catch (error) {
      notes.push(`LibTorch addon unavailable: ${(error as Error).message.split('\n')[0]}`);
      options = { ...options, engines: options.engines.filter((e) => e === 'onnxruntime') };
    }
  }
  const jpeg = loadJpegBinding()?.version ?? null;
  const ortVersion = onnxRuntimeVersion() ?? null;
  if (!ortVersion) {
    notes.push('onnxruntime-node is not installed: the ONNX Runtime engine and baseline are skipped');
    options = { ...options, engines: options.engines.filter((e) => e !== 'onnxruntime'), ortDirect: false };
  }

  let python: PythonBaseline | undefined;
  let pythonVersions: Record<string, unknown> | null = null;
  if (options.pytorch) {
    python = PythonBaseline.start(options.python, packageRoot);
    for (const m of models) {
      const card = m.source.card;
      const weights = (card.weights as { path?: string | null }).path ?? null;
      log(`loading ${m.label} in eager PyTorch (${options.python}) ...`);
      const reply = await python.request({
        op: 'load',
        key: card.name,
        backbone: card.backbone,
        weights,
        synthetic: card.synthetic,
        threads: options.threads,
      });
      if (reply.ok) {
        m.python = card.name;
        pythonVersions = reply.versions as Record<string, unknown>;
      } else {
        m.pythonError = reply.error ?? 'failed';
        notes.push(`${m.label}: eager PyTorch baseline unavailable: ${m.pythonError}`);
      }
    }
  }

  const machine = machineFacts({
    libtorch,
    jpeg,
    jpegAllEngines: jpeg !== null,
    onnxruntime: ortVersion,
    python: pythonVersions,
  });
  const env: CellEnv = {
    cpu: machine.cpu,
    cpus: machine.cpus,
    threads: options.threads,
    libtorch,
    onnxruntime: ortVersion,
    pytorch: (pythonVersions?.torch as string | undefined) ?? null,
    node: process.version,
  };

  // Benchmark JPEGs, one per size (shared by every model), and their decoded pixels.
  const images = new Map<number, BenchImage & { file: string }>();
  const imageFor = async (size: number) => {
    let image = images.get(size);
    if (!image) {
      const made = await benchImage(sourceImage, size);
      const file = path.join(tmp, `${size}.jpg`);
      fs.writeFileSync(file, made.jpeg);
      image = { ...made, file };
      images.set(size, image);
      if (python) await python.call({ op: 'image', key: String(size), path: file });
    }
    return image;
  };

  const loadEngines = async (m: ModelContext) => {
    for (const engine of ['torch', 'torch-bf16'] as const) {
      if (!options.engines.includes(engine) || m[engine] || m.errors[engine]) continue;
      try {
        m[engine] = await NativeInferenceEngine.load({
          modelPath: modelFile(m.source, 'torch', 'cpu', 'fp32'),
          backend: 'torch',
          device: 'cpu',
          precision: engine === 'torch' ? 'fp32' : 'bf16',
          threads: options.threads,
        });
      } catch (error) {
        m.errors[engine] = (error as Error).message;
      }
    }
    if (options.engines.includes('onnxruntime') && !m.onnxruntime && !m.errors.onnxruntime) {
      try {
        m.onnxruntime = await OnnxRuntimeEngine.load({
          modelPath: modelFile(m.source, 'onnxruntime', 'cpu', 'fp32'),
          threads: options.threads,
        });
      } catch (error) {
        m.errors.onnxruntime = (error as Error).message;
      }
    }
    if (options.ortDirect && !m.ortSession && !m.errors['ort-direct']) {
      try {
        // What a Node user would write: onnxruntime-node on the main thread, same thread count.
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- optional dependency
        const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
        const session = await ort.InferenceSession.create(modelFile(m.source, 'onnxruntime', 'cpu', 'fp32'), {
          intraOpNumThreads: options.threads,
          interOpNumThreads: 1,
          graphOptimizationLevel: 'all',
        });
        m.ortSession = session as unknown as ModelContext['ortSession'];
        m.ortTensor = ort.Tensor as unknown as ModelContext['ortTensor'];
        m.ortInput = session.inputNames[0];
      } catch (error) {
        m.errors['ort-direct'] = (error as Error).message;
      }
    }
  };

  const cells: Cell[] = [];
  const deadline = options.maxMinutes > 0 ? started + options.maxMinutes * 60_000 : Infinity;

  const passes = Math.max(1, Math.min(options.passes, options.iterations ?? options.minRounds));
  const ourPids = [process.pid, ...(python?.pid !== undefined ? [python.pid] : [])];
  // Batch by batch: every cell of the batch size is prepared (engines, images, runners, warm-up), then
  // they are measured (in passes, below), then the batch size's detectors are released.
  for (const batch of options.batches) {
    const detectors = new Map<string, FaceDetector>();
    const planned: PlannedCell[] = [];
    let plannedSeconds = 0;
    for (const m of models) {
      const card = m.source.card;
      for (const size of options.sizes) {
        const base: Cell = {
          model: card.name,
          backbone: card.backbone,
          synthetic: card.synthetic,
          size,
          batch,
          status: 'skipped',
        };
        const skip = options.full ? undefined : defaultSkip(card.backbone, size, batch);
        if (skip) {
          cells.push({ ...base, reason: skip });
          log(`${m.label} ${size}² batch ${batch}: skipped (${skip})`);
          continue;
        }
        await loadEngines(m);
        const image = await imageFor(size);
        const decoded = await decodeImage(image.jpeg, { maxSize: 0, maxPixels: 2 ** 40 });
        const { tensor, shape } = packBatch(
          Array.from({ length: batch }, () => decoded),
          { mean: card.input.mean, padMultiple: card.input.pad_multiple ?? 32 },
        );
        const buffers = Array.from({ length: batch }, () => image.jpeg);
        const runners: Runner[] = [];
        const time = async (f: () => Promise<unknown>) => {
          const t0 = performance.now();
          await f();
          return { ms: performance.now() - t0 };
        };
        if (options.measures.includes('engine')) {
          for (const impl of ['torch', 'torch-bf16'] as const) {
            const engine = m[impl];
            if (!engine) continue;
            runners.push({
              measure: 'engine',
              impl,
              warmup: 2,
              run: () => time(() => engine.infer(tensor, shape)),
            });
          }
          if (m.onnxruntime) {
            const engine = m.onnxruntime;
            runners.push({
              measure: 'engine',
              impl: 'onnxruntime',
              warmup: 2,
              run: () => {
                // As the detector calls it with nothing else pending: a batch array of its own,
                // transferred to the worker, the run exclusive.
                const own = tensor.slice();
                return time(() => engine.infer(own, shape, { transfer: true, exclusive: true }));
              },
            });
          }
          if (m.ortSession && m.ortTensor && m.ortInput) {
            const { ortSession: session, ortTensor: Tensor, ortInput: input } = m;
            runners.push({
              measure: 'engine',
              impl: 'ort-direct',
              warmup: 2,
              run: () => time(() => session.run({ [input]: new Tensor('float32', tensor, [...shape]) })),
            });
          }
          if (python && m.python) {
            const py = python;
            const request = { op: 'run', model: m.python, image: String(size), mode: 'net', size, batch };
            runners.push({
              measure: 'engine',
              impl: 'pytorch',
              warmup: 1,
              run: async () => ({ ms: (await py.call(request)).ms as number }),
            });
          }
        }
        if (options.measures.includes('whole')) {
          for (const engine of options.engines) {
            if (m.errors[engine]) continue;
            const detectorKey = `${card.name}/${batch}/${engine}`;
            let detector = detectors.get(detectorKey);
            if (!detector) {
              try {
                detector = await FaceDetector.create({
                  model: m.source.dir,
                  backend: engine === 'onnxruntime' ? 'onnxruntime' : 'torch',
                  precision: engine === 'torch-bf16' ? 'bf16' : 'fp32',
                  threads: options.threads,
                  maxSize: 0,
                  maxBatchSize: batch,
                  // A batch runs when it is full: the B images of one detect() call.
                  maxQueueDelayMs: batch > 1 ? 60_000 : 0,
                  maxQueueSize: 1024,
                  warmup: [],
                });
                detectors.set(detectorKey, detector);
              } catch (error) {
                m.errors[engine] = (error as Error).message;
                continue;
              }
            }
            const d = detector;
            runners.push({
              measure: 'whole',
              impl: engine,
              warmup: 2,
              run: async () => {
                const t0 = performance.now();
                const results = await d.detect(buffers);
                const ms = performance.now() - t0;
                const failed = results.find((r) => r.error);
                if (failed) throw new Error(failed.error!.message);
                return { ms, faces: results.reduce((n, r) => n + r.faces_count, 0) / batch };
              },
            });
          }
          if (python && m.python) {
            const py = python;
            const request = { op: 'run', model: m.python, image: String(size), mode: 'whole', size, batch };
            runners.push({
              measure: 'whole',
              impl: 'pytorch',
              warmup: 1,
              run: async () => {
                const reply = await py.call(request);
                return { ms: reply.ms as number, faces: reply.faces as number };
              },
            });
          }
        }

        log(
          `${m.label} ${size}² batch ${batch}: warming up ${runners.map((r) => `${r.measure}/${r.impl}`).join(', ')}`,
        );
        const cell: PlannedCell = {
          base,
          runners,
          samples: new Map(runners.map((r) => [r, []])),
          idleSamples: new Map(
            runners.filter((r) => r.measure === 'whole' && batch === 1).map((r) => [r, []] as const),
          ),
          faces: new Map(),
          errors: new Map(),
          rounds: 0,
          seconds: 0,
          others: { others: 0, steal: 0 },
        };
        // Warm-up, and what one run of each implementation costs: the time budget below.
        const runMs = new Map<Runner, number>();
        for (const r of runners) {
          for (let i = 0; i < r.warmup; i++) {
            const out = await attemptRun(cell, r);
            if (out) runMs.set(r, out.ms);
          }
          await sleep(30);
        }
        const expected = estimateSeconds(runners, runMs, batch, options.minRounds);
        const now = performance.now();
        if (now + (plannedSeconds + expected) * 1000 * 1.25 > deadline) {
          const reason = `time budget: estimated ${expected.toFixed(0)} s, ${((deadline - now) / 1000 - plannedSeconds).toFixed(0)} s left of --max-minutes ${options.maxMinutes}`;
          cells.push({ ...base, reason });
          log(`${m.label} ${size}² batch ${batch}: skipped (${reason})`);
          continue;
        }
        plannedSeconds += expected;
        planned.push(cell);
      }
    }

    // The cells are measured in `passes` passes: by default one, each cell's rounds back to back. With
    // more, each pass gives every cell its share of the rounds and of the time box, so a cell's rounds
    // are spread over its batch size's minutes: on this VM the speed of multi-threaded runs changes for
    // 10-20 s at a time (ONNX Runtime, MobileNet0.25 512² in one process: 4.4-5.2 ms for a while, then
    // 6.6-7.1 ms; one thread, 8.2-9.3 ms throughout), and a cell timed in one 4-second stretch gets one of
    // those states (MobileNet0.25 512² whole path, two full runs minutes apart: 2.01x and 1.58x). Four
    // passes did not make the ratios steadier in two full runs (that cell 1.94x and 2.05x; ResNet50 1024²
    // 1.48x and 1.71x, where one pass gave 1.71x twice), and switching shapes between rounds slowed
    // LibTorch's ResNet50 1024² runs (0.73-1.2 s instead of 0.7 s): an option, not the default.
    for (let pass = 1; pass <= passes; pass++) {
      const passStart = performance.now();
      const share = (total: number) => Math.ceil((total * pass) / passes);
      for (const cell of planned) {
        const loadBefore = load1();
        const cpuFrom = cpuSnapshot(ourPids);
        const blockStart = performance.now();
        do {
          await measureRound(cell);
          const elapsed = cell.seconds + (performance.now() - blockStart) / 1000;
          if (options.iterations !== undefined) {
            if (cell.rounds >= share(options.iterations)) break;
          } else if (
            cell.rounds >= share(options.maxRounds) ||
            (cell.rounds >= share(options.minRounds) && elapsed >= (options.cellSeconds * pass) / passes)
          ) {
            break;
          }
        } while (cell.errors.size < cell.runners.length);
        const blockSeconds = (performance.now() - blockStart) / 1000;
        const cpuTo = cpuSnapshot(ourPids);
        if (cpuFrom && cpuTo) {
          // Weighted by time: the cell's figure is the mean over its blocks.
          const s = cpuShare(cpuFrom, cpuTo);
          cell.others.others += s.others * blockSeconds;
          cell.others.steal += s.steal * blockSeconds;
          cell.cpuSeconds = (cell.cpuSeconds ?? 0) + blockSeconds;
        }
        cell.seconds += blockSeconds;
        cell.load = [cell.load?.[0] ?? loadBefore, load1()];
      }
      const passSeconds = (performance.now() - passStart) / 1000;
      log(
        `batch ${batch}, pass ${pass} of ${passes}: ${planned.length} cells in ${passSeconds.toFixed(0)} s`,
      );
      if (pass < passes && performance.now() + passSeconds * 1000 > deadline) {
        notes.push(
          `time budget: batch ${batch} stopped after pass ${pass} of ${passes} (--max-minutes ${options.maxMinutes}); its cells have the rounds of those passes`,
        );
        break;
      }
    }

    for (const p of planned) {
      const results: NonNullable<Cell['results']> = {};
      const round3 = (v: number) => Math.round(v * 1000) / 1000;
      for (const r of p.runners) {
        const values = p.samples.get(r)!;
        const result: ImplResult = { ...summarize(values), samples: values.map(round3) };
        const idle = p.idleSamples.get(r);
        if (idle?.length) result.afterIdle = { ...summarize(idle), samples: idle.map(round3) };
        if (p.faces.has(r)) result.faces = p.faces.get(r)!;
        if (p.errors.has(r)) result.error = p.errors.get(r)!;
        (results[r.measure] ??= {})[r.impl] = result;
      }
      const speedups: NonNullable<Cell['speedups']> = {};
      const paired: NonNullable<Cell['pairedSpeedups']> = {};
      for (const measure of options.measures) {
        const row = results[measure];
        if (!row) continue;
        for (const ours of OUR_ENGINES) {
          for (const baseline of ['pytorch', 'ort-direct'] as const) {
            const a = row[ours];
            const b = row[baseline];
            if (!a?.n || !b?.n) continue;
            const key = `${ours}:${baseline}`;
            (speedups[measure] ??= {})[key] = round3(b.median / a.median);
            // Round by round (the two ran seconds apart, under the same load), then the median.
            const n = Math.min(a.samples.length, b.samples.length);
            const ratios = Array.from({ length: n }, (_, i) => b.samples[i]! / a.samples[i]!);
            (paired[measure] ??= {})[key] = round3(summarize(ratios).median);
          }
        }
      }
      const round2 = (x: number) => Math.round(x * 100) / 100;
      const cell: Cell = {
        ...p.base,
        status: 'measured',
        rounds: p.rounds,
        warmup: Math.max(...p.runners.map((r) => r.warmup)),
        seconds: Math.round(p.seconds * 1000) / 1000,
        ...(p.load ? { load: p.load } : {}),
        ...(p.cpuSeconds
          ? {
              others: {
                others: round2(p.others.others / p.cpuSeconds),
                steal: round2(p.others.steal / p.cpuSeconds),
              },
            }
          : {}),
        results,
        speedups,
        pairedSpeedups: paired,
        env,
      };
      cells.push(cell);
      log(
        `${modelLabel(cell)} ${cell.size}² batch ${cell.batch}: ${cell.rounds} rounds in ${cell.seconds!.toFixed(1)} s, ${summaryLine(cell)}`,
      );
    }
    for (const d of detectors.values()) await d.dispose();
  }
  // The report lists the cells in plan order (batch, model, size), skipped ones included.
  const order = (c: Cell) =>
    options.batches.indexOf(c.batch) * 1e6 +
    models.findIndex((m) => m.source.card.name === c.model) * 1e3 +
    options.sizes.indexOf(c.size);
  cells.sort((x, y) => order(x) - order(y));

  for (const m of models) {
    await m.torch?.dispose();
    await m['torch-bf16']?.dispose();
    await m.onnxruntime?.dispose();
    await m.ortSession?.release();
    for (const [impl, message] of Object.entries(m.errors))
      notes.push(`${m.label}: ${IMPL_LABELS[impl as Impl]} failed: ${message.split('\n')[0]}`);
  }
  await python?.close();
  fs.rmSync(tmp, { recursive: true, force: true });

  const baselines = [
    ...(options.pytorch
      ? [
          'eager PyTorch from Python (scripts/bench_pytorch.py), original-style pre/postprocessing, ' +
            `OPENBLAS_NUM_THREADS=${process.env.OPENBLAS_NUM_THREADS ?? '1'} (its fastest setting here)`,
        ]
      : []),
    ...(options.ortDirect
      ? ['onnxruntime-node on the same model.onnx, main thread, same intra-op threads']
      : []),
  ];
  const loads = cells.flatMap((c) => c.load ?? []);
  const maxLoad = loads.length ? Math.max(...loads) : load1();
  const shares = cells.flatMap((c) => (c.others ? [c.others] : []));
  const maxOthers = shares.length
    ? {
        others: Math.max(...shares.map((o) => o.others)),
        steal: Math.max(...shares.map((o) => o.steal)),
      }
    : undefined;
  // The load average counts the benchmark's own threads, so it only decides where /proc is missing.
  const busy = maxOthers ? maxOthers.others + maxOthers.steal > BUSY_CPUS : maxLoad > machine.cpus;
  return {
    tool: 'facedet bench',
    date: new Date().toISOString(),
    machine,
    settings: {
      threads: options.threads,
      engines: options.engines,
      measures: options.measures,
      baselines,
      rounds:
        options.iterations !== undefined
          ? `${options.iterations} rounds per cell after warm-up`
          : `time-boxed: at least ${options.minRounds}, at most ${options.maxRounds} rounds, ${options.cellSeconds} s per cell after warm-up`,
      image: images.values().next().value?.source ?? (sourceImage ? path.basename(sourceImage) : 'noise'),
      full: options.full,
      maxMinutes: options.maxMinutes,
    },
    models: models.map((m) => ({
      name: m.source.card.name,
      dir: m.source.dir,
      backbone: m.source.card.backbone,
      synthetic: m.source.card.synthetic,
      label: m.label,
      ...(m.source.card.conv_flops_per_pixel
        ? { convFlopsPerPixel: m.source.card.conv_flops_per_pixel }
        : {}),
    })),
    cells,
    seconds: Math.round(performance.now() - started) / 1000,
    maxLoad,
    ...(maxOthers ? { maxOthers } : {}),
    busy,
    notes,
  };
}

function summaryLine(cell: Cell): string {
  const parts: string[] = [];
  for (const [measure, row] of Object.entries(cell.results ?? {})) {
    const items = Object.entries(row ?? {}).map(
      ([impl, r]) => `${impl} ${r.n ? r.median.toFixed(1) : 'failed'}`,
    );
    parts.push(`${measure}: ${items.join(', ')} ms/img`);
  }
  return parts.join('; ');
}
