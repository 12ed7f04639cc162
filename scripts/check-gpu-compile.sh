#!/usr/bin/env bash
# Compile check of the GPU code on a machine with no GPU, no TensorRT and no CUDA LibTorch.
#
# What it checks -- compiling and linking only; NOTHING here runs on a GPU or runs TensorRT:
#   1. native/trt_backend.cc compiles against TensorRT headers (10.x; optionally a second set, e.g. 11.x)
#      and the CUDA headers, with the addon's flags plus -Werror.
#   2. native/torch_backend.cc compiles with FACEDET_WITH_CUDA against LibTorch headers: Debian's
#      libtorch-dev (CPU build, which ships c10/cuda and ATen/cuda headers but not the generated
#      c10/cuda/impl/cuda_cmake_macros.h: a one-line stand-in is written to a temporary folder), and, with
#      FACEDET_PYTHON=/path/to/python (a pip PyTorch), against that package's headers too.
#   3. native/engine.cc and native/addon.cc compile with FACEDET_WITH_CUDA and FACEDET_WITH_TENSORRT.
#   4. CMake with FACEDET_TENSORRT=ON and no TensorRT stops with a clear message.
#   5. CMake finds "TensorRT" in a folder holding the headers and two stand-in libraries (libnvinfer.so,
#      libnvonnxparser.so with the 4 entry points the backend calls, returning null), builds and links the
#      whole addon with the TensorRT backend, and Node loads it: build.backends lists 'tensorrt', and
#      Engine.load({ backend: 'tensorrt' }) rejects with the clean "no GPU" RangeError (it never reaches
#      a stand-in).
#
# Usage: bash scripts/check-gpu-compile.sh [TENSORRT_INCLUDE [MORE_TENSORRT_INCLUDES...]]
#   TENSORRT_INCLUDE  folder with NvInfer.h, NvOnnxParser.h... (default $TENSORRT_INCLUDE, else
#                     /work/trt-headers/include). Headers from NVIDIA's public repository, fetched for the
#                     check only and kept OUTSIDE the repository: include/ of github.com/NVIDIA/TensorRT at
#                     tag v10.16 (NvOnnxParser.h is in include/ there too).
#   CUDA_INCLUDE      default: $CUDA_HOME/include, /usr/local/cuda/include or /usr/local/cuda-13.0/include
#   FACEDET_PYTHON    optional python whose torch headers are checked as well
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

