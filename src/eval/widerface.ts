// SPDX-License-Identifier: MIT
// The WIDER FACE evaluation protocol, our own implementation of the semantics of the official
// `wider_eval.m` as ported to Python in `evaluation.py` (wondervictor/WiderFace-Evaluation, used by
// biubug6/Pytorch_Retinaface). Pure functions; every step keeps the official arithmetic:
//
//  1. Scores are normalised over the whole set: s' = (s - min) / (max - min), where min starts at 1 and
//     max at 0 before scanning every prediction of every image (so a set whose scores are all equal
//     gets NaN scores and, like the official code, AP 0).
//  2. Per image, predictions in score order (descending; ties keep their input order). They are taken
//     as [x1, y1, x2, y2] and written the official way, [x, y, w = x2 - x1, h = y2 - y1], which the
//     official code turns back into [x, y, x + w, y + h]; ground truth [x, y, w, h] -> [x, y, x + w, y + h].
//  3. IoU with the "+1" pixel convention of bbox_overlaps: areas (x2 - x1 + 1) * (y2 - y1 + 1),
//     intersection (min x2 - max x1 + 1) * (min y2 - max y1 + 1), 0 when either side is <= 0.
//  4. Each prediction, in order, takes its best-overlapping ground truth (first on ties). If that IoU is
//     >= 0.5: a box outside the subset's keep list ("ignore") marks the prediction as no proposal (it
//     is neither a true nor a false positive) and the box as -1; a kept box not yet recalled becomes
//     recalled. pred_recall[h] = number of recalled boxes after prediction h.
//  5. For t = 0..999, thresh = 1 - (t + 1) / 1000: the last prediction with s' >= thresh gives
//     (proposals up to it, pred_recall at it); summed over the images that have both ground truth
//     and predictions.
//  6. precision = recalled / proposals, recall = recalled / (kept faces of the whole set, count_face,
//     which also counts images without predictions).
//  7. AP as voc_ap: sentinels (0 at the start, recall 1 / precision 0 at the end), the precision
//     envelope (a NaN, from 0 / 0 at thresholds without proposals, propagates like np.maximum), then
//     sum of (recall change) * precision over the points where recall changes.
import { invalidParameterError } from '../errors';

export const SUBSETS = ['easy', 'medium', 'hard'] as const;
export type Subset = (typeof SUBSETS)[number];

/** Ground truth of one image. */
export interface EvalImage {
  /** Boxes [x, y, w, h] in pixels. */
  boxes: readonly (readonly number[])[];
  /** Per subset, the 1-based indices into `boxes` of the faces it counts; other boxes are ignored. */
  keep: Readonly<Record<Subset, readonly number[]>>;
}

/** A detection [x1, y1, x2, y2, score] in the ground truth's pixel coordinates. */
export type Detection = readonly number[];

export interface WiderFaceOptions {
  /** IoU for a match (official: 0.5). */
  iouThreshold?: number;
  /** Score thresholds of the PR curve (official: 1000). */
  thresholdCount?: number;
}

export interface PrCurve {
  /** Normalised-score thresholds, 1 - (t + 1) / n (descending). */
  thresholds: number[];
  /** Precision per threshold; NaN where nothing was proposed (0 / 0, as the official code). */
  precision: number[];
  /** Recall per threshold. */
  recall: number[];
}

export interface SubsetResult {
  ap: number;
  /** Faces counted in the subset (count_face). */
  faces: number;
  curve: PrCurve;
}

export interface WiderFaceResult {
  easy: SubsetResult;
  medium: SubsetResult;
  hard: SubsetResult;
  images: number;
  detections: number;
  /** The raw score range used for normalisation (official initial values: min 1, max 0). */
  scoreRange: { min: number; max: number };
}

// ------------------------------------------------------------------------------------------------
// The official steps, one function each
// ------------------------------------------------------------------------------------------------

/**
 * bbox_overlaps: IoU matrix [predictions][ground truth] of [x1, y1, x2, y2] boxes with the inclusive
 * pixel ("+1") convention.
 */
export function boxOverlaps(boxes: readonly (readonly number[])[], query: readonly (readonly number[])[]) {
  const out: Float64Array[] = boxes.map(() => new Float64Array(query.length));
  for (let k = 0; k < query.length; k++) {
    const q = query[k] as readonly number[];
    const q0 = q[0] as number;
    const q1 = q[1] as number;
    const q2 = q[2] as number;
    const q3 = q[3] as number;
    const boxArea = (q2 - q0 + 1) * (q3 - q1 + 1);
    for (let n = 0; n < boxes.length; n++) {
      const b = boxes[n] as readonly number[];
      const b0 = b[0] as number;
      const b1 = b[1] as number;
      const b2 = b[2] as number;
      const b3 = b[3] as number;
      const iw = Math.min(b2, q2) - Math.max(b0, q0) + 1;
      if (iw > 0) {
        const ih = Math.min(b3, q3) - Math.max(b1, q1) + 1;
        if (ih > 0) {
          const ua = (b2 - b0 + 1) * (b3 - b1 + 1) + boxArea - iw * ih;
          (out[n] as Float64Array)[k] = (iw * ih) / ua;
        }
      }
    }
  }
  return out;
}

