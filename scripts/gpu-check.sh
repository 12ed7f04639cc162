#!/usr/bin/env bash
# The GPU check: one run on a bare NVIDIA machine (CUDA 13, cmake, g++, a PyTorch 2.x package; no Node, no
# network) that unpacks the carried Node and node_modules, builds the addon against that machine's CUDA
# LibTorch, exports the models with its PyTorch, runs test/gpu.test.ts and the benchmark grid, and writes
# the results to $OUT.
#
# ---- How to run it (from a session whose task has a GPU machine) -------------------------------------
#   1. Here, once:   bash scripts/gpu-carry.sh        (builds .carry/, ~50 MiB; prints the sizes)
#   2. The device tool, one call:
#        run  command:   bash scripts/gpu-check.sh
#             carry:     [".carry"]
#             timeout_s: 420
#      Measured on an H200 (2026-11-28, with GPU_CHECK_BENCH_S=100 GPU_CHECK_SWEEP=16): the machine's start
#      and the transfer ~30 s, then unpack + configure + build ~50 s (the model exports run meanwhile),
#      tests ~60 s, the benchmark grid <= GPU_CHECK_BENCH_S (default 150 s, less if the earlier steps ran
#      late: the grid ends by GPU_CHECK_DEADLINE_S, default 380 s after the start), then ~40 s for the
#      cuDNN-benchmark-off cell and the memory sweep (GPU_CHECK_SWEEP batches each way, default 16) and
#      ~10 s for the fuser-on cell. The grid runs fp16 first (ResNet50, then MobileNet0.25: the target
#      cell, ResNet50 1024² batch 16, early), then fp32 with the engine alone (the whole path, mostly JPEG
#      decoding on the CPU, is timed for fp16 only). Cells past the budget are recorded as "skipped",
#      never dropped silently. A 15-minute lease fits one such run and a short rerun only if nothing
#      else fails: fetch the results, give the machine back, fix, and run again only with time left.
#      A shorter run: GPU_CHECK_BENCH_S=60 bash scripts/gpu-check.sh (or GPU_CHECK_SKIP_BENCH=1 for
#      build and tests only).
#   3. $OUT comes back with (8 files, the tool's limit): gpu-check.log (everything, timestamped), env.json
#      (card, driver, CUDA, LibTorch, cuDNN), build.log, gpu-tests.log, gpu-bench.json,
#      gpu-bench-cudnn-off.json, gpu-bench-fuser.json, gpu-bench.md (the table). The end of the output
#      repeats the table and the test summary. For the README: copy the JSON files and env.json to
#      docs/measurements/<card>-<date>/ and run
#      tsx scripts/gpu-bench.ts report --env ENV.json --readme README.md RESULT.json ...
#   give_back afterwards unless a rerun follows at once.
#
# ---- Testing it without a GPU ----------------------------------------------------------------------------
#   bash scripts/gpu-check.sh --sim          copies the working tree (without node_modules, build, models)
#                                            to a scratch folder, links .carry, and runs --cpu-dry-run there
#   bash scripts/gpu-check.sh --cpu-dry-run  the same flow in the current folder on the CPU: Debian's LibTorch
#                                            and /usr/bin/python3 (torch 1.13), a tiny grid, device 'cpu'
#   Environment: FACEDET_PYTHON (python with torch), Torch_DIR, CUDA_HOME, OUT, GPU_CHECK_BENCH_S,
#   GPU_CHECK_DEADLINE_S, GPU_CHECK_SKIP_BENCH=1.
set -uo pipefail

