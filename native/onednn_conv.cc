// SPDX-License-Identifier: MIT
// LibTorch's float32 and bfloat16 CPU convolutions run by oneDNN directly (see onednn_conv.h).
//
// Why, measured on 2 Zen 5 CPUs (AVX-512), batch 1, channels-last:
// - oneDNN's Winograd F(4x4, 3x3) does a 3x3 convolution with 4x fewer multiplications than the direct
//   algorithm, which already runs at 490-520 GFLOP/s, close to the CPUs' peak (ONNX Runtime is no faster).
//   Alone, with the reorders to and from its blocked layout included: 2.0-2.6x faster for ResNet50's and
//   the FPN's 3x3 convolutions (128-512 channels at 16²-64²), 1.5x for 64 channels at 128², 1.3x for 64
//   channels at 64², no faster below 64 channels (MobileNet0.25's SSH); in the whole network, only from
//   64² positions on (see makePlan). On 2 Zen 4 CPUs (AVX-512 on 256-bit units: the direct algorithm at
//   half that rate) MobileNet0.25's 64- and 32-channel ones at stride 8 pay too (see apply). Its results
//   differ from the direct algorithm's by float32 rounding only.
// - The others: LibTorch 1.13 reorders the weights into oneDNN's layout on every call (a 512x512x3x3
//   stride-2 convolution: 6.0 ms in LibTorch, 2.3 ms in oneDNN alone), and runs some small ones with its
//   slow reference loop; here the weights are reordered once per layout and every shape gets its
//   primitive once.
#include "onednn_conv.h"

#include "backend.h"

#ifdef FACEDET_WITH_ONEDNN
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <unordered_map>
#endif

namespace facedet {

#ifdef FACEDET_WITH_ONEDNN
namespace {

using dnnl::memory;
using Tag = dnnl::memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

dnnl::engine& cpuEngine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// How one convolution runs for one input shape [n, h, w] with one number of threads.
struct Plan {
  bool onednn = false;      // false: oneDNN has no kernel worth taking; LibTorch runs it
  bool winograd = false;    // Winograd: src and dst in oneDNN's blocked layouts, reordered from and to NHWC
  bool leakyAfter = false;  // Winograd with a LeakyReLU, which it cannot fuse: run on the NHWC output
  dnnl::convolution_forward conv;
  dnnl::reorder toBlocked, fromBlocked;
  memory::desc src, dst;
  memory weights;  // in the layout the kernel wants
  // Each run's own scratch memory (oneDNN's user scratchpad mode): a plan may run on two threads at
  // once, and the library's shared scratchpad then mixed their intermediate results.
  memory::desc scratch, toBlockedScratch, fromBlockedScratch;
};

// One run's scratch memory for `desc` (none when it needs none), through LibTorch's allocator.
struct Scratch {
  at::Tensor buffer;
  memory mem;
  explicit Scratch(const memory::desc& desc) {
    if (desc.get_size() == 0) return;
    buffer = at::empty({static_cast<int64_t>(desc.get_size())}, at::kByte);
    mem = memory(desc, cpuEngine(), buffer.data_ptr());
  }
  void add(std::unordered_map<int, memory>* args) const {
    if (mem) args->emplace(DNNL_ARG_SCRATCHPAD, mem);
  }
};

struct Convolution {
  at::Tensor weight;              // [oc, ic / groups, kh, kw] float32 or bfloat16, contiguous
  at::Tensor bias;                // [oc] float32 (oneDNN's)
  at::Tensor libtorchBias;        // in the weights' type, or undefined (LibTorch's fallback)
  memory::data_type type = kF32;  // of the weights, the input and the output
  std::array<int64_t, 2> stride{}, padding{};
  int64_t groups = 1;
  bool winograd = false;  // a candidate for Winograd
  bool activation = false;
  float slope = 0;  // LeakyReLU's negative slope (0: ReLU)
  std::mutex mutex;
  std::map<std::array<int64_t, 4>, std::shared_ptr<const Plan>> plans;  // by [n, h, w, threads]
  // Weights by layout: shapes whose kernels want the same layout share them.
  std::vector<std::pair<memory::desc, memory>> weights;

