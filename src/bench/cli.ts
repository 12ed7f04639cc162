// SPDX-License-Identifier: MIT
// `facedet bench` (and `npm run bench`): flags -> runBench -> markdown on stdout, JSON in bench-results/.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import { replaceReadmeSection } from '../readme';
import { markdownReport } from './report';
import { cpuHasBf16 } from '../cpu';
import { DEFAULT_BATCHES, DEFAULT_SIZES, type Engine, type Measure, OUR_ENGINES, runBench } from './run';

type Values = Record<string, string | boolean | string[] | undefined>;

const packageRoot = path.resolve(__dirname, '..', '..');

export class BenchUsageError extends Error {}

export const benchUsage =
  'facedet bench [--model DIR]... [--size 256,512,...] [--batch 1,4,16] [--iterations N] [--threads N]\n' +
  '              [--engines torch,torch-bf16,onnxruntime] [--only engine|whole] [--no-pytorch] [--no-ort-direct]\n' +
  '              [--full] [--max-minutes M] [--cell-seconds S] [--passes P] [--image FILE] [--json]\n' +
  '              [--out FILE] [--readme FILE]\n' +
  '\n' +
  'Times the engine alone and the whole library path per image for each model, size and batch, with\n' +
  "two baselines interleaved in the same run: eager PyTorch from Python in the original project's\n" +
  'style (scripts/bench_pytorch.py; $FACEDET_PYTHON) and onnxruntime-node used directly. Prints a\n' +
  'markdown table (or the JSON with --json) and writes the JSON to bench-results/cpu-<date>.json.\n' +
  'Engines: LibTorch fp32, LibTorch bf16 (default only on CPUs with AVX512-BF16 or AMX) and ONNX Runtime.\n' +
  'The default plan skips the biggest cells (listed with the reason) and stays within --max-minutes\n' +
  "(default 9); --full runs every cell. --passes P (default 1) measures each batch size's cells in P\n" +
  "passes, each giving every cell its share of the rounds: a cell's rounds are spread over minutes.";

export const benchOptions: NonNullable<ParseArgsConfig['options']> = {
  model: { type: 'string', multiple: true },
  size: { type: 'string' },
  batch: { type: 'string' },
  iterations: { type: 'string' },
  threads: { type: 'string' },
  engines: { type: 'string' },
  only: { type: 'string' },
  'no-pytorch': { type: 'boolean' },
  'no-ort-direct': { type: 'boolean' },
  full: { type: 'boolean' },
  'max-minutes': { type: 'string' },
  'cell-seconds': { type: 'string' },
  passes: { type: 'string' },
  image: { type: 'string' },
  json: { type: 'boolean' },
  out: { type: 'string' },
  readme: { type: 'string' },
};

function int(values: Values, name: string, min: number, max: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new BenchUsageError(`--${name} expects an integer between ${min} and ${max}, got '${String(raw)}'`);
  }
  return n;
}

function list(values: Values, name: string, min: number, max: number): number[] | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  return String(raw)
    .split(',')
    .map((part) => int({ [name]: part.trim() }, name, min, max)!);
}

function defaultModels(): string[] {
  const dirs = ['retinaface-mobilenet0.25', 'retinaface-resnet50-synthetic'].map((name) =>
    path.join(packageRoot, 'models', name),
  );
  return dirs.filter((dir) => fs.existsSync(path.join(dir, 'model.json')));
}

function stamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

export async function benchMain(values: Values, python: string): Promise<number> {
  const models = (values.model as string[] | undefined) ?? defaultModels();
  if (models.length === 0) {
    throw new BenchUsageError(
      `no model: pass --model DIR, or export the default models into ${path.join(packageRoot, 'models')} (npm run setup)`,
    );
  }
  // bf16 only where the CPU computes in it (elsewhere the detector refuses it).
  const defaults = OUR_ENGINES.filter((e) => e !== 'torch-bf16' || cpuHasBf16());
  const engines = (values.engines ? String(values.engines).split(',') : defaults).map((e) => e.trim());
  for (const e of engines) {
    if (!OUR_ENGINES.includes(e as Engine)) throw new BenchUsageError(`--engines: unknown engine '${e}'`);
  }
  const only = values.only as string | undefined;
  if (only !== undefined && only !== 'engine' && only !== 'whole') {
    throw new BenchUsageError(`--only expects engine or whole, got '${only}'`);
  }
  const measures: Measure[] = only ? [only] : ['engine', 'whole'];
  const cellSeconds = Number(values['cell-seconds'] ?? 4);
  if (!(cellSeconds > 0)) throw new BenchUsageError('--cell-seconds expects a positive number');
  const report = await runBench({
    models,
    sizes: list(values, 'size', 32, 8192) ?? DEFAULT_SIZES,
    batches: list(values, 'batch', 1, 256) ?? DEFAULT_BATCHES,
    ...(values.iterations !== undefined ? { iterations: int(values, 'iterations', 1, 10_000)! } : {}),
    threads: int(values, 'threads', 1, 1024) ?? os.availableParallelism(),
    engines: engines as Engine[],
    measures,
    pytorch: !values['no-pytorch'],
    ortDirect: !values['no-ort-direct'] && measures.includes('engine'),
    full: Boolean(values.full),
    maxMinutes: int(values, 'max-minutes', 0, 10_000) ?? 9,
    cellSeconds,
    passes: int(values, 'passes', 1, 100) ?? 1,
    minRounds: 4,
    maxRounds: 25,
    ...(values.image ? { image: String(values.image) } : {}),
    python,
    log: (line) => process.stderr.write(`[bench] ${line}\n`),
  });
  const file = values.out
    ? String(values.out)
    : path.join(process.cwd(), 'bench-results', `cpu-${stamp(new Date(report.date))}.json`);
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(report, null, 1) + '\n');
  if (values.readme) {
    replaceReadmeSection(String(values.readme), 'bench', markdownReport(report));
    process.stderr.write(`[bench] README section "bench" written to ${String(values.readme)}\n`);
  }
  if (values.json) process.stdout.write(JSON.stringify(report, null, 1) + '\n');
  else process.stdout.write(markdownReport(report) + `\n\nJSON: ${path.relative(process.cwd(), file)}\n`);
  return report.cells.some((c) => c.status === 'measured') ? 0 : 1;
}
