// SPDX-License-Identifier: MIT
#include "engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>

namespace facedet {
namespace {

constexpr int64_t kMaxBatch = 1024;
constexpr int64_t kMaxSide = 16384;

std::string typeName(const Napi::Value& v) {
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_int8_array:
        return "Int8Array";
      case napi_uint8_array:
        return "Uint8Array";
      case napi_uint8_clamped_array:
        return "Uint8ClampedArray";
      case napi_int16_array:
        return "Int16Array";
      case napi_uint16_array:
        return "Uint16Array";
      case napi_int32_array:
        return "Int32Array";
      case napi_uint32_array:
        return "Uint32Array";
      case napi_float32_array:
        return "Float32Array";
      case napi_float64_array:
        return "Float64Array";
      default:
        return "a typed array";
    }
  }
  if (v.IsBuffer()) return "Buffer";
  if (v.IsArray()) return "an array";
  if (v.IsNull()) return "null";
  if (v.IsUndefined()) return "undefined";
  if (v.IsString()) return "a string";
  if (v.IsNumber()) return "a number";
  if (v.IsBoolean()) return "a boolean";
  if (v.IsFunction()) return "a function";
  return "an object";
}

bool isFloat32Array(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
}

std::string shapeString(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

// A number as JS prints it, near enough for a message: "3", "1.5", "NaN", "Infinity".
std::string numberText(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  char text[32];
  double back = 0;
  for (int digits = 1; digits <= 17; ++digits) {  // the shortest text that reads back as x
    std::snprintf(text, sizeof(text), "%.*g", digits, x);
    if (std::sscanf(text, "%lf", &back) == 1 && back == x) break;
  }
  return text;
}

// Reads `shape` as `rank` positive integers, naming the argument in every error.
std::vector<int64_t> readShape(Napi::Env env, const Napi::Value& value, size_t rank, const char* expected) {
  const std::string what = std::string("infer(shape): expected ") + expected;
  if (!value.IsArray()) throw Napi::TypeError::New(env, what + ", got " + typeName(value));
  auto array = value.As<Napi::Array>();
  if (array.Length() != rank) {
    throw Napi::RangeError::New(env, what + ", got " + std::to_string(array.Length()) + " dimension(s)");
  }
  std::vector<int64_t> dims;
  for (uint32_t i = 0; i < rank; ++i) {
    Napi::Value d = array.Get(i);
    if (!d.IsNumber()) {
      throw Napi::TypeError::New(env, what + ", got " + typeName(d) + " at index " + std::to_string(i));
    }
    const double x = d.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(x) || x != std::floor(x) || x < 1) {
      throw Napi::RangeError::New(env, what + ", got " + numberText(x) + " at index " + std::to_string(i));
    }
    dims.push_back(static_cast<int64_t>(x));
  }
  return dims;
}

void checkDims(Napi::Env env, int64_t n, int64_t c, int64_t h, int64_t w) {
  if (c != 3) throw Napi::RangeError::New(env, "infer(shape): channels must be 3, got " + std::to_string(c));
  if (n > kMaxBatch) {
    throw Napi::RangeError::New(env, "infer(shape): batch size " + std::to_string(n) +
                                         " is over the limit of " + std::to_string(kMaxBatch));
  }
  if (h > kMaxSide || w > kMaxSide) {
    throw Napi::RangeError::New(env, "infer(shape): height and width must be at most " +
                                         std::to_string(kMaxSide) + ", got " + std::to_string(h) + "x" +
                                         std::to_string(w));
  }
}

Napi::Object backendInfoObject(Napi::Env env, const BackendInfo& info) {
  auto o = Napi::Object::New(env);
  o.Set("backend", info.backend);
  o.Set("device", info.device);
  o.Set("precision", info.precision);
  o.Set("threads", info.threads);
  o.Set("version", info.version);
  o.Set("input", info.input);
  o.Set("onednn", info.onednn);
  o.Set("winograd", info.winograd);
  return o;
}

