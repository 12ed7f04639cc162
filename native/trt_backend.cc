// SPDX-License-Identifier: MIT
// TensorRT 10 backend: builds an engine from the exported ONNX (dynamic batch, height and width), caches
// the serialised plan on disk, and runs batches on a small pool of execution contexts, each with its own
// stream and its own device and pinned host buffers, allocated once at the profile's largest shape.
//
// Only the named-tensor API of TensorRT 10 is used (getIOTensorName, getTensorIOMode, setInputShape,
// setTensorAddress, enqueueV3). Every CUDA or TensorRT failure becomes a C++ exception whose message
// carries TensorRT's own error text (collected by the logger); nothing here aborts.
//
// Tuning through the environment (read once per load):
//   FACEDET_TRT_CONTEXTS  execution contexts (= batches that can run at once), default 2, 1..8
//   FACEDET_TRT_VERBOSE   1: print TensorRT's warnings and build progress to stderr
//   FACEDET_TRT_WORKSPACE_MB  builder workspace limit (default: TensorRT's, i.e. the device's memory)
#include <NvInfer.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>
#include <cuda_runtime_api.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "backend.h"

namespace facedet {
namespace {

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

// TensorRT reports errors through the logger, on the thread that called the failing API. Each thread
// keeps its own list, so concurrent batches never see each other's messages.
thread_local std::vector<std::string> tlsErrors;

class Logger : public nvinfer1::ILogger {
 public:
  Logger() {
    const char* v = std::getenv("FACEDET_TRT_VERBOSE");
    verbose_ = v != nullptr && std::string(v) == "1";
  }
  void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
    try {
      if (severity <= Severity::kERROR) {
        if (tlsErrors.size() < 16) tlsErrors.emplace_back(msg ? msg : "(no message)");
      }
      if (verbose_ && severity <= Severity::kINFO) std::fprintf(stderr, "facedet/tensorrt: %s\n", msg);
    } catch (...) {
      // log() must not throw: a failed allocation just loses the message.
    }
  }
  static void clear() { tlsErrors.clear(); }
  // The errors TensorRT reported on this thread since the last clear(), as one line.
  static std::string take() {
    std::string s;
    for (const auto& e : tlsErrors) s += (s.empty() ? "" : "; ") + e;
    tlsErrors.clear();
    return s;
  }

