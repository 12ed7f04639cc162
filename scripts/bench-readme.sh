#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Regenerates every CPU figure in README.md's Performance section on this machine in one go (≈ 25 min
# on 2 CPUs; nothing else should run meanwhile): `npm run bench`, `bench:decode`, the six `bench:load`
# tables, the precision tables (scripts/precision_report.ts), then the summary at the section's top, which
# is computed from the others' JSON files. Those stay in DIR (default docs/measurements/cpu-<date>) so
# that every figure the README quotes can be traced to a file.
#
#   bash scripts/bench-readme.sh [DIR]        (npm run bench:readme -- [DIR])
#
# Needs the models `npm run setup` exports (with the fixtures, their int8 networks too).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-docs/measurements/cpu-$(date -u +%F)}
mkdir -p "$dir"
mobilenet=models/retinaface-mobilenet0.25
resnet=models/retinaface-resnet50-synthetic

npm run build:ts
node dist/cli.js bench --passes 2 --readme README.md --out "$dir/bench.json"
node dist/bench/decode.js --readme README.md --out "$dir/decode.json"
load() { node dist/bench/load.js --readme README.md --out "$dir/load-$1.json" "${@:2}" >/dev/null; }
load mobilenet0.25-torch
load mobilenet0.25-onnxruntime --backend onnxruntime
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
  load mobilenet0.25-torch-bf16 --backend torch --precision bf16
fi
load mobilenet0.25-torch-max0 --max-size 0 --concurrency 1,4
load resnet50-torch --model "$resnet" --concurrency 1,4
load resnet50-onnxruntime --model "$resnet" --backend onnxruntime --concurrency 1,4
npx tsx scripts/precision_report.ts --models "$mobilenet,$resnet" --readme README.md --json "$dir/precision.json"
node dist/bench/summary.js "$dir" --readme README.md
