// SPDX-License-Identifier: MIT
// Raw RetinaFace outputs -> faces: anchors (cached per input size), score threshold, top-k, decode,
// NMS, keep-top-k, scaling back to the original image. Pure functions: no engine needed.

export const LANDMARK_TYPES = ['left_eye', 'right_eye', 'nose', 'left_mouth', 'right_mouth'] as const;
export type LandmarkType = (typeof LANDMARK_TYPES)[number];

export interface Landmark {
  position: [number, number];
  type: LandmarkType;
}

/** One face, field for field as the original project's JSON. */
export interface Face {
  /** [x1, y1, x2, y2] in pixels of the original image (EXIF orientation applied). */
  bounding_box: [number, number, number, number];
  /** Five points; "left"/"right" are as seen in the image (left_eye has the smaller x in an upright face). */
  landmarks: Landmark[];
  confidence: number;
}

export interface AnchorConfig {
  minSizes: readonly (readonly number[])[];
  steps: readonly number[];
  variances: readonly [number, number];
}

export const RETINAFACE_ANCHORS: AnchorConfig = {
  minSizes: [
    [16, 32],
    [64, 128],
    [256, 512],
  ],
  steps: [8, 16, 32],
  variances: [0.1, 0.2],
};

/**
 * Anchors for an input of height x width, in pixels, 3 numbers each: centre x, centre y, size.
 * Order as the network's outputs: level by level (stride 8 first), row-major cells, one anchor per
 * min size. Feature maps are ceil(H / step) x ceil(W / step).
 */
export function makeAnchors(
  height: number,
  width: number,
  config: AnchorConfig = RETINAFACE_ANCHORS,
): Float32Array {
  let count = 0;
  config.steps.forEach((step, level) => {
    count += Math.ceil(height / step) * Math.ceil(width / step) * config.minSizes[level]!.length;
  });
  const anchors = new Float32Array(count * 3);
  let o = 0;
  config.steps.forEach((step, level) => {
    const rows = Math.ceil(height / step);
    const cols = Math.ceil(width / step);
    const sizes = config.minSizes[level]!;
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        for (const size of sizes) {
          anchors[o++] = (j + 0.5) * step;
          anchors[o++] = (i + 0.5) * step;
          anchors[o++] = size;
        }
      }
    }
  });
  return anchors;
}

/** makeAnchors with a small cache: a server sees the same few padded sizes again and again. */
export class AnchorCache {
  private readonly cache = new Map<string, Float32Array>();
  constructor(
    private readonly config: AnchorConfig = RETINAFACE_ANCHORS,
    private readonly capacity = 64,
  ) {}

  get(height: number, width: number): Float32Array {
    const key = `${height}x${width}`;
    let anchors = this.cache.get(key);
    if (anchors) {
      this.cache.delete(key); // most recently used goes last
    } else {
      anchors = makeAnchors(height, width, this.config);
      if (this.cache.size >= this.capacity) this.cache.delete(this.cache.keys().next().value!);
    }
    this.cache.set(key, anchors);
    return anchors;
  }

  get size(): number {
    return this.cache.size;
  }
}

export interface DecodeOptions {
  /** Keep faces scoring strictly above this. */
  confidenceThreshold: number;
  /** Suppress a face overlapping a better one with IoU above this. */
  nmsIou: number;
  /** Candidates kept (best first) before NMS. */
  topK: number;
  /** Faces kept after NMS. */
  keepTopK: number;
}

/** Faces in the pixel coordinates of the network input. */
export interface RawFaces {
  count: number;
  /** count x 4: x1, y1, x2, y2. */
  boxes: Float32Array;
  scores: Float32Array;
  /** count x 10: x, y for each of the five landmarks. */
  landmarks: Float32Array;
}

/**
 * Greedy non-maximum suppression over boxes already sorted best first. Returns the indices kept, at
 * most `limit`. IoU = intersection / union with areas (x2 - x1) * (y2 - y1).
 */
export function nms(boxes: Float32Array, count: number, iouThreshold: number, limit = Infinity): number[] {
  const keep: number[] = [];
  const suppressed = new Uint8Array(count);
  const areas = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    areas[i] =
      Math.max(0, boxes[i * 4 + 2]! - boxes[i * 4]!) * Math.max(0, boxes[i * 4 + 3]! - boxes[i * 4 + 1]!);
  }
  for (let i = 0; i < count && keep.length < limit; i++) {
    if (suppressed[i]) continue;
    keep.push(i);
    const x1 = boxes[i * 4]!;
    const y1 = boxes[i * 4 + 1]!;
    const x2 = boxes[i * 4 + 2]!;
    const y2 = boxes[i * 4 + 3]!;
    const area = areas[i]!;
    for (let j = i + 1; j < count; j++) {
      if (suppressed[j]) continue;
      const w = Math.min(x2, boxes[j * 4 + 2]!) - Math.max(x1, boxes[j * 4]!);
      if (w <= 0) continue;
      const h = Math.min(y2, boxes[j * 4 + 3]!) - Math.max(y1, boxes[j * 4 + 1]!);
      if (h <= 0) continue;
      const inter = w * h;
      if (inter / (area + areas[j]! - inter) > iouThreshold) suppressed[j] = 1;
    }
  }
  return keep;
}

