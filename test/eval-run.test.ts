// The evaluation run (src/eval/run.ts) with a detector passed in, the PR-curve plot (src/eval/plot.ts)
// and the official per-image result files (src/eval/widerface-txt.ts).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type GroundTruth, loadGroundTruthJson } from '../src/eval/groundtruth';
import { prCurvesSvg } from '../src/eval/plot';
import { type ReferenceFile, detectionsFromResults, evaluate } from '../src/eval/run';
import { evaluateWiderFace } from '../src/eval/widerface';
import { formatWiderFaceTxt, parseWiderFaceTxt, readWiderFaceTxt } from '../src/eval/widerface-txt';

const FIXTURES = path.join(__dirname, '..', '..', 'shared', 'fixtures');
const GT_FILE = path.join(FIXTURES, 'wider-val', 'gt.json');

/** Ground truth boxes as detections, shifted by `shift` pixels, with scores from the box size. */
function fromGroundTruth(gt: GroundTruth, shift: number): Map<string, number[][]> {
  const out = new Map<string, number[][]>();
  for (const image of gt.images) {
    out.set(
      image.file,
      image.boxes
        .filter((_, i) => i % 3 !== 0)
        .map(([x, y, w, h]) => {
          const size = (w as number) * (h as number);
          return [
            (x as number) + shift,
            (y as number) + shift,
            (x as number) + (w as number) + shift,
            (y as number) + (h as number) + shift,
            size / (size + 500),
          ];
        }),
    );
  }
  return out;
}

let tmp = '';

const run = suite('eval run: evaluate()', {});
run.before(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'facedet-eval-'));
});
run.after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

run(
  'runs the detector in chunks, compares with the reference and writes results, plot and txt files',
  async () => {
    const gt = loadGroundTruthJson(GT_FILE);
    const ours = fromGroundTruth(gt, 3);
    const refDets = fromGroundTruth(gt, 0);
    const reference: ReferenceFile = {
      model: { name: 'retinaface-test' },
      settings: { max_size: 0 },
      images: gt.images.map((image) => ({ path: image.path, detections: refDets.get(image.file) ?? [] })),
    };
    const refFile = path.join(tmp, 'reference.json');
    writeFileSync(refFile, JSON.stringify(reference));
    const calls: string[][] = [];
    const lines: string[] = [];
    const outDir = path.join(tmp, 'out');
    const result = await evaluate({
      gt: GT_FILE,
      detect: async (paths) => {
        calls.push(paths);
        return paths.map((p) => ours.get(p) ?? []);
      },
      chunkSize: 4,
      reference: refFile,
      outDir,
      writeTxt: true,
      meta: { model: 'test model', maxSize: 0 },
      log: (line) => lines.push(line),
    });

    assert.equal(
      calls.map((c) => c.length),
      [4, 2],
    );
    assert.is(calls[0]?.[0], gt.images[0]?.file);
    // The same numbers as the metric applied directly.
    const direct = evaluateWiderFace(
      gt.images,
      gt.images.map((image) => ours.get(image.file) ?? []),
    );
    const directRef = evaluateWiderFace(
      gt.images,
      gt.images.map((image) => refDets.get(image.file) ?? []),
    );
    assert.is(result.ours.hard.ap, direct.hard.ap);
    assert.is(result.reference?.hard.ap, directRef.hard.ap);
    assert.is(result.difference?.easy, direct.easy.ap - directRef.easy.ap);
    // Shifting every box by 3 px costs AP on the small faces.
    assert.ok(direct.hard.ap < directRef.hard.ap, `${direct.hard.ap} < ${directRef.hard.ap}`);
    assert.ok(result.subset);

    // The report: a SUBSET warning, counts and one row per subset.
    assert.is(lines.join('\n'), result.table);
    assert.match(result.table, /SUBSET of 6 of the 3,226 images/);
    assert.match(result.table, /6 images, 478 boxes; faces counted: easy 19, medium 78, hard 348/);
    const pct = (v: number) => `${(v * 100).toFixed(2)}%`;
    const row = `| hard | 348 | ${pct(direct.hard.ap)} | ${pct(directRef.hard.ap)} | -${((directRef.hard.ap - direct.hard.ap) * 100).toFixed(3)} pp |`;
    assert.ok(result.table.includes(row), `${result.table}\nhas no row\n${row}`);
    assert.match(result.table, /- model: test model/);

    // results.json
    const doc = JSON.parse(readFileSync(path.join(outDir, 'results.json'), 'utf8'));
    assert.is(doc.ap.ours.medium, direct.medium.ap);
    assert.is(doc.ap.reference.medium, directRef.medium.ap);
    assert.is(doc.reference.model.name, 'retinaface-test');
    assert.is(doc.curves.ours.easy.recall.length, 1000);
    assert.is(doc.groundTruth.faces.all, 478);
    assert.is(doc.subset, true);

    // The plot, as SVG and PNG.
    const png = await sharp(path.join(outDir, 'pr-curves.png')).metadata();
    assert.is(png.format, 'png');
    assert.is(png.width, 1200);
    assert.match(
      readFileSync(path.join(outDir, 'pr-curves.svg'), 'utf8'),
      /pytorch reference \(AP \d+\.\d\d%\)/,
    );

    // The official per-image files read back to the same detections and AP.
    const txt = readWiderFaceTxt(path.join(outDir, 'widerface_txt'));
    assert.is(txt.size, 6);
    const back = gt.images.map((image) => txt.get(`${image.event}/${image.name}`) ?? []);
    back.forEach((dets, i) => {
      const orig = ours.get(gt.images[i]?.file as string) ?? [];
      assert.is(dets.length, orig.length);
      dets.forEach((d, k) => d.forEach((v, j) => assert.ok(Math.abs(v - (orig[k]?.[j] as number)) < 1e-9)));
    });
    assert.ok(Math.abs(evaluateWiderFace(gt.images, back).hard.ap - direct.hard.ap) < 1e-12);
    assert.is(result.files.length, 3 + 6);
    assert.ok(result.files.every((f) => existsSync(f)));
  },
);

