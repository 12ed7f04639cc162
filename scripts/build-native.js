#!/usr/bin/env node
// Builds the native addon with cmake-js (CMakeLists.txt is the one build description).
// `npm run build:native`, node-gyp (through binding.gyp) and prebuildify all end up here.
// Environment: Torch_DIR (or TORCH_DIR) picks a LibTorch; TENSORRT_ROOT a TensorRT;
// FACEDET_TENSORRT=ON|OFF|AUTO; FACEDET_ONEDNN=ON|OFF|AUTO; FACEDET_BUILD_TYPE=Release|Debug|RelWithDebInfo.
'use strict';
const { spawnSync } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const outputFlag = args.indexOf('--output-dir');
const outputDir = path.resolve(
  outputFlag >= 0 && args[outputFlag + 1] ? args[outputFlag + 1] : path.join(root, 'build', 'Release'),
);

const defines = [`--CDFACEDET_OUTPUT_DIR=${outputDir}`];
const torchDir = process.env.Torch_DIR || process.env.TORCH_DIR;
if (torchDir) defines.push(`--CDTorch_DIR=${torchDir}`);
if (process.env.TENSORRT_ROOT) defines.push(`--CDTENSORRT_ROOT=${process.env.TENSORRT_ROOT}`);
if (process.env.FACEDET_TENSORRT) defines.push(`--CDFACEDET_TENSORRT=${process.env.FACEDET_TENSORRT}`);
if (process.env.FACEDET_ONEDNN) defines.push(`--CDFACEDET_ONEDNN=${process.env.FACEDET_ONEDNN}`);

let cmakeJs;
try {
  cmakeJs = require.resolve('cmake-js/bin/cmake-js');
} catch {
  console.error('facedet: cmake-js is not installed; run `npm ci` (or `npm install cmake-js`) first.');
  process.exit(1);
}
const buildType = process.env.FACEDET_BUILD_TYPE || 'Release';
const jobs = String(Math.max(1, Math.min(os.availableParallelism(), 8)));
const result = spawnSync(
  process.execPath,
  [
    cmakeJs,
    'compile',
    '--directory',
    root,
    '--out',
    path.join(root, 'build', 'cmake'),
    '--config',
    buildType,
    '--parallel',
    jobs,
    ...defines,
  ],
  { stdio: 'inherit', env: process.env },
);
if (result.status !== 0) {
  console.error(
    [
      '',
      'facedet: building the native addon failed.',
      '  It needs cmake (>= 3.18), a C++17 compiler and LibTorch:',
      '    Debian/Ubuntu: sudo apt-get install cmake g++ libtorch-dev (libjpeg-dev too: the JPEG fast path)',
      '    another LibTorch: Torch_DIR=/path/to/libtorch/share/cmake/Torch npm run build:native',
      '  Then run `npm run build:native` again; the messages above say what went wrong.',
    ].join('\n'),
  );
  process.exit(result.status || 1);
}
