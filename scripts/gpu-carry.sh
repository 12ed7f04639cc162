#!/usr/bin/env bash
# Builds .carry/, what scripts/gpu-check.sh needs on a GPU machine that has no Node and no network:
#   .carry/node.xz                 this machine's node binary (xz -9)
#   .carry/node_modules.tar.xz     the production dependencies (without the optional onnxruntime-node) plus
#                                  what the tests and the benchmark need (tsx, uvu), from ./node_modules
#   .carry/weights/                the real MobileNet0.25 weights (exported there with its PyTorch)
#   .carry/fixtures/               the seed and WIDER fixture images (CUDA-vs-CPU face comparison, benchmark)
#   .carry/models-fallback/        MobileNet0.25 exported here (used only if the export there fails)
#   .carry/MANIFEST                sizes, checksums, versions
# .carry/ is ignored by git (never commit it); it travels with `run`'s carry: [".carry"]. The whole working
# tree plus the carry must stay under 64 MiB: this script prints the total and fails above 60 MiB.
#
# Usage: bash scripts/gpu-carry.sh        (needs node_modules from `npm ci`, xz, python3 with torch)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
carry=$root/.carry
shared=${FACEDET_SHARED:-$root/../shared}
weights=${FACEDET_WEIGHTS:-$shared/models/retinaface-mobilenet0.25/RetinaFace_mobilenet025.pth}
fixtures=${FACEDET_FIXTURES:-$shared/fixtures}
log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

[ -d node_modules ] || { echo "gpu-carry: run npm ci first (node_modules is missing)" >&2; exit 1; }
[ -f "$weights" ] || { echo "gpu-carry: weights not found: $weights" >&2; exit 1; }
rm -rf "$carry"
mkdir -p "$carry/weights" "$carry/fixtures" "$carry/models-fallback"

log "node $(node -v): compressing $(command -v node)"
xz -9 -T2 -c "$(readlink -f "$(command -v node)")" > "$carry/node.xz"

log "node_modules: production dependencies + tsx + uvu (without onnxruntime-node)"
list=$(mktemp)
SKIP=onnxruntime-node node - tsx uvu > "$list" <<'EOF'
// Walks the dependency graph the way Node resolves it, from package.json's dependencies plus the names
// given, and prints each package folder once (nested ones only when their parent is not printed).
const fs = require('fs');
const path = require('path');
const root = process.cwd();
const skip = new Set((process.env.SKIP || '').split(',').filter(Boolean));
const seen = new Set();
function resolve(name, from) {
  for (let d = from; ; d = path.dirname(d)) {
    const c = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(c, 'package.json'))) return c;
    if (d === root || path.dirname(d) === d) return null;
  }
}
function walk(dir) {
  if (seen.has(dir)) return;
  seen.add(dir);
  const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const deps = { ...pj.dependencies, ...pj.optionalDependencies, ...pj.peerDependencies };
  for (const dep of Object.keys(deps)) {
    if (skip.has(dep)) continue;
    const d = resolve(dep, dir);
    if (d) walk(d);
  }
}
const pj = JSON.parse(fs.readFileSync('package.json', 'utf8'));
for (const dep of [...Object.keys(pj.dependencies), ...process.argv.slice(2)]) {
  if (skip.has(dep)) continue;
  const d = resolve(dep, root);
  if (!d) {
    console.error('gpu-carry: dependency not installed: ' + dep);
    process.exit(1);
  }
  walk(d);
}
const dirs = [...seen].map((d) => path.relative(root, d)).sort();
const kept = [];
for (const d of dirs) if (!kept.some((k) => d.startsWith(k + '/'))) kept.push(d);
console.log(kept.join('\n'));
EOF
log "  $(wc -l < "$list") package folders"
tar -cf - -T "$list" | xz -9 -T2 > "$carry/node_modules.tar.xz"
rm -f "$list"

log "weights and fixtures"
cp "$weights" "$carry/weights/"
cp -rL "$fixtures/seed-images" "$carry/fixtures/"
mkdir -p "$carry/fixtures/wider-val"
cp -rL "$fixtures/wider-val/images" "$carry/fixtures/wider-val/"
chmod -R u+w "$carry/fixtures"

log "fallback MobileNet0.25 export (this machine's PyTorch), in case the export on the GPU machine fails"
python=${FACEDET_PYTHON:-/usr/bin/python3}
"$python" scripts/export_model.py --backbone mobilenet0.25 --weights "$weights" \
  --out "$carry/models-fallback/retinaface-mobilenet0.25" --skip-onnx \
  --raw-image "$carry/fixtures/seed-images/diverse_group.jpg" > "$carry/models-fallback/export.log" 2>&1 ||
  { cat "$carry/models-fallback/export.log"; exit 1; }

{
  echo "built $(date -u +%FT%TZ) on $(uname -sm)"
  echo "node $(node -v) sha256 $(sha256sum "$(readlink -f "$(command -v node)")" | cut -d' ' -f1)"
  echo "torch (fallback export) $("$python" -c 'import torch; print(torch.__version__)')"
  (cd "$carry" && find . -type f -printf '%s\t%p\n' | sort -k2)
} > "$carry/MANIFEST"

carry_bytes=$(du -sb "$carry" | cut -f1)
tree_bytes=$(find . -path ./.git -prune -o -path ./node_modules -prune -o -path ./.carry -prune -o -path ./build -prune \
  -o -path ./dist -prune -o -path ./models -prune -o -path ./eval-results -prune -o -path ./bench-results -prune \
  -o -path ./.scratch -prune -o -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
models_md=$(find models -maxdepth 1 -name '*.md' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
total=$((carry_bytes + tree_bytes + models_md))
log "sizes:"
(cd "$carry" && du -sh node.xz node_modules.tar.xz weights fixtures models-fallback) | sed 's/^/    /'
awk -v c="$carry_bytes" -v t="$((tree_bytes + models_md))" 'BEGIN {
  printf "    .carry total %.1f MiB; working tree (estimate, without ignored files) %.1f MiB; together %.1f MiB of 64\n",
    c / 1048576, t / 1048576, (c + t) / 1048576 }'
if [ "$total" -gt $((60 * 1024 * 1024)) ]; then
  echo "gpu-carry: over 60 MiB: the run tool refuses trees over 64 MiB" >&2
  exit 1
fi
log "done: .carry is ready (run tool: carry [\".carry\"])"