trt_includes=("$@")
[ ${#trt_includes[@]} -eq 0 ] && trt_includes=("${TENSORRT_INCLUDE:-/work/trt-headers/include}")
cuda_include=${CUDA_INCLUDE:-}
for c in "${CUDA_HOME:-/nonexistent}/include" /usr/local/cuda/include /usr/local/cuda-13.0/include; do
  [ -z "$cuda_include" ] && [ -f "$c/cuda_runtime_api.h" ] && cuda_include=$c
done
[ -f "$cuda_include/cuda_runtime_api.h" ] || {
  echo "check-gpu-compile: no CUDA headers (set CUDA_INCLUDE)" >&2
  exit 1
}
for inc in "${trt_includes[@]}"; do
  [ -f "$inc/NvInfer.h" ] && [ -f "$inc/NvOnnxParser.h" ] || {
    echo "check-gpu-compile: $inc has no NvInfer.h / NvOnnxParser.h" >&2
    exit 1
  }
done

tmp=$(mktemp -d /tmp/facedet-gpu-compile.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
passed=()
failed=()
ok() {
  passed+=("$*")
  echo "  ok: $*"
}
ko() {
  failed+=("$*")
  echo "  FAILED: $*"
}
version_of() { grep -hE '#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +[0-9]+' "$1/NvInferVersion.h" | awk '{print $3}' | head -3 | paste -sd.; }

# The addon's flags (CMakeLists.txt) and -Werror.
common=(-O2 -fPIC -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter -Werror -D_GLIBCXX_USE_CXX11_ABI=1
  -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED -DBUILDING_NODE_EXTENSION)
napi=(-I"$root/node_modules/node-api-headers/include" -I"$root/node_modules/node-addon-api")
mkdir -p "$tmp/stub/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$tmp/stub/c10/cuda/impl/cuda_cmake_macros.h"
debian_torch=(-isystem "$tmp/stub" -isystem /usr/include/torch/csrc/api/include)

echo "== 1. native/trt_backend.cc against TensorRT headers (compile only)"
for inc in "${trt_includes[@]}"; do
  v=$(version_of "$inc")
  if g++ -std=c++17 "${common[@]}" -isystem "$inc" -isystem "$cuda_include" -DFACEDET_WITH_TENSORRT \
    -c native/trt_backend.cc -o "$tmp/trt_backend.o"; then
    ok "trt_backend.cc, TensorRT $v headers ($inc), CUDA headers $cuda_include, C++17 -Werror"
  else
    ko "trt_backend.cc with TensorRT $v headers"
  fi
done
if [ -f "$tmp/trt_backend.o" ]; then
  echo "  symbols it needs from TensorRT and the CUDA runtime (resolved at link time):"
  nm -C --undefined-only "$tmp/trt_backend.o" | grep -E ' U (create|getInfer|cuda)' | awk '{print "    " $2}' | sort -u
fi

echo "== 2. native/torch_backend.cc with FACEDET_WITH_CUDA (compile only)"
if g++ -std=c++17 "${common[@]}" "${debian_torch[@]}" -isystem "$cuda_include" -DFACEDET_WITH_CUDA \
  -c native/torch_backend.cc -o "$tmp/torch_backend.o"; then
  ok "torch_backend.cc + CUDA, Debian LibTorch $(awk '/define TORCH_VERSION_(MAJOR|MINOR|PATCH)/ {print $3}' /usr/include/torch/csrc/api/include/torch/version.h | paste -sd.) headers"
else
  ko "torch_backend.cc + CUDA, Debian LibTorch headers"
fi
if [ -n "${FACEDET_PYTHON:-}" ]; then
  t=$("$FACEDET_PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
  tv=$("$FACEDET_PYTHON" -c 'import torch; print(torch.__version__)')
  std=c++17
  "$FACEDET_PYTHON" -c 'import sys, torch; v = tuple(map(int, torch.__version__.split("+")[0].split(".")[:2])); sys.exit(0 if v >= (2, 12) else 1)' && std=c++20
  if g++ -std=$std "${common[@]}" -isystem "$t/include" -isystem "$t/include/torch/csrc/api/include" \
    -isystem "$cuda_include" -DFACEDET_WITH_CUDA -c native/torch_backend.cc -o "$tmp/torch_backend_pip.o"; then
    ok "torch_backend.cc + CUDA, PyTorch $tv headers ($std)"
  else
    ko "torch_backend.cc + CUDA, PyTorch $tv headers ($std)"
  fi
fi

echo "== 3. native/engine.cc and native/addon.cc with FACEDET_WITH_CUDA and FACEDET_WITH_TENSORRT (compile only)"
for f in engine addon; do
  if g++ -std=c++17 "${common[@]}" "${debian_torch[@]}" "${napi[@]}" -isystem "$cuda_include" -DFACEDET_WITH_CUDA \
    -DFACEDET_WITH_TENSORRT -c "native/$f.cc" -o "$tmp/$f.o"; then
    ok "$f.cc with CUDA and TensorRT defined"
  else
    ko "$f.cc with CUDA and TensorRT defined"
  fi
done

cmake_common=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-DBUILDING_NODE_EXTENSION
  "-DCMAKE_JS_INC=$root/node_modules/node-api-headers/include;$root/node_modules/node-addon-api"
  "-DCUDAToolkit_ROOT=$(dirname "$cuda_include")")

echo "== 4. cmake -DFACEDET_TENSORRT=ON without TensorRT must stop with a clear message"
if cmake -S . -B "$tmp/cmake-on" "${cmake_common[@]}" -DFACEDET_TENSORRT=ON -DTENSORRT_ROOT="$tmp/none" \
  -DFACEDET_OUTPUT_DIR="$tmp/out-on" > "$tmp/cmake-on.log" 2>&1; then
  ko "cmake FACEDET_TENSORRT=ON without TensorRT succeeded"
else
  msg=$(grep -A2 'FACEDET_TENSORRT=ON' "$tmp/cmake-on.log" | grep -v '^$' | head -3)
  if [ -n "$msg" ]; then ok "cmake FACEDET_TENSORRT=ON without TensorRT fails: $(echo "$msg" | tr -s ' \n' ' ')"; else
    cat "$tmp/cmake-on.log"
    ko "cmake FACEDET_TENSORRT=ON failed without the expected message"
  fi
fi

echo "== 5. CMake + build + link of the whole addon with the TensorRT backend, against stand-in libraries"
mkdir -p "$tmp/trt/lib"
ln -s "$(cd "${trt_includes[0]}" && pwd)" "$tmp/trt/include"
cat > "$tmp/nvinfer.cc" << 'EOF'
// Link stand-ins: the entry points the TensorRT headers call. Nothing here is TensorRT.
#include <cstdint>
extern "C" void* createInferBuilder_INTERNAL(void*, int32_t) noexcept { return nullptr; }
extern "C" void* createInferRuntime_INTERNAL(void*, int32_t) noexcept { return nullptr; }
extern "C" int32_t getInferLibVersion() noexcept { return 0; }
EOF
cat > "$tmp/nvonnxparser.cc" << 'EOF'
#include <cstdint>
extern "C" void* createNvOnnxParser_INTERNAL(void*, void*, int32_t) noexcept { return nullptr; }
EOF
g++ -shared -fPIC "$tmp/nvinfer.cc" -o "$tmp/trt/lib/libnvinfer.so" &&
  g++ -shared -fPIC "$tmp/nvonnxparser.cc" -o "$tmp/trt/lib/libnvonnxparser.so"
if cmake -S . -B "$tmp/cmake-trt" "${cmake_common[@]}" -DFACEDET_TENSORRT=ON -DTENSORRT_ROOT="$tmp/trt" \
  -DFACEDET_OUTPUT_DIR="$tmp/out-trt" > "$tmp/cmake-trt.log" 2>&1 &&
  cmake --build "$tmp/cmake-trt" -j "$(nproc)" >> "$tmp/cmake-trt.log" 2>&1; then
  grep 'facedet:' "$tmp/cmake-trt.log" | sed 's/^/  /'
  if FACEDET_NATIVE="$tmp/out-trt/facedet.node" node -e "
    const b = require(process.env.FACEDET_NATIVE);
    if (!b.build.backends.includes('tensorrt')) throw new Error('no tensorrt backend: ' + JSON.stringify(b.build));
    console.log('  loaded:', JSON.stringify(b.build));
    b.Engine.load({ modelPath: 'none.onnx', backend: 'tensorrt', device: 'cuda' }).then(
      () => { console.error('  loaded without a GPU?'); process.exit(1); },
      (e) => {
        console.log('  Engine.load(tensorrt) without a GPU: ' + e.constructor.name + ': ' + e.message);
        process.exit(e instanceof RangeError && /CUDA sees no GPU/.test(e.message) ? 0 : 1);
      });"; then
    ok "whole addon with the TensorRT backend configured, built and linked (stand-in libs); loads; clean no-GPU error"
  else
    ko "addon with the TensorRT backend: load/no-GPU check"
  fi
else
  grep -E 'error|Error|facedet:' "$tmp/cmake-trt.log" | head -20
  ko "cmake/build with the TensorRT backend (stand-in libs)"
fi

echo
echo "check-gpu-compile: ${#passed[@]} passed, ${#failed[@]} failed (compile and link checks only: nothing ran on a GPU or in TensorRT)"
[ ${#failed[@]} -eq 0 ]
