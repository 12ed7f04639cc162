#!/usr/bin/env node
// C++ formatting for native/: `--check` fails on any difference (part of `npm run lint`), `--fix` rewrites.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const dir = path.join(root, 'native');
const files = fs
  .readdirSync(dir)
  .filter((f) => /\.(cc|h)$/.test(f))
  .map((f) => path.join(dir, f));
const fix = process.argv.includes('--fix');
const binary = process.env.CLANG_FORMAT || 'clang-format';
const args = fix ? ['-i', ...files] : ['--dry-run', '--Werror', ...files];
const result = spawnSync(binary, args, { stdio: 'inherit' });
if (result.error) {
  console.error(
    `${binary} not found: install it (Debian: sudo apt-get install clang-format) or set CLANG_FORMAT.`,
  );
  process.exit(1);
}
process.exit(result.status ?? 1);
