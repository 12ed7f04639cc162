// Issue 4's acceptance in CI: our pipeline's WIDER FACE AP equals the PyTorch reference's on both
// fixture sets (within 0.005 on every subset), through the same command users run (facedet eval).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadBinding } from '../src/native';
import { cpuHasBf16 } from '../src/cpu';
import { runEvaluation } from '../src/eval/cli';
import { SUBSETS } from '../src/eval/widerface';
import { pythonInterpreter } from '../src/cli';
import { FIXTURES, MOBILENET_DIR, requireModel } from './helpers/model';

/** `facedet eval` as the CLI runs it, on MobileNet0.25 against the PyTorch reference; returns its log too. */
async function evaluateSets(sets: string[], precision?: 'bf16' | 'int8') {
  const lines: string[] = [];
  const reports = await runEvaluation({
    model: requireModel(MOBILENET_DIR),
    gt: sets.map((name) => path.join(FIXTURES, name, 'gt.json')),
    maxSize: 0,
    sizes: [],
    reference: true,
    threads: 2,
    ...(precision ? { precision } : {}),
    outDir: fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-eval-')),
    python: pythonInterpreter(),
    log: (line) => lines.push(line),
  });
  return { reports, log: lines.join('\n') };
}

test('AP of our pipeline equals the PyTorch reference on wider-val and wider-val-416 (±0.005)', async () => {
  const { reports, log } = await evaluateSets(['wider-val', 'wider-val-416']);
  assert.is(reports.length, 2);
  for (const report of reports) {
    assert.ok(report.main.reference, 'reference evaluated');
    for (const subset of SUBSETS) {
      const diff = report.main.difference![subset];
      assert.ok(Math.abs(diff) <= 0.005, `${report.gt} ${subset}: ours - reference = ${diff}`);
      assert.ok(
        report.main.ours[subset].ap > 0.2,
        `${report.gt} ${subset}: AP ${report.main.ours[subset].ap}`,
      );
    }
    assert.ok(report.main.files.some((f) => f.endsWith('pr-curves.png')));
  }
  assert.match(log, /SUBSET/);
  // The CPU fp32 default engine (see detector.test.ts, info()).
  const backend = loadBinding().build.onednn !== undefined ? 'torch' : 'onnxruntime';
  assert.match(log, `ours: ${backend} fp32`);
});

// What a user with other weights runs before trusting --int8 (README, int8): the quantised model beside
// the float PyTorch reference. MobileNet0.25 loses 1-2 points on wider-val-416 (README); on wider-val's
// 6 images int8 - float is within 1.7 points (measured: +1.63, -0.57, +0.30 with model.int8.onnx).
test('facedet eval --precision int8: the int8 model against the float reference', async () => {
  const {
    reports: [report],
    log,
  } = await evaluateSets(['wider-val'], 'int8');
  assert.match(log, /ours: onnxruntime int8/);
  let changed = 0;
  for (const subset of SUBSETS) {
    const diff = report!.main.difference![subset];
    assert.ok(Math.abs(diff) <= 0.03, `${subset}: int8 - float reference = ${diff}`);
    if (Math.abs(diff) > 0.001) changed++;
  }
  assert.ok(changed > 0, 'int8 gives exactly the float AP: is it the int8 model?');
});

// precision 'bf16' (CPUs with AVX512-BF16/AMX; bf16.test.ts covers the rest): within 1 AP point of the
// float reference on every subset of both sets. Measured: wider-val -0.14, -0.18, -0.34; wider-val-416
// -0.47, -0.27, -0.03 points. With the first convolution in bf16 too, wider-val lost 1.57 and 1.09 points
// on easy and medium: this test is what keeps it float32.
test('facedet eval --precision bf16: within 1 point of the float reference', async () => {
  if (!cpuHasBf16()) return; // bf16.test.ts tests the refusal there
  const { reports, log } = await evaluateSets(['wider-val', 'wider-val-416'], 'bf16');
  assert.match(log, /ours: torch bf16/);
  let changed = 0;
  for (const report of reports) {
    for (const subset of SUBSETS) {
      const diff = report.main.difference![subset];
      assert.ok(Math.abs(diff) <= 0.01, `${report.gt} ${subset}: bf16 - float reference = ${diff}`);
      if (Math.abs(diff) > 0.0005) changed++;
    }
  }
  assert.ok(changed > 0, 'bf16 gives exactly the float AP: is it bf16?');
});

test.run();