// Copies a finished output tensor into JS without a copy: the ArrayBuffer points at the tensor's
// memory and its finaliser drops the last reference.
Napi::Float32Array outputArray(Napi::Env env, const OutputTensor& t) {
  auto* owner = new std::shared_ptr<void>(t.owner);
  const size_t count = t.size();
  auto buffer = Napi::ArrayBuffer::New(
      env, const_cast<float*>(t.data), count * sizeof(float),
      [](Napi::Env, void*, std::shared_ptr<void>* hint) { delete hint; }, owner);
  return Napi::Float32Array::New(env, count, buffer, 0);
}

Napi::Array shapeArray(Napi::Env env, const std::vector<int64_t>& shape) {
  auto a = Napi::Array::New(env, shape.size());
  for (uint32_t i = 0; i < shape.size(); ++i) a.Set(i, Napi::Number::New(env, static_cast<double>(shape[i])));
  return a;
}

// Rejects with a RangeError for bad arguments found by a backend, an Error otherwise.
struct Failure {
  bool failed = false;
  bool argument = false;
  std::string message;
  // Runs `work`, recording any exception: backends report bad arguments as ArgumentError.
  template <typename Work>
  void capture(Work&& work, const char* unknown) {
    try {
      work();
    } catch (const ArgumentError& e) {
      record(e.what(), true);
    } catch (const std::exception& e) {
      record(e.what(), false);
    } catch (...) {
      record(unknown, false);
    }
  }
  void record(std::string what, bool isArgument) {
    failed = true;
    argument = isArgument;
    message = std::move(what);
  }
  Napi::Value value(Napi::Env env) const {
    return argument ? Napi::RangeError::New(env, message).Value() : Napi::Error::New(env, message).Value();
  }
};

// The thread of the process's CPU LibTorch engines (see LoadWorker::load), and the one beside it; gone
// with the last of them.
std::shared_ptr<Executor> sharedCpuExecutor(bool beside) {
  static std::mutex mutex;
  static std::weak_ptr<Executor> shared[2];
  std::lock_guard<std::mutex> lock(mutex);
  std::shared_ptr<Executor> executor = shared[beside].lock();
  if (!executor) {
    executor = std::make_shared<Executor>(1);
    shared[beside] = executor;
  }
  return executor;
}

// Batches on the primary CPU thread, running or waiting for it. A batch of one thread (the detector's
// share for the network under load on a small machine) that finds it busy runs on the thread beside it
// instead, which never starts an OpenMP team (one thread: libgomp keeps spinning between parallel
// regions only while its threads are no more than the CPUs).
std::atomic<int> cpuPrimaryBatches{0};

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, LoadOptions options)
      : Napi::AsyncWorker(env, "facedet:load"), options_(std::move(options)), deferred_(env) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    failure_.capture([this] { model_ = load(options_); }, "unknown error while loading the model");
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (failure_.failed) {
      deferred_.Reject(failure_.value(env));
      return;
    }
    auto* data = env.GetInstanceData<AddonData>();
    auto* raw = new std::shared_ptr<LoadedModel>(std::move(model_));
    auto external = Napi::External<std::shared_ptr<LoadedModel>>::New(env, raw);
    try {
      deferred_.Resolve(data->engineConstructor.New({external}));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
    delete raw;
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  // CPU batches run one at a time on one thread (LibTorch parallelises inside a batch), and every CPU
  // LibTorch engine of the process runs on the same thread, loading included. LibTorch's OpenMP keeps a
  // team of workers per calling thread, and once the process has more OpenMP threads than CPUs, libgomp
  // stops spinning between parallel regions: each of the network's many small regions then waits for
  // sleeping workers to wake. Measured on 2 CPUs, MobileNet0.25 512²: loaded on a libuv thread (whose
  // team outlives the load) 12-16 ms with 1.2 CPUs busy; loaded and run on one thread 7-10 ms.
  // GPU backends overlap batches on their own streams or contexts: one thread per stream or context
  // (FACEDET_CUDA_STREAMS, FACEDET_TRT_CONTEXTS), the engine's own. Threads are few and long-lived
  // because LibTorch keeps per-thread state (OpenMP teams on CPU, cuDNN execution plans on CUDA).
  static std::shared_ptr<LoadedModel> load(const LoadOptions& options) {
    auto model = std::make_shared<LoadedModel>();
    const bool cpu = options.backend == "torch" && options.device == "cpu";
    model->executor = cpu ? sharedCpuExecutor(false) : std::make_shared<Executor>(1);
    if (cpu) model->beside = sharedCpuExecutor(true);
    model->executor->run([&] {
#ifdef FACEDET_WITH_TENSORRT
      if (options.backend == "tensorrt") {
        model->backend = createTensorRtBackend(options);
        return;
      }
#endif
      model->backend = createTorchBackend(options);
    });
    if (cpu) return model;
    model->executor->grow(static_cast<size_t>(std::max(1, model->backend->concurrency())));
    return model;
  }

  LoadOptions options_;
  std::shared_ptr<LoadedModel> model_;
  Failure failure_;
  Napi::Promise::Deferred deferred_;
};

