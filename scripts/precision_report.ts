// SPDX-License-Identifier: MIT
// The reduced-precision CPU measurement behind the README's int8 and bf16 paragraphs: engine-only speed
// of each runtime's int8 file against its fp32 one (LibTorch model.int8.pt / model.pt, ONNX Runtime
// model.int8.onnx / model.onnx) and of LibTorch in bf16 (model.pt, on CPUs that compute in bf16),
// interleaved in one process, and WIDER FACE AP of the whole detector with precision 'int8' (each int8
// engine) and 'bf16' against 'fp32' on the fixtures.
//
//   npx tsx scripts/precision_report.ts [--speed] [--ap] [--models DIR,DIR] [--sizes 512,1024] [--readme README.md]
//                                  [--reps 7] [--iterations 5] [--threads 2] [--json FILE]
//                                  [--extra FILE]...
//
// --extra FILE: another fp32 TorchScript file in a model folder (e.g. a channels-last variant), timed
// with the others for that folder. Without --speed/--ap both run. Models default to models/retinaface-mobilenet0.25 and
// models/retinaface-resnet50-synthetic (exported with --int8; synthetic weights: timing only).
// AP subsets: wider-val (6 images, never used for calibration), wider-val-416 split into the half that
// export_model.py --int8 calibrates on (even positions in gt.json) and the held-out half (odd).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cpuHasBf16 } from '../src/cpu';
import { FaceDetector, type FaceDetectorOptions } from '../src/detector';
import { type InferenceEngine, NativeInferenceEngine, type Shape4 } from '../src/engine';
import { OnnxRuntimeEngine, onnxRuntimeVersion } from '../src/engines/onnxruntime';
import { EVAL_SETTINGS } from '../src/eval/cli';
import { type GroundTruth, loadGroundTruth } from '../src/eval/groundtruth';
import { detectionsFromResults, evaluate } from '../src/eval/run';
import { SUBSETS, type Subset } from '../src/eval/widerface';
import { readModel } from '../src/model';
import { replaceReadmeSection } from '../src/readme';

const root = path.resolve(__dirname, '..');
const fixtures = process.env.FACEDET_FIXTURES ?? path.resolve(root, '..', 'shared', 'fixtures');

const { values } = parseArgs({
  options: {
    speed: { type: 'boolean' },
    ap: { type: 'boolean' },
    models: { type: 'string' },
    sizes: { type: 'string', default: '512,1024' },
    reps: { type: 'string', default: '7' },
    iterations: { type: 'string', default: '5' },
    threads: { type: 'string', default: '2' },
    json: { type: 'string' },
    readme: { type: 'string' },
    extra: { type: 'string', multiple: true },
  },
});
const doAll = !values.speed && !values.ap;
const modelDirs = (
  values.models ??
  [
    path.join(root, 'models', 'retinaface-mobilenet0.25'),
    path.join(root, 'models', 'retinaface-resnet50-synthetic'),
  ].join(',')
).split(',');
const sizes = values.sizes.split(',').map(Number);
const reps = Number(values.reps);
const iterations = Number(values.iterations);
const threads = Number(values.threads);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

interface Timed {
  name: string;
  run: (input: Float32Array, shape: Shape4) => Promise<unknown>;
  dispose: () => Promise<void>;
}

function torchEngine(name: string, engine: InferenceEngine): Timed {
  return { name, run: (x, s) => engine.infer(x, s), dispose: () => engine.dispose() };
}

/** Our ONNX Runtime engine (worker thread, float32 NCHW input), when onnxruntime-node is installed. */
async function ortEngine(name: string, file: string): Promise<Timed | undefined> {
  if (onnxRuntimeVersion() === undefined) return undefined;
  const precision = name.includes(' int8 ') ? 'int8' : 'fp32';
  const engine = await OnnxRuntimeEngine.load({ modelPath: file, threads, precision });
  return { name, run: (x, s) => engine.infer(x, s), dispose: () => engine.dispose() };
}

/** A deterministic image-like input: BGR minus mean, values in about -123..152. */
function input(shape: Shape4): Float32Array {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let seed = 12345;
  for (let i = 0; i < data.length; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    data[i] = (seed >>> 24) - 120;
  }
  return data;
}

interface SpeedRow {
  model: string;
  size: number;
  engine: string;
  medianMs: number;
  minMs: number;
  maxMs: number;
  samples: number;
}

