// The WIDER FACE protocol (src/eval/widerface.ts): hand-made cases and cross-checks against a Python
// re-implementation of the official evaluation.py.
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { loadGroundTruthJson } from '../src/eval/groundtruth';
import { type EvalImage, boxOverlaps, evaluateWiderFace, thresholds, vocAp } from '../src/eval/widerface';

const FIXTURES = path.join(__dirname, '..', '..', 'shared', 'fixtures');

function close(actual: number, expected: number, tol = 1e-12, what = 'value'): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: expected ${expected}, got ${actual}`);
}

/** One image whose boxes all count in every subset. */
function allKept(boxes: number[][]): EvalImage {
  const keep = boxes.map((_, i) => i + 1);
  return { boxes, keep: { easy: keep, medium: keep, hard: keep } };
}

/** A detection exactly on a ground-truth [x, y, w, h] box. */
function on(box: number[], score: number): number[] {
  const [x, y, w, h] = box as [number, number, number, number];
  return [x, y, x + w, y + h, score];
}

const A = [10, 10, 40, 40];
const B = [100, 10, 30, 30];
const C = [200, 50, 25, 25];
const FAR = [300, 300, 40, 40];

// ------------------------------------------------------------------------------------------------
const steps = suite('widerface: official building blocks');

steps('IoU uses inclusive pixel areas (+1), like bbox_overlaps', () => {
  const iou = boxOverlaps(
    [
      [0, 0, 9, 9],
      [5, 0, 14, 9],
      [20, 20, 30, 30],
    ],
    [[0, 0, 9, 9]],
  );
  close(iou[0]?.[0] as number, 1, 0, 'identical boxes');
  // Intersection 5 x 10 = 50 pixels, union 100 + 100 - 50.
  close(iou[1]?.[0] as number, 50 / 150, 0, 'half-shifted box');
  assert.is(iou[2]?.[0], 0);
  // Touching boxes share one pixel column under the inclusive convention.
  close(
    boxOverlaps([[10, 0, 19, 9]], [[0, 0, 10, 9]])[0]?.[0] as number,
    10 / (110 + 100 - 10),
    0,
    'touching',
  );
});

steps('thresholds are 1 - (t + 1) / 1000', () => {
  const t = thresholds();
  assert.is(t.length, 1000);
  assert.is(t[0], 1 - 1 / 1000);
  assert.is(t[999], 0);
});

steps('voc_ap: envelope and sum over recall changes', () => {
  // Recall 0.5 at precision 0.5, then recall 1 at precision 2/3: the envelope lifts the first point.
  close(vocAp([0.5, 1], [0.5, 2 / 3]), 2 / 3, 1e-15);
  // A leading NaN precision (0 / 0 where nothing was proposed) at recall 0 does not reach the sum.
  close(vocAp([0, 0.5, 0.5], [NaN, 1, 0.5]), 0.5, 1e-15);
});

steps.run();

// ------------------------------------------------------------------------------------------------
const hand = suite('widerface: hand-made cases');

hand('perfect predictions give AP 1 in every subset', () => {
  const r = evaluateWiderFace([allKept([A, B, C])], [[on(A, 0.9), on(B, 0.8), on(C, 0.7)]]);
  for (const s of ['easy', 'medium', 'hard'] as const) {
    close(r[s].ap, 1, 1e-15, s);
    assert.is(r[s].faces, 3);
  }
  assert.is(r.detections, 3);
  assert.equal(r.scoreRange, { min: 0.7, max: 0.9 });
});

hand('a false positive scored above every true positive: AP 2/3', () => {
  // Normalised scores: FP 1, A 0.5, B 0. By threshold: {FP} p=0 r=0; {FP, A} p=1/2 r=1/2;
  // {FP, A, B} p=2/3 r=1. Envelope: 2/3 everywhere, so AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
  const r = evaluateWiderFace([allKept([A, B])], [[on(FAR, 0.9), on(A, 0.8), on(B, 0.7)]]);
  close(r.easy.ap, 2 / 3, 1e-15);
  close(r.easy.curve.precision[0] as number, 0, 0, 'precision at the top threshold');
  close(r.easy.curve.precision[999] as number, 2 / 3, 1e-15, 'precision at threshold 0');
});

hand('predictions on ignored faces change nothing', () => {
  const ignoredBox = [400, 10, 30, 30];
  const image: EvalImage = {
    boxes: [A, B, ignoredBox],
    keep: { easy: [1, 2], medium: [1, 2], hard: [1, 2] },
  };
  const base = [on(FAR, 0.9), on(A, 0.8), on(B, 0.7)];
  const without = evaluateWiderFace([image], [base]);
  // The ignored face gets the highest score (its threshold has no proposal: precision 0/0 = NaN there)
  // and a lower-scored duplicate.
  const withIgnored = evaluateWiderFace([image], [[on(ignoredBox, 0.95), ...base, on(ignoredBox, 0.75)]]);
  close(without.easy.ap, 2 / 3, 1e-15);
  close(withIgnored.easy.ap, without.easy.ap, 1e-15);
  assert.ok(Number.isNaN(withIgnored.easy.curve.precision[0]), 'no proposal at the top threshold');
  // An ignored box that is not matched (IoU < 0.5) does not shield the prediction: it is a false positive.
  const offIgnored = evaluateWiderFace([image], [[on([400, 10, 60, 60], 0.95), ...base]]);
  assert.ok(offIgnored.easy.ap < without.easy.ap, `${offIgnored.easy.ap} < ${without.easy.ap}`);
});

hand('a missed face lowers recall (and AP)', () => {
  const r = evaluateWiderFace([allKept([A, B, C])], [[on(A, 0.9), on(B, 0.8)]]);
  close(Math.max(...r.easy.curve.recall), 2 / 3, 1e-15, 'final recall');
  close(r.easy.ap, 2 / 3, 1e-15);
  assert.is(r.easy.faces, 3);
});

hand('duplicate detections of one face are false positives', () => {
  // A 1, duplicate of A 0.5, B 0: {A} p=1 r=1/2; {A, dup} p=1/2 r=1/2; all p=2/3 r=1.
  // AP = 1/2 * 1 + 1/2 * 2/3 = 5/6 (without the duplicate: 1).
  const dup = [12, 11, 51, 49, 0.8];
  const r = evaluateWiderFace([allKept([A, B])], [[on(A, 0.9), dup, on(B, 0.7)]]);
  close(r.easy.ap, 5 / 6, 1e-15);
  close(evaluateWiderFace([allKept([A, B])], [[on(A, 0.9), on(B, 0.7)]]).easy.ap, 1, 1e-15);
});

hand('predictions in any order give the same result', () => {
  const dets = [on(FAR, 0.9), on(A, 0.8), on(B, 0.7), [12, 11, 51, 49, 0.75]];
  const a = evaluateWiderFace([allKept([A, B])], [dets]);
  const b = evaluateWiderFace([allKept([A, B])], [[...dets].reverse()]);
  assert.equal(b.easy.curve, a.easy.curve);
  assert.is(b.easy.ap, a.easy.ap);
});

hand('empty predictions give AP 0', () => {
  const r = evaluateWiderFace([allKept([A, B]), allKept([C])], [[], []]);
  for (const s of ['easy', 'medium', 'hard'] as const) assert.is(r[s].ap, 0);
  assert.is(r.easy.faces, 3);
  assert.is(r.detections, 0);
});

hand('official quirks: images without boxes, equal scores, IoU exactly 0.5', () => {
  // Detections on an image without ground-truth boxes are skipped (not false positives)...
  const skipped = evaluateWiderFace(
    [allKept([A, B]), allKept([])],
    [[on(A, 0.9), on(B, 0.7)], [on(FAR, 0.95)]],
  );
  close(skipped.easy.ap, 1, 1e-15);
  // ...but their scores still take part in the normalisation.
  assert.is(skipped.scoreRange.max, 0.95);
  // All scores equal: max - min = 0, the normalised scores are NaN and the official AP is 0.
  assert.is(evaluateWiderFace([allKept([A])], [[on(A, 0.5)]]).easy.ap, 0);
  // The range starts at min 1, max 0 (scores outside [0, 1], e.g. logits, keep those bounds).
  assert.equal(evaluateWiderFace([allKept([A])], [[on(A, 2), on(B, 5)]]).scoreRange, { min: 1, max: 5 });
  assert.equal(evaluateWiderFace([allKept([A])], [[on(A, -2), on(B, -1)]]).scoreRange, { min: -2, max: 0 });
  // IoU >= 0.5 matches: a 10x10 box against a 10x20 one shares 100 of 200 pixels.
  const half = evaluateWiderFace(
    [allKept([[0, 0, 9, 19]])],
    [
      [
        [0, 0, 9, 9, 0.9],
        [50, 50, 60, 60, 0.1],
      ],
    ],
  );
  close(half.easy.ap, 1, 1e-15);
});

hand('invalid input is refused with the library sentence', () => {
  assert.throws(
    () => evaluateWiderFace([allKept([A])], []),
    /^Expected an array of 1 detection lists for predictions but received array of length 0 of type object$/,
  );
  assert.throws(
    () => evaluateWiderFace([{ boxes: [A], keep: { easy: [2], medium: [], hard: [] } }], [[]]),
    /Expected a 1-based box index between 1 and 1 for images\[0\]\.keep\.easy\[0\] but received 2 of type number/,
  );
  assert.throws(() => evaluateWiderFace([allKept([A])], [[[1, 2, 3, 4]]]), /for predictions\[0\]\[0\]/);
  assert.throws(() => evaluateWiderFace([allKept([A])], [[on(A, NaN)]]), /finite numbers/);
});

hand.run();

// ------------------------------------------------------------------------------------------------
// Cross-checks. The expected numbers come from a line-for-line Python port of the official
// WiderFace-Evaluation evaluation.py (norm_score, bbox_overlaps, image_eval, img_pr_info,
// dataset_pr_info, voc_ap; predictions written as x y w h like test_widerface.py) run with
// /usr/bin/python3 + numpy on exactly these inputs (not committed). The last digits may differ because
// numpy sums AP terms pairwise, hence the 1e-12 tolerance.
const cross = suite('widerface: cross-check with the official evaluation.py');

cross(
  'hand-made multi-image case with ignored faces, an image without boxes and one without detections',
  () => {
    const images: EvalImage[] = [
      {
        boxes: [A, [100, 10, 20, 20], [200, 10, 8, 8]],
        keep: { easy: [1], medium: [1, 2], hard: [1, 2, 3] },
      },
      { boxes: [], keep: { easy: [], medium: [], hard: [] } },
      allKept([
        [0, 0, 30, 30],
        [50, 50, 30, 30],
      ]),
      {
        boxes: [
          [5, 5, 50, 60],
          [70, 5, 12, 12],
        ],
        keep: { easy: [1], medium: [1], hard: [1, 2] },
      },
    ];
    const predictions = [
      [
        [12, 11, 50, 52, 0.97],
        [101, 11, 120, 31, 0.6],
        [200, 10, 208, 18, 0.3],
        [300, 300, 340, 340, 0.8],
        [11, 10, 49, 49, 0.5],
      ],
      [[0, 0, 20, 20, 0.99]],
      [],
      [
        [70, 5, 82, 17, 0.91],
        [6, 8, 54, 66, 0.4],
        [8, 5, 55, 50, 0.2],
        [150, 150, 170, 170, 0.1],
      ],
    ];
    const r = evaluateWiderFace(images, predictions);
    // Python: easy 0.375, medium 0.45333333333333337, hard 0.5969387755102041
    close(r.easy.ap, 0.375);
    close(r.medium.ap, 0.45333333333333337);
    close(r.hard.ap, 0.5969387755102041);
    assert.equal([r.easy.faces, r.medium.faces, r.hard.faces], [4, 5, 7]);
  },
);

/** Park-Miller generator: integer arithmetic that is exact in both JavaScript and Python. */
function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 48271) % 2147483647;
    return s / 2147483647;
  };
}

/** Jittered ground truth (75% found, some duplicates) plus random false positives; same in Python. */
function synthetic(images: readonly EvalImage[], seed: number): number[][][] {
  const rnd = lcg(seed);
  return images.map((image) => {
    const dets: number[][] = [];
    for (const [x, y, w, h] of image.boxes as [number, number, number, number][]) {
      if (rnd() < 0.75) {
        const jx = (rnd() - 0.5) * 0.3 * w;
        const jy = (rnd() - 0.5) * 0.3 * h;
        const jw = (rnd() - 0.5) * 0.3 * w;
        const jh = (rnd() - 0.5) * 0.3 * h;
        const score = 0.05 + 0.9 * rnd();
        dets.push([x + jx, y + jy, x + w + jw, y + h + jh, score]);
        if (rnd() < 0.1) dets.push([x + jy, y + jx, x + w, y + h, score * 0.5]);
      }
    }
    const fps = Math.floor(rnd() * 4);
    for (let k = 0; k < fps; k++) {
      const fx = rnd() * 400;
      const fy = rnd() * 400;
      const fs = 10 + rnd() * 40;
      dets.push([fx, fy, fx + fs, fy + fs, 0.02 + 0.5 * rnd()]);
    }
    return dets;
  });
}

cross('wider-val-416 fixture (200 images) with synthetic detections', () => {
  const gt = loadGroundTruthJson(path.join(FIXTURES, 'wider-val-416', 'gt.json'));
  const preds = synthetic(gt.images, 12345);
  // The generator matches the Python one: first detection and total count.
  assert.equal(
    preds[0]?.[0],
    [328.09783517835723, 225.47306163234646, 338.4785553217642, 240.33845723728749, 0.6982098753788555],
  );
  assert.is(
    preds.reduce((n, d) => n + d.length, 0),
    3854,
  );
  const r = evaluateWiderFace(gt.images, preds);
  // Python: easy 0.6422049423325817, medium 0.6600083572756839, hard 0.6963639328523824
  close(r.easy.ap, 0.6422049423325817);
  close(r.medium.ap, 0.6600083572756839);
  close(r.hard.ap, 0.6963639328523824);
  assert.equal([r.easy.faces, r.medium.faces, r.hard.faces], [548, 1189, 3477]);
});

cross('wider-val fixture (6 images, original resolution) with synthetic detections', () => {
  const gt = loadGroundTruthJson(path.join(FIXTURES, 'wider-val', 'gt.json'));
  const preds = synthetic(gt.images, 12345);
  assert.is(
    preds.reduce((n, d) => n + d.length, 0),
    407,
  );
  const r = evaluateWiderFace(gt.images, preds);
  // Python: easy 0.7132192369034474, medium 0.751189803754079, hard 0.7244615132855761
  close(r.easy.ap, 0.7132192369034474);
  close(r.medium.ap, 0.751189803754079);
  close(r.hard.ap, 0.7244615132855761);
});

cross.run();
