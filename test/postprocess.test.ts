import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { AnchorCache, decodeFaces, makeAnchors, nms, toFaces } from '../src/postprocess';

const anchors = suite('anchors');

anchors('count: ceil(H/step) x ceil(W/step) cells per level, two anchors per cell', () => {
  const a = makeAnchors(100, 60);
  const cells = 13 * 8 + 7 * 4 + 4 * 2; // ceil(100/8)*ceil(60/8) + ceil(100/16)*ceil(60/16) + ceil(100/32)*ceil(60/32)
  assert.is(a.length, cells * 2 * 3);
});

anchors('order: level by level, row-major, one anchor per min size, centres at (j + 0.5) * step', () => {
  const a = makeAnchors(64, 32);
  assert.equal([...a.subarray(0, 12)], [4, 4, 16, 4, 4, 32, 12, 4, 16, 12, 4, 32]);
  // second row of the stride-8 level starts after ceil(32/8) = 4 cells
  assert.equal([...a.subarray(4 * 2 * 3, 4 * 2 * 3 + 3)], [4, 12, 16]);
  // first anchor of the stride-16 level comes after 8x4 cells of level 1
  const level2 = 8 * 4 * 2 * 3;
  assert.equal([...a.subarray(level2, level2 + 6)], [8, 8, 64, 8, 8, 128]);
  // the last anchor is the stride-32 cell (1, 0) with size 512
  assert.equal([...a.subarray(a.length - 3)], [16, 48, 512]);
});

anchors('the cache returns the same array for the same size and evicts the least recently used', () => {
  const cache = new AnchorCache(undefined, 2);
  const first = cache.get(64, 64);
  assert.is(cache.get(64, 64), first);
  cache.get(32, 32);
  cache.get(64, 64); // 64x64 is now the most recent
  cache.get(96, 96); // evicts 32x32
  assert.is(cache.size, 2);
  assert.is(cache.get(64, 64), first);
});

anchors.run();

const suppression = suite('nms');

const boxes = (...rows: number[][]) => new Float32Array(rows.flat());

suppression('keeps disjoint boxes and suppresses an overlap above the threshold', () => {
  // IoU of box 1 with box 0: 0.81 / (1 + 0.81 - 0.81) = 0.81
  const b = boxes([0, 0, 1, 1], [0.1, 0.1, 1, 1], [5, 5, 6, 6]);
  assert.equal(nms(b, 3, 0.4), [0, 2]);
  assert.equal(nms(b, 3, 0.85), [0, 1, 2]);
});

suppression('an IoU exactly at the threshold is kept (suppress only above it)', () => {
  // IoU = 1 / (2 + 2 - 1) = 1/3
  const b = boxes([0, 0, 2, 1], [1, 0, 3, 1]);
  assert.equal(nms(b, 2, 1 / 3 + 1e-6), [0, 1]);
  assert.equal(nms(b, 2, 1 / 3 - 1e-6), [0]);
});

suppression('a suppressed box does not suppress others', () => {
  // 1 overlaps 0 strongly and 2 overlaps 1 but not 0: 2 survives.
  const b = boxes([0, 0, 10, 10], [3, 0, 13, 10], [9, 0, 19, 10]);
  assert.equal(nms(b, 3, 0.4), [0, 2]);
});

suppression('stops at the limit and stays fast with thousands of candidates', () => {
  const n = 6000;
  const rows: number[][] = [];
  for (let i = 0; i < n; i++) rows.push([i * 10, 0, i * 10 + 5, 5]);
  const b = boxes(...rows);
  assert.is(nms(b, n, 0.4).length, n);
  assert.is(nms(b, n, 0.4, 750).length, 750);
});

suppression.run();

const decode = suite('decode');

function outputs(
  anchorCount: number,
  entries: { a: number; score: number; loc?: number[]; lm?: number[] }[],
) {
  const loc = new Float32Array(anchorCount * 4);
  const conf = new Float32Array(anchorCount * 2);
  const landmarks = new Float32Array(anchorCount * 10);
  for (let a = 0; a < anchorCount; a++) conf[a * 2] = 1;
  for (const e of entries) {
    conf[e.a * 2] = 1 - e.score;
    conf[e.a * 2 + 1] = e.score;
    if (e.loc) loc.set(e.loc, e.a * 4);
    if (e.lm) landmarks.set(e.lm, e.a * 10);
  }
  return { loc, conf, landmarks };
}

const options = { confidenceThreshold: 0.5, nmsIou: 0.4, topK: 5000, keepTopK: 750 };

