#!/usr/bin/env bash
# One-command setup on Debian 12 / Ubuntu: system packages, `npm ci` (which builds the native addon),
# the TypeScript build and the export of the default model (plus the synthetic ResNet50 used by tests
# and benchmarks).
#
# Environment:
#   FACEDET_WEIGHTS=FILE      MobileNet0.25 weights to export (default: download them, sha256-checked)
#   FACEDET_FIXTURES=DIR      test fixtures; reference outputs are written when present (default ../shared/fixtures)
#   FACEDET_SKIP_APT=1        skip apt-get (packages already installed)
#   Torch_DIR=DIR             build against another LibTorch (see README)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

if [ "${FACEDET_SKIP_APT:-0}" != 1 ]; then
  log "Installing system packages (apt-get)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    ca-certificates curl cmake make g++ ninja-build libtorch-dev libdnnl-dev libjpeg-dev liblcms2-dev \
    python3 python3-torch python3-torchvision python3-onnx python3-numpy python3-pil \
    clang-format chromium
fi

log "Installing npm packages and building the native addon (npm ci)"
npm ci
if [ ! -f build/Release/facedet.node ]; then
  # npm may skip the package's own install script (for example --ignore-scripts): build it here.
  npm run build:native
fi
npm run build:ts

python=/usr/bin/python3
[ -x "$python" ] || python=python3
weights="${FACEDET_WEIGHTS:-}"
if [ -z "$weights" ]; then
  log "Downloading the MobileNet0.25 weights (sha256-checked)"
  mkdir -p models/weights
  weights=models/weights/RetinaFace_mobilenet025.pth
  bash scripts/fetch_weights.sh mobilenet0.25 "$weights"
fi

fixtures="${FACEDET_FIXTURES:-../shared/fixtures}"
references=()
for dir in "$fixtures/seed-images" "$fixtures/wider-val/images"; do
  [ -d "$dir" ] && references+=(--reference-images "$dir")
done

# --int8 adds the int8 networks (precision 'int8': model.int8.pt, model.int8.onnx), calibrated on the
# fixture photos (~30 s on 2 cores); without the fixtures there is nothing to calibrate on.
int8=()
[ -d "$fixtures" ] && int8=(--int8)

log "Exporting RetinaFace-MobileNet0.25 to models/retinaface-mobilenet0.25"
"$python" scripts/export_model.py --backbone mobilenet0.25 --weights "$weights" \
  --out models/retinaface-mobilenet0.25 "${int8[@]}" "${references[@]}"

log "Exporting RetinaFace-ResNet50 with SYNTHETIC weights (speed and shape tests only) to models/retinaface-resnet50-synthetic"
# Its int8 network is for timing only (silent heads): 16 calibration inputs are plenty (~20 s).
[ -d "$fixtures" ] && int8+=(--calibration-limit 16)
"$python" scripts/export_model.py --backbone resnet50 --synthetic-weights \
  --out models/retinaface-resnet50-synthetic "${int8[@]}"

log "Done. Serve with: npm start   (then open http://127.0.0.1:8080/docs)   Test with: npm test"
