// SPDX-License-Identifier: MIT
// The WIDER FACE evaluation run: ground truth -> detections (any detector, passed in) -> official-protocol
// APs, optionally next to the PyTorch reference (scripts/eval_reference.py output) -> a markdown table,
// results.json, PR-curve plots and, on request, the official per-image result files.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ImageResult } from '../detector';
import { invalidParameterError } from '../errors';
import {
  type GroundTruth,
  WIDER_VAL_IMAGES,
  type WiderMatLayout,
  countFaces,
  loadGroundTruth,
} from './groundtruth';
import { type PlotSeries, prCurvesSvg, renderSvgToPng } from './plot';
import {
  SUBSETS,
  type Subset,
  type WiderFaceOptions,
  type WiderFaceResult,
  evaluateWiderFace,
} from './widerface';
import { writeWiderFaceTxt } from './widerface-txt';

/** What scripts/eval_reference.py writes. */
export interface ReferenceFile {
  model?: Record<string, unknown>;
  settings?: Record<string, unknown>;
  gt?: string;
  images: { path: string; detections: number[][]; size_wh?: [number, number]; scale_xy?: [number, number] }[];
}

export interface EvaluateOptions {
  /** A gt.json file (or a folder holding one), the official .mat layout, or loaded ground truth. */
  gt: string | WiderMatLayout | GroundTruth;
  /**
   * The detector under test: for each image file, its detections [x1, y1, x2, y2, score] in pixels of
   * the original image, in the order of `paths`.
   */
  detect: (paths: string[]) => Promise<number[][][]>;
  /** Images per detect() call (default 16). */
  chunkSize?: number;
  /** eval_reference.py output (a file or its parsed content), evaluated the same way for comparison. */
  reference?: string | ReferenceFile;
  /** Series names in the table and plot (default 'ours' and 'pytorch reference'). */
  label?: string;
  referenceLabel?: string;
  /** Folder for results.json, pr-curves.svg and pr-curves.png; nothing is written without it. */
  outDir?: string;
  /** Also write the official per-image result files to <outDir>/widerface_txt/ (ours only). */
  writeTxt?: boolean;
  /** Anything to record in results.json and print under the table (model, device, settings...). */
  meta?: Record<string, unknown>;
  /** Protocol parameters (official defaults). */
  protocol?: WiderFaceOptions;
  /** Where the markdown table goes (default console.log); null for silence. */
  log?: ((line: string) => void) | null;
  onProgress?: (done: number, total: number) => void;
}

export interface EvaluateResult {
  groundTruth: {
    source: string;
    layout: 'json' | 'mat';
    images: number;
    faces: Record<Subset | 'all', number>;
  };
  /** True when fewer images than the full WIDER FACE val set were evaluated. */
  subset: boolean;
  ours: WiderFaceResult;
  reference?: WiderFaceResult;
  /** ours - reference AP per subset. */
  difference?: Record<Subset, number>;
  /** The markdown report. */
  table: string;
  /** Files written. */
  files: string[];
}

/**
 * FaceDetector results -> detections [x1, y1, x2, y2, score] for evaluate(). An image that failed
 * (its result has `error`) throws: counting it as "no faces" would quietly lower the AP. For a
 * comparison with eval_reference.py, detect with clipBoxes: false (the reference does not clip).
 */
export function detectionsFromResults(
  results: readonly ImageResult[],
  paths: readonly string[],
): number[][][] {
  if (results.length !== paths.length) {
    throw new Error(`the detector returned ${results.length} results for ${paths.length} images`);
  }
  return results.map((r, i) => {
    if (r.error) throw new Error(`${paths[i]}: ${r.error.code}: ${r.error.message}`);
    return r.faces.map((f) => [...f.bounding_box, f.confidence]);
  });
}