/**
 * image_eval for one image and subset. `overlaps` is the IoU matrix of the image's predictions
 * (already in score order) against its boxes; `kept[i]` says whether box i counts in the subset.
 * Returns pred_recall (recalled faces after each prediction) and proposal (1, or -1 for a prediction
 * that matched an ignored box).
 */
export function imageEval(
  overlaps: readonly Float64Array[],
  kept: readonly boolean[],
  iouThreshold = 0.5,
): { predRecall: Int32Array; proposal: Int8Array } {
  const predRecall = new Int32Array(overlaps.length);
  const proposal = new Int8Array(overlaps.length).fill(1);
  const recallList = new Int8Array(kept.length);
  let recalled = 0;
  for (let h = 0; h < overlaps.length; h++) {
    const row = overlaps[h] as Float64Array;
    // np.max / np.argmax: the first index of the maximum.
    let maxIdx = 0;
    let maxOverlap = row[0] as number;
    for (let k = 1; k < row.length; k++) {
      if ((row[k] as number) > maxOverlap) {
        maxOverlap = row[k] as number;
        maxIdx = k;
      }
    }
    if (maxOverlap >= iouThreshold) {
      if (!kept[maxIdx]) {
        recallList[maxIdx] = -1;
        proposal[h] = -1;
      } else if (recallList[maxIdx] === 0) {
        recallList[maxIdx] = 1;
        recalled++;
      }
    }
    predRecall[h] = recalled;
  }
  return { predRecall, proposal };
}

/** The official score thresholds: 1 - (t + 1) / n for t = 0 .. n - 1. */
export function thresholds(n = 1000): number[] {
  const out: number[] = [];
  for (let t = 0; t < n; t++) out.push(1 - (t + 1) / n);
  return out;
}

/**
 * img_pr_info: per threshold, [proposals, recalled] of one image, added into `acc` (length 2 * n,
 * interleaved). `scores` are the normalised scores in descending order (NaN allowed: never >= a
 * threshold), in the order of `proposal` / `predRecall`.
 */
export function addImagePrInfo(
  acc: Float64Array,
  thresh: readonly number[],
  scores: ArrayLike<number>,
  proposal: Int8Array,
  predRecall: Int32Array,
): void {
  // Proposals among the first i + 1 predictions.
  const proposals = new Int32Array(scores.length);
  let p = 0;
  for (let i = 0; i < scores.length; i++) {
    if (proposal[i] === 1) p++;
    proposals[i] = p;
  }
  // r_index = the last prediction whose score is >= thresh (np.where(...)[0][-1]); with scores in
  // descending order and thresholds descending, it only moves forward.
  let count = 0;
  for (let t = 0; t < thresh.length; t++) {
    const th = thresh[t] as number;
    while (count < scores.length && (scores[count] as number) >= th) count++;
    if (count > 0) {
      acc[2 * t] = (acc[2 * t] as number) + (proposals[count - 1] as number);
      acc[2 * t + 1] = (acc[2 * t + 1] as number) + (predRecall[count - 1] as number);
    }
  }
}

/** dataset_pr_info: precision = recalled / proposals, recall = recalled / countFace. */
export function datasetPrInfo(
  acc: Float64Array,
  countFace: number,
): { precision: number[]; recall: number[] } {
  const precision: number[] = [];
  const recall: number[] = [];
  for (let t = 0; t < acc.length / 2; t++) {
    const proposals = acc[2 * t] as number;
    const recalled = acc[2 * t + 1] as number;
    precision.push(recalled / proposals);
    recall.push(recalled / countFace);
  }
  return { precision, recall };
}

/** voc_ap: area under the precision envelope, summed where recall changes. */
export function vocAp(recall: readonly number[], precision: readonly number[]): number {
  const mrec = [0, ...recall, 1];
  const mpre = [0, ...precision, 0];
  for (let i = mpre.length - 1; i > 0; i--) {
    // np.maximum propagates NaN, and so does Math.max.
    mpre[i - 1] = Math.max(mpre[i - 1] as number, mpre[i] as number);
  }
  let ap = 0;
  for (let i = 0; i < mrec.length - 1; i++) {
    if (mrec[i + 1] !== mrec[i])
      ap += ((mrec[i + 1] as number) - (mrec[i] as number)) * (mpre[i + 1] as number);
  }
  return ap;
}

// ------------------------------------------------------------------------------------------------
// The whole protocol
// ------------------------------------------------------------------------------------------------

