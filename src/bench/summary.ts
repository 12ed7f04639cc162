// SPDX-License-Identifier: MIT
// The README's performance summary: the issue's goals against the figures of one set of runs (bench,
// bench:decode, bench:load, precision_report), read from their JSON files, so that the summary is
// regenerated with the tables it quotes instead of being edited by hand.
//
//   node dist/bench/summary.js DIR [--readme README.md]
//
// DIR holds bench.json, decode.json, load-*.json and precision.json (scripts/bench-readme.sh writes them);
// each is optional: the rows of the missing ones are left out.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { replaceReadmeSection } from '../readme';
import type { DecodeReport } from './decode';
import { type LoadReport, SERVER_GOAL, cpuFloorMs, sequentialFloorMs } from './load';
import { WHOLE_PATH_GOALS } from './report';
import { type BenchReport, type Cell, modelLabel } from './run';
import { fmtMs, fmtMsUnit, fmtRatio } from './stats';

/** What scripts/precision_report.ts writes with --json (the fields read here). */
export interface PrecisionReport {
  date?: string;
  speed?: { model: string; size: number; engine: string; medianMs: number }[];
  ap?: {
    model: string;
    set: string;
    engine: string;
    fp32: Record<string, number>;
    reduced: Record<string, number>;
  }[];
}

export interface SummaryInputs {
  /** Where the runs' files are, as the README should name it (relative to the README). */
  source: string;
  bench?: BenchReport;
  decode?: DecodeReport;
  loads: LoadReport[];
  precision?: PrecisionReport;
}

/** A reduced precision may become a default at this speed-up over fp32 ... */
const REDUCED_SPEEDUP_GOAL = 1.5;
/** ... losing at most this many WIDER AP points on any fixture subset. */
const REDUCED_AP_POINTS = 1;

const verdict = (met: boolean) => (met ? 'met' : '**not met**');

function range(values: number[]): string {
  if (!values.length) return '–';
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const f = (v: number) => (v >= 10 ? v.toFixed(1) : v.toFixed(2));
  return f(lo) === f(hi) ? `${f(lo)}×` : `${f(lo)}-${f(hi)}×`;
}

function readJson<T>(file: string): T | undefined {
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as T) : undefined;
}

export function readSummaryInputs(dir: string, source: string): SummaryInputs {
  const loads = fs
    .readdirSync(dir)
    .filter((f) => /^load-.*\.json$/.test(f))
    .sort()
    .map((f) => readJson<LoadReport>(path.join(dir, f))!);
  return {
    source,
    bench: readJson<BenchReport>(path.join(dir, 'bench.json')),
    decode: readJson<DecodeReport>(path.join(dir, 'decode.json')),
    loads,
    precision: readJson<PrecisionReport>(path.join(dir, 'precision.json')),
  };
}

const batchOne = (cells: Cell[]) => cells.filter((c) => c.status === 'measured' && c.batch === 1);

function wholePathRow(bench: BenchReport): string[] {
  const cells = batchOne(bench.cells);
  const parts: string[] = [];
  const met: boolean[] = [];
  for (const goal of WHOLE_PATH_GOALS) {
    const cell = cells.find((c) => c.backbone === goal.backbone && c.size === goal.size);
    const s = cell?.speedups?.whole?.['torch:pytorch'];
    const ours = cell?.results?.whole?.torch?.median;
    const theirs = cell?.results?.whole?.pytorch?.median;
    if (!cell || s === undefined || ours === undefined || theirs === undefined) continue;
    met.push(s >= goal.atLeast);
    const ort = cell.speedups?.whole?.['onnxruntime:pytorch'];
    parts.push(
      `${modelLabel(cell)} ${goal.size}² **${fmtRatio(s)}** (${fmtMsUnit(ours)} against ${fmtMsUnit(theirs)}` +
        `${ort === undefined ? '' : `; ONNX Runtime engine ${fmtRatio(ort)}`})`,
    );
  }
  const goals = WHOLE_PATH_GOALS.map(
    (g) => `${g.backbone === 'resnet50' ? 'ResNet50' : 'MobileNet0.25'} ${g.size}² ≥ ${g.atLeast}×`,
  );
  return [
    'Whole path (JPEG bytes → faces), batch 1, fp32, LibTorch (the default) ÷ the original-style PyTorch pipeline',
    parts.length ? parts.join('; ') : 'not in this run',
    `${goals.join(', ')}: ${met.length ? verdict(met.every(Boolean)) : '–'}`,
  ];
}