mode=gpu
case "${1:-}" in
  --cpu-dry-run) mode=cpu ;;
  --sim) mode=sim ;;
  '') ;;
  *)
    echo "usage: gpu-check.sh [--cpu-dry-run | --sim]" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "$mode" = sim ]; then
  sim=$(mktemp -d /tmp/facedet-gpu-sim.XXXXXX)
  echo "gpu-check --sim: copying the working tree to $sim"
  tar -C "$root" -cf - --exclude=./.git --exclude=./node_modules --exclude=./build --exclude=./dist \
    --exclude=./.carry --exclude='./models/*/' --exclude=./eval-results --exclude=./bench-results \
    --exclude=./.scratch --exclude=./.gpu-out . | tar -C "$sim" -xf -
  rm -rf "$sim"/models/*/
  ln -s "$root/.carry" "$sim/.carry"
  export OUT=${OUT:-$sim/.gpu-out}
  exec bash "$sim/scripts/gpu-check.sh" --cpu-dry-run
fi

OUT=${OUT:-/tmp/facedet-gpu-out}
mkdir -p "$OUT"
carry=$root/.carry
work=$(mktemp -d /tmp/facedet-gpu.XXXXXX)
started=$(date +%s)
deadline=${GPU_CHECK_DEADLINE_S:-380}
failures=()

exec > >(tee -a "$OUT/gpu-check.log") 2>&1
elapsed() { echo $(($(date +%s) - started)); }
log() { printf '[%s +%ss] %s\n' "$(date +%T)" "$(elapsed)" "$*"; }
step() { printf '\n[%s +%ss] ==== %s\n' "$(date +%T)" "$(elapsed)" "$*"; }
fail() {
  log "FAILED: $*"
  failures+=("$*")
}
die() {
  log "FATAL: $*"
  finish 1
}
finish() {
  step "summary ($mode mode, $(elapsed) s)"
  [ -f "$OUT/gpu-bench.md" ] && cat "$OUT/gpu-bench.md"
  [ -f "$OUT/gpu-tests.log" ] && grep -E '^\s*(Total|Passed|Skipped|Duration)|FAIL|✘' "$OUT/gpu-tests.log" | tail -20
  ls -la "$OUT"
  if [ ${#failures[@]} -gt 0 ]; then
    printf 'gpu-check: %d step(s) failed:\n' "${#failures[@]}"
    printf '  - %s\n' "${failures[@]}"
    exit 1
  fi
  [ "${1:-0}" = 0 ] && log "gpu-check: all steps passed" || exit "$1"
  exit 0
}

step "gpu-check in $mode mode: $root -> OUT=$OUT"
[ -d "$carry" ] || die ".carry/ is missing: run scripts/gpu-carry.sh first and pass carry: [\".carry\"]"
cat "$carry/MANIFEST" 2>/dev/null | head -3

# ---- the machine ---------------------------------------------------------------------------------------
step "machine"
python=${FACEDET_PYTHON:-}
if [ -z "$python" ]; then
  if [ "$mode" = cpu ]; then
    python=/usr/bin/python3
  else
    for p in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
      if command -v "$p" > /dev/null && "$p" -c 'import torch' 2> /dev/null; then
        python=$p
        break
      fi
    done
  fi
fi
[ -n "$python" ] && "$python" -c 'import torch' || die "no python3 with torch found (set FACEDET_PYTHON)"
uname -a
nproc
free -g | head -2
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
command -v nvcc > /dev/null && nvcc --version | tail -2
if ! command -v cmake > /dev/null; then
  cmake_bin=$("$python" -c 'import cmake, os; print(cmake.CMAKE_BIN_DIR)' 2> /dev/null) && export PATH=$cmake_bin:$PATH
fi
command -v cmake > /dev/null || die "cmake not found"
cmake --version | head -1
g++ --version | head -1
"$python" - "$OUT/env.json" << 'EOF'
import json, os, shutil, subprocess, sys
import torch
env = {}
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as exc:
        return f'n/a ({exc.__class__.__name__})'
if shutil.which('nvidia-smi'):
    q = run('nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader').splitlines()
    if q:
        name, driver, memory = [x.strip() for x in q[0].split(',')]
        env['card'] = f'{name} ({memory})'
        env['driver'] = driver
cuda = run('nvcc', '--version').splitlines() if shutil.which('nvcc') else []
env['CUDA'] = f"toolkit {cuda[-2].split('release')[-1].strip() if len(cuda) > 1 else 'n/a'}, PyTorch built with {torch.version.cuda}"
env['LibTorch'] = f'{torch.__version__} (the PyTorch package: {os.path.dirname(torch.__file__)})'
env['cuDNN'] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else 'n/a'
env['GPUs visible to PyTorch'] = str(torch.cuda.device_count())
env['CPU threads'] = str(os.cpu_count())
json.dump(env, open(sys.argv[1], 'w'), indent=1)
print(json.dumps(env, indent=1))
EOF

# ---- Node and node_modules -------------------------------------------------------------------------------
step "unpacking Node and node_modules"
unxz_to() { # unxz_to SRC DEST
  if command -v xz > /dev/null; then xz -dc "$1" > "$2"; else "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi
}
mkdir -p "$work/bin"
unxz_to "$carry/node.xz" "$work/bin/node" || die "cannot unpack node"
chmod +x "$work/bin/node"
export PATH=$work/bin:$PATH
log "node $(node -v) at $(command -v node)"
if [ -d node_modules ]; then
  log "node_modules already present: left as is"
else
  if command -v xz > /dev/null; then
    tar -xJf "$carry/node_modules.tar.xz" || die "cannot unpack node_modules"
  else
    "$python" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(".")' "$carry/node_modules.tar.xz" || die "cannot unpack node_modules"
  fi
  log "node_modules: $(ls node_modules | wc -l) entries"
fi
node -e "require('sharp'); require('tsx'); require('uvu'); console.log('sharp', require('sharp').versions.vips, 'ok')" ||
  die "node_modules is incomplete"
tsx() { node node_modules/tsx/dist/cli.mjs "$@"; }

# ---- models (in the background, while the addon builds) ----------------------------------------------------
step "exporting the models with $("$python" -c 'import torch; print("torch", torch.__version__)') (background)"
export PYTHONUNBUFFERED=1
mkdir -p models
(
  "$python" scripts/export_model.py --backbone mobilenet0.25 --weights "$carry/weights/RetinaFace_mobilenet025.pth" \
    --out models/retinaface-mobilenet0.25 --skip-onnx --raw-image "$carry/fixtures/seed-images/diverse_group.jpg" &&
    "$python" scripts/export_model.py --backbone resnet50 --synthetic-weights \
      --out models/retinaface-resnet50-synthetic --skip-onnx
) > "$work/export.log" 2>&1 &
export_pid=$!

# ---- the addon -------------------------------------------------------------------------------------------
step "building the addon"
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-DBUILDING_NODE_EXTENSION
  "-DCMAKE_JS_INC=$root/node_modules/node-api-headers/include;$root/node_modules/node-addon-api"
  "-DFACEDET_OUTPUT_DIR=$root/build/Release")
torch_version=$("$python" -c 'import torch; print(torch.__version__.split("+")[0])')
torch_dir=${Torch_DIR:-}
if [ -z "$torch_dir" ]; then
  prefix=$("$python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  [ -f "$prefix/Torch/TorchConfig.cmake" ] && torch_dir=$prefix/Torch
fi
if [ -n "$torch_dir" ]; then
  torch_lib=$(cd "$torch_dir/../../../lib" 2> /dev/null && pwd)
  cmake_args+=("-DTorch_DIR=$torch_dir" "-DCaffe2_DIR=$(dirname "$torch_dir")/Caffe2")
  # TorchConfig looks for c10 on the system paths first: pin the package's own.
  [ -n "$torch_lib" ] && [ -f "$torch_lib/libc10.so" ] && cmake_args+=("-Dc10_LIBRARY=$torch_lib/libc10.so")
  log "LibTorch: $torch_dir"
else
  log "LibTorch: the system's (find_package default)"
fi
if "$python" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)'; then
  # A CUDA build of PyTorch: its CMake config needs the CUDA toolkit (FindCUDA and CUDAToolkit).
  cuda_home=${CUDA_HOME:-}
  [ -z "$cuda_home" ] && [ -d /usr/local/cuda ] && cuda_home=/usr/local/cuda
  [ -z "$cuda_home" ] && command -v nvcc > /dev/null && cuda_home=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  if [ -n "$cuda_home" ]; then
    cmake_args+=("-DCUDAToolkit_ROOT=$cuda_home" "-DCUDA_TOOLKIT_ROOT_DIR=$cuda_home")
    if ! ls "$cuda_home"/lib64/libnvrtc.so* "$cuda_home"/lib/libnvrtc.so* > /dev/null 2>&1; then
      nvrtc=$("$python" -c 'import glob, os, torch; r = os.path.dirname(os.path.dirname(torch.__file__)); print((sorted(glob.glob(r + "/nvidia/*/lib/libnvrtc.so*")) + sorted(glob.glob(r + "/nvidia/cuda_nvrtc/lib/libnvrtc.so*")) + [""])[0])')
      [ -n "$nvrtc" ] && cmake_args+=("-DCUDA_nvrtc_LIBRARY=$nvrtc") && log "nvrtc from the PyTorch package: $nvrtc"
    fi
    log "CUDA toolkit: $cuda_home"
  fi
