// SPDX-License-Identifier: MIT
// LibTorch backend: a TorchScript RetinaFace on CPU or CUDA.
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>

#include "backend.h"
#include "onednn_conv.h"

#ifdef __linux__
#include <dlfcn.h>
#include <sched.h>
#endif

#ifdef FACEDET_WITH_CUDA
#include <ATen/cuda/CachingHostAllocator.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>

#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_set>
#endif

namespace facedet {
namespace {

// c10::Error messages carry a C++ backtrace; users need the first line only.
std::string torchMessage(const c10::Error& e) { return e.what_without_backtrace(); }

torch::Device parseDevice(const std::string& device) {
  if (device == "cpu") return torch::Device(torch::kCPU);
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
#ifdef FACEDET_WITH_CUDA
      throw ArgumentError("device '" + device +
                          "' was requested, but LibTorch sees no CUDA device: the addon was built with CUDA "
                          "(LibTorch " +
                          TORCH_VERSION +
                          "), but no NVIDIA GPU or driver is visible to this process. Use device 'cpu'.");
#else
      throw ArgumentError(
          "device '" + device +
          "' was requested, but LibTorch sees no CUDA device: this build of the addon links a "
          "CPU-only LibTorch (" +
          TORCH_VERSION + "). Rebuild against a CUDA LibTorch (Torch_DIR=...) or use device 'cpu'.");
#endif
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

// A function of LibTorch's OpenMP runtime (libgomp, or a runtime with libgomp's entry points), reached
// through LibTorch's own library, whose dependencies dlsym searches: the addon is not built with OpenMP, so
// ATen's inline parallel_for would run on the calling thread alone. nullptr where there is none.
void* openmpFunction(const char* name) {
#ifdef __linux__
  Dl_info where;
  if (dladdr(reinterpret_cast<void*>(&at::get_num_threads), &where) == 0 || where.dli_fname == nullptr)
    return nullptr;
  void* torchLibrary = dlopen(where.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (torchLibrary == nullptr) return nullptr;
  void* function = dlsym(torchLibrary, name);
  dlclose(torchLibrary);  // still loaded: the addon links it
  return function;
#else
  (void)name;
  return nullptr;
#endif
}

class TorchBackend : public Backend {
 public:
  explicit TorchBackend(const LoadOptions& options)
      : device_(parseDevice(options.device)),
        precision_(options.precision),
        float32Convs_(options.precision == "fp16"   ? options.float32Convolutions
                      : options.precision == "bf16" ? 1
                                                    : 0) {
    if (options.threads > 0) at::set_num_threads(options.threads);
    threads_ = at::get_num_threads();
    if (precision_ != "fp32" && precision_ != "fp16" && precision_ != "bf16" && precision_ != "int8") {
      throw ArgumentError("precision '" + precision_ + "' is not 'fp32', 'fp16', 'bf16' or 'int8'");
    }
    if (precision_ == "fp16" && device_.is_cpu()) {
      throw ArgumentError("precision 'fp16' needs a CUDA device; on CPU use 'fp32', 'bf16' or 'int8'");
    }
    if ((precision_ == "int8" || precision_ == "bf16") && !device_.is_cpu()) {
      throw ArgumentError("precision '" + precision_ + "' is a CPU precision; on CUDA use 'fp16' or 'fp32'");
    }
    if (precision_ == "int8") selectQuantizedEngine();
    if (options.uint8Input) {
      if (!device_.is_cpu()) throw ArgumentError("uint8 input (uint8Mean) is for the CPU");
      uint8Mean_ = options.uint8Mean;
      uint8Input_ = true;
    }
    {
      std::ifstream probe(options.modelPath, std::ios::binary);
      if (!probe) throw std::runtime_error("model file not found or unreadable: " + options.modelPath);
    }
    if (device_.is_cpu()) useCachingCpuAllocator();
    c10::InferenceMode guard;
    try {
      module_ = torch::jit::load(options.modelPath, device_);
      module_.eval();
      // A module exported unfrozen (the device-portable file) is frozen here, on its device and in
      // float32, so BatchNorm folds into the convolutions at full precision even for an fp16 run (folded
      // in fp16, MobileNet0.25's early BatchNorms, with running variances near 1e-5 and means near 1000,
      // lose everything: max |conf - CPU conf| 0.56, measured on an H200 and reproduced by rounding on the
      // CPU). An already frozen file has no parameters left and is used as it is.
      if (module_.parameters().size() > 0) module_ = torch::jit::freeze(module_);
      // bf16 on the CPU: the float32 graph, folded at full precision above, with its weights rounded to
      // bfloat16 (oneDNN's bf16 convolutions), but for the first convolution, which stays float32: it reads
      // the raw pixel values (BGR minus mean), and with its weights rounded to bf16 MobileNet0.25 lost
      // 0.7-1.6 AP points on wider-val (6 images at up to 1024 px), within 0.5 with it float32 (so did the
      // whole first stage float32, as fp16 on CUDA keeps it: no better). Outputs return as float32.
      if (precision_ == "bf16")
        setPrecision(module_.get_method("forward").graph(), torch::kBFloat16, float32Convs_);
      // fp32 and bf16 on the CPU: the convolutions run by oneDNN directly, the wide 3x3 fp32 ones with its
      // Winograd algorithm (onednn_conv.cc), where the build has it.
      if ((precision_ == "fp32" || precision_ == "bf16") && device_.is_cpu() && options.onednn)
        onednn_.apply(module_.get_method("forward").graph());
      if (device_.is_cpu()) vectorisedScoreSoftmax(module_.get_method("forward").graph());
#ifdef FACEDET_WITH_CUDA
      if (device_.is_cuda()) prepareCuda();
#endif
      // Loading and freezing freed ~100 MB of temporaries (ResNet50) into the tensor cache.
      if (device_.is_cpu()) trimCachingCpuAllocator();
    } catch (const c10::Error& e) {
      throw std::runtime_error("could not load TorchScript model " + options.modelPath + ": " +
                               torchMessage(e));
    }
  }

  InferOutput infer(const InferInput& input) override {
    const auto start = std::chrono::steady_clock::now();
    c10::InferenceMode guard;
    // OpenMP thread counts are per calling thread, so each of the engine's (long-lived) threads sets
    // its own, once: at::init_num_threads() also rebuilds LibTorch's pthreadpool, which costs more than
    // a small inference (measured: MobileNet 256² 32 ms with a call per batch, 5 ms without).
    static thread_local bool threadsInitialised = false;
    if (!threadsInitialised) {
      at::init_num_threads();
      // The thread beside the primary one (engine.cc) runs one thread and never starts a team.
      if (device_.is_cpu() && !input.besidePrimary) pinTeam();
      threadsInitialised = true;
    }
    if (device_.is_cpu())
      useThreads(input.besidePrimary                             ? 1
                 : input.threads > 0 && input.threads < threads_ ? input.threads
                                                                 : threads_);
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

  int concurrency() const override { return concurrency_; }

  BackendInfo info() const override {
    BackendInfo info;
    info.backend = "torch";
    info.device = device_.str();
    info.precision = precision_;
    info.threads = threads_;
    info.version = TORCH_VERSION;
    if (uint8Input_) info.input = "uint8-nhwc";
    info.onednn = onednn_.count();
    info.winograd = onednn_.winograd();
    return info;
  }

 private:
  // Quantised ops (quantized::conv2d, ...) dispatch on the process-wide quantised engine, and their
  // weights are packed for it when the file is loaded: select it first. The int8 file is exported and
  // checked with oneDNN (export_model.py --int8); QNNPACK is a fallback for LibTorch builds without it.
  static void selectQuantizedEngine() {
    const auto& supported = at::globalContext().supportedQEngines();
    const auto has = [&](at::QEngine e) {
      return std::find(supported.begin(), supported.end(), e) != supported.end();
    };
    if (has(at::QEngine::ONEDNN)) {
      at::globalContext().setQEngine(at::QEngine::ONEDNN);
    } else if (has(at::QEngine::QNNPACK)) {
      at::globalContext().setQEngine(at::QEngine::QNNPACK);
    } else {
      throw ArgumentError(
          std::string("precision 'int8' needs LibTorch's oneDNN or QNNPACK quantised engine, ") +
          "and this LibTorch (" + TORCH_VERSION + ") has neither; use precision 'fp32'");
    }
  }

  // Puts each thread of this thread's OpenMP team on its own CPU when the team covers every CPU the
  // process may use. Left to the scheduler, the team's worker often woke on its master's CPU and stayed
  // there, the two spinning against each other on one CPU while the other idled: measured on 2 vCPUs,
  // MobileNet0.25 512², whole 250 ms windows of back-to-back runs at 17-22 ms instead of 6.5-7. A
  // smaller team is left unpinned (other processes may run beside it), and so is any team when the
  // user chose a binding (OMP_PROC_BIND, OMP_PLACES, GOMP_CPU_AFFINITY, KMP_AFFINITY). Setting
  // OMP_PROC_BIND instead would pin libgomp's initial thread, the JS thread, and with it every thread it
  // starts later (ONNX Runtime's, libuv's, child processes).
  void pinTeam() const {
#ifdef __linux__
    for (const char* name : {"OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY"}) {
      if (std::getenv(name) != nullptr) return;
    }
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
    std::vector<int> cpus;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
    }
    if (threads_ < 2 || static_cast<size_t>(threads_) < cpus.size()) return;
    // The team is LibTorch's OpenMP runtime's.
    using Parallel = void (*)(void (*)(void*), void*, unsigned, unsigned);
    using ThreadNum = int (*)();
    const auto parallel = reinterpret_cast<Parallel>(openmpFunction("GOMP_parallel"));
    const auto threadNum = reinterpret_cast<ThreadNum>(openmpFunction("omp_get_thread_num"));
    if (parallel != nullptr && threadNum != nullptr) {
      struct Team {
        const std::vector<int>* cpus;
        ThreadNum threadNum;
      } team{&cpus, threadNum};
      // Runs on each thread of the team; sched_setaffinity(0) applies to the calling thread.
      parallel(
          [](void* data) {
            const auto* t = static_cast<const Team*>(data);
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET((*t->cpus)[static_cast<size_t>(t->threadNum()) % t->cpus->size()], &one);
            sched_setaffinity(0, sizeof(one), &one);
          },
          &team, static_cast<unsigned>(threads_), 0);
    }
#endif
  }

  // Sets how many threads this thread's OpenMP team runs the next batch with (infer's `threads`): the
  // OpenMP setting alone, read by ATen's parallel loops and by oneDNN (whose convolutions are planned per
  // thread count); at::set_num_threads would also rebuild LibTorch's pthreadpool on every change. Where
  // LibTorch's threads are not OpenMP's, every batch runs with all of them.
  void useThreads(int threads) const {
    static thread_local int current = 0;  // this thread's OpenMP setting (engines share the thread)
    if (current == 0) current = at::get_num_threads();
    if (threads == current) return;
    using SetNumThreads = void (*)(int);
    static const auto setNumThreads = reinterpret_cast<SetNumThreads>(openmpFunction("omp_set_num_threads"));
    if (setNumThreads == nullptr) return;
    setNumThreads(threads);
    current = threads;
  }

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
    torch::Tensor batch = input.bytes != nullptr ? fromBytes(input) : hostBatch(input, false);
    // Channels-last input lets oneDNN run its fast NHWC convolutions on the frozen graph: measured
    // 2-4x faster for MobileNet0.25 and 1.2-1.3x for ResNet50 than NCHW (int8 models convert themselves).
    // In bf16 too the input stays float32: the first convolution does (setPrecision casts after it).
    if (precision_ == "fp32" || precision_ == "bf16")
      batch = batch.contiguous(torch::MemoryFormat::ChannelsLast);
    return unpack(module_.forward({batch}));
  }

  // uint8 RGB NHWC in: BGR minus the mean, in float32, as a channels-last NCHW view, in one pass over the
  // pixels on this thread (≈ 0.1 ms at 512²): exactly what packBatch computes (float32(byte) - mean), so
  // fp32 outputs do not change. Against LibTorch's flip, to(float) and sub_ (sub_ of a 3-vector runs
  // element by element), MobileNet0.25's engine is 0.36 ms faster at 512², 0.9 ms at 1088x608, 1.1 ms at
  // 1024².
  torch::Tensor fromBytes(const InferInput& input) const {
    const int64_t pixels = input.n * input.h * input.w;
    torch::Tensor batch = torch::empty({input.n, input.h, input.w, 3}, torch::kFloat);
    const uint8_t* in = input.bytes;
    float* out = batch.data_ptr<float>();
    const float b = uint8Mean_[0], g = uint8Mean_[1], r = uint8Mean_[2];
    for (int64_t p = 0; p < pixels; ++p) {
      out[3 * p] = static_cast<float>(in[3 * p + 2]) - b;
      out[3 * p + 1] = static_cast<float>(in[3 * p + 1]) - g;
      out[3 * p + 2] = static_cast<float>(in[3 * p]) - r;
    }
    return batch.permute({0, 3, 1, 2});
  }

  // Sets the precision of a frozen RetinaFace graph: its tensor constants (the weights) in `dtype`, 4-D ones
  // channels-last, except those of the first `float32Convs` convolutions in graph order, which stay float32
  // and run on float32 input; a cast to `dtype` is inserted wherever a float32 value reaches a later
  // convolution.
  static void setPrecision(const std::shared_ptr<torch::jit::Graph>& graph, c10::ScalarType dtype,
                           int float32Convs) {
    using torch::jit::Block;
    using torch::jit::Node;
    using torch::jit::Value;
    const auto isConv = [](const Node* n) {
      return n->kind() == c10::aten::conv2d || n->kind() == c10::aten::_convolution ||
             n->kind() == c10::aten::convolution;
    };
    // Whether `n`, or a node in its blocks, satisfies `pred`.
    std::function<bool(const Node*, const std::function<bool(const Node*)>&)> anyInside =
        [&](const Node* n, const std::function<bool(const Node*)>& pred) {
          if (pred(n)) return true;
          for (const Block* b : n->blocks()) {
            for (const Node* inner : b->nodes()) {
              if (anyInside(inner, pred)) return true;
            }
          }
          return false;
        };
    std::unordered_set<const Node*> keep;
    for (Node* n : graph->nodes()) {
      if (float32Convs > 0 && !n->blocks().empty() && anyInside(n, isConv)) {
        throw std::runtime_error(
            "float32 convolutions in an fp16 model need convolutions outside control flow");
      }
      if (isConv(n) && static_cast<int>(keep.size()) < float32Convs) keep.insert(n);
    }
    std::function<void(Block*)> convert = [&](Block* block) {
      for (Node* node : block->nodes()) {
        for (Block* inner : node->blocks()) convert(inner);
        if (node->kind() != c10::prim::Constant || !node->hasAttribute(c10::attr::value)) continue;
        at::Tensor t;
        if (node->kindOf(c10::attr::value) == torch::jit::AttributeKind::t) {
          t = node->t(c10::attr::value);
        } else if (node->kindOf(c10::attr::value) == torch::jit::AttributeKind::ival &&
                   node->ival(c10::attr::value).isTensor()) {
          t = node->ival(c10::attr::value).toTensor();
        }
        if (!t.defined() || !t.is_floating_point()) continue;
        const auto& uses = node->output()->uses();
        const bool float32 =
            !uses.empty() && std::all_of(uses.begin(), uses.end(),
                                         [&](const torch::jit::Use& u) { return keep.count(u.user) > 0; });
        at::Tensor converted = t.to(float32 ? at::kFloat : dtype);
        if (converted.dim() == 4) converted = converted.contiguous(at::MemoryFormat::ChannelsLast);
        node->output()->inferTypeFrom(converted);
        node->t_(c10::attr::value, converted);
      }
    };
    convert(graph->block());
    if (keep.empty() || dtype == at::kFloat) return;
    std::unordered_set<const Value*> wide;
    for (Value* v : graph->inputs()) {
      if (v->type()->cast<c10::TensorType>()) wide.insert(v);
    }
    for (Node* n : graph->nodes()) {
      if (isConv(n) && keep.count(n) == 0) {
        Value* input = n->input(0);
        if (wide.count(input) > 0) {
          torch::jit::WithInsertPoint point(n);
          n->replaceInput(0, graph->insert(c10::aten::to, {input, dtype}));
        }
        continue;
      }
      if (n->kind() == c10::prim::Constant) continue;
      // Inputs, and the outer values that nodes inside its blocks use.
      const bool fromWide = anyInside(n, [&](const Node* m) {
        return std::any_of(m->inputs().begin(), m->inputs().end(),
                           [&](const Value* v) { return wide.count(v) > 0; });
      });
      if (fromWide || keep.count(n) > 0) {
        for (Value* o : n->outputs()) wide.insert(o);
      }
    }
  }

  // Rewrites the scores' aten::softmax(x, -1) ([n, A, 2]: validateOutputs checks) as
  // softmax(x.transpose(-1, -2), -2), transposed back (toOutput makes it contiguous). LibTorch 1.13's CPU
  // softmax over a last dimension runs row by row, 25 ns a row of two (MobileNet0.25: 0.28 ms of the
  // network's 4.6 at 512², 1.1 ms at 1024²); over another dimension it runs along the rows, vectorised
  // (0.03 and 0.09 ms). The same formula: results differ by float32 rounding (≤ 3e-8 measured).
  static void vectorisedScoreSoftmax(const std::shared_ptr<torch::jit::Graph>& graph) {
    std::vector<torch::jit::Node*> softmaxes;
    for (torch::jit::Node* n : graph->nodes()) {
      if (n->kind() != c10::aten::softmax || n->inputs().size() != 3) continue;
      const auto dim = torch::jit::toIValue(n->input(1));
      const auto dtype = torch::jit::toIValue(n->input(2));
      if (dim && dim->isInt() && dim->toInt() == -1 && dtype && dtype->isNone()) softmaxes.push_back(n);
    }
    for (torch::jit::Node* n : softmaxes) {
      torch::jit::WithInsertPoint point(n);
      torch::jit::Value* rows = graph->insert(c10::aten::transpose, {n->input(0), -1, -2});
      torch::jit::Value* scores = graph->insert(c10::aten::softmax, {rows, -2});
      torch::jit::Value* out = graph->insert(c10::aten::transpose, {scores, -1, -2});
      out->setType(n->output()->type());
      n->output()->replaceAllUsesWith(out);
      n->destroy();
    }
  }

#ifdef FACEDET_WITH_CUDA
  // ---- CUDA (built only against a CUDA LibTorch) ----------------------------------------------------
  //
  // Streams: the engine has FACEDET_CUDA_STREAMS streams of its own (default 1) and as many threads;
  // each call runs on one of them. More than one lets concurrent batches overlap (copies of one with
  // kernels of another), at the cost of one more set of cached buffers and of cuDNN plans per thread
  // (built, or tuned with FACEDET_CUDNN_BENCHMARK=1, on each thread's first call of each shape).
  //
  // Memory: LibTorch's caching allocator keeps the blocks of every shape it has seen. The TypeScript
  // detector pads H and W to coarse buckets on CUDA (a multiple of 128), so few shapes occur; should a
  // caller use many more than FACEDET_CUDA_MAX_SHAPES (default 64) distinct [n, h, w] anyway, the
  // unused cached device and pinned blocks are released and counting starts over.
  //
  // cuDNN autotuning (benchmark mode) is process-wide and left at LibTorch's default (off): it retunes
  // for every new shape, which costs seconds per shape and extra workspace memory when shapes vary.
  // FACEDET_CUDNN_BENCHMARK=1 turns it on (worth it with bucketed shapes and a warm-up per bucket; the
  // GPU benchmark measures both), =0 forces it off. cuDNN's plans (tuned or not) are cached per thread:
  // the engine runs its calls on as many long-lived threads as it has streams.
  void prepareCuda() {
    // The frozen graph holds the weights as constants: convert them to the run's dtype (but for the
    // model's leading float32 convolutions in fp16), and the convolution weights to channels-last like the
    // input, so cuDNN runs NHWC kernels without transposing.
    setPrecision(module_.get_method("forward").graph(), precision_ == "fp16" ? torch::kHalf : torch::kFloat,
                 float32Convs_);
    // fp32 means fp32: cuDNN's TF32 convolutions (LibTorch's default on Ampere and later GPUs) round
    // their inputs to 10 mantissa bits, as fp16 does: in fp32 on an H200 that moved scores by 2e-3 and
    // lost the same face as fp16, and it would undo an fp16 model's leading float32 convolutions.
    // Process-wide; FACEDET_CUDA_TF32=1 leaves TF32 on.
    if ((precision_ == "fp32" || float32Convs_ > 0) && envInt("FACEDET_CUDA_TF32", 0, 0, 1) == 0) {
      at::globalContext().setAllowTF32CuDNN(false);
    }
    // TorchScript's fuser (NNC) compiles fused kernels for each new input shape to merge a few elementwise
    // ops beside cuDNN's convolutions. Off unless FACEDET_CUDA_FUSER=1 (process-wide; CPU fusion is off
    // in LibTorch by default anyway).
    torch::jit::setTensorExprFuserEnabled(envInt("FACEDET_CUDA_FUSER", 0, 0, 1) == 1);
    if (const char* v = std::getenv("FACEDET_CUDNN_BENCHMARK");
        v && (std::string(v) == "1" || std::string(v) == "0")) {
      at::globalContext().setBenchmarkCuDNN(std::string(v) == "1");
    }
    maxShapes_ = static_cast<size_t>(envInt("FACEDET_CUDA_MAX_SHAPES", 64, 1, 1 << 20));
    const int streams = envInt("FACEDET_CUDA_STREAMS", 1, 1, 16);
    for (int i = 0; i < streams; ++i)
      freeStreams_.push_back(c10::cuda::getStreamFromPool(false, device_.index()));
    concurrency_ = streams;
  }

  // A stream borrowed for one call.
  class StreamLease {
   public:
    explicit StreamLease(TorchBackend& owner) : owner_(owner), stream_(take(owner)) {}
    ~StreamLease() {
      {
        std::lock_guard<std::mutex> lock(owner_.streamMutex_);
        owner_.freeStreams_.push_back(stream_);
      }
      owner_.streamAvailable_.notify_one();
    }
    StreamLease(const StreamLease&) = delete;
    StreamLease& operator=(const StreamLease&) = delete;
    c10::cuda::CUDAStream stream() const { return stream_; }

   private:
    static c10::cuda::CUDAStream take(TorchBackend& owner) {
      std::unique_lock<std::mutex> lock(owner.streamMutex_);
      owner.streamAvailable_.wait(lock, [&] { return !owner.freeStreams_.empty(); });
      c10::cuda::CUDAStream s = owner.freeStreams_.back();
      owner.freeStreams_.pop_back();
      return s;
    }
    TorchBackend& owner_;
    c10::cuda::CUDAStream stream_;
  };

  // Copies `bytes` with the intra-op threads (one thread moves a few GB/s; a 16 x 1024 x 1024 batch is
  // 200 MB).
  static void parallelCopy(void* dst, const void* src, size_t bytes) {
    constexpr int64_t kGrain = 1 << 20;
    at::parallel_for(0, static_cast<int64_t>(bytes), kGrain, [&](int64_t begin, int64_t end) {
      std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin,
                  static_cast<size_t>(end - begin));
    });
  }

  // One call: stage each image in pinned memory and queue its upload at once, so the upload of image i
  // overlaps the staging of image i + 1; convert to fp16 and channels-last on the GPU in one kernel; run;
  // bring the outputs back as float32 through pinned memory; one synchronisation at the end.
  InferOutput inferCuda(const InferInput& input) {
    StreamLease lease(*this);
    c10::cuda::CUDAGuard deviceGuard(device_);
    c10::cuda::CUDAStreamGuard streamGuard(lease.stream());
    const std::vector<int64_t> shape{input.n, input.c, input.h, input.w};
    const size_t imageBytes = static_cast<size_t>(input.c * input.h * input.w) * sizeof(float);
    // Pinned blocks come from LibTorch's caching host allocator: a non-blocking copy records an event on
    // the block, so the block is not handed out again before the copy has read it, even once `staged`
    // is released. `staged` is also kept until after the synchronisation below.
    torch::Tensor staged =
        torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat).pinned_memory(true));
    // Declared after `staged`, so destroyed before it: if anything below throws, the stream is drained
    // before the staging block can be reused (older LibTorch records the copy event only for the block's
    // first image).
    struct DrainOnError {
      c10::cuda::CUDAStream stream;
      bool armed = true;
      ~DrainOnError() {
        if (!armed) return;
        try {
          stream.synchronize();
        } catch (...) {
          // The error that brought us here is the one to report.
        }
      }
    } drain{lease.stream()};
    torch::Tensor uploaded = torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat).device(device_));
    char* host = static_cast<char*>(staged.data_ptr());
    for (int64_t i = 0; i < input.n; ++i) {
      const float* src = input.packed ? input.images[0] + i * (imageBytes / sizeof(float)) : input.images[i];
      parallelCopy(host + i * imageBytes, src, imageBytes);
      uploaded.select(0, i).copy_(staged.select(0, i), /*non_blocking=*/true);
    }
    // fp16 input, unless the model's first convolutions run in float32.
    const auto dtype = precision_ == "fp16" && float32Convs_ == 0 ? torch::kHalf : torch::kFloat;
    torch::Tensor x = torch::empty(shape, torch::TensorOptions().dtype(dtype).device(device_).memory_format(
                                              torch::MemoryFormat::ChannelsLast));
    x.copy_(uploaded);
    uploaded.reset();
    auto value = module_.forward({x});
    if (!value.isTuple()) throw std::runtime_error("model did not return a tuple (loc, conf, landmarks)");
    const auto& elements = value.toTupleRef().elements();
    if (elements.size() != 3) {
      throw std::runtime_error("model returned " + std::to_string(elements.size()) +
                               " outputs, expected 3 (loc, conf, landmarks)");
    }
    std::array<torch::Tensor, 3> pinned;
    for (size_t i = 0; i < 3; ++i) {
      if (!elements[i].isTensor())
        throw std::runtime_error("model output " + std::to_string(i) + " is not a tensor");
      const torch::Tensor t = elements[i].toTensor().to(torch::kFloat).contiguous();
      pinned[i] = torch::empty(t.sizes(), torch::TensorOptions().dtype(torch::kFloat).pinned_memory(true));
      pinned[i].copy_(t, /*non_blocking=*/true);
    }
    lease.stream().synchronize();
    drain.armed = false;
    staged.reset();
    // Hand JS ordinary memory: pinned blocks held by JS objects until they are garbage collected would
    // make the pinned pool grow with every batch in flight.
    InferOutput out;
    for (size_t i = 0; i < 3; ++i) {
      torch::Tensor plain = torch::empty(pinned[i].sizes(), torch::kFloat);
      parallelCopy(plain.data_ptr(), pinned[i].data_ptr(),
                   static_cast<size_t>(plain.numel()) * sizeof(float));
      out.tensors[i] = toOutput(plain);
    }
    noteShape(input);
    return out;
  }

  void noteShape(const InferInput& input) {
    std::lock_guard<std::mutex> lock(shapeMutex_);
    if (!shapes_.emplace(input.n, input.h, input.w).second || shapes_.size() <= maxShapes_) return;
    shapes_.clear();
    shapes_.emplace(input.n, input.h, input.w);
    c10::cuda::CUDACachingAllocator::emptyCache();
    // Deprecated in recent LibTorch (at::getHostAllocator(at::kCUDA)->empty_cache(), which older ones
    // lack), still present in 2.14.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    at::cuda::CachingHostAllocator_emptyCache();
#pragma GCC diagnostic pop
  }

  std::vector<c10::cuda::CUDAStream> freeStreams_;
  std::mutex streamMutex_;
  std::condition_variable streamAvailable_;
  std::set<std::tuple<int64_t, int64_t, int64_t>> shapes_;
  size_t maxShapes_ = 64;
  std::mutex shapeMutex_;
#endif

  torch::Device device_;
  std::string precision_;
  int float32Convs_ = 0;
  bool uint8Input_ = false;           // infer takes uint8 RGB NHWC input
  std::array<float, 3> uint8Mean_{};  // (B, G, R) subtracted from it
  int threads_ = 0;
  int concurrency_ = 1;
  OneDnnConvolutions onednn_;  // declared first: outlives the graph that calls it
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