class InferWorker : public Napi::AsyncWorker {
 public:
  InferWorker(Napi::Env env, Engine* engine, std::shared_ptr<LoadedModel> model, InferInput input,
              Napi::Value keepAlive)
      : Napi::AsyncWorker(env, "facedet:infer"),
        engine_(engine),
        model_(std::move(model)),
        input_(std::move(input)),
        deferred_(env) {
    // The input's memory is read on the worker thread: hold the JS arrays until the batch is done.
    keepAlive_ = Napi::Persistent(keepAlive.As<Napi::Object>());
    engine_->Ref();
  }
  ~InferWorker() override { engine_->Unref(); }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    failure_.capture(
        [this] {
          const auto run = [this] { output_ = model_->backend->infer(input_); };
          if (!model_->beside) return model_->executor->run(run);
          // A CPU batch (see cpuPrimaryBatches): of one thread, beside a busy primary thread.
          int idle = 0;
          if (input_.threads == 1 && !cpuPrimaryBatches.compare_exchange_strong(idle, 1)) {
            input_.besidePrimary = true;
            return model_->beside->run(run);
          }
          if (input_.threads != 1) cpuPrimaryBatches.fetch_add(1);
          struct Done {
            ~Done() { cpuPrimaryBatches.fetch_sub(1); }
          } done;
          model_->executor->run(run);
        },
        "unknown error during inference");
  }

  void OnOK() override {
    Napi::Env env = Env();
    keepAlive_.Reset();
    engine_->batchFinished();
    if (failure_.failed) {
      deferred_.Reject(failure_.value(env));
      return;
    }
    static const char* names[3] = {"loc", "conf", "landmarks"};
    auto result = Napi::Object::New(env);
    auto shapes = Napi::Object::New(env);
    for (size_t i = 0; i < 3; ++i) {
      result.Set(names[i], outputArray(env, output_.tensors[i]));
      shapes.Set(names[i], shapeArray(env, output_.tensors[i].shape));
    }
    result.Set("shapes", shapes);
    result.Set("inferMs", output_.inferMs);
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error& e) override {
    keepAlive_.Reset();
    engine_->batchFinished();
    deferred_.Reject(e.Value());
  }

 private:
  Engine* engine_;
  std::shared_ptr<LoadedModel> model_;
  InferInput input_;
  InferOutput output_;
  Failure failure_;
  Napi::ObjectReference keepAlive_;
  Napi::Promise::Deferred deferred_;
};

std::string optionalString(Napi::Env env, const Napi::Object& o, const char* key,
                           const std::string& fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsString()) {
    throw Napi::TypeError::New(
        env, std::string("Engine.load(options.") + key + "): expected a string, got " + typeName(v));
  }
  return v.As<Napi::String>().Utf8Value();
}

int optionalInt(Napi::Env env, const Napi::Object& o, const char* key, int fallback, int min, int max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) {
    throw Napi::TypeError::New(
        env, std::string("Engine.load(options.") + key + "): expected an integer, got " + typeName(v));
  }
  const double x = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x) || x != std::floor(x) || x < min || x > max) {
    throw Napi::RangeError::New(env, std::string("Engine.load(options.") + key +
                                         "): expected an integer between " + std::to_string(min) + " and " +
                                         std::to_string(max) + ", got " + numberText(x));
  }
  return static_cast<int>(x);
}

}  // namespace

Napi::Function Engine::Define(Napi::Env env) {
  return DefineClass(env, "Engine",
                     {
                         StaticMethod<&Engine::Load>("load"),
                         InstanceMethod<&Engine::Infer>("infer"),
                         InstanceMethod<&Engine::Dispose>("dispose"),
                         InstanceMethod<&Engine::Info>("info"),
                         InstanceAccessor<&Engine::Disposed>("disposed"),
                     });
}