  int64_t inputs() const { return weight.size(1) * groups; }
  int64_t outputs() const { return weight.size(0); }
  int64_t outputSize(int64_t in, int axis) const {
    return (in + 2 * padding[axis] - weight.size(2 + axis)) / stride[axis] + 1;
  }

  // Per thread count too: oneDNN fixes a primitive's threads when it makes it (infer's `threads`).
  std::shared_ptr<const Plan> plan(int64_t n, int64_t h, int64_t w) {
    std::lock_guard<std::mutex> lock(mutex);
    auto& slot = plans[{n, h, w, static_cast<int64_t>(at::get_num_threads())}];
    if (!slot) slot = makePlan(n, h, w);
    return slot;
  }

  at::Tensor libtorch(const at::Tensor& x) const {
    at::Tensor y =
        at::conv2d(x, weight, libtorchBias, {stride[0], stride[1]}, {padding[0], padding[1]}, {1, 1}, groups);
    if (!activation) return y;
    return slope == 0 ? at::relu_(y) : at::leaky_relu_(y, slope);
  }

 private:
  memory::dims weightDims() const {
    const memory::dims k{weight.size(2), weight.size(3)};
    if (groups == 1) return {outputs(), weight.size(1), k[0], k[1]};
    return {groups, outputs() / groups, weight.size(1), k[0], k[1]};
  }

  std::shared_ptr<const Plan> makePlan(int64_t n, int64_t h, int64_t w) {
    auto plan = std::make_shared<Plan>();
    const memory::dims src{n, inputs(), h, w}, dst{n, outputs(), outputSize(h, 0), outputSize(w, 1)};
    const memory::dims strides{stride[0], stride[1]}, pads{padding[0], padding[1]};
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (activation) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, slope, 0.f);
      attr.set_post_ops(ops);
    }
    const auto describe = [&](dnnl::algorithm algorithm, Tag layout) {
      const dnnl::convolution_forward::desc desc(
          dnnl::prop_kind::forward_inference, algorithm, memory::desc(src, type, layout),
          memory::desc(weightDims(), type, Tag::any), memory::desc({outputs()}, kF32, Tag::x),
          memory::desc(dst, type, layout), strides, pads, pads);
      return dnnl::convolution_forward::primitive_desc(desc, attr, cpuEngine());
    };
    dnnl::convolution_forward::primitive_desc pd;
    // Winograd's transformed weights are 4x the direct ones: in a whole network (caches cold, every
    // layer once) it pays from 64² positions on (ResNet50 at 512² and 1024², per layer: 1.1-1.8x faster
    // at 64²-128², 1.3x for 64 channels at 256²) and loses below (0.7-1.1x at 32², 0.24-0.7x at 16²).
    // oneDNN's Winograd kernels fuse ReLU but not LeakyReLU (MobileNet0.25's FPN and SSH): that one runs
    // after the reorder back to NHWC (see apply for what it gains).
    if (winograd && h * w >= 64 * 64) {
      const bool leaky = activation && slope != 0;
      const dnnl::primitive_attr fused = attr;  // a handle: `attr` is replaced, never changed
      if (leaky) {
        dnnl::primitive_attr plain;
        plain.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        attr = plain;
      }
      try {
        pd = describe(dnnl::algorithm::convolution_winograd, Tag::any);
        plan->winograd = true;
        plan->leakyAfter = leaky;
      } catch (const dnnl::error&) {
        // no Winograd kernel for this shape on this CPU: the direct algorithm
        attr = fused;
      }
    }
    if (!plan->winograd) {
      try {
        pd = describe(dnnl::algorithm::convolution_direct, Tag::nhwc);
      } catch (const dnnl::error&) {
        return plan;
      }
      // oneDNN's reference loops are far slower than LibTorch's fallbacks.
      if (std::strncmp(pd.impl_info_str(), "ref", 3) == 0) return plan;
    }
    plan->onednn = true;
    plan->conv = dnnl::convolution_forward(pd);
    plan->src = pd.src_desc();
    plan->dst = pd.dst_desc();
    plan->scratch = pd.scratchpad_desc();
    if (plan->winograd) {
      dnnl::primitive_attr reorderAttr;
      reorderAttr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      const dnnl::reorder::primitive_desc to(cpuEngine(), memory::desc(src, type, Tag::nhwc), cpuEngine(),
                                             plan->src, reorderAttr);
      const dnnl::reorder::primitive_desc from(cpuEngine(), plan->dst, cpuEngine(),
                                               memory::desc(dst, type, Tag::nhwc), reorderAttr);
      plan->toBlocked = dnnl::reorder(to);
      plan->fromBlocked = dnnl::reorder(from);
      plan->toBlockedScratch = to.scratchpad_desc();
      plan->fromBlockedScratch = from.scratchpad_desc();
    }
    const memory::desc layout = pd.weights_desc();
    for (const auto& [desc, prepared] : weights) {
      if (desc == layout) plan->weights = prepared;
    }
    if (!plan->weights) {
      memory user(memory::desc(weightDims(), type, groups == 1 ? Tag::oihw : Tag::goihw), cpuEngine(),
                  weight.data_ptr());
      plan->weights = memory(layout, cpuEngine());
      dnnl::stream stream(cpuEngine());
      dnnl::reorder(user, plan->weights).execute(stream, user, plan->weights);
      stream.wait();
      weights.emplace_back(layout, plan->weights);
    }
    return plan;
  }
};

