// SPDX-License-Identifier: MIT
// LibTorch backend: a TorchScript RetinaFace on CPU or CUDA.
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

#include <chrono>
#include <cstring>
#include <fstream>

#include "backend.h"

#ifdef FACEDET_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace facedet {
namespace {

// c10::Error messages carry a C++ backtrace; users need the first line only.
std::string torchMessage(const c10::Error& e) { return e.what_without_backtrace(); }

torch::Device parseDevice(const std::string& device) {
  if (device == "cpu") return torch::Device(torch::kCPU);
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
      throw ArgumentError("device '" + device +
                          "' was requested, but LibTorch sees no CUDA device: this build of the addon " +
                          "links a CPU-only LibTorch (" + TORCH_VERSION +
                          "), or no NVIDIA driver/GPU is visible. Rebuild against a CUDA LibTorch " +
                          "(Torch_DIR=...) or use device 'cpu'.");
    }
#ifndef FACEDET_WITH_CUDA
    throw ArgumentError("device '" + device +
                        "' was requested, but the addon was built without CUDA support; rebuild it "
                        "against a CUDA LibTorch (Torch_DIR=...)");
#endif
    int index = 0;
    if (device.size() > 5) {
      const std::string digits = device.substr(5);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) {
        throw ArgumentError("device '" + device + "' is not 'cpu', 'cuda' or 'cuda:N'");
      }
      index = std::stoi(digits);
    }
    if (index >= static_cast<int>(torch::cuda::device_count())) {
      throw ArgumentError("device '" + device + "' does not exist: " +
                          std::to_string(torch::cuda::device_count()) + " CUDA device(s) visible");
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw ArgumentError("device '" + device + "' is not 'cpu', 'cuda' or 'cuda:N'");
}

OutputTensor toOutput(torch::Tensor t) {
  t = t.to(torch::kCPU, torch::kFloat).contiguous();
  OutputTensor out;
  out.shape.assign(t.sizes().begin(), t.sizes().end());
  auto holder = std::make_shared<torch::Tensor>(std::move(t));
  out.data = holder->data_ptr<float>();
  out.owner = holder;
  return out;
}

class TorchBackend : public Backend {
 public:
  explicit TorchBackend(const LoadOptions& options)
      : device_(parseDevice(options.device)), precision_(options.precision) {
    if (options.threads > 0) at::set_num_threads(options.threads);
    threads_ = at::get_num_threads();
    if (precision_ != "fp32" && precision_ != "fp16" && precision_ != "int8") {
      throw ArgumentError("precision '" + precision_ + "' is not 'fp32', 'fp16' or 'int8'");
    }
    if (precision_ == "fp16" && device_.is_cpu()) {
      throw ArgumentError("precision 'fp16' needs a CUDA device; on CPU use 'fp32' or 'int8'");
    }
    if (precision_ == "int8" && !device_.is_cpu()) {
      throw ArgumentError("precision 'int8' is a CPU model; on CUDA use 'fp16' or 'fp32'");
    }
    {
      std::ifstream probe(options.modelPath, std::ios::binary);
      if (!probe) throw std::runtime_error("model file not found or unreadable: " + options.modelPath);
    }
    c10::InferenceMode guard;
    try {
      module_ = torch::jit::load(options.modelPath, device_);
      module_.eval();
      if (precision_ == "fp16") module_.to(torch::kHalf);
      // A module exported unfrozen (the device-portable file) is frozen here, after the device and
      // dtype are final; an already frozen file has no parameters left and is used as it is.
      if (module_.parameters().size() > 0) module_ = torch::jit::freeze(module_);
    } catch (const c10::Error& e) {
      throw std::runtime_error("could not load TorchScript model " + options.modelPath + ": " +
                               torchMessage(e));
    }
  }

  InferOutput infer(const InferInput& input) override {
    const auto start = std::chrono::steady_clock::now();
    c10::InferenceMode guard;
    at::init_num_threads();  // OpenMP thread counts are per calling thread: libuv workers start at the
                             // default
    InferOutput result;
    try {
#ifdef FACEDET_WITH_CUDA
      if (device_.is_cuda()) {
        result = inferCuda(input);
      } else {
        result = inferCpu(input);
      }
#else
      result = inferCpu(input);
#endif
    } catch (const c10::Error& e) {
      throw std::runtime_error("inference failed: " + torchMessage(e));
    }
    validateOutputs(result, input.n);
    result.inferMs =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return result;
  }

  BackendInfo info() const override {
    BackendInfo info;
    info.backend = "torch";
    info.device = device_.str();
    info.precision = precision_;
    info.threads = threads_;
    info.version = TORCH_VERSION;
    return info;
  }