 private:
  bool verbose_ = false;
};

[[noreturn]] void fail(const std::string& what) {
  const std::string details = Logger::take();
  throw std::runtime_error("TensorRT: " + what + (details.empty() ? "" : ": " + details));
}

void checkCuda(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky-free error so later calls are not blamed for it
  throw std::runtime_error(std::string("CUDA: ") + what + " failed: " + cudaGetErrorName(status) + " (" +
                           cudaGetErrorString(status) + ")");
}

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

// ------------------------------------------------------------------------------------------------
// RAII wrappers for CUDA resources
// ------------------------------------------------------------------------------------------------

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, const char* what) : bytes_(bytes) {
    cudaError_t status = cudaMalloc(&ptr_, std::max<size_t>(bytes, 1));
    if (status != cudaSuccess) {
      ptr_ = nullptr;
      cudaGetLastError();
      throw std::runtime_error(std::string("CUDA: could not allocate ") + mib(bytes) +
                               " of device memory for " + what + ": " + cudaGetErrorString(status) +
                               " (lower maxBatch or maxSize, or FACEDET_TRT_CONTEXTS)");
    }
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(size_t bytes, const char* what) : bytes_(bytes) {
    cudaError_t status = cudaMallocHost(&ptr_, std::max<size_t>(bytes, 1));
    if (status != cudaSuccess) {
      ptr_ = nullptr;
      cudaGetLastError();
      throw std::runtime_error(std::string("CUDA: could not allocate ") + mib(bytes) +
                               " of pinned host memory for " + what + ": " + cudaGetErrorString(status) +
                               " (lower maxBatch or maxSize)");
    }
  }
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  float* get() const { return static_cast<float*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class Stream {
 public:
  Stream() { checkCuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() {
    if (stream_) cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// ------------------------------------------------------------------------------------------------
// SHA-256 (the ONNX file's hash is part of the plan cache key; no crypto library is linked)
// ------------------------------------------------------------------------------------------------

class Sha256 {
 public:
  Sha256() { reset(); }
  void update(const void* data, size_t len) {
    const auto* p = static_cast<const uint8_t*>(data);
    total_ += len;
    while (len > 0) {
      const size_t take = std::min(len, size_t{64} - fill_);
      std::memcpy(block_ + fill_, p, take);
      fill_ += take;
      p += take;
      len -= take;
      if (fill_ == 64) {
        compress(block_);
        fill_ = 0;
      }
    }
  }
  std::string hex() {
    const uint64_t bits = total_ * 8;
    const uint8_t pad = 0x80;
    update(&pad, 1);
    const uint8_t zero = 0;
    while (fill_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (uint32_t v : h_) {
      for (int i = 28; i >= 0; i -= 4) out += digits[(v >> i) & 0xf];
    }
    reset();
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void reset() {
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    std::memcpy(h_, init, sizeof h_);
    fill_ = 0;
    total_ = 0;
  }
  void compress(const uint8_t* b) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t{b[4 * i]} << 24) | (uint32_t{b[4 * i + 1]} << 16) | (uint32_t{b[4 * i + 2]} << 8) |
             uint32_t{b[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b2 = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const uint32_t ch = (e & f) ^ (~e & g);
      const uint32_t t1 = h + S1 + ch + k[i] + w[i];
      const uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const uint32_t maj = (a & b2) ^ (a & c) ^ (b2 & c);
      const uint32_t t2 = S0 + maj;
      h = g, g = f, f = e, e = d + t1, d = c, c = b2, b2 = a, a = t1 + t2;
    }
    h_[0] += a, h_[1] += b2, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }
  uint32_t h_[8];
  uint8_t block_[64];
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

std::string sha256Of(const std::string& bytes) {
  Sha256 s;
  s.update(bytes.data(), bytes.size());
  return s.hex();
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error("error while reading " + path);
  return ss.str();
}

// ------------------------------------------------------------------------------------------------
// Plan cache
// ------------------------------------------------------------------------------------------------
//
// File layout: "FACEDET-TRT-PLAN 1\n", the key (text, one field a line) terminated by "\n\n", the plan's
// byte count and sha256 on one line, then the plan. A plan is loaded only when the stored key equals the
// key of this load byte for byte and the plan's hash checks out; anything else (another GPU, TensorRT,
// ONNX file, precision or profile, a truncated or corrupt file) is rebuilt and the file replaced.

constexpr const char* kPlanMagic = "FACEDET-TRT-PLAN 1\n";

struct CachedPlan {
  bool found = false;   // a file existed
  bool usable = false;  // key and hash matched
  std::string reason;   // why not usable
  std::string plan;
};

CachedPlan readCachedPlan(const std::string& path, const std::string& key) {
  CachedPlan result;
  std::ifstream in(path, std::ios::binary);
  if (!in) return result;
  result.found = true;
  std::string data;
  try {
    std::ostringstream ss;
    ss << in.rdbuf();
    data = ss.str();
  } catch (const std::exception&) {
    result.reason = "unreadable";
    return result;
  }
  const std::string magic = kPlanMagic;
  if (data.compare(0, magic.size(), magic) != 0) {
    result.reason = "not a facedet plan file";
    return result;
  }
  const size_t keyEnd = data.find("\n\n", magic.size());
  if (keyEnd == std::string::npos) {
    result.reason = "truncated header";
    return result;
  }
  const std::string storedKey = data.substr(magic.size(), keyEnd + 1 - magic.size());
  if (storedKey != key) {
    result.reason = "stale key";
    return result;
  }
  const size_t lineEnd = data.find('\n', keyEnd + 2);
  if (lineEnd == std::string::npos) {
    result.reason = "truncated header";
    return result;
  }
  std::istringstream line(data.substr(keyEnd + 2, lineEnd - keyEnd - 2));
  unsigned long long size = 0;
  std::string hash;
  line >> size >> hash;
  if (!line || data.size() - (lineEnd + 1) != size) {
    result.reason = "truncated plan";
    return result;
  }
  result.plan = data.substr(lineEnd + 1);
  if (sha256Of(result.plan) != hash) {
    result.reason = "plan checksum mismatch";
    result.plan.clear();
    return result;
  }
  result.usable = true;
  return result;
}

bool makeDirs(const std::string& dir) {
  if (dir.empty()) return false;
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    partial = dir.substr(0, pos);
    if (partial.empty()) continue;
    if (mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  struct stat st;
  return stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Writes atomically (temporary file + rename), so a concurrent reader never sees half a plan.
// Returns an empty string on success, else why the plan was not cached (the engine still works).
std::string writeCachedPlan(const std::string& dir, const std::string& path, const std::string& key,
                            const void* plan, size_t size) {
  if (!makeDirs(dir)) return "cannot create " + dir + ": " + std::strerror(errno);
  const std::string tmp = path + ".tmp" + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return "cannot write " + tmp + ": " + std::strerror(errno);
    const std::string bytes(static_cast<const char*>(plan), size);
    out << kPlanMagic << key << "\n" << size << " " << sha256Of(bytes) << "\n";
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      return "error while writing " + tmp;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    return "cannot rename " + tmp + ": " + why;
  }
  return "";
}

std::string defaultCacheDir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return std::string(xdg) + "/facedet-native/tensorrt";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.cache/facedet-native/tensorrt";
  return "/tmp/facedet-native-tensorrt";
}

std::string baseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = name.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
}

// ------------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------------

int parseCudaDevice(const std::string& device) {
  if (device == "cuda") return 0;
  if (device.rfind("cuda:", 0) == 0) {
    const std::string digits = device.substr(5);
    if (!digits.empty() && digits.size() < 4 && digits.find_first_not_of("0123456789") == std::string::npos) {
      return std::stoi(digits);
    }
  }
  if (device == "cpu") {
    throw ArgumentError(
        "backend 'tensorrt' runs on an NVIDIA GPU: use device 'cuda' or 'cuda:N' (or backend 'torch' on "
        "CPU)");
  }
  throw ArgumentError("device '" + device + "' is not 'cpu', 'cuda' or 'cuda:N'");
}

std::string versionString(int32_t v) {
  // getInferLibVersion() is major * 10000 + minor * 100 + patch.
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

std::string dimsString(const nvinfer1::Dims& d) {
  std::string s = "[";
  for (int32_t i = 0; i < d.nbDims; ++i) s += (i ? "," : "") + std::to_string(d.d[i]);
  return s + "]";
}

int64_t volume(const nvinfer1::Dims& d) {
  int64_t v = 1;
  for (int32_t i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}

nvinfer1::Dims dims4(int64_t n, int64_t c, int64_t h, int64_t w) {
  nvinfer1::Dims d{};
  d.nbDims = 4;
  d.d[0] = n, d.d[1] = c, d.d[2] = h, d.d[3] = w;
  return d;
}

// ------------------------------------------------------------------------------------------------
// The backend
// ------------------------------------------------------------------------------------------------

constexpr const char* kOutputNames[3] = {"loc", "conf", "landmarks"};
constexpr int64_t kOutputWidths[3] = {4, 2, 10};
constexpr int kMinSide = 32;

class TensorRtBackend : public Backend {
 public:
  explicit TensorRtBackend(const LoadOptions& options)
      : device_(parseCudaDevice(options.device)),
        precision_(options.precision),
        float32Convs_(options.precision == "fp16" ? options.float32Convolutions : 0),
        maxBatch_(options.maxBatch),
        maxSide_(std::max(kMinSide, options.maxSize)) {
    if (options.uint8Input) throw ArgumentError("uint8 input (uint8Mean) is for LibTorch on the CPU");
    if (precision_ != "fp32" && precision_ != "fp16") {
      throw ArgumentError("precision '" + precision_ +
                          "' is not available with backend 'tensorrt': use 'fp16' or 'fp32'");
    }
    if (maxBatch_ < 1) throw ArgumentError("maxBatch must be at least 1");
    const int contexts = envInt("FACEDET_TRT_CONTEXTS", 2, 1, 8);
    Logger::clear();

    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0) {
      cudaGetLastError();
      throw ArgumentError(
          "device '" + options.device + "' was requested for backend 'tensorrt', but CUDA sees no GPU" +
          (status != cudaSuccess ? std::string(" (") + cudaGetErrorString(status) + ")" : std::string()));
    }
    if (device_ >= count) {
      throw ArgumentError("device '" + options.device + "' does not exist: " + std::to_string(count) +
                          " CUDA device(s) visible");
    }
    checkCuda(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp prop{};
    checkCuda(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    gpuName_ = prop.name;
    computeCapability_ = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    // Compute capabilities with fast fp16 arithmetic: 6.0, 6.2 and 7.0 onwards (6.1 runs fp16 at 1/64 rate).
    const bool fastFp16 = prop.major >= 7 || (prop.major == 6 && prop.minor != 1);
    if (precision_ == "fp16" && !fastFp16) {
      throw ArgumentError("precision 'fp16' was requested, but " + gpuName_ + " (compute capability " +
                          computeCapability_ + ") has no fast fp16: use 'fp32'");
    }
#if NV_TENSORRT_MAJOR >= 11
    if (precision_ == "fp16") {
      throw ArgumentError(
          "precision 'fp16' with TensorRT " + std::to_string(NV_TENSORRT_MAJOR) +
          " needs a strongly typed (fp16) ONNX model; this build converts fp32 ONNX models with "
          "TensorRT 10's FP16 builder flag only: use 'fp32' or TensorRT 10");
    }
#endif

    const std::string onnx = readFileChecked(options.modelPath);
    trtVersion_ = versionString(getInferLibVersion());

    std::ostringstream key;
    key << "tensorrt=" << trtVersion_ << "\n"
        << "gpu=" << gpuName_ << "\n"
        << "compute_capability=" << computeCapability_ << "\n"
        << "onnx_sha256=" << sha256Of(onnx) << "\n"
        << "precision=" << precision_ << "\n"
        << "float32_convolutions=" << float32Convs_ << "\n"
        << "tf32=" << (allowTf32() ? "on" : "off") << "\n"
        << "profile=batch 1.." << maxBatch_ << " opt " << optBatch() << "; side " << kMinSide << ".."
        << maxSide_ << " opt " << optSide() << "\n";
    const std::string cacheKey = key.str();
    // One file per model, GPU, TensorRT and settings; a different ONNX file with the same name lands in
    // the same file, whose stored key then no longer matches: it is rebuilt and replaced.
    const std::string settings = gpuName_ + "|" + computeCapability_ + "|" + trtVersion_ + "|" + precision_ +
                                 "|" + std::to_string(float32Convs_) + "|" + std::to_string(maxBatch_) + "|" +
                                 std::to_string(maxSide_);
    const std::string cacheDir = options.cacheDir.empty() ? defaultCacheDir() : options.cacheDir;
    planPath_ =
        cacheDir + "/" + baseName(options.modelPath) + "-" + sha256Of(settings).substr(0, 16) + ".plan";

    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) fail("createInferRuntime failed");

    CachedPlan cached = readCachedPlan(planPath_, cacheKey);
    if (cached.usable) {
      Logger::clear();
      engine_.reset(runtime_->deserializeCudaEngine(cached.plan.data(), cached.plan.size()));
      if (engine_) {
        planSource_ = "cache";
      } else {
        cached.reason = "deserialisation failed: " + Logger::take();
      }
    }
    if (!engine_) {
      const std::string plan = build(options.modelPath);
      Logger::clear();
      engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
      if (!engine_) fail("could not deserialise the plan it just built");
      planSource_ = cached.found ? "rebuilt (" + cached.reason + ")" : "built";
      const std::string why = writeCachedPlan(cacheDir, planPath_, cacheKey, plan.data(), plan.size());
      if (!why.empty()) std::fprintf(stderr, "facedet/tensorrt: the plan was not cached: %s\n", why.c_str());
    }
    if (const char* v = std::getenv("FACEDET_TRT_VERBOSE"); v && std::string(v) == "1") {
      std::fprintf(stderr, "facedet/tensorrt: plan %s: %s\n", planSource_.c_str(), planPath_.c_str());
    }

    findTensors();
    for (int i = 0; i < contexts; ++i) slots_.push_back(makeSlot());
    for (auto& slot : slots_) free_.push_back(slot.get());
  }

  ~TensorRtBackend() override {
    // Contexts go before the engine, the engine before the runtime (member order does the rest).
    cudaSetDevice(device_);
    slots_.clear();
  }

  InferOutput infer(const InferInput& input) override {
    const auto start = std::chrono::steady_clock::now();
    if (input.c != 3) throw ArgumentError("expected 3 channels, got " + std::to_string(input.c));
    if (input.h < kMinSide || input.w < kMinSide || input.h > maxSide_ || input.w > maxSide_) {
      throw ArgumentError("input " + std::to_string(input.h) + "x" + std::to_string(input.w) +
                          " is outside the TensorRT engine's profile (sides " + std::to_string(kMinSide) +
                          ".." + std::to_string(maxSide_) +
                          "): pad small images, or load with a larger maxSize");
    }
    checkCuda(cudaSetDevice(device_), "cudaSetDevice");
    Logger::clear();
    Lease lease(*this);
    Slot& slot = lease.slot();

    const size_t imageFloats = static_cast<size_t>(input.c * input.h * input.w);
    InferOutput out;
    std::array<std::shared_ptr<std::vector<float>>, 3> results;
    int64_t anchors = -1;
    for (int64_t first = 0; first < input.n; first += maxBatch_) {
      const int64_t n = std::min<int64_t>(maxBatch_, input.n - first);
      // Stage the chunk in pinned memory, then one asynchronous upload.
      float* host = slot.hostInput.get();
      for (int64_t i = 0; i < n; ++i) {
        const float* src =
            input.packed ? input.images[0] + (first + i) * imageFloats : input.images[first + i];
        std::memcpy(host + i * imageFloats, src, imageFloats * sizeof(float));
      }
      const size_t inputBytes = static_cast<size_t>(n) * imageFloats * sizeof(float);
      checkCuda(
          cudaMemcpyAsync(slot.input.get(), host, inputBytes, cudaMemcpyHostToDevice, slot.stream.get()),
          "upload (cudaMemcpyAsync)");
      if (!slot.context->setInputShape(inputName_.c_str(), dims4(n, 3, input.h, input.w))) {
        fail("setInputShape " + dimsString(dims4(n, 3, input.h, input.w)) + " was refused");
      }
      std::array<int64_t, 3> counts{};
      for (size_t k = 0; k < 3; ++k) {
        const nvinfer1::Dims d = slot.context->getTensorShape(kOutputNames[k]);
        if (d.nbDims != 3 || d.d[0] != n || d.d[2] != kOutputWidths[k] ||
            (anchors >= 0 && d.d[1] != anchors)) {
          fail(std::string("output '") + kOutputNames[k] + "' has shape " + dimsString(d) + ", expected [" +
               std::to_string(n) + ",A," + std::to_string(kOutputWidths[k]) + "]");
        }
        anchors = d.d[1];
        counts[k] = volume(d);
        if (static_cast<size_t>(counts[k]) * sizeof(float) > slot.outputs[k].bytes()) {
          fail(std::string("output '") + kOutputNames[k] + "' needs more memory than the profile maximum");
        }
        if (!results[k]) {
          results[k] =
              std::make_shared<std::vector<float>>(static_cast<size_t>(input.n * anchors * kOutputWidths[k]));
        }
      }
      if (!slot.context->enqueueV3(slot.stream.get())) fail("enqueueV3 failed");
      for (size_t k = 0; k < 3; ++k) {
        checkCuda(cudaMemcpyAsync(slot.hostOutputs[k].get(), slot.outputs[k].get(), counts[k] * sizeof(float),
                                  cudaMemcpyDeviceToHost, slot.stream.get()),
                  "download (cudaMemcpyAsync)");
      }
      // The pinned buffers belong to this slot until the stream is done with them.
      checkCuda(cudaStreamSynchronize(slot.stream.get()), "inference (cudaStreamSynchronize)");
      for (size_t k = 0; k < 3; ++k) {
        std::memcpy(results[k]->data() + first * anchors * kOutputWidths[k], slot.hostOutputs[k].get(),
                    counts[k] * sizeof(float));
      }
    }
    for (size_t k = 0; k < 3; ++k) {
      out.tensors[k].shape = {input.n, anchors, kOutputWidths[k]};
      out.tensors[k].data = results[k]->data();
      out.tensors[k].owner = results[k];
    }
    validateOutputs(out, input.n);
    out.inferMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return out;
  }

  int concurrency() const override { return static_cast<int>(slots_.size()); }

  BackendInfo info() const override {
    BackendInfo info;
    info.backend = "tensorrt";
    info.device = "cuda:" + std::to_string(device_);
    info.precision = precision_;
    info.threads = 0;
    info.version = "TensorRT " + trtVersion_ + " (" + gpuName_ + ", plan " + planSource_ + ")";
    return info;
  }

 private:
  struct Slot {
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    Stream stream;
    DeviceBuffer input;
    PinnedBuffer hostInput;
    std::array<DeviceBuffer, 3> outputs;
    std::array<PinnedBuffer, 3> hostOutputs;
  };

  // A slot borrowed for one call: waits while every slot is busy.
  class Lease {
   public:
    explicit Lease(TensorRtBackend& owner) : owner_(owner) {
      std::unique_lock<std::mutex> lock(owner_.mutex_);
      owner_.available_.wait(lock, [&] { return !owner_.free_.empty(); });
      slot_ = owner_.free_.back();
      owner_.free_.pop_back();
    }
    ~Lease() {
      // After a failure part-way, work may still be queued that reads or writes this slot's buffers:
      // drain it before the slot is lent again (a no-op after a successful call, already synchronised).
      if (cudaStreamSynchronize(slot_->stream.get()) != cudaSuccess) cudaGetLastError();
      {
        std::lock_guard<std::mutex> lock(owner_.mutex_);
        owner_.free_.push_back(slot_);
      }
      owner_.available_.notify_one();
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Slot& slot() { return *slot_; }

   private:
    TensorRtBackend& owner_;
    Slot* slot_ = nullptr;
  };

  int optBatch() const { return maxBatch_; }
  int optSide() const { return std::min(maxSide_, 1024); }

  static std::string readFileChecked(const std::string& path) {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) throw std::runtime_error("model file not found or unreadable: " + path);
    probe.close();
    return readFile(path);
  }

  std::string build(const std::string& onnxPath) {
    Logger::clear();
    std::unique_ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger_));
    if (!builder) fail("createInferBuilder failed");
    std::unique_ptr<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(0));
    if (!network) fail("createNetworkV2 failed");
    std::unique_ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger_));
    if (!parser) fail("createParser failed");
    if (!parser->parseFromFile(onnxPath.c_str(), static_cast<int>(nvinfer1::ILogger::Severity::kERROR))) {
      std::string errors;
      for (int i = 0; i < parser->getNbErrors(); ++i) {
        const auto* e = parser->getError(i);
        errors += std::string(errors.empty() ? "" : "; ") + e->desc();
        if (e->node() >= 0)
          errors += std::string(" (node ") + std::to_string(e->node()) + " " + e->nodeOperator() + ")";
      }
      fail("could not parse " + onnxPath + (errors.empty() ? "" : ": " + errors));
    }
    if (network->getNbInputs() != 1)
      fail("the ONNX model has " + std::to_string(network->getNbInputs()) + " inputs, expected 1");
    const char* input = network->getInput(0)->getName();

    std::unique_ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
    if (!config) fail("createBuilderConfig failed");
    const int workspaceMb = envInt("FACEDET_TRT_WORKSPACE_MB", 0, 0, 1 << 20);
    if (workspaceMb > 0) {
      config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, static_cast<size_t>(workspaceMb)
                                                                           << 20);
    }
#if NV_TENSORRT_MAJOR < 11
    if (precision_ == "fp16") {
      // Deprecated since 10.12 in favour of strongly typed networks, still the way to run an fp32 ONNX
      // model in fp16 on TensorRT 10 (inputs and outputs stay fp32).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      config->setFlag(nvinfer1::BuilderFlag::kFP16);
      // The model card's leading float32 convolutions (MobileNet0.25: its first stage, whose activations
      // fp16 rounds too coarsely) and every layer before the next convolution stay float32; the builder
      // inserts the casts.
      if (float32Convs_ > 0) {
        keepLeadingFloat32(*network);
        config->setFlag(nvinfer1::BuilderFlag::kPREFER_PRECISION_CONSTRAINTS);
      }
#pragma GCC diagnostic pop
    }
#endif
    // fp32 means fp32 (TensorRT runs float32 convolutions as TF32 by default, rounding their inputs as
    // fp16 does), also for an fp16 model's leading float32 convolutions.
    if (!allowTf32()) config->clearFlag(nvinfer1::BuilderFlag::kTF32);
    nvinfer1::IOptimizationProfile* profile = builder->createOptimizationProfile();
    if (!profile) fail("createOptimizationProfile failed");
    using nvinfer1::OptProfileSelector;
    const bool ok =
        profile->setDimensions(input, OptProfileSelector::kMIN, dims4(1, 3, kMinSide, kMinSide)) &&
        profile->setDimensions(input, OptProfileSelector::kOPT, dims4(optBatch(), 3, optSide(), optSide())) &&
        profile->setDimensions(input, OptProfileSelector::kMAX, dims4(maxBatch_, 3, maxSide_, maxSide_));
    if (!ok) fail("the optimisation profile was refused");
    if (config->addOptimizationProfile(profile) < 0) fail("addOptimizationProfile failed");

    if (const char* v = std::getenv("FACEDET_TRT_VERBOSE"); v && std::string(v) == "1") {
      std::fprintf(stderr, "facedet/tensorrt: building a %s plan for %s (batch 1..%d, sides %d..%d)\n",
                   precision_.c_str(), onnxPath.c_str(), maxBatch_, kMinSide, maxSide_);
    }
    std::unique_ptr<nvinfer1::IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
    if (!plan || plan->size() == 0) fail("building the engine from " + onnxPath + " failed");
    return std::string(static_cast<const char*>(plan->data()), plan->size());
  }

  bool allowTf32() const { return precision_ == "fp16" && float32Convs_ == 0; }

#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  // Layers in network order (the ONNX file's node order) up to the (float32Convs_ + 1)-th convolution:
  // float32 compute and outputs. Shape and non-float layers are left alone.
  void keepLeadingFloat32(nvinfer1::INetworkDefinition& network) const {
    int convolutions = 0;
    for (int32_t i = 0; i < network.getNbLayers(); ++i) {
      nvinfer1::ILayer* layer = network.getLayer(i);
      if (layer->getType() == nvinfer1::LayerType::kCONVOLUTION && ++convolutions > float32Convs_) break;
      bool floatOutputs = layer->getNbOutputs() > 0;
      for (int32_t j = 0; j < layer->getNbOutputs(); ++j) {
        const nvinfer1::ITensor* t = layer->getOutput(j);
        if (t->isShapeTensor() || t->getType() != nvinfer1::DataType::kFLOAT) floatOutputs = false;
      }
      if (!floatOutputs) continue;
      layer->setPrecision(nvinfer1::DataType::kFLOAT);
      for (int32_t j = 0; j < layer->getNbOutputs(); ++j) layer->setOutputType(j, nvinfer1::DataType::kFLOAT);
    }
  }
#pragma GCC diagnostic pop
#endif

  void findTensors() {
    const int32_t count = engine_->getNbIOTensors();
    std::array<bool, 3> seen{};
    for (int32_t i = 0; i < count; ++i) {
      const char* name = engine_->getIOTensorName(i);
      const auto mode = engine_->getTensorIOMode(name);
      if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT) {
        fail(std::string("tensor '") + name + "' is not float32; facedet exports float32 inputs and outputs");
      }
      if (mode == nvinfer1::TensorIOMode::kINPUT) {
        if (!inputName_.empty()) fail("the engine has more than one input");
        inputName_ = name;
      } else if (mode == nvinfer1::TensorIOMode::kOUTPUT) {
        bool known = false;
        for (size_t k = 0; k < 3; ++k) {
          if (std::strcmp(name, kOutputNames[k]) == 0) seen[k] = known = true;
        }
        if (!known) fail(std::string("unexpected output '") + name + "' (expected loc, conf, landmarks)");
      }
    }
    if (inputName_.empty()) fail("the engine has no input");
    for (size_t k = 0; k < 3; ++k) {
      if (!seen[k]) {
        fail(std::string("the engine has no output '") + kOutputNames[k] +
             "': is this a RetinaFace model exported by facedet?");
      }
    }
  }

  std::unique_ptr<Slot> makeSlot() {
    auto slot = std::make_unique<Slot>();
    Logger::clear();
    slot->context.reset(engine_->createExecutionContext());
    if (!slot->context) fail("createExecutionContext failed (out of device memory?)");
    // Buffers sized once, at the profile's largest shape; output sizes come from TensorRT itself.
    const nvinfer1::Dims maxInput = dims4(maxBatch_, 3, maxSide_, maxSide_);
    if (!slot->context->setInputShape(inputName_.c_str(), maxInput))
      fail("setInputShape at the profile maximum failed");
    const size_t inputBytes = static_cast<size_t>(volume(maxInput)) * sizeof(float);
    slot->input = DeviceBuffer(inputBytes, "the input batch");
    slot->hostInput = PinnedBuffer(inputBytes, "the input batch");
    if (!slot->context->setTensorAddress(inputName_.c_str(), slot->input.get()))
      fail("setTensorAddress(input) failed");
    for (size_t k = 0; k < 3; ++k) {
      const nvinfer1::Dims d = slot->context->getTensorShape(kOutputNames[k]);
      if (d.nbDims != 3 || volume(d) <= 0) {
        fail(std::string("output '") + kOutputNames[k] +
             "' has no static size at the profile maximum: " + dimsString(d));
      }
      const size_t bytes = static_cast<size_t>(volume(d)) * sizeof(float);
      slot->outputs[k] = DeviceBuffer(bytes, kOutputNames[k]);
      slot->hostOutputs[k] = PinnedBuffer(bytes, kOutputNames[k]);
      if (!slot->context->setTensorAddress(kOutputNames[k], slot->outputs[k].get())) {
        fail(std::string("setTensorAddress(") + kOutputNames[k] + ") failed");
      }
    }
    return slot;
  }

  // Declared first, destroyed last: TensorRT objects log through it until they are gone.
  Logger logger_;
  int device_ = 0;
  std::string precision_;
  int float32Convs_ = 0;
  int maxBatch_ = 16;
  int maxSide_ = 2048;
  std::string gpuName_, computeCapability_, trtVersion_, planPath_, planSource_;
  std::string inputName_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_;
  std::mutex mutex_;
  std::condition_variable available_;
};

}  // namespace

std::string tensorRtVersion() { return versionString(getInferLibVersion()); }

std::unique_ptr<Backend> createTensorRtBackend(const LoadOptions& options) {
  return std::make_unique<TensorRtBackend>(options);
}

}  // namespace facedet