// LibTorch's CPU tensors of 1 MiB and more come from here: blocks freed by one inference are kept for the
// next. With the default allocator, every large activation is fresh memory from the kernel (glibc maps
// blocks over 32 MiB, and those over 64 MiB in a worker thread's arena, anew each time) that the kernel
// zeroes page by page. ResNet50 at 1024² (load and 5 runs, in alternation): 1.1-1.2 million page faults and
// 680-740 ms a run with the default allocator, 0.29-0.33 million and 445-490 ms with this one (530-550 ms
// with glibc told to keep its memory instead, process-wide). The tensors of one input shape repeat run after
// run, so the cache serves them all if it may keep every block of a run: a block serves a tensor of its
// size or up to 25 % smaller, so a run's blocks add up to more than it has in use at once (MobileNet0.25
// 1.5-1.7x, ResNet50 2.3-3.1x, up to 2.2 GiB for ResNet50 at 4 x 1024²). So it keeps up to 1 GiB or 4x the
// most in use at once, whichever is more (with a fixed 1 GiB, MobileNet0.25 at 4 x 2048², 1.06 GiB of
// blocks, got a fresh one every run: 1.25x slower); FACEDET_CPU_TENSOR_CACHE_MB sets a fixed limit instead
// (0: LibTorch's own allocator).
class CachingCpuAllocator final : public c10::Allocator {
 public:
  static constexpr size_t kMinBytes = size_t{1} << 20;
  static constexpr size_t kPeakMultiple = 4;
  static constexpr size_t kDefaultFloor = size_t{1} << 30;

  // `limit`: a fixed one, or none (the default: see above).
  CachingCpuAllocator(c10::Allocator* fallback, std::optional<size_t> limit)
      : fallback_(fallback), floor_(limit.value_or(kDefaultFloor)), fixed_(limit.has_value()) {}

  c10::DataPtr allocate(size_t n) const override {
    if (n < kMinBytes) return fallback_->allocate(n);
    void* p = take(n);
    if (!p) {
      if (posix_memalign(&p, 64, n) != 0) throw std::bad_alloc();
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[p] = n;
      ++stats_.fresh;
      lent(n);
    }
    return c10::DataPtr(p, p, &release, c10::Device(c10::DeviceType::CPU));
  }

  static CachingCpuAllocator& instance() {
    static CachingCpuAllocator* allocator = [] {
      const char* name = "FACEDET_CPU_TENSOR_CACHE_MB";
      const char* set = std::getenv(name);
      return new CachingCpuAllocator(
          c10::GetDefaultCPUAllocator(),
          set && *set ? std::optional<size_t>(size_t(envInt(name, 0, 0, 1 << 20)) << 20) : std::nullopt);
    }();
    return *allocator;
  }

  bool enabled() const { return floor_ > 0; }

  TensorCacheStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    TensorCacheStats s = stats_;
    s.floor = floor_;
    s.fixed = fixed_;
    s.budget = budget();
    return s;
  }

  // Frees every cached block (the temporaries of loading a model, for example).
  void trim() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [n, p] : free_) {
      sizes_.erase(p);
      std::free(p);
    }
    free_.clear();
    stats_.cached = 0;
  }

 private:
  // What the cache may keep (with mutex_ held).
  size_t budget() const { return fixed_ ? floor_ : std::max(floor_, kPeakMultiple * stats_.peakInUse); }

  void lent(size_t n) const {
    stats_.inUse += n;
    stats_.peakInUse = std::max(stats_.peakInUse, stats_.inUse);
  }

  // A cached block of n bytes or up to 25 % more.
  void* take(size_t n) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(n);
    if (it == free_.end() || it->first > n + n / 4) return nullptr;
    void* p = it->second;
    stats_.cached -= it->first;
    lent(it->first);
    free_.erase(it);
    return p;
  }

  // LibTorch's oneDNN glue frees through raw_deleter(): small blocks, the fallback's, go back to it.
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  static void release(void* p) {
    CachingCpuAllocator& self = instance();
    std::unique_lock<std::mutex> lock(self.mutex_);
    const auto known = self.sizes_.find(p);
    if (known == self.sizes_.end()) {
      lock.unlock();
      self.fallback_->raw_deleter()(p);
      return;
    }
    const size_t n = known->second;
    TensorCacheStats& stats = self.stats_;
    stats.inUse -= n;
    if (n > self.budget()) {  // a fixed limit below it: the cached blocks stay
      self.sizes_.erase(p);
      std::free(p);
      return;
    }
    // Over the budget: the largest cached blocks go first (they are the rarest shapes' to come back).
    while (stats.cached + n > self.budget() && !self.free_.empty()) {
      auto largest = std::prev(self.free_.end());
      stats.cached -= largest->first;
      self.sizes_.erase(largest->second);
      std::free(largest->second);
      self.free_.erase(largest);
    }
    self.free_.emplace(n, p);
    stats.cached += n;
  }

  c10::Allocator* fallback_;
  const size_t floor_;  // the fixed limit, or the least the budget is
  const bool fixed_;
  mutable std::mutex mutex_;
  mutable std::multimap<size_t, void*> free_;
  mutable std::unordered_map<void*, size_t> sizes_;
  mutable TensorCacheStats stats_;
};

std::mutex registryMutex;
std::unordered_map<int64_t, std::shared_ptr<Convolution>> registry;
int64_t nextId = 1;

std::shared_ptr<Convolution> lookup(int64_t id) {
  std::lock_guard<std::mutex> lock(registryMutex);
  auto it = registry.find(id);
  return it == registry.end() ? nullptr : it->second;
}