 private:
  // The batch as a CPU tensor: a view of the JS memory when packed, one copy otherwise.
  static torch::Tensor hostBatch(const InferInput& input, bool pinned) {
    const std::vector<int64_t> shape{input.n, input.c, input.h, input.w};
    if (input.packed && !pinned) {
      return torch::from_blob(const_cast<float*>(input.images[0]), shape, torch::kFloat);
    }
    auto batch = torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat).pinned_memory(pinned));
    const size_t imageFloats = static_cast<size_t>(input.c * input.h * input.w);
    float* dst = batch.data_ptr<float>();
    if (input.packed) {
      std::memcpy(dst, input.images[0], imageFloats * input.n * sizeof(float));
    } else {
      for (size_t i = 0; i < input.images.size(); ++i) {
        std::memcpy(dst + i * imageFloats, input.images[i], imageFloats * sizeof(float));
      }
    }
    return batch;
  }

  InferOutput unpack(const c10::IValue& value) {
    if (!value.isTuple()) throw std::runtime_error("model did not return a tuple (loc, conf, landmarks)");
    const auto& elements = value.toTupleRef().elements();
    if (elements.size() != 3) {
      throw std::runtime_error("model returned " + std::to_string(elements.size()) +
                               " outputs, expected 3 (loc, conf, landmarks)");
    }
    InferOutput out;
    for (size_t i = 0; i < 3; ++i) {
      if (!elements[i].isTensor())
        throw std::runtime_error("model output " + std::to_string(i) + " is not a tensor");
      out.tensors[i] = toOutput(elements[i].toTensor());
    }
    return out;
  }

  InferOutput inferCpu(const InferInput& input) {
    torch::Tensor batch = hostBatch(input, false);
    return unpack(module_.forward({batch}));
  }

#ifdef FACEDET_WITH_CUDA
  // Each call runs on a stream of its own from LibTorch's pool, so concurrent batches overlap:
  // staging in pinned memory, asynchronous copies, channels-last half-precision input when fp16.
  InferOutput inferCuda(const InferInput& input) {
    c10::cuda::CUDAGuard deviceGuard(device_);
    c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, device_.index());
    c10::cuda::CUDAStreamGuard streamGuard(stream);
    torch::Tensor staged = hostBatch(input, true);
    const auto dtype = precision_ == "fp16" ? torch::kHalf : torch::kFloat;
    torch::Tensor x =
        staged.to(device_, dtype, /*non_blocking=*/true).contiguous(torch::MemoryFormat::ChannelsLast);
    auto value = module_.forward({x});
    if (!value.isTuple()) throw std::runtime_error("model did not return a tuple (loc, conf, landmarks)");
    const auto& elements = value.toTupleRef().elements();
    if (elements.size() != 3) throw std::runtime_error("model did not return 3 outputs");
    InferOutput out;
    std::array<torch::Tensor, 3> host;
    for (size_t i = 0; i < 3; ++i) {
      const auto& t = elements[i].toTensor();
      host[i] = torch::empty(t.sizes(), torch::TensorOptions().dtype(torch::kFloat).pinned_memory(true));
      host[i].copy_(t.to(torch::kFloat), /*non_blocking=*/true);
    }
    stream.synchronize();
    // `staged` must outlive the asynchronous upload: it is released only here, after the sync.
    staged.reset();
    for (size_t i = 0; i < 3; ++i) out.tensors[i] = toOutput(host[i]);
    return out;
  }
#endif

  torch::Device device_;
  std::string precision_;
  int threads_ = 0;
  torch::jit::Module module_;
};

}  // namespace

std::unique_ptr<Backend> createTorchBackend(const LoadOptions& options) {
  return std::make_unique<TorchBackend>(options);
}

void validateOutputs(const InferOutput& out, int64_t n) {
  static const char* names[3] = {"loc", "conf", "landmarks"};
  static const int64_t widths[3] = {4, 2, 10};
  const int64_t anchors = out.tensors[0].shape.size() == 3 ? out.tensors[0].shape[1] : -1;
  for (size_t i = 0; i < 3; ++i) {
    const auto& s = out.tensors[i].shape;
    if (s.size() != 3 || s[0] != n || s[1] != anchors || s[2] != widths[i]) {
      std::string got;
      for (auto d : s) got += (got.empty() ? "" : ",") + std::to_string(d);
      throw std::runtime_error(std::string("model output '") + names[i] + "' has shape [" + got +
                               "], expected [" + std::to_string(n) + ",A," + std::to_string(widths[i]) +
                               "] — is this a RetinaFace model exported by facedet?");
    }
  }
}

}  // namespace facedet