fi
{
  cmake -S . -B build/cmake "${cmake_args[@]}" && cmake --build build/cmake -j "$(nproc)"
} > "$OUT/build.log" 2>&1
build_rc=$?
grep -E 'facedet:|Caffe2|CUDA|error|Error' "$OUT/build.log" | grep -v '^--  *$' | head -40
[ $build_rc -eq 0 ] || {
  tail -40 "$OUT/build.log"
  die "the build failed (build.log)"
}
export FACEDET_NATIVE=$root/build/Release/facedet.node
node -e "const b = require(process.env.FACEDET_NATIVE); console.log('addon', JSON.stringify(b.build), 'CUDA devices', b.cudaDeviceCount())"
if [ "$mode" = gpu ]; then
  node -e "const b = require(process.env.FACEDET_NATIVE); process.exit(b.build.cuda && b.cudaDeviceCount() > 0 ? 0 : 1)" ||
    die "the addon was built without CUDA, or sees no GPU"
fi

# ---- models ----------------------------------------------------------------------------------------------
step "waiting for the model exports"
if wait $export_pid; then
  grep -E '^retinaface|model\.(pt|cpu\.pt)|time:' "$work/export.log"
else
  cat "$work/export.log"
  fail "model export with torch $torch_version (see above)"
  if [ ! -f models/retinaface-mobilenet0.25/model.json ] && [ -d "$carry/models-fallback/retinaface-mobilenet0.25" ]; then
    log "using the carried MobileNet0.25 export instead"
    rm -rf models/retinaface-mobilenet0.25
    cp -r "$carry/models-fallback/retinaface-mobilenet0.25" models/
  fi
