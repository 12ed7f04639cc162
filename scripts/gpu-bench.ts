// The GPU benchmark grid (run by scripts/gpu-check.sh; works on the CPU too, for a dry run).
//
//   tsx scripts/gpu-bench.ts measure --model NAME=DIR [--model NAME=DIR ...] [--device cuda] [--precisions fp32,fp16]
//       [--batches 1,4,16] [--sizes 256,512,1024,2048] [--budget-s 300] [--label TEXT] [--image FILE]
//       [--whole-precisions fp16] (time the whole path for these only; default: all)
//       [--sweep N [--sweep-model NAME=DIR]] --out FILE.json
//   tsx scripts/gpu-bench.ts report --env ENV.json [--md FILE.md] [--readme README.md] RESULT.json [RESULT.json ...]
//
// `measure` times, for every model x precision x batch x size: the engine alone (one packed batch through the
// native addon, copies to and from the device included: ms per image, the median of a few runs after a
// warm-up) and the whole path (FaceDetector.detect on JPEG files of that size: decode, pack, infer,
// decode boxes, NMS). Big cells get fewer runs; cells past the time budget are recorded as skipped.
// `--sweep N` also runs N batches of varying unbucketed shapes, then N of 128-px bucketed shapes, through one
// engine (the last --model, or --sweep-model; fp16 on CUDA) and records the GPU memory in use, to show it
// stays bounded. `report` writes the markdown table from one or more result files.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { FaceDetector } from '../src';
import { readModel } from '../src/model';
import { replaceReadmeSection } from '../src/readme';
import { loadBinding, type NativeEngine } from '../src/native';

type Precision = 'fp32' | 'fp16';

interface Cell {
  model: string;
  precision: Precision;
  batch: number;
  size: number;
  status: 'ok' | 'skipped' | 'failed';
  error?: string;
  /** Engine alone: wall time of engine.infer() per image (JS call to resolved promise), median. */
  engineMsPerImage?: number;
  /** Engine alone: the addon's own inferMs per image (worker thread, copies included), median. */
  engineInferMsPerImage?: number;
  /** FaceDetector.detect() on B JPEG files of size x size, per image, median. */
  wholeMsPerImage?: number;
  engineRuns?: number;
  wholeRuns?: number;
  /** First (warm-up) call of this shape, ms: cuDNN planning and allocations. */
  firstCallMs?: number;
  gpuMemoryMiB?: number;
}

interface SweepPoint {
  label: string;
  shapes: number;
  gpuMemoryMiB: number | null;
}

interface Result {
  label: string;
  device: string;
  startedAt: string;
  cudnnBenchmark: string;
  build: unknown;
  cells: Cell[];
  sweep: SweepPoint[];
  seconds: number;
}

const t0 = performance.now();
const stamp = () =>
  `[${new Date().toISOString().slice(11, 19)} +${((performance.now() - t0) / 1000).toFixed(0)}s]`;
const log = (...args: unknown[]) => console.log(stamp(), ...args);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function gpuMemoryMiB(): number | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    const v = Number(out.trim().split('\n')[0]);
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

function parseArgs(argv: string[]) {
  const opts: Record<string, string[]> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--')) {
      const key = a.slice(2);
      (opts[key] ??= []).push(argv[++i] ?? '');
    } else rest.push(a);
  }
  const one = (k: string, d: string) => opts[k]?.at(-1) ?? d;
  const list = (k: string, d: string) => one(k, d).split(',').filter(Boolean);
  return { opts, rest, one, list };
}

/** A packed batch of image-like values (pixels minus the BGR mean), deterministic. */
function batchTensor(batch: number, size: number): Float32Array {
  const a = new Float32Array(batch * 3 * size * size);
  let s = 12345;
  for (let i = 0; i < a.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = ((s >>> 8) & 255) - 117;
  }
  return a;
}

async function jpegOfSize(image: string | undefined, size: number): Promise<Buffer> {
  const source =
    image && fs.existsSync(image)
      ? sharp(image)
      : sharp({ create: { width: 64, height: 64, channels: 3, background: '#808080' } });
  return source.resize(size, size, { fit: 'cover' }).jpeg({ quality: 90 }).toBuffer();
}

