// SPDX-License-Identifier: MIT
// The benchmark report as markdown: machine facts, then the engine-only, whole-path and batching tables.
import {
  BUSY_CPUS,
  type BenchReport,
  IDLE_MS,
  TIMED_MS,
  WARM_MS,
  type Cell,
  type Engine,
  IMPL_LABELS,
  type Impl,
  type Measure,
  OUR_ENGINES,
  modelLabel,
} from './run';
import { fmtMs, fmtRatio } from './stats';

function machineLine(r: BenchReport): string {
  const m = r.machine;
  const py = m.python as Record<string, string> | null;
  const cores = m.physicalCores ? `${m.cpus} CPUs, ${m.physicalCores} physical cores` : `${m.cpus} CPUs`;
  return [
    `**Machine:** ${m.cpu} (${cores}${m.simd.length ? `, ${m.simd.join('/')}` : ''}), ${m.memoryGiB} GiB, ${m.os}.`,
    `**Runtimes:** Node ${m.node}; LibTorch ${m.libtorch ?? 'n/a'} (addon); onnxruntime-node ${m.onnxruntime ?? 'n/a'}; ` +
      (py
        ? `PyTorch ${py.torch} (Python ${py.python}, NumPy ${py.numpy}, Pillow ${py.pillow}); `
        : 'PyTorch baseline n/a; ') +
      `sharp ${m.sharp} / libvips ${m.libvips}${m.jpeg ? `; libjpeg-turbo ${m.jpeg} (${m.jpegAllEngines ? 'the JPEG fast path' : 'addon'})` : ''}. **Threads:** ${r.settings.threads} intra-op for every runtime.`,
  ].join('  \n');
}

function cellLabel(c: Cell): string {
  return modelLabel(c);
}

function value(c: Cell, measure: Measure, impl: Impl): string {
  const r = c.results?.[measure]?.[impl];
  if (!r) return '–';
  if (!r.n) return `failed${r.error ? ` (${r.error.slice(0, 60)})` : ''}`;
  return `${fmtMs(r.median)} [${fmtMs(r.min)}–${fmtMs(r.max)}]`;
}

/** Short names of our engines in ratio and batching columns, and in the whole-path tables. */
const SHORT: Record<Engine, string> = {
  torch: 'LibTorch',
  'torch-bf16': 'LibTorch bf16',
  onnxruntime: 'ORT engine',
};
const WHOLE: Record<Engine, string> = {
  torch: 'facedet, LibTorch',
  'torch-bf16': 'facedet, LibTorch bf16',
  onnxruntime: 'facedet, ONNX Runtime',
};

