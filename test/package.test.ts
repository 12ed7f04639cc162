// The published entry points: `require('facedet-native')` and `import ... from 'facedet-native'`.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

test('the package loads from require() and from import, with the same exports', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-pkg-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(path.resolve(__dirname, '..'), path.join(dir, 'node_modules', 'facedet-native'));
  fs.writeFileSync(
    path.join(dir, 'esm.mjs'),
    "import { FaceDetector, FacedetError, OverloadedError, LANDMARK_TYPES } from 'facedet-native';\n" +
      'process.stdout.write([typeof FaceDetector.create, typeof FacedetError, typeof OverloadedError, LANDMARK_TYPES.length].join(" "));\n',
  );
  fs.writeFileSync(
    path.join(dir, 'cjs.cjs'),
    "const { FaceDetector, FacedetError, OverloadedError, LANDMARK_TYPES } = require('facedet-native');\n" +
      'process.stdout.write([typeof FaceDetector.create, typeof FacedetError, typeof OverloadedError, LANDMARK_TYPES.length].join(" "));\n',
  );
  for (const file of ['esm.mjs', 'cjs.cjs']) {
    const run = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8' });
    assert.is(run.status, 0, run.stderr);
    assert.is(run.stdout, 'function function function 5', file);
  }
});

test.run();
