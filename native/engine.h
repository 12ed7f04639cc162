// SPDX-License-Identifier: MIT
// The JS class `Engine`: a loaded model. `Engine.load(options)` and `engine.infer(...)` each run one
// AsyncWorker and return a Promise; arguments are copied into plain structs on the main thread.
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "backend.h"
#include "executor.h"

namespace facedet {

// A loaded model and the threads its batches run on (shared by the process's CPU LibTorch engines).
// The executor is declared last so it is released (its threads joined, when no other engine holds it)
// before the backend.
struct LoadedModel {
  std::unique_ptr<Backend> backend;
  std::shared_ptr<Executor> executor;
  // CPU LibTorch engines: the thread for a one-thread batch while the primary thread is busy (engine.cc).
  std::shared_ptr<Executor> beside;
};

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Engine(const Napi::CallbackInfo& info);

  // Called by InferWorker when a batch is done (main thread).
  void batchFinished();

 private:
  static Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Infer(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  void releaseIfIdle();

  std::shared_ptr<LoadedModel> model_;
  BackendInfo info_;
  bool disposed_ = false;
  int inFlight_ = 0;
  std::vector<Napi::Promise::Deferred> disposeWaiters_;
};

// Per-environment data: the constructor, so that Engine.load can create instances from a worker's OnOK.
struct AddonData {
  Napi::FunctionReference engineConstructor;
};

}  // namespace facedet