run('without a reference or output folder: a table of our APs only', async () => {
  const gt = loadGroundTruthJson(GT_FILE);
  const result = await evaluate({ gt, detect: async (paths) => paths.map(() => []), log: null });
  assert.is(result.reference, undefined);
  assert.equal(result.files, []);
  assert.match(result.table, /\| easy \| 19 \| 0\.00% \|/);
});

run('refuses a reference that lacks images, and a detector that returns the wrong count', async () => {
  const gt = loadGroundTruthJson(GT_FILE);
  const partial: ReferenceFile = { images: [{ path: gt.images[0]?.path as string, detections: [] }] };
  let called = false;
  try {
    await evaluate({
      gt,
      reference: partial,
      detect: async (paths) => {
        called = true;
        return paths.map(() => []);
      },
      log: null,
    });
    assert.unreachable('should have thrown');
  } catch (err) {
    assert.match((err as Error).message, /no detections for 5 of the 6 ground-truth images/);
  }
  assert.not.ok(called, 'the reference is checked before detecting');
  try {
    await evaluate({ gt, detect: async () => [], log: null });
    assert.unreachable('should have thrown');
  } catch (err) {
    assert.match((err as Error).message, /detect\(\) returned 0 results for 6 images/);
  }
  try {
    await evaluate({ gt: GT_FILE, detect: 'nope' as never, log: null });
    assert.unreachable('should have thrown');
  } catch (err) {
    assert.is((err as Error).message, 'Expected a function for detect but received nope of type string');
  }
});

run('detector results convert to detections; a failed image throws', () => {
  const face = {
    bounding_box: [1, 2, 3, 4] as [number, number, number, number],
    landmarks: [],
    confidence: 0.9,
  };
  assert.equal(
    detectionsFromResults(
      [
        { faces_count: 1, faces: [face] },
        { faces_count: 0, faces: [] },
      ],
      ['a', 'b'],
    ),
    [[[1, 2, 3, 4, 0.9]], []],
  );
  assert.throws(
    () =>
      detectionsFromResults(
        [{ faces_count: 0, faces: [], error: { code: 'image_decode_failed', message: 'bad jpeg' } }],
        ['x.jpg'],
      ),
    /x\.jpg: image_decode_failed: bad jpeg/,
  );
  assert.throws(() => detectionsFromResults([], ['x.jpg']), /returned 0 results for 1 images/);
});

run.run();

const files = suite('eval run: plot and result files');

files('the SVG has a panel per subset, a line per series and AP in the legend', () => {
  const curve = { ap: 0.5, recall: [0, 0.25, 0.5], precision: [NaN, 1, 0.5] };
  const svg = prCurvesSvg(
    [
      { label: 'ours', subsets: { easy: curve, medium: curve, hard: { ...curve, ap: 0.125 } } },
      { label: 'ref <torch> & co', subsets: { easy: curve, medium: curve, hard: curve } },
    ],
    { title: 'test' },
  );
  assert.is(svg.match(/<g class="panel"/g)?.length, 3);
  assert.is(svg.match(/<polyline class="series"/g)?.length, 6);
  assert.match(svg, /ours \(AP 12\.50%\)/);
  assert.match(svg, /ref &lt;torch&gt; &amp; co \(AP 50\.00%\)/);
  // The NaN point is left out: two points per line.
  const points = /points="([^"]*)"/.exec(svg)?.[1] ?? '';
  assert.is(points.split(' ').length, 2);
  assert.not.match(svg, /NaN/);
});

files('the official per-image text format', () => {
  const text = formatWiderFaceTxt('0_Parade_Parade_0_873', [
    [10, 20, 40, 70, 0.99],
    [1.5, 2.25, 3.5, 4.25, 0.5],
  ]);
  assert.is(text, '0_Parade_Parade_0_873\n2\n10 20 30 50 0.99\n1.5 2.25 2 2 0.5\n');
  assert.equal(parseWiderFaceTxt(text), {
    name: '0_Parade_Parade_0_873',
    detections: [
      [10, 20, 40, 70, 0.99],
      [1.5, 2.25, 3.5, 4.25, 0.5],
    ],
  });
  assert.equal(parseWiderFaceTxt('x\n0\n'), { name: 'x', detections: [] });
  assert.throws(
    () => parseWiderFaceTxt('x\n2\n1 2 3 4 0.5\n', 'f.txt'),
    /f\.txt: says 2 detections but lists 1/,
  );
});

files.run();