function engineRow(bench: BenchReport): string[] {
  const measured = bench.cells.filter((c) => c.status === 'measured');
  const groups: string[] = [];
  const add = (label: string, cells: Cell[]) => {
    const ratios = cells.map((c) => c.speedups?.engine?.['torch:ort-direct']).filter((v) => v !== undefined);
    if (!ratios.length) return;
    const sizes = cells.map((c) => c.size);
    groups.push(`${label} ${range(ratios)} (${Math.min(...sizes)}² to ${Math.max(...sizes)}²)`);
  };
  for (const backbone of ['mobilenet0.25', 'resnet50']) {
    const ones = measured.filter((c) => c.backbone === backbone && c.batch === 1);
    if (ones[0]) add(`${modelLabel(ones[0])} batch 1`, ones);
    const more = measured.filter((c) => c.backbone === backbone && c.batch > 1);
    const batches = [...new Set(more.map((c) => c.batch))].join(' and ');
    if (more[0]) add(`${modelLabel(more[0])} batch ${batches}`, more);
  }
  return [
    'Our LibTorch engine ÷ onnxruntime-node on the same network (> 1×: ours is faster)',
    groups.length ? groups.join('; ') : 'not in this run',
    'report it; choose the CPU default by measurement',
  ];
}

function loadLabel(r: LoadReport): string {
  const s = r.settings;
  const model = path.basename(s.model).includes('resnet50')
    ? 'ResNet50 (synthetic weights)'
    : 'MobileNet0.25';
  const engine = s.backend === 'onnxruntime' ? 'ONNX Runtime' : 'LibTorch';
  const precision = s.precision && s.precision !== 'fp32' ? ` ${s.precision}` : '';
  const size = s.maxSize ? `max size ${s.maxSize}` : "the image's own size";
  return `${model}, ${engine}${precision}, ${size}`;
}

function serverRow(loads: LoadReport[]): string[] {
  const parts: string[] = [];
  const met: boolean[] = [];
  // The default first (MobileNet0.25, LibTorch, fp32, max size 1080), then the other engines and sizes.
  const rank = (r: LoadReport) =>
    (r.settings.model.includes('resnet50') ? 8 : 0) +
    (r.settings.maxSize === 0 ? 4 : 0) +
    (r.settings.precision && r.settings.precision !== 'fp32' ? 2 : 0) +
    (r.settings.backend === 'torch' ? 0 : 1);
  for (const r of [...loads].sort((a, b) => rank(a) - rank(b))) {
    const one = r.rows.find((row) => row.concurrency === 1);
    if (!one) continue;
    const engine = r.engineOnly.ms.median;
    const ratio = one.latencyMs.p50 / engine;
    const fp32 = !r.settings.precision || r.settings.precision === 'fp32';
    if (fp32) met.push(ratio <= SERVER_GOAL);
    const floor = cpuFloorMs(r, one, r.machine.cpus);
    const sequential = sequentialFloorMs(r, one);
    // autocannon's percentiles are whole milliseconds
    const notes = [`p50 ${one.latencyMs.p50} ms, network ${fmtMsUnit(engine)}`];
    if (ratio > SERVER_GOAL && floor !== undefined && sequential !== undefined) {
      notes.push(
        `at least ${fmtRatio(floor / engine)} on these CPUs whatever the schedule, ` +
          `${fmtRatio(sequential / engine)} decoding before the network`,
      );
    }
    if (r.libraryOnly)
      notes.push(`÷ the library's own path ${fmtRatio(one.latencyMs.p50 / r.libraryOnly.median)}`);
    const figure = ratio > SERVER_GOAL ? `**${fmtRatio(ratio)}**` : fmtRatio(ratio);
    parts.push(`${loadLabel(r)} ${figure} (${notes.join('; ')})`);
  }
  return [
    'Server at concurrency 1 (a 1920×1080 JPEG), p50 ÷ the network alone on that image',
    parts.length ? parts.join('; ') : 'not in this run',
    `≤ ${SERVER_GOAL}×` +
      (met.length
        ? `: ${verdict(met.every(Boolean))} (${met.filter(Boolean).length} of ${met.length} fp32 tables within it)`
        : ''),
  ];
}

function decodeRow(decode: DecodeReport): string[] | undefined {
  const row = decode.rows.find(
    (r) => r.width === 1920 && r.orientation === 1 && !r.icc && r.maxSize === 1080,
  );
  if (!row) return undefined;
  const phone = decode.rows.find((r) => r.width === 4032 && r.orientation === 1 && !r.icc);
  const one = (r: typeof row) =>
    `${r.width}×${r.height} to ${r.decodedWidth}×${r.decodedHeight}: ${fmtMs(r.fastPathTwoThreads.median)} ms on two ` +
    `threads (${fmtMs(r.fastPath.median)} on one) against ${fmtMs(r.sharp.median)} through sharp ` +
    `(${fmtRatio(r.sharp.median / r.fastPathTwoThreads.median)}), ${r.samePixels ? 'the same pixels' : '**other pixels**'}`;
  return [
    'Decoding a JPEG: the fast path (libjpeg-turbo in the addon) ÷ sharp',
    [row, ...(phone ? [phone] : [])].map(one).join('; '),
    '—',
  ];
}

function benchTimeRow(bench: BenchReport): string[] {
  return [
    '`npm run bench` (the run itself)',
    `${(bench.seconds / 60).toFixed(1)} min`,
    `< 10 min: ${verdict(bench.seconds < 600)}`,
  ];
}