Engine::Engine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Engine>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "Engine cannot be constructed directly: use Engine.load(options)");
  }
  model_ = *info[0].As<Napi::External<std::shared_ptr<LoadedModel>>>().Data();
  info_ = model_->backend->info();
}

Napi::Value Engine::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray() || info[0].IsFunction()) {
    throw Napi::TypeError::New(env, "Engine.load(options): expected an object, got " +
                                        (info.Length() < 1 ? std::string("nothing") : typeName(info[0])));
  }
  auto o = info[0].As<Napi::Object>();
  LoadOptions options;
  options.modelPath = optionalString(env, o, "modelPath", "");
  if (options.modelPath.empty()) {
    throw Napi::TypeError::New(env, "Engine.load(options.modelPath): expected the path of a model file");
  }
  options.backend = optionalString(env, o, "backend", options.backend);
  options.device = optionalString(env, o, "device", options.device);
  options.precision = optionalString(env, o, "precision", options.precision);
  options.cacheDir = optionalString(env, o, "cacheDir", options.cacheDir);
  options.threads = optionalInt(env, o, "threads", 0, 0, 1024);
  options.maxBatch = optionalInt(env, o, "maxBatch", options.maxBatch, 1, static_cast<int>(kMaxBatch));
  options.maxSize = optionalInt(env, o, "maxSize", options.maxSize, 32, static_cast<int>(kMaxSide));
  options.float32Convolutions = optionalInt(env, o, "float32Convolutions", 0, 0, 1 << 20);
  const Napi::Value onednn = o.Get("onednn");
  if (!onednn.IsUndefined()) {
    if (!onednn.IsBoolean()) {
      throw Napi::TypeError::New(env,
                                 "Engine.load(options.onednn): expected a boolean, got " + typeName(onednn));
    }
    options.onednn = onednn.As<Napi::Boolean>().Value();
  }
  const Napi::Value mean = o.Get("uint8Mean");
  if (!mean.IsUndefined()) {
    const char* what = "Engine.load(options.uint8Mean): expected an array of 3 numbers between 0 and 255";
    if (!mean.IsArray() || mean.As<Napi::Array>().Length() != 3) throw Napi::TypeError::New(env, what);
    for (uint32_t i = 0; i < 3; ++i) {
      const Napi::Value v = mean.As<Napi::Array>().Get(i);
      const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(x >= 0 && x <= 255)) throw Napi::TypeError::New(env, what);
      options.uint8Mean[i] = static_cast<float>(x);
    }
    options.uint8Input = true;
  }
  if (options.backend != "torch" && options.backend != "tensorrt") {
    throw Napi::RangeError::New(
        env, "Engine.load(options.backend): expected 'torch' or 'tensorrt', got '" + options.backend + "'");
  }
#ifndef FACEDET_WITH_TENSORRT
  if (options.backend == "tensorrt") {
    throw Napi::Error::New(env,
                           "Engine.load(options.backend): this build of the addon has no TensorRT backend "
                           "(CMake did not find TensorRT when it was built)");
  }
#endif
  auto* worker = new LoadWorker(env, std::move(options));
  auto promise = worker->promise();
  worker->Queue();
  return promise;
}

// A packed batch: its shape [n, c, h, w] (from `shape`) into `input`, the array's length checked against it.
template <typename T>
const T* readPacked(Napi::Env env, const Napi::TypedArrayOf<T>& array, const Napi::Value& shape,
                    const char* unit, InferInput& input) {
  auto dims = readShape(env, shape, 4, "[n, c, h, w] of positive integers");
  input.n = dims[0], input.c = dims[1], input.h = dims[2], input.w = dims[3];
  checkDims(env, input.n, input.c, input.h, input.w);
  const size_t expected = static_cast<size_t>(input.n * input.c * input.h * input.w);
  if (array.ArrayBuffer().IsDetached())
    throw Napi::TypeError::New(env, "infer(input): the buffer is detached");
  if (array.ElementLength() != expected) {
    throw Napi::RangeError::New(env, "infer(input): length " + std::to_string(array.ElementLength()) +
                                         " does not match shape " + shapeString(dims) + " (" +
                                         std::to_string(expected) + " " + unit + ")");
  }
  input.packed = true;
  return array.Data();
}