function checkImages(images: readonly EvalImage[], predictions: readonly (readonly Detection[])[]): void {
  if (!Array.isArray(images)) throw invalidParameterError('images', 'an array', images);
  if (!Array.isArray(predictions) || predictions.length !== images.length) {
    throw invalidParameterError('predictions', `an array of ${images.length} detection lists`, predictions);
  }
  images.forEach((image, i) => {
    const boxes = image?.boxes;
    if (!Array.isArray(boxes)) throw invalidParameterError(`images[${i}].boxes`, 'an array', boxes);
    boxes.forEach((box, j) => {
      if (!Array.isArray(box) || box.length < 4 || !box.slice(0, 4).every(Number.isFinite)) {
        throw invalidParameterError(`images[${i}].boxes[${j}]`, '[x, y, w, h] of finite numbers', box);
      }
    });
    for (const subset of SUBSETS) {
      const keep = image.keep?.[subset];
      if (!Array.isArray(keep)) throw invalidParameterError(`images[${i}].keep.${subset}`, 'an array', keep);
      keep.forEach((k, j) => {
        if (!Number.isInteger(k) || k < 1 || k > boxes.length) {
          throw invalidParameterError(
            `images[${i}].keep.${subset}[${j}]`,
            `a 1-based box index between 1 and ${boxes.length}`,
            k,
          );
        }
      });
    }
    const dets = predictions[i];
    if (!Array.isArray(dets)) throw invalidParameterError(`predictions[${i}]`, 'an array', dets);
    dets.forEach((d, j) => {
      if (!Array.isArray(d) || d.length < 5 || !d.slice(0, 5).every(Number.isFinite)) {
        throw invalidParameterError(
          `predictions[${i}][${j}]`,
          '[x1, y1, x2, y2, score] of finite numbers',
          d,
        );
      }
    });
  });
}

/**
 * Evaluates detections against WIDER FACE ground truth with the official protocol.
 * `predictions[i]` are the detections of `images[i]`, [x1, y1, x2, y2, score] in any order.
 */
export function evaluateWiderFace(
  images: readonly EvalImage[],
  predictions: readonly (readonly Detection[])[],
  options: WiderFaceOptions = {},
): WiderFaceResult {
  const iouThreshold = options.iouThreshold ?? 0.5;
  const thresholdCount = options.thresholdCount ?? 1000;
  if (!(iouThreshold > 0 && iouThreshold <= 1)) {
    throw invalidParameterError('iouThreshold', 'a number in (0, 1]', iouThreshold);
  }
  if (!Number.isInteger(thresholdCount) || thresholdCount < 1) {
    throw invalidParameterError('thresholdCount', 'a positive integer', thresholdCount);
  }
  checkImages(images, predictions);

  // norm_score, with the official initial values.
  let max = 0;
  let min = 1;
  let detections = 0;
  for (const dets of predictions) {
    for (const d of dets) {
      const s = d[4] as number;
      if (s > max) max = s;
      if (s < min) min = s;
      detections++;
    }
  }
  const diff = max - min;
  const thresh = thresholds(thresholdCount);

  // Per image, independent of the subset: score order, normalised scores, overlaps.
  const prepared = images.map((image, i) => {
    const dets = (predictions[i] as readonly Detection[])
      .map((d, index) => ({ d, index }))
      .sort((a, b) => (b.d[4] as number) - (a.d[4] as number) || a.index - b.index)
      .map(({ d }) => d);
    const predBoxes = dets.map((d) => {
      const x = d[0] as number;
      const y = d[1] as number;
      const w = (d[2] as number) - x;
      const h = (d[3] as number) - y;
      return [x, y, x + w, y + h];
    });
    const gtBoxes = image.boxes.map((b) => {
      const x = b[0] as number;
      const y = b[1] as number;
      return [x, y, x + (b[2] as number), y + (b[3] as number)];
    });
    const scores = Float64Array.from(dets, (d) => ((d[4] as number) - min) / diff);
    const overlaps = dets.length > 0 && gtBoxes.length > 0 ? boxOverlaps(predBoxes, gtBoxes) : [];
    return { scores, overlaps, boxCount: gtBoxes.length };
  });

  const result = {} as Record<Subset, SubsetResult>;
  for (const subset of SUBSETS) {
    let countFace = 0;
    const acc = new Float64Array(2 * thresholdCount);
    images.forEach((image, i) => {
      const keep = image.keep[subset];
      countFace += keep.length;
      const p = prepared[i] as (typeof prepared)[number];
      if (p.boxCount === 0 || p.scores.length === 0) return;
      const kept = new Array<boolean>(p.boxCount).fill(false);
      for (const k of keep) kept[k - 1] = true;
      const { predRecall, proposal } = imageEval(p.overlaps, kept, iouThreshold);
      addImagePrInfo(acc, thresh, p.scores, proposal, predRecall);
    });
    const { precision, recall } = datasetPrInfo(acc, countFace);
    result[subset] = {
      ap: vocAp(recall, precision),
      faces: countFace,
      curve: { thresholds: thresh.slice(), precision, recall },
    };
  }
  return { ...result, images: images.length, detections, scoreRange: { min, max } };
}