function readReference(ref: string | ReferenceFile): { doc: ReferenceFile; source: string } {
  if (typeof ref !== 'string') return { doc: ref, source: '(in memory)' };
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(ref, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read reference detections ${ref}: ${(err as Error).message}`);
  }
  if (!Array.isArray((doc as ReferenceFile)?.images)) {
    throw new Error(
      `${ref}: expected {"images": [{"path", "detections"}]} (scripts/eval_reference.py output)`,
    );
  }
  return { doc: doc as ReferenceFile, source: path.resolve(ref) };
}

/** The reference detections in ground-truth order; every ground-truth image must be present. */
function referencePredictions(gt: GroundTruth, doc: ReferenceFile, source: string): number[][][] {
  const byPath = new Map<string, number[][]>();
  doc.images.forEach((image, i) => {
    if (typeof image?.path !== 'string' || !Array.isArray(image.detections)) {
      throw new Error(`${source}: images[${i}] must have "path" and "detections"`);
    }
    byPath.set(image.path, image.detections);
  });
  const missing = gt.images.filter((image) => !byPath.has(image.path));
  if (missing.length > 0) {
    throw new Error(
      `${source}: no detections for ${missing.length} of the ${gt.images.length} ground-truth images ` +
        `(first: ${missing[0]?.path}); run eval_reference.py on the same gt.json without --limit`,
    );
  }
  return gt.images.map((image) => byPath.get(image.path) as number[][]);
}

function pct(v: number): string {
  return Number.isFinite(v) ? `${(v * 100).toFixed(2)}%` : 'n/a';
}

/** A difference in percentage points; tiny non-zero differences keep their size (exponent form). */
function pp(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (v === 0) return '0 (identical)';
  const sign = v > 0 ? '+' : '-';
  const a = Math.abs(v * 100);
  return `${sign}${a >= 0.0005 ? a.toFixed(3) : a.toExponential(1)} pp`;
}

function int(n: number): string {
  return n.toLocaleString('en-US');
}

function scalar(v: unknown): string {
  return typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
}

/** The markdown report of an evaluation. */
export function formatReport(args: {
  gt: GroundTruth;
  ours: WiderFaceResult;
  reference?: WiderFaceResult;
  label: string;
  referenceLabel: string;
  meta?: Record<string, unknown>;
}): string {
  const { gt, ours, reference, label, referenceLabel } = args;
  const faces = countFaces(gt);
  const subset = gt.images.length < WIDER_VAL_IMAGES;
  const lines: string[] = [];
  lines.push(
    subset
      ? `### WIDER FACE val — SUBSET of ${int(gt.images.length)} of the ${int(WIDER_VAL_IMAGES)} images`
      : `### WIDER FACE val (${int(gt.images.length)} images)`,
    '',
  );
  if (subset) {
    lines.push(
      `**These APs are measured on a SUBSET** of the validation set (${int(gt.images.length)} images). They follow ` +
        'the official protocol but are not comparable with published full-set WIDER FACE numbers; use them to ' +
        'compare implementations on the same images.',
      '',
    );
  }
  if (gt.note) lines.push(`Ground truth note: ${gt.note}`, '');
  lines.push(
    `Ground truth: ${gt.source} (${int(gt.images.length)} images, ${int(faces.all)} boxes; faces counted: ` +
      `easy ${int(faces.easy)}, medium ${int(faces.medium)}, hard ${int(faces.hard)}).`,
  );
  lines.push(
    `Detections: ${label} ${int(ours.detections)}` +
      (reference ? `, ${referenceLabel} ${int(reference.detections)}` : '') +
      '.',
    '',
  );
  if (reference) {
    lines.push(
      `| subset | faces | ${label} AP | ${referenceLabel} AP | difference |`,
      '|---|---:|---:|---:|---:|',
    );
    for (const s of SUBSETS) {
      lines.push(
        `| ${s} | ${int(ours[s].faces)} | ${pct(ours[s].ap)} | ${pct(reference[s].ap)} | ${pp(ours[s].ap - reference[s].ap)} |`,
      );
    }
  } else {
    lines.push(`| subset | faces | ${label} AP |`, '|---|---:|---:|');
    for (const s of SUBSETS) lines.push(`| ${s} | ${int(ours[s].faces)} | ${pct(ours[s].ap)} |`);
  }
  const meta = Object.entries(args.meta ?? {});
  if (meta.length > 0) {
    lines.push('');
    for (const [k, v] of meta) lines.push(`- ${k}: ${scalar(v)}`);
  }
  return lines.join('\n') + '\n';
}

function curves(result: WiderFaceResult) {
  const out = {} as Record<Subset, { ap: number; faces: number; recall: number[]; precision: number[] }>;
  for (const s of SUBSETS) {
    out[s] = {
      ap: result[s].ap,
      faces: result[s].faces,
      recall: result[s].curve.recall,
      precision: result[s].curve.precision,
    };
  }
  return out;
}

