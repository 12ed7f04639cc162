// The `facedet` command, run as users run it (node dist/cli.js, built by `npm test` before the tests).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FaceDetector, type ImageResult } from '../src';
import { cpuHasBf16 } from '../src/cpu';
import { FIXTURES, MOBILENET_DIR, requireModel } from './helpers/model';

const cli = path.resolve(__dirname, '..', 'dist', 'cli.js');
const modelDir = requireModel(MOBILENET_DIR);
const seed = (name: string) => path.join(FIXTURES, 'seed-images', name);

function facedet(args: string[], env: NodeJS.ProcessEnv = {}) {
  const result = spawnSync(process.execPath, [cli, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const detect = suite('facedet detect');

detect('prints {"result": [...]}, the server response shape, equal to the library results', async () => {
  const files = [seed('diverse_group.jpg'), seed('single_face.gif')];
  const run = facedet(['detect', '--model', modelDir, ...files]);
  assert.is(run.status, 0, run.stderr);
  const printed = JSON.parse(run.stdout) as { result: ImageResult[] };
  const detector = await FaceDetector.create({ model: modelDir, warmup: [] });
  const expected = await detector.detect(files);
  await detector.dispose();
  assert.equal(printed.result, JSON.parse(JSON.stringify(expected)));
  assert.is(printed.result[0]!.faces_count, 10);
});

detect('--threshold and --max-size are passed on; FACEDET_MODEL picks the model', () => {
  const strict = JSON.parse(
    facedet(['detect', '--threshold', '0.99', seed('many_faces.jpg')], { FACEDET_MODEL: modelDir }).stdout,
  );
  const loose = JSON.parse(
    facedet(['detect', '--threshold', '0.3', '--max-size', '640', seed('many_faces.jpg')], {
      FACEDET_MODEL: modelDir,
    }).stdout,
  );
  assert.ok(strict.result[0].faces_count < loose.result[0].faces_count);
});

detect('--backend picks the engine; torch and onnxruntime find the same faces', () => {
  const run = (backend: string) =>
    JSON.parse(
      facedet(['detect', '--model', modelDir, '--backend', backend, seed('diverse_group.jpg')]).stdout,
    ).result[0] as ImageResult;
  const torch = run('torch');
  const ort = run('onnxruntime');
  assert.is(torch.faces_count, 10);
  assert.is(ort.faces_count, torch.faces_count);
  torch.faces.forEach((face, i) => {
    const other = ort.faces[i]!;
    face.bounding_box.forEach((v, k) =>
      assert.ok(Math.abs(v - other.bounding_box[k]!) < 0.5, `${v} vs ${other.bounding_box[k]}`),
    );
  });
  const bogus = facedet(['detect', '--model', modelDir, '--backend', 'tflite', seed('mask.jpg')]);
  assert.is(bogus.status, 1);
  assert.match(bogus.stderr, /Expected one of torch, tensorrt, onnxruntime for backend but received tflite/);
});

detect(
  '--precision is passed on: bf16 where the CPU computes in it (the same 10 faces), refused elsewhere',
  () => {
    const run = facedet(['detect', '--model', modelDir, '--precision', 'bf16', seed('diverse_group.jpg')]);
    if (cpuHasBf16()) {
      assert.is(run.status, 0, run.stderr);
      assert.is((JSON.parse(run.stdout).result[0] as ImageResult).faces_count, 10);
    } else {
      assert.is(run.status, 1);
      assert.match(run.stderr, /precision 'bf16' needs a CPU with AVX512-BF16 or AMX-BF16 instructions/);
    }
    const bogus = facedet(['detect', '--model', modelDir, '--precision', 'fp64', seed('mask.jpg')]);
    assert.is(bogus.status, 1);
    assert.match(bogus.stderr, /Expected one of fp32, fp16, bf16, int8 for precision but received fp64/);
  },
);

detect('an unreadable image is a per-image error and exit code 1; the others are still printed', () => {
  const run = facedet(['detect', '--model', modelDir, seed('mask.jpg'), '/nonexistent.jpg']);
  assert.is(run.status, 1);
  const printed = JSON.parse(run.stdout);
  assert.is(printed.result[0].faces_count, 1);
  assert.is(printed.result[1].error.code, 'image_unreadable');
});

detect('a missing model says how to get one (exit 1)', () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-cli-'));
  const run = facedet(['detect', seed('mask.jpg')], { FACEDET_MODEL: path.join(empty, 'nothing') });
  assert.is(run.status, 1);
  assert.match(run.stderr, /^facedet detect: No model folder at .*nothing\. Run `npm run setup`/);
});

detect('usage errors exit 2 with the usage line', () => {
  for (const args of [
    ['detect'],
    ['detect', '--threshold', 'high', 'x.jpg'],
    ['detect', '--bogus', 'x.jpg'],
  ]) {
    const run = facedet(args);
    assert.is(run.status, 2, args.join(' '));
    assert.match(run.stderr, /Usage: facedet detect/);
  }
  const unknown = facedet(['frobnicate']);
  assert.is(unknown.status, 2);
  assert.match(unknown.stderr, /unknown command 'frobnicate'/);
});

detect('--help lists the commands', () => {
  const run = facedet(['--help']);
  assert.is(run.status, 0);
  assert.match(run.stdout, /detect/);
  assert.match(run.stdout, /export/);
});

detect.run();

const exporting = suite('facedet export');

exporting('refuses --synthetic-weights for mobilenet0.25 and a missing weights file, in one line', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-export-'));
  const synthetic = facedet(['export', '--backbone', 'mobilenet0.25', '--synthetic-weights', '--out', out]);
  assert.is.not(synthetic.status, 0);
  assert.match(synthetic.stderr, /synthetic/);
  assert.not.match(synthetic.stderr, /Traceback/);
  const missing = facedet([
    'export',
    '--backbone',
    'mobilenet0.25',
    '--weights',
    '/nonexistent.pth',
    '--out',
    out,
  ]);
  assert.is.not(missing.status, 0);
  assert.match(missing.stderr, /nonexistent\.pth/);
  assert.not.match(missing.stderr, /Traceback/);
});

exporting('--int8 passes --calibration-images on; a missing folder fails at once, in one line', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-export-'));
  const run = facedet([
    'export',
    '--backbone',
    'resnet50',
    '--synthetic-weights',
    '--int8',
    '--calibration-images',
    '/nonexistent-photos',
    '--calibration-limit',
    '4',
    '--out',
    out,
  ]);
  assert.is.not(run.status, 0);
  assert.is(
    run.stderr.trim(),
    'export_model.py: error: calibration image folder not found: /nonexistent-photos',
  );
  assert.equal(fs.readdirSync(out), [], 'nothing written');
});

exporting.run();