/** precision_report's model names ("retinaface-resnet50 (synthetic)") as the other rows name them. */
function precisionModelLabel(model: string): string {
  const name = model.includes('resnet50')
    ? 'ResNet50'
    : model.includes('mobilenet0.25')
      ? 'MobileNet0.25'
      : model;
  return model.includes('(synthetic)') ? `${name} (synthetic weights)` : name;
}

/** Reduced precision (bf16, int8) against the fastest fp32 engine, and its WIDER AP change. */
function precisionRows(p: PrecisionReport): string[][] {
  const speed = p.speed ?? [];
  const ap = p.ap ?? [];
  const rows: string[][] = [];
  for (const kind of ['bf16', 'int8']) {
    const engines = [...new Set(speed.filter((r) => r.engine.includes(` ${kind} `)).map((r) => r.engine))];
    const parts: string[] = [];
    const met: boolean[] = [];
    for (const model of [...new Set(speed.map((r) => r.model))]) {
      for (const engine of engines) {
        const mine = speed.filter((r) => r.model === model && r.engine === engine);
        if (!mine.length) continue;
        const ratios = mine.map((r) => {
          const fp32 = speed.filter(
            (f) => f.model === model && f.size === r.size && f.engine.includes(' fp32 '),
          );
          return Math.min(...fp32.map((f) => f.medianMs)) / r.medianMs;
        });
        const sizes = mine.map((r) => `${r.size}²`).join(' and ');
        const deltas = ap
          .filter((a) => model.startsWith(a.model) && a.engine === engine)
          .flatMap((a) => Object.keys(a.fp32).map((s) => 100 * ((a.reduced[s] ?? 0) - (a.fp32[s] ?? 0))));
        const apText = deltas.length
          ? `WIDER AP ${Math.min(...deltas) >= 0 ? '+' : ''}${Math.min(...deltas).toFixed(2)} to ${Math.max(...deltas) >= 0 ? '+' : ''}${Math.max(...deltas).toFixed(2)} points`
          : 'AP not measurable (synthetic weights)';
        const fast = Math.min(...ratios) >= REDUCED_SPEEDUP_GOAL;
        const accurate = deltas.length > 0 && Math.min(...deltas) >= -REDUCED_AP_POINTS;
        met.push(fast && accurate);
        parts.push(
          `${precisionModelLabel(model)}, ${engine.split(' ')[0] === 'torch' ? 'LibTorch' : 'ONNX Runtime'} ${engine.split(' ')[2]}: network ${range(ratios)} the speed of the fastest fp32 engine at ${sizes}; ${apText}`,
        );
      }
    }
    if (!parts.length) continue;
    const clears = met.filter(Boolean).length;
    rows.push([
      kind === 'bf16' ? 'bf16 (opt-in; CPUs with AVX512-BF16 or AMX)' : 'int8 (experimental)',
      parts.join('; '),
      `a default if ≥ ${REDUCED_SPEEDUP_GOAL}× and within ${REDUCED_AP_POINTS} AP point: cleared by ${clears} of ${met.length}`,
    ]);
  }
  return rows;
}

export function summaryMarkdown(inputs: SummaryInputs): string {
  const { bench, decode, loads, precision } = inputs;
  const rows: string[][] = [];
  if (bench) rows.push(wholePathRow(bench), engineRow(bench));
  if (loads.length) rows.push(serverRow(loads));
  if (bench) rows.push(benchTimeRow(bench));
  const d = decode && decodeRow(decode);
  if (d) rows.push(d);
  if (precision) rows.push(...precisionRows(precision));
  const machine = bench?.machine ?? decode?.machine ?? loads[0]?.machine;
  const dates = [
    bench && `bench ${bench.date.slice(0, 16).replace('T', ' ')}`,
    decode && `decode ${decode.date.slice(0, 16).replace('T', ' ')}`,
    loads[0] && `load ${loads[0].date.slice(0, 16).replace('T', ' ')}`,
    precision?.date && `precision ${precision.date.slice(0, 16).replace('T', ' ')}`,
  ].filter(Boolean);
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [
    `In short (${machine ? `${machine.cpu}, ${machine.cpus} CPUs${machine.simd.length ? `, ${machine.simd.join('/')}` : ''}` : 'no runs'}; ` +
      `${dates.join(', ')} UTC; the runs' JSON files are in [${inputs.source}](${inputs.source}), ` +
      'and every figure here is in the tables below):',
    '',
    line(['', 'measured', "the issue's goal"]),
    line(['---', '---', '---']),
    ...rows.map(line),
  ].join('\n');
}

function main(argv: string[]): number {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { readme: { type: 'string' }, help: { type: 'boolean' } },
  });
  const dir = positionals[0];
  if (values.help || !dir || positionals.length > 1) {
    process.stdout.write('Usage: node dist/bench/summary.js DIR [--readme FILE]\n');
    return values.help ? 0 : 2;
  }
  const readme = values.readme;
  const source = readme ? path.relative(path.dirname(path.resolve(readme)), path.resolve(dir)) : dir;
  const markdown = summaryMarkdown(readSummaryInputs(dir, source));
  if (readme) replaceReadmeSection(readme, 'summary', markdown);
  process.stdout.write(markdown + '\n');
  return 0;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