/** Runs the detector over the ground truth's images and evaluates it (and the reference, if given). */
export async function evaluate(options: EvaluateOptions): Promise<EvaluateResult> {
  if (typeof options?.detect !== 'function')
    throw invalidParameterError('detect', 'a function', options?.detect);
  const chunkSize = options.chunkSize ?? 16;
  if (!Number.isInteger(chunkSize) || chunkSize < 1) {
    throw invalidParameterError('chunkSize', 'a positive integer', chunkSize);
  }
  const log = options.log === undefined ? (line: string) => console.log(line) : options.log;
  const label = options.label ?? 'ours';
  const referenceLabel = options.referenceLabel ?? 'pytorch reference';
  const gt =
    typeof options.gt === 'object' && 'images' in options.gt ? options.gt : loadGroundTruth(options.gt);

  // Read the reference before the (slow) detection run so that a bad file fails fast.
  const ref = options.reference === undefined ? undefined : readReference(options.reference);
  const referencePreds = ref ? referencePredictions(gt, ref.doc, ref.source) : undefined;

  const absent = gt.images.filter((image) => !existsSync(image.file));
  if (absent.length > 0) {
    throw new Error(`${absent.length} ground-truth image(s) not found, first: ${absent[0]?.file}`);
  }

  const predictions: number[][][] = [];
  for (let i = 0; i < gt.images.length; i += chunkSize) {
    const paths = gt.images.slice(i, i + chunkSize).map((image) => image.file);
    const dets = await options.detect(paths);
    if (!Array.isArray(dets) || dets.length !== paths.length) {
      throw new Error(
        `detect() returned ${Array.isArray(dets) ? dets.length : typeof dets} results for ${paths.length} images`,
      );
    }
    predictions.push(...dets);
    options.onProgress?.(predictions.length, gt.images.length);
  }

  const ours = evaluateWiderFace(gt.images, predictions, options.protocol);
  const reference = referencePreds
    ? evaluateWiderFace(gt.images, referencePreds, options.protocol)
    : undefined;
  const difference = reference
    ? (Object.fromEntries(SUBSETS.map((s) => [s, ours[s].ap - reference[s].ap])) as Record<Subset, number>)
    : undefined;
  const table = formatReport({ gt, ours, reference, label, referenceLabel, meta: options.meta });
  const faces = countFaces(gt);
  const subset = gt.images.length < WIDER_VAL_IMAGES;

  const files: string[] = [];
  if (options.outDir) {
    const out = path.resolve(options.outDir);
    mkdirSync(out, { recursive: true });
    const series: PlotSeries[] = [{ label, subsets: curves(ours) }];
    if (reference) series.push({ label: referenceLabel, dash: '6 4', subsets: curves(reference) });
    const title = `WIDER FACE val${subset ? ` subset (${gt.images.length} images)` : ''}: precision / recall`;
    const svg = prCurvesSvg(series, { title });
    const svgFile = path.join(out, 'pr-curves.svg');
    writeFileSync(svgFile, svg);
    const pngFile = path.join(out, 'pr-curves.png');
    await renderSvgToPng(svg, pngFile);
    const doc = {
      groundTruth: {
        source: gt.source,
        layout: gt.layout,
        images: gt.images.length,
        faces,
        note: gt.note ?? null,
      },
      subset,
      protocol: {
        iouThreshold: options.protocol?.iouThreshold ?? 0.5,
        thresholds: options.protocol?.thresholdCount ?? 1000,
      },
      meta: options.meta ?? {},
      labels: { ours: label, reference: reference ? referenceLabel : null },
      ap: {
        ours: Object.fromEntries(SUBSETS.map((s) => [s, ours[s].ap])),
        reference: reference ? Object.fromEntries(SUBSETS.map((s) => [s, reference[s].ap])) : null,
        difference: difference ?? null,
      },
      detections: { ours: ours.detections, reference: reference?.detections ?? null },
      reference: ref
        ? { source: ref.source, model: ref.doc.model ?? null, settings: ref.doc.settings ?? null }
        : null,
      curves: { ours: curves(ours), reference: reference ? curves(reference) : null },
      table,
    };
    const jsonFile = path.join(out, 'results.json');
    // NaN precision (0 / 0 at thresholds without proposals) becomes null.
    writeFileSync(
      jsonFile,
      JSON.stringify(doc, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)) + '\n',
    );
    files.push(jsonFile, svgFile, pngFile);
    if (options.writeTxt) {
      files.push(
        ...writeWiderFaceTxt(
          path.join(out, 'widerface_txt'),
          gt.images.map((image, i) => ({
            event: image.event,
            name: image.name,
            detections: predictions[i] ?? [],
          })),
        ),
      );
    }
  }
  log?.(table);
  return {
    groundTruth: { source: gt.source, layout: gt.layout, images: gt.images.length, faces },
    subset,
    ours,
    ...(reference ? { reference, difference } : {}),
    table,
    files,
  };
}
