// SPDX-License-Identifier: MIT
// LibTorch's float32 and bfloat16 CPU convolutions run by oneDNN directly, with weights prepared once and
// Winograd for the wide float32 3x3 ones. oneDNN is the library Debian's LibTorch runs its convolutions with,
// but LibTorch 1.13 always takes the direct algorithm and reorders the weights on every call. Built only
// where LibTorch links that same shared oneDNN (FACEDET_WITH_ONEDNN); elsewhere the functions below do
// nothing.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace facedet {

// oneDNN's version ("2.6.3") when this build runs convolutions with it, "" otherwise.
std::string onednnVersion();

// Makes LibTorch's CPU tensors of 1 MiB and more come from a cache of freed blocks, so that run after run
// the same activations do not cost fresh, page-faulted memory. It keeps up to 1 GiB or 4x the most that was
// in use at once, whichever is more, or up to FACEDET_CPU_TENSOR_CACHE_MB where that is set (0 turns it
// off). Process-wide, once. Throws an ArgumentError for a bad value.
void useCachingCpuAllocator();
// Frees the blocks that cache holds (after loading a model: the temporaries of freezing it).
void trimCachingCpuAllocator();

// That cache's bytes (all zero where it is off or not built).
struct TensorCacheStats {
  size_t floor = 0;      // 1 GiB, or FACEDET_CPU_TENSOR_CACHE_MB where set (then fixed)
  bool fixed = false;    // FACEDET_CPU_TENSOR_CACHE_MB is set: the budget is that
  size_t budget = 0;     // what it may keep now: the floor or 4x the peak in use, whichever is more
  size_t cached = 0;     // kept, free
  size_t inUse = 0;      // lent to tensors now
  size_t peakInUse = 0;  // the most lent at once
  uint64_t fresh = 0;    // blocks it had to ask the system for
};
TensorCacheStats tensorCacheStats();

// The convolutions of one frozen float32 (or bf16) graph that oneDNN runs, and their registry entries:
// released with the object (the graph's calls then fail cleanly).
class OneDnnConvolutions {
 public:
  OneDnnConvolutions() = default;
  OneDnnConvolutions(const OneDnnConvolutions&) = delete;
  OneDnnConvolutions& operator=(const OneDnnConvolutions&) = delete;
  ~OneDnnConvolutions();

  // Replaces each aten::conv2d with constant float32 or bfloat16 weights (bf16: after setPrecision),
  // stride, padding, dilation 1 and groups by a call of the addon's conv2d operator, with the ReLU or
  // LeakyReLU that alone follows it fused. Float32 3x3 ones with stride 1, padding 1, no groups, at least
  // 64 input and 32 output channels (a multiple of 16) run with oneDNN's Winograd algorithm from 64x64
  // positions on (a LeakyReLU then runs after it). Returns how many it replaced.
  int apply(const std::shared_ptr<torch::jit::Graph>& graph);
  int count() const { return static_cast<int>(ids_.size()); }
  int winograd() const { return winograd_; }  // of which Winograd candidates

 private:
  std::vector<int64_t> ids_;
  int winograd_ = 0;
};

}  // namespace facedet