Napi::Value Engine::Infer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposed_) throw Napi::Error::New(env, "infer(): the engine is disposed");
  Napi::Value data = info[0];
  InferInput input;
  if (info_.input == "uint8-nhwc") {
    // The decoded pixels, packed: [n, h, w, 3] bytes, with the shape given as [n, 3, h, w].
    if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      throw Napi::TypeError::New(env, "infer(input): this engine takes a Uint8Array (RGB, NHWC), got " +
                                          (info.Length() < 1 ? std::string("nothing") : typeName(data)));
    }
    input.bytes = readPacked(env, data.As<Napi::Uint8Array>(), info[1], "bytes", input);
    if (input.c != 3) throw Napi::RangeError::New(env, "infer(shape): a Uint8Array input has 3 channels");
  } else if (isFloat32Array(data)) {
    input.images.push_back(readPacked(env, data.As<Napi::Float32Array>(), info[1], "floats", input));
  } else if (data.IsArray()) {
    auto list = data.As<Napi::Array>();
    if (list.Length() == 0) throw Napi::RangeError::New(env, "infer(input): the batch is empty");
    auto dims = readShape(env, info[1], 3, "[c, h, w] of positive integers for an array of images");
    input.n = list.Length(), input.c = dims[0], input.h = dims[1], input.w = dims[2];
    checkDims(env, input.n, input.c, input.h, input.w);
    const size_t expected = static_cast<size_t>(input.c * input.h * input.w);
    input.packed = false;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Value item = list.Get(i);
      const std::string name = "infer(input[" + std::to_string(i) + "])";
      if (!isFloat32Array(item))
        throw Napi::TypeError::New(env, name + ": expected a Float32Array, got " + typeName(item));
      auto array = item.As<Napi::Float32Array>();
      if (array.ArrayBuffer().IsDetached())
        throw Napi::TypeError::New(env, name + ": the buffer is detached");
      if (array.ElementLength() != expected) {
        throw Napi::RangeError::New(env, name + ": length " + std::to_string(array.ElementLength()) +
                                             " does not match shape " + shapeString(dims) + " (" +
                                             std::to_string(expected) + " floats)");
      }
      input.images.push_back(array.Data());
    }
  } else {
    throw Napi::TypeError::New(env,
                               "infer(input): expected a Float32Array or an array of Float32Array, got " +
                                   (info.Length() < 1 ? std::string("nothing") : typeName(data)));
  }
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    const int most = std::max(1, info_.threads);
    if (!info[2].IsNumber())
      throw Napi::TypeError::New(env, "infer(threads): expected an integer, got " + typeName(info[2]));
    const double x = info[2].As<Napi::Number>().DoubleValue();
    if (!std::isfinite(x) || x != std::floor(x) || x < 1 || x > most) {
      throw Napi::RangeError::New(env, "infer(threads): expected an integer between 1 and " +
                                           std::to_string(most) + ", got " + numberText(x));
    }
    input.threads = static_cast<int>(x);
  }
  ++inFlight_;
  auto* worker = new InferWorker(env, this, model_, std::move(input), data);
  auto promise = worker->promise();
  worker->Queue();
  return promise;
}

void Engine::batchFinished() {
  --inFlight_;
  releaseIfIdle();
}

void Engine::releaseIfIdle() {
  if (!disposed_ || inFlight_ > 0) return;
  model_.reset();
  for (auto& waiter : disposeWaiters_) waiter.Resolve(Env().Undefined());
  disposeWaiters_.clear();
}

Napi::Value Engine::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto deferred = Napi::Promise::Deferred::New(env);
  if (disposed_ && inFlight_ == 0) {
    deferred.Resolve(env.Undefined());
    return deferred.Promise();
  }
  disposed_ = true;
  disposeWaiters_.push_back(deferred);
  releaseIfIdle();
  return deferred.Promise();
}

Napi::Value Engine::Info(const Napi::CallbackInfo& info) { return backendInfoObject(info.Env(), info_); }

Napi::Value Engine::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), disposed_);
}

}  // namespace facedet