async function speed(modelDir: string): Promise<SpeedRow[]> {
  const model = readModel(modelDir);
  const files = model.card.files;
  const engines: Timed[] = [];
  const load = async (file: string, precision: 'fp32' | 'bf16' | 'int8') =>
    NativeInferenceEngine.load({
      modelPath: path.join(model.dir, file),
      backend: 'torch',
      device: 'cpu',
      precision,
      threads,
    });
  engines.push(torchEngine('torch fp32 model.pt', await load(files.torchscript, 'fp32')));
  if (cpuHasBf16()) engines.push(torchEngine('torch bf16 model.pt', await load(files.torchscript, 'bf16')));
  if (files.torchscript_int8) {
    engines.push(torchEngine('torch int8 model.int8.pt', await load(files.torchscript_int8, 'int8')));
  }
  for (const extra of values.extra ?? []) {
    if (path.dirname(path.resolve(extra)) !== model.dir) continue;
    engines.push(torchEngine(`torch fp32 ${path.basename(extra)}`, await load(path.basename(extra), 'fp32')));
  }
  for (const [name, file] of [
    ['onnxruntime fp32 model.onnx', files.onnx],
    ['onnxruntime int8 model.int8.onnx', files.onnx_int8],
  ] as const) {
    const ort = file ? await ortEngine(name, path.join(model.dir, file)) : undefined;
    if (ort) engines.push(ort);
  }
  const rows: SpeedRow[] = [];
  try {
    for (const size of sizes) {
      const shape: Shape4 = [1, 3, size, size];
      const x = input(shape);
      for (const e of engines) for (let i = 0; i < 3; i++) await e.run(x, shape);
      const times = new Map<string, number[]>(engines.map((e) => [e.name, []]));
      for (let r = 0; r < reps; r++) {
        // a different engine order each round, so that none always runs after the same neighbour
        const order = engines.map((_, i) => engines[(i + r) % engines.length]!);
        for (const e of order) {
          // untimed runs first, back to back for at least 150 ms (as src/bench/run.ts warms each
          // cell): the previous engine's threads may still be spinning, and this one's were asleep
          const warm = performance.now() + 150;
          for (let i = 0; i < 2 || performance.now() < warm; i++) await e.run(x, shape);
          for (let i = 0; i < iterations; i++) {
            const t = process.hrtime.bigint();
            await e.run(x, shape);
            times.get(e.name)!.push(Number(process.hrtime.bigint() - t) / 1e6);
          }
        }
      }
      for (const e of engines) {
        const ts = times.get(e.name)!;
        rows.push({
          model: model.card.name + (model.card.synthetic ? ' (synthetic)' : ''),
          size,
          engine: e.name,
          medianMs: median(ts),
          minMs: Math.min(...ts),
          maxMs: Math.max(...ts),
          samples: ts.length,
        });
      }
    }
  } finally {
    for (const e of engines) await e.dispose();
  }
  return rows;
}

interface ApRow {
  set: string;
  images: number;
  /** The reduced-precision engine and its file, e.g. 'onnxruntime int8 model.int8.onnx'. */
  engine: string;
  fp32: Record<Subset, number>;
  reduced: Record<Subset, number>;
}

function subsetOf(gt: GroundTruth, name: string, keep: (index: number) => boolean): GroundTruth {
  return { ...gt, source: `${gt.source} (${name})`, images: gt.images.filter((_, i) => keep(i)) };
}

