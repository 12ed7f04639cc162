// SPDX-License-Identifier: MIT
// `facedet eval` / `npm run eval`: WIDER FACE AP of our pipeline beside the PyTorch reference, and
// the same metric across resize policies.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { FaceDetector } from '../detector';
import { defaultModelDir, readModel } from '../model';
import { replaceReadmeSection } from '../readme';
import { loadGroundTruth } from './groundtruth';
import { type EvaluateResult, detectionsFromResults, evaluate } from './run';
import { SUBSETS } from './widerface';

const packageRoot = path.resolve(__dirname, '..', '..');

export interface EvalCommandOptions {
  model?: string;
  /** gt.json files or folders, or official layout folders. */
  gt: string[];
  /** maxSize of the main comparison (0 = original scale). */
  maxSize: number;
  /** maxSize values of the resize-policy table. */
  sizes: number[];
  reference: boolean;
  weights?: string;
  threads: number;
  /** The detector's precision (default 'fp32'); 'bf16' or 'int8' compare a reduced precision with the reference. */
  precision?: 'fp32' | 'bf16' | 'int8';
  outDir: string;
  dump?: string;
  /** Fail when |ours - reference| exceeds this on any subset. */
  tolerance?: number;
  python: string;
  log: (line: string) => void;
  /** Write the accuracy section of this README (and its plots under docs/). */
  readme?: string;
}

/** Published full-set WIDER FACE val AP (biubug6/Pytorch_Retinaface README, single scale), per backbone. */
export const PUBLISHED_AP: Record<string, { scale: string; easy: number; medium: number; hard: number }[]> = {
  'mobilenet0.25': [
    { scale: 'original image scale', easy: 90.7, medium: 88.16, hard: 73.82 },
    { scale: 'resized like the MXNet original', easy: 88.67, medium: 87.09, hard: 80.99 },
  ],
  resnet50: [
    { scale: 'original image scale', easy: 95.48, medium: 94.04, hard: 84.43 },
    { scale: 'resized like the MXNet original', easy: 94.82, medium: 93.84, hard: 89.6 },
  ],
};

/** Evaluation settings (the reference project's): fixed so numbers are comparable. */
export const EVAL_SETTINGS = { confidenceThreshold: 0.02, nmsIou: 0.4, topK: 5000, keepTopK: 750 };

export function defaultGroundTruth(): string[] {
  const fixtures = process.env.FACEDET_FIXTURES ?? path.resolve(packageRoot, '..', 'shared', 'fixtures');
  return ['wider-val', 'wider-val-416']
    .map((name) => path.join(fixtures, name, 'gt.json'))
    .filter((file) => fs.existsSync(file));
}

