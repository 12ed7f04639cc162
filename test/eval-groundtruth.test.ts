// Ground-truth loaders (src/eval/groundtruth.ts): the fixture gt.json files and the official .mat
// layout (test/data/mat5/official holds the wider-val ground truth in the official structure).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  GroundTruthError,
  countFaces,
  loadGroundTruth,
  loadGroundTruthJson,
  loadGroundTruthMat,
} from '../src/eval/groundtruth';

const FIXTURES = path.join(__dirname, '..', '..', 'shared', 'fixtures');
const OFFICIAL = path.join(__dirname, 'data', 'mat5', 'official');

const json = suite('groundtruth: gt.json');

json('wider-val: 6 images at original resolution, 478 faces', () => {
  const gt = loadGroundTruthJson(path.join(FIXTURES, 'wider-val', 'gt.json'));
  assert.is(gt.layout, 'json');
  assert.is(gt.images.length, 6);
  assert.is(countFaces(gt).all, 478);
  const first = gt.images[0];
  assert.is(first?.path, 'images/0--Parade/0_Parade_Parade_0_873.jpg');
  assert.is(
    first?.file,
    path.join(FIXTURES, 'wider-val', 'images', '0--Parade', '0_Parade_Parade_0_873.jpg'),
  );
  assert.is(first?.event, '0--Parade');
  assert.is(first?.name, '0_Parade_Parade_0_873');
  assert.equal(first?.boxes[0], [30, 432, 29, 44]);
  assert.equal(first?.keep.easy.slice(0, 3), [9, 20, 22]);
  assert.is(first?.boxesOrig, undefined);
});

json('wider-val-416: the stretched layout keeps boxes_orig, orig_size_wh and scale_xy', () => {
  // A folder that holds gt.json works too.
  const gt = loadGroundTruth(path.join(FIXTURES, 'wider-val-416'));
  assert.is(gt.images.length, 200);
  assert.match(gt.note ?? '', /STRETCHED to 416x416/);
  const first = gt.images[0];
  assert.equal(first?.origSizeWh, [1024, 819]);
  assert.equal(first?.scaleXy, [0.40625, 0.5079365079365079]);
  assert.equal(first?.boxes[0], [327.438, 224.508, 9.75, 16.254]);
  assert.equal(first?.boxesOrig?.[0], [806, 442, 24, 32]);
  assert.equal(first?.keep.easy, []);
  const faces = countFaces(gt);
  assert.equal([faces.easy, faces.medium, faces.hard], [548, 1189, 3477]);
});

json('malformed files are refused with the offending entry', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'facedet-gt-'));
  try {
    const write = (doc: unknown) => {
      const file = path.join(dir, 'gt.json');
      writeFileSync(file, JSON.stringify(doc));
      return file;
    };
    const image = {
      path: 'a/b.jpg',
      boxes: [[1, 2, 3, 4]],
      easy_keep: [1],
      medium_keep: [1],
      hard_keep: [1],
    };
    assert.is(loadGroundTruthJson(write({ images: [image] })).images[0]?.event, 'a');
    assert.throws(() => loadGroundTruthJson(write({ nope: 1 })), /expected \{"images": \[\.\.\.\]\}/);
    assert.throws(
      () => loadGroundTruthJson(write({ images: [{ ...image, hard_keep: [2] }] })),
      /images\[0\]\.hard_keep must be an array of 1-based box indices between 1 and 1/,
    );
    assert.throws(
      () => loadGroundTruthJson(write({ images: [{ ...image, boxes: [[1, 2, 3]] }] })),
      (e: unknown) => e instanceof GroundTruthError && /images\[0\]\.boxes must be/.test(e.message),
    );
    assert.throws(() => loadGroundTruthJson(write({ images: [image, image] })), /a\/b\.jpg is listed twice/);
    assert.throws(() => loadGroundTruthJson(path.join(dir, 'missing.json')), /cannot read ground truth/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

json.run();

const mat = suite('groundtruth: official .mat layout');

mat('decodes to the same ground truth as the gt.json it was made from', () => {
  const imagesDir = path.join(FIXTURES, 'wider-val', 'images');
  const fromMat = loadGroundTruthMat({ gtDir: OFFICIAL, imagesDir });
  const fromJson = loadGroundTruthJson(path.join(FIXTURES, 'wider-val', 'gt.json'));
  assert.is(fromMat.layout, 'mat');
  assert.is(fromMat.images.length, fromJson.images.length);
  fromMat.images.forEach((m, i) => {
    const j = fromJson.images[i];
    assert.is(m.file, j?.file, 'image file');
    assert.is(`images/${m.path}`, j?.path);
    assert.is(m.event, j?.event);
    assert.is(m.name, j?.name);
    assert.equal(m.boxes, j?.boxes);
    assert.equal(m.keep, j?.keep);
  });
  // The parent of images/ (WIDER_val) is accepted as well.
  assert.is(loadGroundTruth({ gtDir: OFFICIAL, imagesDir: path.dirname(imagesDir) }).root, imagesDir);
});

mat('a missing file is named', () => {
  assert.throws(
    () => loadGroundTruthMat({ gtDir: path.join(OFFICIAL, 'nowhere'), imagesDir: '.' }),
    /official ground truth file not found: .*wider_face_val\.mat/,
  );
});

mat.run();