function table(headers: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

function othersNote(c: Cell): string {
  if (!c.others) return c.load ? `load ${c.load[0]}→${c.load[1]}` : '';
  return c.others.steal > 0
    ? `${c.others.others.toFixed(2)} + ${c.others.steal.toFixed(2)} stolen`
    : c.others.others.toFixed(2);
}

/**
 * The issue's speed goals for the whole path (JPEG bytes to faces) at batch 1 in fp32: the original-style
 * PyTorch pipeline's time ÷ ours at least this.
 */
export const WHOLE_PATH_GOALS: readonly { backbone: string; size: number; atLeast: number }[] = [
  { backbone: 'mobilenet0.25', size: 512, atLeast: 2 },
  { backbone: 'resnet50', size: 512, atLeast: 1.25 },
  { backbone: 'resnet50', size: 1024, atLeast: 1.25 },
];

/** The goals' cells that this run measured, with each fp32 engine's speed-up and whether it meets its goal. */
function goalsTable(measured: Cell[], ours: Engine[]): string | undefined {
  const engines = ours.filter((e) => e !== 'torch-bf16');
  const rows: string[][] = [];
  for (const goal of WHOLE_PATH_GOALS) {
    const cell = measured.find((c) => c.backbone === goal.backbone && c.size === goal.size && c.batch === 1);
    const speedups = cell?.speedups?.whole;
    if (!cell || !speedups) continue;
    rows.push([
      cellLabel(cell),
      `${goal.size}²`,
      `≥ ${goal.atLeast}×`,
      ...engines.map((e) => {
        const s = speedups[`${e}:pytorch`];
        return s === undefined ? '–' : `${fmtRatio(s)} ${s >= goal.atLeast ? 'met' : '**not met**'}`;
      }),
    ]);
  }
  if (!rows.length) return undefined;
  return table(['model', 'size', 'goal', ...engines.map((e) => SHORT[e])], rows);
}

export function markdownReport(r: BenchReport): string {
  const measured = r.cells.filter((c) => c.status === 'measured');
  // Our engines that have figures in this report (bf16 only on CPUs that compute in it).
  const ours = OUR_ENGINES.filter((e) =>
    measured.some((c) => c.results?.engine?.[e] || c.results?.whole?.[e]),
  );
  const out: string[] = [];
  out.push(`## facedet bench — CPU, ${r.date.slice(0, 16).replace('T', ' ')} UTC`, '');
  out.push(machineLine(r), '');
  if (r.busy) {
    out.push(
      `> **The machine was busy:** ${
        r.maxOthers
          ? `other processes used up to ${r.maxOthers.others} CPU and the hypervisor stole up to ${r.maxOthers.steal} CPU during a cell`
          : `the 1-minute load average reached ${r.maxLoad}`
      } (${r.machine.cpus} CPUs), so other work competed with these timings (multi-threaded runtimes suffer ` +
        'most: a thread that loses its CPU stalls every barrier). Rerun on an idle machine before quoting these figures.',
      '',
    );
  }
  out.push(
    `Milliseconds **per image**: median [min–max] over interleaved rounds (${r.settings.rounds}); in every ` +
      `round each implementation runs back to back for ${WARM_MS} ms untimed, then for ${TIMED_MS} ms timed (at least once; ` +
      `the round's figure is the median of those runs: warm, as under steady traffic), ` +
      `in rotating order, with a pause after each long enough for its idle threads to stop spinning. ` +
      `Speed-up = baseline median ÷ ours (> 1×: ours is faster). Image: ${r.settings.image}, cropped and resized to ` +
      `size², JPEG q90. ResNet50 has SYNTHETIC weights (random backbone, silent heads: it finds no face, so its ` +
      `whole path does no NMS work). "other CPU" is the CPU that processes other than the benchmark's used ` +
      `while the cell ran, in CPUs (from /proc; "stolen" is time the hypervisor gave to other machines); above ` +
      `${BUSY_CPUS}, other work disturbed the timings. ONNX Runtime engine = ours: the session on a ` +
      `worker thread, its threads spinning during a run when nothing else is pending (as here) and asleep between runs; onnxruntime-node direct = the package's defaults on the ` +
      `main thread (idle threads spin), same thread count. LibTorch = model.pt frozen, channels-last, its fp32 ` +
      `convolutions run by oneDNN directly (weights prepared once, Winograd for the wide 3x3 ones) where the ` +
      `addon has it (see Runtimes). ` +
      (r.machine.jpeg
        ? r.machine.jpegAllEngines
          ? `In the whole path every engine's detector decodes the JPEG with libjpeg-turbo (the JPEG fast path, ` +
            `a module of its own: the same pixels as sharp's). `
          : `In the whole path the LibTorch engines' detector decodes the JPEG with libjpeg-turbo (the addon's JPEG ` +
            `fast path: the same pixels as sharp's), the ONNX Runtime engine's with sharp. `
        : '') +
      (ours.includes('torch-bf16')
        ? "LibTorch bf16 = precision 'bf16' (opt-in, CPUs with AVX512-BF16 or AMX): model.pt's weights in " +
          'bfloat16 but for the first convolution; its results differ slightly from fp32 (see the README). '
        : '') +
      `Baselines: ${r.settings.baselines.join('; ')}.`,
    '',
  );

  const goals = goalsTable(measured, ours);
  if (goals) {
    out.push(
      "### Speed goals: whole path, batch 1, fp32 (the original-style PyTorch pipeline's time ÷ ours)",
      '',
      goals,
      '',
    );
  }

  const engineRows = measured.filter((c) => c.results?.engine);
  if (engineRows.length) {
    out.push('### Engine only (network forward pass)', '');
    const impls: Impl[] = [...ours, 'ort-direct', 'pytorch'];
    out.push(
      table(
        [
          'model',
          'size',
          'batch',
          ...impls.map((i) => IMPL_LABELS[i] + (i === 'ort-direct' || i === 'pytorch' ? ' (baseline)' : '')),
          ...ours.flatMap((e) => [`${SHORT[e]} ÷ PyTorch`, `${SHORT[e]} ÷ ORT direct`]),
          'rounds',
          'other CPU',
        ],
        engineRows.map((c) => {
          const s = c.speedups?.engine ?? {};
          return [
            cellLabel(c),
            `${c.size}²`,
            String(c.batch),
            ...impls.map((i) => value(c, 'engine', i)),
            ...ours.flatMap((e) => [fmtRatio(s[`${e}:pytorch`]), fmtRatio(s[`${e}:ort-direct`])]),
            String(c.rounds),
            othersNote(c),
          ];
        }),
      ),
      '',
    );
  }

  const flopsPerPixel = new Map(r.models.map((m) => [m.name, m.convFlopsPerPixel]));
  const rateRows = engineRows.filter((c) => flopsPerPixel.get(c.model));
  if (rateRows.length) {
    out.push(
      '### Arithmetic rate (convolution GFLOP per image ÷ engine time per image)',
      '',
      'What the engine-only medians above mean in GFLOP/s (a multiply-add counts 2; the convolutions ' +
        "are nearly all of the network's arithmetic; the count per pixel is in the model card, " +
        "`conv_flops_per_pixel`). A rate near the CPUs' fp32 peak means no fp32 engine can be much faster " +
        '(bf16 arithmetic has a higher peak on CPUs that compute in it). The count is that of direct ' +
        "convolutions: LibTorch's Winograd convolutions (see the README) do fewer multiplications, so its " +
        'rate can pass the peak.',
      '',
    );
    const impls: Impl[] = [...ours, 'ort-direct', 'pytorch'];
    out.push(
      table(
        ['model', 'size', 'batch', 'GFLOP per image', ...impls.map((i) => IMPL_LABELS[i])],
        rateRows.map((c) => {
          const gflop = (flopsPerPixel.get(c.model)! * c.size * c.size) / 1e9;
          return [
            cellLabel(c),
            `${c.size}²`,
            String(c.batch),
            gflop < 10 ? gflop.toFixed(2) : gflop.toFixed(1),
            ...impls.map((i) => {
              const res = c.results?.engine?.[i];
              return res?.n ? `${Math.round(gflop / (res.median / 1000))} GFLOP/s` : '–';
            }),
          ];
        }),
      ),
      '',
    );
  }

  const wholeRows = measured.filter((c) => c.results?.whole);
  if (wholeRows.length) {
    out.push('### Whole path per image (JPEG bytes → decode → preprocess → infer → postprocess → faces)', '');
    const impls: Impl[] = [...ours, 'pytorch'];
    out.push(
      table(
        [
          'model',
          'size',
          'batch',
          ...ours.map((e) => WHOLE[e]),
          'original-style PyTorch (baseline)',
          ...ours.map((e) => `${SHORT[e]} ÷ PyTorch`),
          'faces/img',
          'rounds',
          'other CPU',
        ],
        wholeRows.map((c) => {
          const s = c.speedups?.whole ?? {};
          const faces = impls
            .map((i) => c.results?.whole?.[i]?.faces)
            .map((f) => (f === undefined ? '–' : String(Math.round(f * 10) / 10)))
            .join(' / ');
          return [
            cellLabel(c),
            `${c.size}²`,
            String(c.batch),
            ...impls.map((i) => value(c, 'whole', i)),
            ...ours.map((e) => fmtRatio(s[`${e}:pytorch`])),
            faces,
            String(c.rounds),
            othersNote(c),
          ];
        }),
      ),
      '',
    );
  }

  const idleRows = wholeRows.filter((c) => Object.values(c.results?.whole ?? {}).some((r) => r?.afterIdle));
  if (idleRows.length) {
    const impls: Impl[] = [...ours, 'pytorch'];
    const idle = (c: Cell, i: Impl) => c.results?.whole?.[i]?.afterIdle;
    const ratio = (c: Cell, i: Impl) => {
      const ours = idle(c, i);
      const base = idle(c, 'pytorch');
      return ours?.n && base?.n ? fmtRatio(base.median / ours.median) : '–';
    };
    out.push(
      `### Whole path after ${IDLE_MS / 1000} s idle, batch 1 (a sporadic request; the tables above are warm)`,
      '',
      table(
        [
          'model',
          'size',
          ...ours.map((e) => WHOLE[e]),
          'original-style PyTorch (baseline)',
          ...ours.map((e) => `${SHORT[e]} ÷ PyTorch`),
        ],
        idleRows.map((c) => [
          cellLabel(c),
          `${c.size}²`,
          ...impls.map((i) => {
            const r = idle(c, i);
            return r?.n ? `${fmtMs(r.median)} [${fmtMs(r.min)}–${fmtMs(r.max)}]` : '–';
          }),
          ...ours.map((e) => ratio(c, e)),
        ]),
      ),
      '',
    );
  }

  // Batching: per-image time at batch B relative to batch 1, same model, size and implementation.
  const batchingRows: string[][] = [];
  for (const c of measured) {
    if (c.batch === 1) continue;
    const one = measured.find(
      (d) => d.model === c.model && d.size === c.size && d.batch === 1 && d.status === 'measured',
    );
    if (!one) continue;
    const ratio = (measure: Measure, impl: Impl) => {
      const a = c.results?.[measure]?.[impl];
      const b = one.results?.[measure]?.[impl];
      return a?.n && b?.n ? fmtRatio(a.median / b.median) : '–';
    };
    batchingRows.push([
      cellLabel(c),
      `${c.size}²`,
      String(c.batch),
      ...(['engine', 'whole'] as const).flatMap((m) => [...ours, 'pytorch' as const].map((i) => ratio(m, i))),
    ]);
  }
  if (batchingRows.length) {
    out.push(
      '### Does batching pay? Per-image time at batch B ÷ per-image time at batch 1 (< 1×: batching pays)',
      '',
    );
    out.push(
      table(
        [
          'model',
          'size',
          'batch',
          ...['engine', 'whole'].flatMap((m) =>
            [...ours.map((e) => SHORT[e]), 'PyTorch'].map((n) => `${m}: ${n}`),
          ),
        ],
        batchingRows,
      ),
      '',
    );
  }

  const skipped = r.cells.filter((c) => c.status === 'skipped');
  if (skipped.length) {
    out.push('### Skipped cells', '');
    for (const c of skipped) out.push(`- ${cellLabel(c)} ${c.size}² batch ${c.batch}: ${c.reason}`);
    out.push('');
  }
  if (r.notes.length) {
    out.push('### Notes', '');
    for (const note of r.notes) out.push(`- ${note}`);
    out.push('');
  }
  out.push(`Total ${(r.seconds / 60).toFixed(1)} min.`);
  return out.join('\n');
}