function runReference(options: EvalCommandOptions, modelDir: string, gt: string, maxSize: number): string {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-eval-')), 'reference.json');
  const args = [
    path.join(packageRoot, 'scripts', 'eval_reference.py'),
    '--model-dir',
    modelDir,
    '--gt',
    gt,
    '--max-size',
    String(maxSize),
    '--threshold',
    String(EVAL_SETTINGS.confidenceThreshold),
    '--nms',
    String(EVAL_SETTINGS.nmsIou),
    '--top-k',
    String(EVAL_SETTINGS.topK),
    '--keep-top-k',
    String(EVAL_SETTINGS.keepTopK),
    '--threads',
    String(options.threads),
    '--out',
    out,
  ];
  if (options.weights) args.push('--weights', options.weights);
  const run = spawnSync(options.python, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (run.error || run.status !== 0) {
    throw new Error(
      `the PyTorch reference (scripts/eval_reference.py) failed: ${run.error?.message ?? run.stderr.trim()}`,
    );
  }
  return out;
}

const pct = (x: number) => (x * 100).toFixed(2);

/** The longest image side in a ground-truth set (read from the image headers). */
async function longestSide(gt: string): Promise<number> {
  let longest = 0;
  for (const image of loadGroundTruth(gt).images) {
    const { width = 0, height = 0 } = await sharp(image.file).metadata();
    longest = Math.max(longest, width, height);
  }
  return longest;
}

export interface EvalSetReport {
  gt: string;
  main: EvaluateResult;
  sizes: { maxSize: number; ap: Record<string, number> }[];
}

/** Runs the evaluation for each ground-truth set; returns the results (the caller decides on exit codes). */
export async function runEvaluation(options: EvalCommandOptions): Promise<EvalSetReport[]> {
  const modelDir = readModel(options.model ?? defaultModelDir()).dir;
  if (options.gt.length === 0) {
    throw new Error(
      'no ground truth: pass --gt FILE (a gt.json, its folder, or the official WIDER FACE layout)',
    );
  }
  const detector = await FaceDetector.create({
    model: modelDir,
    threads: options.threads,
    ...(options.precision ? { precision: options.precision } : {}),
    warmup: [],
  });
  const reports: EvalSetReport[] = [];
  try {
    const detectAt = (maxSize: number) => async (paths: string[]) =>
      detectionsFromResults(
        await detector.detect(paths, { ...EVAL_SETTINGS, clipBoxes: false, maxSize }),
        paths,
      );
    for (const given of options.gt) {
      // A folder holding a gt.json means that file (the PyTorch reference reads gt.json files only).
      const gt = fs.existsSync(path.join(given, 'gt.json')) ? path.join(given, 'gt.json') : given;
      const name = path.basename(path.dirname(path.resolve(gt.endsWith('.json') ? gt : path.join(gt, 'x'))));
      const outDir = path.join(options.outDir, name);
      const engine = detector.info().engine;
      options.log(
        `\n## ${name} (maxSize ${options.maxSize || 'original'}; ours: ${engine.backend} ${engine.precision})\n`,
      );
      const main = await evaluate({
        gt,
        detect: detectAt(options.maxSize),
        ...(options.reference ? { reference: runReference(options, modelDir, gt, options.maxSize) } : {}),
        outDir,
        ...(options.dump ? { writeTxt: true } : {}),
        meta: {
          model: modelDir,
          maxSize: options.maxSize,
          precision: detector.info().engine.precision,
          ...EVAL_SETTINGS,
        },
        log: options.log,
      });
      if (options.dump) {
        const target = path.join(options.dump, name);
        fs.rmSync(target, { recursive: true, force: true });
        fs.mkdirSync(path.dirname(target), { recursive: true });
        fs.cpSync(path.join(outDir, 'widerface_txt'), target, { recursive: true });
        options.log(`widerface_txt files: ${target}`);
      }
      const sizes: EvalSetReport['sizes'] = [];
      const longest = await longestSide(gt);
      // A maxSize at or above every image's longer side changes nothing: that is the original scale.
      const effective = (maxSize: number) => (maxSize === 0 || maxSize >= longest ? 0 : maxSize);
      for (const maxSize of options.sizes) {
        const result =
          effective(maxSize) === effective(options.maxSize)
            ? main
            : await evaluate({ gt, detect: detectAt(maxSize), log: null });
        sizes.push({ maxSize, ap: Object.fromEntries(SUBSETS.map((s) => [s, result.ours[s].ap])) });
      }
      if (sizes.length > 0) {
        options.log(`\n### ${name}: AP by resize policy (ours)\n`);
        options.log('| maxSize | easy | medium | hard |');
        options.log('|---|---|---|---|');
        for (const row of sizes) {
          options.log(
            `| ${row.maxSize || 'original'} | ${pct(row.ap.easy!)} | ${pct(row.ap.medium!)} | ${pct(row.ap.hard!)} |`,
          );
        }
      }
      options.log(`\nPlot and results: ${outDir}`);
      reports.push({ gt, main, sizes });
    }
  } finally {
    await detector.dispose();
  }
  if (options.readme) writeReadmeSection(options, modelDir, reports);
  if (options.tolerance !== undefined) {
    for (const report of reports) {
      for (const subset of SUBSETS) {
        const diff = report.main.difference?.[subset];
        if (diff !== undefined && Math.abs(diff) > options.tolerance) {
          throw new Error(
            `${report.gt}: ${subset} AP differs from the PyTorch reference by ${diff.toFixed(5)} (tolerance ${options.tolerance})`,
          );
        }
      }
    }
  }
  return reports;
}

function writeReadmeSection(options: EvalCommandOptions, modelDir: string, reports: EvalSetReport[]): void {
  const card = readModel(modelDir).card;
  const docs = path.join(path.dirname(path.resolve(options.readme!)), 'docs');
  fs.mkdirSync(docs, { recursive: true });
  const lines = [
    `Measured with \`npm run eval\` (WIDER FACE protocol, our own implementation: scores normalised over the set,`,
    'IoU ≥ 0.5 with pixel-inclusive areas, "ignore" faces neither true nor false positives, 1000 thresholds, VOC-style',
    `AP) on ${card.name} (${card.synthetic ? 'SYNTHETIC weights' : `weights sha256 ${card.weights.sha256?.slice(0, 12)}…`}), score threshold`,
    '0.02, NMS IoU 0.4, top-k 5000 / keep 750. "Reference" is the plain PyTorch + NumPy pipeline of',
    '`scripts/eval_reference.py` on the same images and settings. **These are fixture SUBSETS, not the full',
    'validation set** (3,226 images): compare the two columns, not these numbers with published ones.',
    '',
  ];
  for (const report of reports) {
    const name = path.basename(path.dirname(path.resolve(report.gt)));
    const { main } = report;
    lines.push(
      `**${name}** — ${main.groundTruth.images} images, ${main.groundTruth.faces.hard} faces (hard), maxSize ${options.maxSize || 'original'}:`,
      '',
      '| subset | ours | PyTorch reference | ours − reference (points) |',
      '|---|---:|---:|---:|',
    );
    for (const subset of SUBSETS) {
      const ours = main.ours[subset].ap;
      const ref = main.reference?.[subset].ap;
      lines.push(
        `| ${subset} | ${pct(ours)} | ${ref === undefined ? '–' : pct(ref)} | ${ref === undefined ? '–' : ((ours - ref) * 100).toFixed(4)} |`,
      );
    }
    const distinct = new Set(report.sizes.map((row) => JSON.stringify(row.ap))).size;
    if (distinct > 1) {
      lines.push(
        '',
        `Resize policy (ours, ${name}): AP by \`maxSize\``,
        '',
        '| maxSize | easy | medium | hard |',
        '|---|---:|---:|---:|',
      );
      for (const row of report.sizes) {
        lines.push(
          `| ${row.maxSize || 'original'} | ${pct(row.ap.easy!)} | ${pct(row.ap.medium!)} | ${pct(row.ap.hard!)} |`,
        );
      }
    }
    const plot = main.files.find((f) => f.endsWith('.png'));
    if (plot) {
      fs.copyFileSync(plot, path.join(docs, `accuracy-${name}.png`));
      lines.push('', `![precision/recall on ${name}](docs/accuracy-${name}.png)`);
    }
    lines.push('');
  }
  const published = PUBLISHED_AP[card.backbone];
  if (published) {
    lines.push(
      `Published full-set numbers for the same ${card.backbone} weights (biubug6 README, WIDER FACE val, single scale):`,
      '',
      '| test scale | easy | medium | hard |',
      '|---|---:|---:|---:|',
      ...published.map(
        (p) => `| ${p.scale} | ${p.easy.toFixed(2)} | ${p.medium.toFixed(2)} | ${p.hard.toFixed(2)} |`,
      ),
    );
  }
  replaceReadmeSection(options.readme!, 'accuracy', lines.join('\n'));
  options.log(`README accuracy section written to ${options.readme}`);
}