decode('a zero delta gives the anchor box; landmarks decode around the anchor centre', () => {
  const a = makeAnchors(64, 64);
  const count = a.length / 3;
  // anchor 0: centre (4, 4), size 16
  const out = outputs(count, [{ a: 0, score: 0.9, lm: [1, 0, 0, 1, 0, 0, -1, 0, 0, -1] }]);
  const faces = decodeFaces(out, 0, a, options);
  assert.is(faces.count, 1);
  assert.equal([...faces.boxes], [-4, -4, 12, 12]);
  assert.ok(Math.abs(faces.scores[0]! - 0.9) < 1e-6);
  // landmark = centre + delta * 0.1 * 16
  const expected = [5.6, 4, 4, 5.6, 4, 4, 2.4, 4, 4, 2.4];
  [...faces.landmarks].forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-5, `landmark ${i}: ${v}`));
});

decode('deltas move the centre by 0.1 * size and scale the size by exp(0.2 * d)', () => {
  const a = makeAnchors(64, 64);
  const count = a.length / 3;
  const out = outputs(count, [{ a: 1, score: 0.8, loc: [1, -1, Math.log(2) / 0.2, 0] }]); // anchor 1: (4, 4), 32
  const faces = decodeFaces(out, 0, a, options);
  const [x1, y1, x2, y2] = [...faces.boxes];
  assert.ok(Math.abs((x1! + x2!) / 2 - 7.2) < 1e-4);
  assert.ok(Math.abs((y1! + y2!) / 2 - 0.8) < 1e-4);
  assert.ok(Math.abs(x2! - x1! - 64) < 1e-3);
  assert.ok(Math.abs(y2! - y1! - 32) < 1e-3);
});

decode('threshold is strict, results are sorted by score, topK and keepTopK cap them', () => {
  const a = makeAnchors(256, 256);
  const count = a.length / 3;
  // far-apart stride-8 anchors (size 16): no overlap between them
  const picks = [0, 20, 40, 60, 80].map((cell, i) => ({ a: cell * 2, score: [0.5, 0.6, 0.9, 0.7, 0.8][i]! }));
  const out = outputs(count, picks);
  const faces = decodeFaces(out, 0, a, options);
  assert.equal(
    [...faces.scores].map((s) => Math.round(s * 10) / 10),
    [0.9, 0.8, 0.7, 0.6],
  );
  assert.is(decodeFaces(out, 0, a, { ...options, topK: 2 }).count, 2);
  assert.is(decodeFaces(out, 0, a, { ...options, keepTopK: 3 }).count, 3);
});

decode('reads the right image of a batch and rejects outputs of another size', () => {
  const a = makeAnchors(64, 64);
  const count = a.length / 3;
  const first = outputs(count, []);
  const second = outputs(count, [{ a: 3, score: 0.95 }]);
  const batch = {
    loc: new Float32Array([...first.loc, ...second.loc]),
    conf: new Float32Array([...first.conf, ...second.conf]),
    landmarks: new Float32Array([...first.landmarks, ...second.landmarks]),
  };
  assert.is(decodeFaces(batch, 0, a, options).count, 0);
  assert.is(decodeFaces(batch, 1, a, options).count, 1);
  assert.throws(() => decodeFaces(batch, 2, a, options), /not a batch/);
  assert.throws(() => decodeFaces(batch, 0, makeAnchors(96, 64), options), /not a batch/);
});

decode.run();

const scale = suite('toFaces');

const raw = {
  count: 1,
  boxes: new Float32Array([-5, 10, 60, 40]),
  scores: new Float32Array([0.75]),
  landmarks: new Float32Array([10, 20, 30, 20, 20, 25, 12, 32, 28, 32]),
};

scale('scales back to the original image and names the landmarks', () => {
  const [face] = toFaces(raw, { scaleX: 2, scaleY: 3, clip: false, width: 200, height: 200 });
  assert.equal(face!.bounding_box, [-10, 30, 120, 120]);
  assert.equal(
    face!.landmarks.map((l) => l.type),
    ['left_eye', 'right_eye', 'nose', 'left_mouth', 'right_mouth'],
  );
  assert.equal(face!.landmarks[0]!.position, [20, 60]);
  assert.is(face!.confidence, 0.75);
});

scale('clipBoxes clamps boxes (not landmarks) to the image', () => {
  const [face] = toFaces(raw, { scaleX: 2, scaleY: 3, clip: true, width: 100, height: 100 });
  assert.equal(face!.bounding_box, [0, 30, 100, 100]);
  assert.equal(face!.landmarks[4]!.position, [56, 96]);
});

scale.run();