async function measure(argv: string[]): Promise<void> {
  const { opts, one, list } = parseArgs(argv);
  const device = one('device', 'cuda');
  const precisions = list('precisions', device === 'cpu' ? 'fp32' : 'fp32,fp16') as Precision[];
  const batches = list('batches', '1,4,16').map(Number);
  const sizes = list('sizes', '256,512,1024,2048').map(Number);
  const budgetMs = Number(one('budget-s', '300')) * 1000;
  // The whole path is timed for these precisions only (it costs most of a cell's time: JPEG decoding).
  const wholePrecisions = list('whole-precisions', precisions.join(','));
  const sweepShapes = Number(one('sweep', '0'));
  const image = opts.image?.at(-1);
  const out = one('out', '');
  if (!out) throw new Error('--out FILE.json is required');
  const models = (opts.model ?? []).map((m) => {
    const [name, dir] = m.split('=');
    if (!name || !dir) throw new Error(`--model expects NAME=DIR, got ${m}`);
    return { name, dir: path.resolve(dir) };
  });
  if (!models.length) throw new Error('at least one --model NAME=DIR is required');
  const sweepArg = opts['sweep-model']?.at(-1);
  const sweepModel = sweepArg
    ? { name: sweepArg.split('=')[0]!, dir: path.resolve(sweepArg.split('=')[1] ?? '') }
    : undefined;

  const binding = loadBinding();
  const result: Result = {
    label: one('label', 'grid'),
    device,
    startedAt: new Date().toISOString(),
    cudnnBenchmark: process.env.FACEDET_CUDNN_BENCHMARK ?? '(LibTorch default: off)',
    build: binding.build,
    cells: [],
    sweep: [],
    seconds: 0,
  };
  const save = () => {
    result.seconds = (performance.now() - t0) / 1000;
    fs.writeFileSync(out, JSON.stringify(result, null, 1) + '\n');
  };
  const threads = os.availableParallelism();
  const jpegs = new Map<number, Buffer>();
  for (const size of sizes) jpegs.set(size, await jpegOfSize(image, size));
  log(
    `device ${device}, cudnn benchmark ${result.cudnnBenchmark}, budget ${budgetMs / 1000}s, build ${JSON.stringify(binding.build)}`,
  );

  // Precision-major (every model in fp16 first): when the budget runs out, each model has its rows.
  for (const precision of precisions) {
    for (const model of models) {
      const card = readModel(model.dir).card;
      const file = path.join(model.dir, card.files.torchscript);
      const overBudget = () => performance.now() - t0 > budgetMs;
      let engine: NativeEngine | undefined;
      try {
        const loadStart = performance.now();
        // As FaceDetector loads it: in fp16, the model card's leading float32 convolutions.
        const float32Convolutions = precision === 'fp16' ? (card.fp16?.float32_convolutions ?? 0) : 0;
        engine = await binding.Engine.load({
          modelPath: file,
          device,
          precision,
          threads,
          float32Convolutions,
        });
        log(
          `${model.name} ${precision}: engine loaded in ${(performance.now() - loadStart).toFixed(0)} ms (${engine.info().version})`,
        );
      } catch (error) {
        log(`${model.name} ${precision}: load failed: ${(error as Error).message}`);
        for (const batch of batches)
          for (const size of sizes)
            result.cells.push({
              model: model.name,
              precision,
              batch,
              size,
              status: 'failed',
              error: (error as Error).message,
            });
        save();
        continue;
      }
      for (const batch of batches) {
        let detector: FaceDetector | undefined;
        for (const size of sizes) {
          const cell: Cell = { model: model.name, precision, batch, size, status: 'ok' };
          result.cells.push(cell);
          if (overBudget()) {
            cell.status = 'skipped';
            cell.error = 'time budget';
            continue;
          }
          try {
            // Engine alone.
            const shape: [number, number, number, number] = [batch, 3, size, size];
            const x = batchTensor(batch, size);
            let start = performance.now();
            await engine.infer(x, shape);
            cell.firstCallMs = performance.now() - start;
            start = performance.now();
            await engine.infer(x, shape);
            const warm = performance.now() - start;
            const runs = Math.max(3, Math.min(10, Math.round(600 / Math.max(warm, 1))));
            const wall: number[] = [];
            const inner: number[] = [];
            for (let r = 0; r < runs; r++) {
              start = performance.now();
              const o = await engine.infer(x, shape);
              wall.push(performance.now() - start);
              inner.push(o.inferMs);
            }
            cell.engineRuns = runs;
            cell.engineMsPerImage = median(wall) / batch;
            cell.engineInferMsPerImage = median(inner) / batch;
            if (wholePrecisions.includes(precision)) {
              // Whole path: one detector per batch size, so every detect() of `batch` files is one batch.
              detector ??= await FaceDetector.create({
                model: model.dir,
                device,
                precision,
                threads,
                maxBatchSize: batch,
                maxQueueDelayMs: 1000,
                maxQueueSize: 1024,
                maxSize: Math.max(...sizes),
                decodeConcurrency: Math.max(2, Math.min(16, threads)),
                warmup: [],
              });
              const files = Array.from({ length: batch }, () => jpegs.get(size)!);
              start = performance.now();
              await detector.detect(files, { maxSize: size });
              const warmWhole = performance.now() - start;
              const wholeRuns = Math.max(2, Math.min(5, Math.round(800 / Math.max(warmWhole, 1))));
              const whole: number[] = [];
              for (let r = 0; r < wholeRuns; r++) {
                start = performance.now();
                const results = await detector.detect(files, { maxSize: size });
                whole.push(performance.now() - start);
                const failed = results.find((res) => res.error);
                if (failed) throw new Error(`detect: ${failed.error!.message}`);
              }
              cell.wholeRuns = wholeRuns;
              cell.wholeMsPerImage = median(whole) / batch;
            }
            cell.gpuMemoryMiB = gpuMemoryMiB() ?? undefined;
            log(
              `${model.name} ${precision} b${batch} ${size}²: engine ${cell.engineMsPerImage.toFixed(3)} ms/img ` +
                `(addon ${cell.engineInferMsPerImage.toFixed(3)}, ${runs} runs, first call ${cell.firstCallMs.toFixed(0)} ms), ` +
                (cell.wholeMsPerImage !== undefined
                  ? `whole ${cell.wholeMsPerImage.toFixed(2)} ms/img (${cell.wholeRuns} runs)`
                  : 'whole not timed') +
                (cell.gpuMemoryMiB !== undefined ? `, GPU memory ${cell.gpuMemoryMiB} MiB` : ''),
            );
          } catch (error) {
            cell.status = 'failed';
            cell.error = (error as Error).message;
            log(`${model.name} ${precision} b${batch} ${size}²: FAILED ${cell.error}`);
          }
          save();
        }
        await detector?.dispose();
      }
      await engine.dispose();
    }
  }

  if (sweepShapes > 0) {
    const model = sweepModel ?? models.at(-1)!;
    const card = readModel(model.dir).card;
    const file = path.join(model.dir, card.files.torchscript);
    const precision: Precision = device === 'cpu' ? 'fp32' : 'fp16';
    const engine = await binding.Engine.load({ modelPath: file, device, precision, threads });
    log(`sweep: ${model.name} ${precision}, ${sweepShapes} batches of varying shapes, twice`);
    result.sweep.push({ label: 'start', shapes: 0, gpuMemoryMiB: gpuMemoryMiB() });
    for (const [label, multiple] of [
      ['unbucketed (multiple of 32)', 32],
      ['bucketed (multiple of 128)', 128],
    ] as const) {
      let s = 777;
      const rand = (lo: number, hi: number) => {
        s = (s * 1103515245 + 12345) >>> 0;
        return lo + ((s >>> 8) % (hi - lo + 1));
      };
      const seen = new Set<string>();
      for (let i = 1; i <= sweepShapes; i++) {
        const n = rand(1, 4);
        const h = Math.ceil(rand(160, 1280) / multiple) * multiple;
        const w = Math.ceil(rand(160, 1280) / multiple) * multiple;
        seen.add(`${n}x${h}x${w}`);
        await engine.infer(new Float32Array(n * 3 * h * w), [n, 3, h, w]); // memory only, not timed
        if (i % Math.max(1, Math.floor(sweepShapes / 5)) === 0 || i === sweepShapes) {
          const point = { label, shapes: seen.size, gpuMemoryMiB: gpuMemoryMiB() };
          result.sweep.push(point);
          log(
            `sweep ${label}: ${i} batches, ${seen.size} distinct shapes, GPU memory ${point.gpuMemoryMiB ?? 'n/a'} MiB`,
          );
        }
      }
    }
    await engine.dispose();
  }
  save();
  log(`wrote ${out}`);
}

