// Matching faces between two detectors' outputs.
import type { Face } from '../../src/postprocess';

export interface RefFace {
  box: number[];
  score: number;
  landmarks: number[][];
}

export function iou(a: readonly number[], b: readonly number[]): number {
  const w = Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!);
  const h = Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  const area = (r: readonly number[]) => (r[2]! - r[0]!) * (r[3]! - r[1]!);
  return inter / (area(a) + area(b) - inter);
}

export function toRef(face: Face): RefFace {
  return { box: face.bounding_box, score: face.confidence, landmarks: face.landmarks.map((l) => l.position) };
}

export interface MatchReport {
  /** Expected faces (score >= minScore) with no match. */
  missing: string[];
  /** Our faces (score >= minScore) that match no expected face. */
  extra: string[];
  worstIou: number;
  worstLandmarkPx: number;
  matched: number;
}

/**
 * Greedy matching of `expected` to `actual` faces by IoU, best pairs first. Faces scoring below
 * `minScore` on one side may match faces just above it on the other (score noise), but are not
 * required to.
 */
export function matchFaces(
  expected: RefFace[],
  actual: RefFace[],
  { minScore, minIou, scoreSlack = 0.01 }: { minScore: number; minIou: number; scoreSlack?: number },
): MatchReport {
  const pairs: [number, number, number][] = [];
  expected.forEach((e, i) =>
    actual.forEach((a, j) => {
      const v = iou(e.box, a.box);
      if (v > 0.3) pairs.push([v, i, j]);
    }),
  );
  pairs.sort((p, q) => q[0] - p[0]);
  const usedE = new Set<number>();
  const usedA = new Set<number>();
  const report: MatchReport = { missing: [], extra: [], worstIou: 1, worstLandmarkPx: 0, matched: 0 };
  for (const [v, i, j] of pairs) {
    if (usedE.has(i) || usedA.has(j) || v < minIou) continue;
    usedE.add(i);
    usedA.add(j);
    const e = expected[i]!;
    const a = actual[j]!;
    if (e.score < minScore && a.score < minScore) continue;
    report.matched++;
    report.worstIou = Math.min(report.worstIou, v);
    e.landmarks.forEach((p, k) => {
      const q = a.landmarks[k]!;
      report.worstLandmarkPx = Math.max(report.worstLandmarkPx, Math.hypot(p[0]! - q[0]!, p[1]! - q[1]!));
    });
  }
  const describe = (f: RefFace) => `[${f.box.map((x) => x.toFixed(1)).join(',')}] ${f.score.toFixed(3)}`;
  expected.forEach((e, i) => {
    if (!usedE.has(i) && e.score >= minScore + scoreSlack) report.missing.push(describe(e));
  });
  actual.forEach((a, j) => {
    if (!usedA.has(j) && a.score >= minScore + scoreSlack) report.extra.push(describe(a));
  });
  return report;
}