fi
export FACEDET_TEST_MODEL=$root/models/retinaface-mobilenet0.25
export FACEDET_TEST_MODEL_R50=$root/models/retinaface-resnet50-synthetic
export FACEDET_FIXTURES=$carry/fixtures

# ---- tests -----------------------------------------------------------------------------------------------
step "tests: test/gpu.test.ts"
[ "$mode" = gpu ] && export FACEDET_REQUIRE_GPU=1
export FACEDET_PYTHON=$python
node node_modules/uvu/bin.js -r tsx test 'gpu\.test\.ts$' 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' | tee "$OUT/gpu-tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "test/gpu.test.ts"
unset FACEDET_REQUIRE_GPU

# ---- benchmark ---------------------------------------------------------------------------------------------
if [ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ]; then
  left=$((deadline - $(elapsed) - 45))
  budget=${GPU_CHECK_BENCH_S:-150}
  [ $left -lt "$budget" ] && budget=$left
  [ "$budget" -lt 20 ] && budget=20
  models=(--model "resnet50-synthetic=$FACEDET_TEST_MODEL_R50" --model "mobilenet0.25=$FACEDET_TEST_MODEL")
  image=(--image "$carry/fixtures/seed-images/many_faces.jpg")
  if [ "$mode" = gpu ]; then
    step "benchmark grid (cuDNN benchmark on, budget ${budget}s)"
    FACEDET_CUDNN_BENCHMARK=1 tsx scripts/gpu-bench.ts measure --device cuda "${models[@]}" "${image[@]}" \
      --precisions fp16,fp32 --whole-precisions fp16 --batches 1,4,16 --sizes 256,512,1024,2048 \
      --budget-s "$budget" \
      --label 'LibTorch CUDA, cuDNN benchmark on' --out "$OUT/gpu-bench.json" || fail "benchmark grid"
    step "the target cell with cuDNN benchmark off (the default), and GPU memory while shapes vary"
    FACEDET_CUDNN_BENCHMARK=0 tsx scripts/gpu-bench.ts measure --device cuda \
      --model "resnet50-synthetic=$FACEDET_TEST_MODEL_R50" "${image[@]}" --precisions fp16 --batches 16 \
      --sizes 1024 --budget-s 40 --sweep "${GPU_CHECK_SWEEP:-16}" --sweep-model "mobilenet0.25=$FACEDET_TEST_MODEL" \
      --label 'LibTorch CUDA, cuDNN benchmark off' \
      --out "$OUT/gpu-bench-cudnn-off.json" || fail "benchmark (cuDNN benchmark off)"
    step "the target cell with TorchScript's fuser on (off by default)"
    FACEDET_CUDNN_BENCHMARK=1 FACEDET_CUDA_FUSER=1 tsx scripts/gpu-bench.ts measure --device cuda \
      --model "resnet50-synthetic=$FACEDET_TEST_MODEL_R50" "${image[@]}" --precisions fp16 --batches 16 \
      --sizes 1024 --budget-s 30 --label 'LibTorch CUDA, cuDNN benchmark on, TorchScript fuser on' \
      --out "$OUT/gpu-bench-fuser.json" || fail "benchmark (fuser on)"
  else
    step "benchmark, tiny grid on the CPU (budget ${budget}s)"
    tsx scripts/gpu-bench.ts measure --device cpu "${models[@]}" "${image[@]}" --precisions fp32 \
      --batches 1,2 --sizes 128,256 --budget-s "$budget" --sweep 4 --label 'CPU dry run' \
      --out "$OUT/gpu-bench.json" || fail "benchmark grid"
  fi
  results=("$OUT/gpu-bench.json")
  for extra in gpu-bench-cudnn-off.json gpu-bench-fuser.json; do
    [ -f "$OUT/$extra" ] && results+=("$OUT/$extra")
  done
  tsx scripts/gpu-bench.ts report --env "$OUT/env.json" --md "$OUT/gpu-bench.md" "${results[@]}" > /dev/null ||
    fail "benchmark report"
fi

finish 0