at::Tensor conv2d(const at::Tensor& x, int64_t id) {
  const std::shared_ptr<Convolution> conv = lookup(id);
  TORCH_CHECK(conv, "facedet::conv2d: convolution ", id, " was released with its model");
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == conv->weight.scalar_type() && x.device().is_cpu() &&
                  x.size(1) == conv->inputs(),
              "facedet::conv2d: expected a ", conv->weight.scalar_type(), " CPU tensor [n, ", conv->inputs(),
              ", h, w], got ", x.scalar_type(), " ", x.sizes());
  const at::Tensor input = x.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t n = input.size(0), h = input.size(2), w = input.size(3);
  const int64_t oh = conv->outputSize(h, 0), ow = conv->outputSize(w, 1);
  if (n == 0 || oh <= 0 || ow <= 0) return conv->libtorch(input);
  const std::shared_ptr<const Plan> plan = conv->plan(n, h, w);
  if (!plan->onednn) return conv->libtorch(input);
  at::Tensor output =
      at::empty({n, conv->outputs(), oh, ow}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  dnnl::engine& engine = cpuEngine();
  dnnl::stream stream(engine);
  memory userSrc(memory::desc({n, conv->inputs(), h, w}, conv->type, Tag::nhwc), engine, input.data_ptr());
  memory userDst(memory::desc({n, conv->outputs(), oh, ow}, conv->type, Tag::nhwc), engine,
                 output.data_ptr());
  memory bias(memory::desc({conv->outputs()}, kF32, Tag::x), engine, conv->bias.data_ptr());
  const Scratch scratch(plan->scratch);
  if (plan->winograd) {
    // Through LibTorch's allocator (the cache above), like the tensors.
    const at::Tensor srcBuffer = at::empty({static_cast<int64_t>(plan->src.get_size())}, at::kByte);
    const at::Tensor dstBuffer = at::empty({static_cast<int64_t>(plan->dst.get_size())}, at::kByte);
    memory src(plan->src, engine, srcBuffer.data_ptr()), dst(plan->dst, engine, dstBuffer.data_ptr());
    const Scratch toScratch(plan->toBlockedScratch), fromScratch(plan->fromBlockedScratch);
    std::unordered_map<int, memory> to{{DNNL_ARG_FROM, userSrc}, {DNNL_ARG_TO, src}};
    toScratch.add(&to);
    plan->toBlocked.execute(stream, to);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, plan->weights}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}};
    scratch.add(&args);
    plan->conv.execute(stream, args);
    std::unordered_map<int, memory> from{{DNNL_ARG_FROM, dst}, {DNNL_ARG_TO, userDst}};
    fromScratch.add(&from);
    plan->fromBlocked.execute(stream, from);
  } else {
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, userSrc},
                                         {DNNL_ARG_WEIGHTS, plan->weights},
                                         {DNNL_ARG_BIAS, bias},
                                         {DNNL_ARG_DST, userDst}};
    scratch.add(&args);
    plan->conv.execute(stream, args);
  }
  stream.wait();
  if (plan->leakyAfter) at::leaky_relu_(output, conv->slope);
  return output;
}

// The operator the graphs call: registered at run time, on first use, in a namespace of this copy of the
// addon's own (two copies of the addon in one process must not share the registry of ids, and a second
// TORCH_LIBRARY of one namespace would abort the process while it loads the addon). Its qualified name,
// or "" if LibTorch refused it (the graphs then keep LibTorch's convolutions).
const std::string& operatorName() {
  static const std::string name = [] {
    char space[48];
    std::snprintf(space, sizeof(space), "facedet_%llx",
                  static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(&registryMutex)));
    try {
      static torch::Library library(torch::Library::DEF, space, c10::nullopt, __FILE__, __LINE__);
      library.def("conv2d(Tensor x, int id) -> Tensor", &conv2d);
      return std::string(space) + "::conv2d";
    } catch (const c10::Error&) {
      return std::string();
    }
  }();
  return name;
}

// A constant list of two non-negative ints.
std::optional<std::array<int64_t, 2>> intPair(torch::jit::Value* v) {
  const auto value = torch::jit::toIValue(v);
  if (!value || !value->isIntList()) return std::nullopt;
  const auto list = value->toIntVector();
  if (list.size() != 2 || list[0] < 0 || list[1] < 0) return std::nullopt;
  return std::array<int64_t, 2>{list[0], list[1]};
}

}  // namespace

std::string onednnVersion() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

OneDnnConvolutions::~OneDnnConvolutions() {
  std::lock_guard<std::mutex> lock(registryMutex);
  for (const int64_t id : ids_) registry.erase(id);
}

void useCachingCpuAllocator() {
  static std::once_flag installed;
  std::call_once(installed, [] {
    CachingCpuAllocator& allocator = CachingCpuAllocator::instance();
    if (allocator.enabled()) c10::SetCPUAllocator(&allocator, 1);
  });
}

void trimCachingCpuAllocator() { CachingCpuAllocator::instance().trim(); }

TensorCacheStats tensorCacheStats() { return CachingCpuAllocator::instance().stats(); }

