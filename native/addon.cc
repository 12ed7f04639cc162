// SPDX-License-Identifier: MIT
// Module entry point: the Engine class and a few facts about this build.
#include <napi.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include "engine.h"
#include "onednn_conv.h"

namespace facedet {
namespace {

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), torch::cuda::is_available() ? torch::cuda::device_count() : 0);
}

// The CPU tensor cache's bytes (onednn_conv.h), for tests and diagnostics.
Napi::Value TensorCache(const Napi::CallbackInfo& info) {
  const TensorCacheStats stats = tensorCacheStats();
  auto out = Napi::Object::New(info.Env());
  const auto set = [&](const char* name, double value) {
    out.Set(name, Napi::Number::New(info.Env(), value));
  };
  set("floorBytes", stats.floor);
  out.Set("fixed", Napi::Boolean::New(info.Env(), stats.fixed));
  set("budgetBytes", stats.budget);
  set("cachedBytes", stats.cached);
  set("inUseBytes", stats.inUse);
  set("peakInUseBytes", stats.peakInUse);
  set("fresh", static_cast<double>(stats.fresh));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  Napi::Function engine = Engine::Define(env);
  data->engineConstructor = Napi::Persistent(engine);
  env.SetInstanceData(data);
  exports.Set("Engine", engine);

  auto build = Napi::Object::New(env);
  build.Set("torch", TORCH_VERSION);
  auto backends = Napi::Array::New(env);
  backends.Set(backends.Length(), "torch");
#ifdef FACEDET_WITH_TENSORRT
  backends.Set(backends.Length(), "tensorrt");
  build.Set("tensorrt", tensorRtVersion());
#endif
  build.Set("backends", backends);
  // oneDNN's version when it runs LibTorch's fp32 CPU convolutions directly (onednn_conv.h).
  if (!onednnVersion().empty()) build.Set("onednn", onednnVersion());
#ifdef FACEDET_WITH_CUDA
  build.Set("cuda", true);
#else
  build.Set("cuda", false);
#endif
  exports.Set("build", build);
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCount, "cudaDeviceCount"));
  exports.Set("tensorCache", Napi::Function::New(env, TensorCache, "tensorCache"));
  return exports;
}

}  // namespace
}  // namespace facedet

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return facedet::Init(env, exports); }

NODE_API_MODULE(facedet, InitAddon)
