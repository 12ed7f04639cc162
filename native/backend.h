// SPDX-License-Identifier: MIT
// The inference backend interface. Backends (LibTorch, TensorRT) know nothing about N-API: the
// addon converts JS values into these plain structs on the main thread, and a backend runs on a
// worker thread with nothing but them.
#pragma once

#include <array>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace facedet {

// Thrown for a bad argument that only the backend can detect (for example a tensor the model
// rejects). The addon maps it to a JS RangeError; every other std::exception becomes an Error.
class ArgumentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Options for loading a model: copied out of the JS options object before the worker starts.
struct LoadOptions {
  std::string backend = "torch";   // "torch" or "tensorrt"
  std::string modelPath;           // TorchScript file, or ONNX file for TensorRT
  std::string device = "cpu";      // "cpu", "cuda" or "cuda:N"
  std::string precision = "fp32";  // "fp32", "fp16" (CUDA) or "int8" (a quantised CPU model)
  int threads = 0;                 // intra-op threads, 0 = LibTorch's default
  std::string cacheDir;            // TensorRT plan cache
  int maxBatch = 16;               // TensorRT optimisation profile
  int maxSize = 2048;              // TensorRT optimisation profile: largest H or W
  int float32Convolutions = 0;     // LibTorch fp16 on CUDA: the first N convolutions stay float32
  // LibTorch on the CPU: when set, infer takes the decoded pixels (uint8 RGB, NHWC) and converts them
  // itself to BGR minus this mean (B, G, R), so that JS need not pack a float tensor.
  bool uint8Input = false;
  std::array<float, 3> uint8Mean{};
  // LibTorch fp32 on the CPU: convolutions run by oneDNN directly, Winograd for the wide 3x3 ones
  // (onednn_conv.h), where the build has it.
  bool onednn = true;
};

// One batch of images, NCHW float32. Either one packed buffer of n*c*h*w floats, or n buffers of
// c*h*w floats each; or, for a backend whose info().input is "uint8-nhwc", one packed buffer of
// n*h*w*c bytes (`bytes`, RGB). The memory belongs to JS and is kept alive by the caller until the
// batch is done.
struct InferInput {
  std::vector<const float*> images;  // size 1 when packed, n otherwise
  const uint8_t* bytes = nullptr;
  bool packed = true;
  int64_t n = 0, c = 0, h = 0, w = 0;
  int threads = 0;  // LibTorch on the CPU: this batch's intra-op threads, 0 = the engine's
  // LibTorch on the CPU: run on the thread beside the primary one (engine.cc), with one thread and no
  // OpenMP team of its own.
  bool besidePrimary = false;
};

// One output tensor: float32, contiguous. `owner` keeps `data` alive (for example an at::Tensor),
// so the addon can hand the memory to JS without a copy.
struct OutputTensor {
  std::vector<int64_t> shape;
  const float* data = nullptr;
  std::shared_ptr<void> owner;
  size_t size() const {
    size_t s = 1;
    for (auto d : shape) s *= static_cast<size_t>(d);
    return s;
  }
};

// Raw network outputs: box deltas [n, A, 4], face scores after softmax [n, A, 2], landmarks [n, A, 10].
struct InferOutput {
  std::array<OutputTensor, 3> tensors;
  double inferMs = 0;  // time spent in the network, copies to and from the device included
};

struct BackendInfo {
  std::string backend;
  std::string device;
  std::string precision;
  int threads = 0;
  std::string version;                 // LibTorch or TensorRT version
  std::string input = "float32-nchw";  // what infer takes: "float32-nchw" or "uint8-nhwc"
  int onednn = 0;                      // convolutions run by oneDNN directly (onednn_conv.h)
  int winograd = 0;                    // of which Winograd candidates (3x3, wide, ReLU or none)
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Runs one batch. Safe to call from several threads at once.
  virtual InferOutput infer(const InferInput& input) = 0;
  virtual BackendInfo info() const = 0;
  // How many batches it runs at once: the engine gives it that many threads of its own.
  virtual int concurrency() const { return 1; }
};

std::unique_ptr<Backend> createTorchBackend(const LoadOptions& options);
#ifdef FACEDET_WITH_TENSORRT
std::unique_ptr<Backend> createTensorRtBackend(const LoadOptions& options);
// The version of the TensorRT library loaded at run time.
std::string tensorRtVersion();
#endif

// An integer tuning knob from the environment (FACEDET_CUDA_STREAMS, ...): `fallback` when unset, an
// ArgumentError naming the variable when it is not an integer in [min, max].
inline int envInt(const char* name, int fallback, int min, int max) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < min || x > max) {
    throw ArgumentError(std::string(name) + "=" + v + " is not an integer between " + std::to_string(min) +
                        " and " + std::to_string(max));
  }
  return static_cast<int>(x);
}

// Checks that a model returned the three RetinaFace outputs for a batch of n; throws otherwise.
void validateOutputs(const InferOutput& out, int64_t n);

}  // namespace facedet