int OneDnnConvolutions::apply(const std::shared_ptr<torch::jit::Graph>& graph) {
  using torch::jit::Node;
  std::vector<Node*> convs;
  for (Node* n : graph->nodes()) {
    if (n->kind() == c10::aten::conv2d && n->inputs().size() == 7) convs.push_back(n);
  }
  if (operatorName().empty()) return 0;
  const c10::Symbol op = c10::Symbol::fromQualString(operatorName());
  const int before = count();
  for (Node* n : convs) {
    const auto weight = torch::jit::toIValue(n->input(1));
    const auto bias = torch::jit::toIValue(n->input(2));
    const auto stride = intPair(n->input(3)), padding = intPair(n->input(4)), dilation = intPair(n->input(5));
    const auto groups = torch::jit::toIValue(n->input(6));
    if (!weight || !weight->isTensor() || !bias || !(bias->isTensor() || bias->isNone()) || !stride ||
        !padding || !dilation || (*dilation)[0] != 1 || (*dilation)[1] != 1 || (*stride)[0] < 1 ||
        (*stride)[1] < 1 || !groups || !groups->isInt() || groups->toInt() < 1) {
      continue;
    }
    const at::Tensor& w = weight->toTensor();
    if (w.dim() != 4 || (w.scalar_type() != at::kFloat && w.scalar_type() != at::kBFloat16) ||
        !w.device().is_cpu() || w.size(0) % groups->toInt() != 0) {
      continue;
    }
    auto conv = std::make_shared<Convolution>();
    conv->weight = w.contiguous();
    conv->type = w.scalar_type() == at::kFloat ? kF32 : memory::data_type::bf16;
    conv->bias = bias->isTensor() ? bias->toTensor().to(at::kFloat).contiguous() : at::zeros({w.size(0)});
    if (bias->isTensor()) conv->libtorchBias = bias->toTensor();
    conv->stride = *stride;
    conv->padding = *padding;
    conv->groups = groups->toInt();
    conv->winograd = conv->type == kF32 && conv->groups == 1 && w.size(2) == 3 && w.size(3) == 3 &&
                     *stride == std::array<int64_t, 2>{1, 1} && *padding == std::array<int64_t, 2>{1, 1} &&
                     w.size(0) >= 32 && w.size(1) >= 64 && w.size(0) % 16 == 0 && w.size(1) % 16 == 0;
    // The activation that alone reads the convolution's output runs inside it.
    Node* activation = nullptr;
    const auto& uses = n->output()->uses();
    if (uses.size() == 1) {
      Node* user = uses[0].user;
      const c10::Symbol kind = user->kind();
      if ((kind == c10::aten::relu || kind == c10::aten::relu_) && user->inputs().size() == 1) {
        activation = user;
      } else if ((kind == c10::aten::leaky_relu || kind == c10::aten::leaky_relu_) &&
                 user->inputs().size() == 2 && user->input(0) == n->output()) {
        const auto slope = torch::jit::toIValue(user->input(1));
        if (slope && (slope->isDouble() || slope->isInt())) {
          activation = user;
          conv->slope = static_cast<float>(slope->isDouble() ? slope->toDouble() : slope->toInt());
        }
      }
    }
    conv->activation = activation != nullptr;
    // MobileNet0.25's FPN and SSH 3x3 convolutions at stride 8 (64 -> 64 with a LeakyReLU, 64 -> 32):
    // Winograd made its network 6-11% faster on 2 Zen 4 CPUs (608x1088, 512², 1024², in alternation; the
    // 64 -> 64 one 3.3 -> 2.1 ms with the reorders, its LeakyReLU apart), no faster on 2 Zen 5 CPUs.
    int64_t id;
    {
      std::lock_guard<std::mutex> lock(registryMutex);
      id = nextId++;
      registry.emplace(id, conv);
    }
    ids_.push_back(id);
    if (conv->winograd) ++winograd_;
    torch::jit::WithInsertPoint point(n);
    torch::jit::Value* out = graph->insert(op, {n->input(0), id});
    out->setType(n->output()->type());
    if (activation) {
      activation->output()->replaceAllUsesWith(out);
      activation->destroy();
    } else {
      n->output()->replaceAllUsesWith(out);
    }
    n->destroy();
  }
  torch::jit::EliminateDeadCode(graph);
  return count() - before;
}

#else

std::string onednnVersion() { return ""; }
void useCachingCpuAllocator() {}
void trimCachingCpuAllocator() {}
TensorCacheStats tensorCacheStats() { return {}; }
OneDnnConvolutions::~OneDnnConvolutions() = default;
int OneDnnConvolutions::apply(const std::shared_ptr<torch::jit::Graph>&) { return 0; }

#endif

}  // namespace facedet