async function ap(modelDir: string): Promise<ApRow[]> {
  const sets: [string, GroundTruth][] = [];
  const full = path.join(fixtures, 'wider-val', 'gt.json');
  if (fs.existsSync(full)) sets.push(['wider-val', loadGroundTruth(full)]);
  const small = path.join(fixtures, 'wider-val-416', 'gt.json');
  if (fs.existsSync(small)) {
    const gt = loadGroundTruth(small);
    sets.push(['wider-val-416 held out (odd)', subsetOf(gt, 'odd', (i) => i % 2 === 1)]);
    sets.push(['wider-val-416 calibration half (even)', subsetOf(gt, 'even', (i) => i % 2 === 0)]);
    sets.push(['wider-val-416 all', gt]);
  }
  const { files } = readModel(modelDir).card;
  const runs: [string, FaceDetectorOptions][] = [['fp32', { precision: 'fp32' }]];
  if (files.torchscript_int8)
    runs.push(['torch int8 model.int8.pt', { precision: 'int8', backend: 'torch' }]);
  if (files.onnx_int8) {
    runs.push(['onnxruntime int8 model.int8.onnx', { precision: 'int8', backend: 'onnxruntime' }]);
  }
  if (cpuHasBf16()) runs.push(['torch bf16 model.pt', { precision: 'bf16', backend: 'torch' }]);
  const results = new Map<string, Record<string, Record<Subset, number>>>();
  for (const [key, options] of runs) {
    const detector = await FaceDetector.create({ model: modelDir, ...options, threads, warmup: [] });
    try {
      for (const [name, gt] of sets) {
        const result = await evaluate({
          gt,
          detect: async (paths) =>
            detectionsFromResults(
              await detector.detect(paths, { ...EVAL_SETTINGS, clipBoxes: false, maxSize: 0 }),
              paths,
            ),
          log: null,
        });
        const entry = results.get(name) ?? {};
        entry[key] = Object.fromEntries(SUBSETS.map((s) => [s, result.ours[s].ap])) as Record<Subset, number>;
        results.set(name, entry);
      }
    } finally {
      await detector.dispose();
    }
  }
  return runs.slice(1).flatMap(([engine]) =>
    sets.map(([name, gt]) => ({
      set: name,
      images: gt.images.length,
      engine,
      fp32: results.get(name)!.fp32!,
      reduced: results.get(name)![engine]!,
    })),
  );
}

async function main(): Promise<void> {
  const lines: string[] = [];
  const out = (line: string) => {
    lines.push(line);
    console.log(line);
  };
  const report: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: {
      cpu: os.cpus()[0]?.model,
      cores: os.availableParallelism(),
      loadavg: os.loadavg(),
      threads,
    },
  };
  if (doAll || values.speed) {
    const rows: SpeedRow[] = [];
    for (const dir of modelDirs) rows.push(...(await speed(dir)));
    report.speed = rows;
    out(`\n**Engine only, batch 1, ${threads} threads, median of ${reps}x${iterations} (ms)**\n`);
    out(
      '| model | size | engine | median ms | min–max | speed-up (fp32 of the same runtime ÷ this) | ' +
        'speed-up (fastest fp32 ÷ this) |',
    );
    out('|---|---|---|---|---|---|---|');
    for (const row of rows) {
      const runtime = row.engine.split(' ')[0]!;
      const peers = rows.filter(
        (r) => r.model === row.model && r.size === row.size && r.engine.includes(' fp32 '),
      );
      const reduced = !row.engine.includes(' fp32 ');
      const own = reduced ? peers.find((r) => r.engine.startsWith(`${runtime} fp32`)) : undefined;
      const fastest = reduced ? Math.min(...peers.map((r) => r.medianMs)) : undefined;
      const ratio = (ms: number | undefined) => (ms ? `${(ms / row.medianMs).toFixed(2)}×` : '');
      out(
        `| ${row.model} | ${row.size}² | ${row.engine} | ${row.medianMs.toFixed(1)} | ` +
          `${row.minMs.toFixed(1)}–${row.maxMs.toFixed(1)} | ${ratio(own?.medianMs)} | ${ratio(fastest)} |`,
      );
    }
  }
  if (doAll || values.ap) {
    const real = modelDirs.filter((dir) => !readModel(dir).card.synthetic);
    const rows: (ApRow & { model: string })[] = [];
    for (const dir of real)
      for (const row of await ap(dir)) rows.push({ model: readModel(dir).card.name, ...row });
    report.ap = rows;
    const pct = (v: number) => (v * 100).toFixed(2);
    out(
      '\n**WIDER FACE AP (%), maxSize original, threshold 0.02: fp32 / reduced precision ' +
        '(reduced − fp32, points)**\n',
    );
    out('| model | reduced-precision engine | fixture set | images | easy | medium | hard |');
    out('|---|---|---|---|---|---|---|');
    for (const row of rows) {
      const cells = SUBSETS.map(
        (s) =>
          `${pct(row.fp32[s])} / ${pct(row.reduced[s])} (${row.reduced[s] >= row.fp32[s] ? '+' : ''}` +
          `${((row.reduced[s] - row.fp32[s]) * 100).toFixed(2)})`,
      );
      out(`| ${row.model} | ${row.engine} | ${row.set} | ${row.images} | ${cells.join(' | ')} |`);
    }
  }
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(report, null, 1) + '\n');
  if (values.readme) replaceReadmeSection(values.readme, 'precision', lines.join('\n'));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