/**
 * Decodes the faces of image `index` of a batch. The threshold is applied first, so only candidates
 * are decoded; they are sorted once, then NMS'd.
 */
export function decodeFaces(
  outputs: { loc: Float32Array; conf: Float32Array; landmarks: Float32Array },
  index: number,
  anchors: Float32Array,
  options: DecodeOptions,
  variances: readonly [number, number] = RETINAFACE_ANCHORS.variances,
): RawFaces {
  const count = anchors.length / 3;
  const { loc, conf, landmarks } = outputs;
  if (conf.length % (count * 2) !== 0 || (index + 1) * count * 2 > conf.length) {
    throw new RangeError(`outputs hold ${conf.length / 2} anchors, not a batch of ${count}-anchor images`);
  }
  const base = index * count;
  const threshold = options.confidenceThreshold;
  let candidates: number[] = [];
  for (let a = 0; a < count; a++) {
    if (conf[(base + a) * 2 + 1]! > threshold) candidates.push(a);
  }
  candidates.sort((p, q) => conf[(base + q) * 2 + 1]! - conf[(base + p) * 2 + 1]!);
  if (candidates.length > options.topK) candidates = candidates.slice(0, options.topK);

  const [v0, v1] = variances;
  const boxes = new Float32Array(candidates.length * 4);
  candidates.forEach((a, k) => {
    const cx0 = anchors[a * 3]!;
    const cy0 = anchors[a * 3 + 1]!;
    const s = anchors[a * 3 + 2]!;
    const l = (base + a) * 4;
    const cx = cx0 + loc[l]! * v0 * s;
    const cy = cy0 + loc[l + 1]! * v0 * s;
    const w = s * Math.exp(loc[l + 2]! * v1);
    const h = s * Math.exp(loc[l + 3]! * v1);
    boxes[k * 4] = cx - w / 2;
    boxes[k * 4 + 1] = cy - h / 2;
    boxes[k * 4 + 2] = cx + w / 2;
    boxes[k * 4 + 3] = cy + h / 2;
  });
  const keep = nms(boxes, candidates.length, options.nmsIou, options.keepTopK);

  const result: RawFaces = {
    count: keep.length,
    boxes: new Float32Array(keep.length * 4),
    scores: new Float32Array(keep.length),
    landmarks: new Float32Array(keep.length * 10),
  };
  keep.forEach((k, n) => {
    const a = candidates[k]!;
    result.boxes.set(boxes.subarray(k * 4, k * 4 + 4), n * 4);
    result.scores[n] = conf[(base + a) * 2 + 1]!;
    const cx0 = anchors[a * 3]!;
    const cy0 = anchors[a * 3 + 1]!;
    const s = anchors[a * 3 + 2]!;
    const l = (base + a) * 10;
    for (let p = 0; p < 5; p++) {
      result.landmarks[n * 10 + p * 2] = cx0 + landmarks[l + p * 2]! * v0 * s;
      result.landmarks[n * 10 + p * 2 + 1] = cy0 + landmarks[l + p * 2 + 1]! * v0 * s;
    }
  });
  return result;
}

export interface ScaleOptions {
  /** Network-input pixels -> original pixels, per axis. */
  scaleX: number;
  scaleY: number;
  /** Clamp boxes to [0, width] x [0, height] of the original image. */
  clip: boolean;
  width: number;
  height: number;
}

/** Raw faces -> the public Face objects, in the original image's coordinates. */
export function toFaces(raw: RawFaces, options: ScaleOptions): Face[] {
  const { scaleX, scaleY, clip, width, height } = options;
  const clampX = (x: number) => (clip ? Math.min(Math.max(x, 0), width) : x);
  const clampY = (y: number) => (clip ? Math.min(Math.max(y, 0), height) : y);
  const faces: Face[] = [];
  for (let n = 0; n < raw.count; n++) {
    const b = n * 4;
    const l = n * 10;
    faces.push({
      bounding_box: [
        clampX(raw.boxes[b]! * scaleX),
        clampY(raw.boxes[b + 1]! * scaleY),
        clampX(raw.boxes[b + 2]! * scaleX),
        clampY(raw.boxes[b + 3]! * scaleY),
      ],
      landmarks: LANDMARK_TYPES.map((type, p) => ({
        position: [raw.landmarks[l + p * 2]! * scaleX, raw.landmarks[l + p * 2 + 1]! * scaleY] as [
          number,
          number,
        ],
        type,
      })),
      confidence: raw.scores[n]!,
    });
  }
  return faces;
}