function fmt(x: number | undefined, digits: number): string {
  return x === undefined ? '–' : x.toFixed(digits);
}

function report(argv: string[]): void {
  const { one, rest } = parseArgs(argv);
  const md = one('md', '');
  const readme = one('readme', '');
  // In the README the report is a subsection: headings one level down, the environment as a list.
  const h = readme ? '###' : '##';
  const envFile = one('env', '');
  const env =
    envFile && fs.existsSync(envFile)
      ? (JSON.parse(fs.readFileSync(envFile, 'utf8')) as Record<string, string>)
      : {};
  const results = rest.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')) as Result);
  const lines: string[] = [];
  if (!readme) lines.push('# GPU benchmark', '');
  for (const [k, v] of Object.entries(env)) lines.push(`- ${k}: ${v}`);
  lines.push(
    '',
    'ms per image, median of a few runs after a warm-up: **engine** = one packed batch through the addon',
    '(host→device copy, network, device→host copy, N-API), **whole** = `FaceDetector.detect()` on JPEG files of that size',
    '(decode, pack, infer, box decoding, NMS). MobileNet0.25 with its real weights; ResNet50 with synthetic weights',
    '(same compute, detects nothing).',
    '',
  );
  for (const r of results) {
    const sizes = [...new Set(r.cells.map((c) => c.size))].sort((a, b) => a - b);
    lines.push(
      `${h} ${r.label} (device ${r.device}, cuDNN benchmark ${r.cudnnBenchmark}, ${r.seconds.toFixed(0)} s)`,
      '',
    );
    lines.push(`| model | precision | batch | ${sizes.map((s) => `${s}² engine / whole`).join(' | ')} |`);
    lines.push(`| --- | --- | ---: | ${sizes.map(() => '---:').join(' | ')} |`);
    const rows = new Map<string, Cell[]>();
    for (const c of r.cells) {
      const key = `${c.model}|${c.precision}|${c.batch}`;
      rows.set(key, [...(rows.get(key) ?? []), c]);
    }
    const unmeasured: string[] = [];
    for (const [key, cells] of rows) {
      const [model, precision, batch] = key.split('|');
      if (cells.every((c) => c.status === 'skipped')) {
        unmeasured.push(`${model} ${precision} batch ${batch}`);
        continue;
      }
      const bySize = sizes.map((s) => {
        const c = cells.find((x) => x.size === s);
        if (!c) return '';
        if (c.status !== 'ok') return c.status;
        return `${fmt(c.engineMsPerImage, c.engineMsPerImage! < 1 ? 3 : 2)} / ${fmt(c.wholeMsPerImage, 1)}`;
      });
      lines.push(`| ${model} | ${precision} | ${batch} | ${bySize.join(' | ')} |`);
    }
    if (unmeasured.length) {
      lines.push('', `Not measured (past the run's time budget): ${unmeasured.join(', ')}.`);
    }
    if (r.sweep.length) {
      lines.push('', 'GPU memory while the shapes vary (one engine, batches of 1–4, sides 160–1280):', '');
      lines.push('| run | distinct shapes | GPU memory used, MiB |', '| --- | ---: | ---: |');
      for (const p of r.sweep) lines.push(`| ${p.label} | ${p.shapes} | ${p.gpuMemoryMiB ?? '–'} |`);
    }
    const failed = r.cells.filter((c) => c.status === 'failed');
    if (failed.length) {
      lines.push('', 'Failures:', '');
      for (const c of failed) lines.push(`- ${c.model} ${c.precision} b${c.batch} ${c.size}²: ${c.error}`);
    }
    lines.push('');
  }
  const text = lines.join('\n');
  if (md) fs.writeFileSync(md, text);
  if (readme) replaceReadmeSection(readme, 'gpu-bench', text);
  console.log(text);
}

const [mode, ...args] = process.argv.slice(2);
const run =
  mode === 'measure' ? measure(args) : mode === 'report' ? Promise.resolve(report(args)) : undefined;
if (!run) {
  console.error('usage: gpu-bench.ts measure ... | report ...  (see the top of the file)');
  process.exit(2);
}
run.catch((error: unknown) => {
  console.error(stamp(), 'gpu-bench failed:', error);
  process.exit(1);
});
