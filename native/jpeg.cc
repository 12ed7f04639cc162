// SPDX-License-Identifier: MIT
// The JPEG fast path. sharp (libvips with mozjpeg) takes 1.9-2.0 ms for a 512x512 JPEG that libjpeg-turbo
// decodes in 0.73 ms on the same core, most of the difference in libvips' thread hand-offs (about 50
// context switches a call). Both give the same bytes, so the library decodes plain JPEGs here (with an ICC
// profile, converted by Little CMS as sharp's libvips converts them: icc.h), shrunk on load by libjpeg where
// sharp would have it shrink them, resized as sharp would, row by row as they are decoded: resize.cc, and
// turned upright by their EXIF orientation as sharp turns them) and leaves every other image, and every JPEG
// that draws so much as a warning, to sharp. Asked to, it decodes a sequential JPEG on two threads (see
// InputThread) into the same pixels.
#include "jpeg.h"

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include "resize.h"
#ifdef FACEDET_HAVE_LCMS2
#include "icc.h"
#endif

namespace facedet {
#ifdef FACEDET_HAVE_LCMS2
using ColourTransformSlot = std::shared_ptr<ColourTransform>;
#else
// Built without Little CMS: no JPEG with a profile is decoded here, so no conversion is ever set.
struct NoColourTransform {
  void apply(uint8_t*, int) const {}
};
using ColourTransformSlot = std::shared_ptr<const NoColourTransform>;
#endif
}  // namespace facedet

// jpeglib.h needs FILE and size_t declared before it.
#include <jpeglib.h>
// After jpeglib.h: libjpeg's error codes.
#include <jerror.h>

#ifdef __linux__
#include <pthread.h>
#include <sched.h>
#endif

namespace facedet {
namespace {

#define FACEDET_STRINGIFY_(x) #x
#define FACEDET_STRINGIFY(x) FACEDET_STRINGIFY_(x)

// libjpeg reports errors through error_exit, which must not return: it jumps back to decodeJpegInto.
// Warnings (corrupt data that libjpeg would paper over) jump back too, as sharp's failOn 'warning' fails.
struct ErrorManager {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

// The entropy decoding of an image decoded on two threads (see decode): libjpeg's buffered-image mode,
// its input side (jpeg_consume_input: Huffman decoding into the whole image's DCT coefficients) on a
// thread of its own, a row of blocks (an "iMCU row") ahead of the output side (inverse DCT, upsampling,
// colour conversion and the resize), which stays on the calling thread. The two share no state but the
// coefficient rows, each handed over complete (`rows`: release, acquire) and never written again, and
// libjpeg's counters of rows done, which only grow and are read by the output side only to see that the
// row it is about to read is there (so it never decodes input itself).
struct InputThread {
  std::thread thread;
  // iMCU rows decoded so far; -1 when the input side failed (then `message` says why).
  std::atomic<int> rows{0};
  std::atomic<bool> stop{false};
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];

  InputThread() { message[0] = '\0'; }
  ~InputThread() { join(); }
  void join() {
    if (!thread.joinable()) return;
    stop.store(true, std::memory_order_relaxed);
    thread.join();
  }
};

// Set on an input thread while it runs libjpeg: its errors and warnings jump back to it, not to decode.
thread_local InputThread* tInputThread = nullptr;

[[noreturn]] void onError(j_common_ptr cinfo) {
  if (InputThread* input = tInputThread) {
    (*cinfo->err->format_message)(cinfo, input->message);
    longjmp(input->jump, 1);
  }
  auto* manager = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, manager->message);
  longjmp(manager->jump, 1);
}

void onMessage(j_common_ptr cinfo, int level) {
  if (level < 0) onError(cinfo);  // a warning; levels >= 0 are traces
}

// A progressive JPEG can hold thousands of tiny scans, each a pass over the whole image (libjpeg-turbo's
// advice: bound them). Past this many, sharp decides, as it did before the fast path.
constexpr int kMaxScans = 256;

void onProgress(j_common_ptr cinfo) {
  auto* decompress = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (decompress->input_scan_number > kMaxScans) {
    auto* manager = reinterpret_cast<ErrorManager*>(cinfo->err);
    std::snprintf(manager->message, sizeof(manager->message), "more than %d scans", kMaxScans);
    longjmp(manager->jump, 1);
  }
}

uint16_t read16(const uint8_t* p, bool little) {
  return little ? static_cast<uint16_t>(p[0] | (p[1] << 8)) : static_cast<uint16_t>((p[0] << 8) | p[1]);
}

uint32_t read32(const uint8_t* p, bool little) {
  return little ? (uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24))
                : ((uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]));
}

// The EXIF orientation in an APP1 marker's data: 0 when the marker is not EXIF or has no orientation tag,
// -1 when it cannot be read with certainty (then sharp decides).
int exifOrientation(const uint8_t* data, unsigned size) {
  if (size < 6 || std::memcmp(data, "Exif\0\0", 6) != 0) return 0;
  const uint8_t* tiff = data + 6;
  const unsigned length = size - 6;
  if (length < 8) return -1;
  bool little;
  if (tiff[0] == 'I' && tiff[1] == 'I') {
    little = true;
  } else if (tiff[0] == 'M' && tiff[1] == 'M') {
    little = false;
  } else {
    return -1;
  }
  if (read16(tiff + 2, little) != 42) return -1;
  const uint32_t ifd = read32(tiff + 4, little);
  if (ifd > length - 2 || ifd < 8) return -1;
  const unsigned entries = read16(tiff + ifd, little);
  if (entries * 12u > length - ifd - 2) return -1;
  for (unsigned i = 0; i < entries; ++i) {
    const uint8_t* entry = tiff + ifd + 2 + i * 12;
    if (read16(entry, little) != 0x0112) continue;
    // SHORT, one value, stored in the first two bytes of the value field.
    if (read16(entry + 2, little) != 3 || read32(entry + 4, little) != 1) return -1;
    const int orientation = read16(entry + 8, little);
    return orientation >= 1 && orientation <= 8 ? orientation : -1;
  }
  return 0;
}

// Why sharp should decode this JPEG instead (header read, decompression not started), or nullptr; then
// `orientation` is its EXIF orientation (1 when it has none) and `icc` whether it has an ICC profile.
const char* notPlain(const jpeg_decompress_struct& cinfo, int* orientation, bool* icc) {
  if (cinfo.data_precision != 8) return "not 8 bits per sample";
  if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_GRAYSCALE)
    return "colour space is not YCbCr or greyscale";
  *orientation = 1;
  *icc = false;
  bool exif = false;
  for (jpeg_saved_marker_ptr marker = cinfo.marker_list; marker; marker = marker->next) {
    if (marker->marker == JPEG_APP0 + 2 && marker->data_length >= 12 &&
        std::memcmp(marker->data, "ICC_PROFILE\0", 12) == 0)
      *icc = true;
    if (marker->marker == JPEG_APP0 + 1) {
      if (marker->data_length != marker->original_length) return "EXIF longer than saved";
      const int found = exifOrientation(marker->data, marker->data_length);
      if (found < 0) return "EXIF not plainly readable";
      if (marker->data_length >= 6 && std::memcmp(marker->data, "Exif\0\0", 6) == 0) {
        if (exif) return "more than one EXIF block";
        exif = true;
      }
      if (found > 0) *orientation = found;
    }
  }
  return nullptr;
}

// What sharp's autoOrient does after its resize: libvips' rot, clockwise, by the EXIF orientation's angle,
// then a horizontal flip where the orientation mirrors (sharp's CalculateExifRotationAndFlop). `in` is
// width x height as stored; `out` the same pixels upright (height x width for orientations 5 to 8).
void orient(const uint8_t* in, int width, int height, int orientation, uint8_t* out) {
  static constexpr int kAngle[9] = {0, 0, 0, 180, 180, 90, 90, 270, 270};
  static constexpr bool kFlop[9] = {false, false, true, false, true, true, false, true, false};
  const int angle = kAngle[orientation];
  const bool flop = kFlop[orientation];
  const bool turned = angle == 90 || angle == 270;
  const int outWidth = turned ? height : width;
  const int outHeight = turned ? width : height;
  constexpr int kBlock = 64;  // a block at a time: a turned image is read down its columns
  for (int by = 0; by < outHeight; by += kBlock) {
    for (int bx = 0; bx < outWidth; bx += kBlock) {
      for (int y = by; y < std::min(by + kBlock, outHeight); y++) {
        for (int x = bx; x < std::min(bx + kBlock, outWidth); x++) {
          const int r = flop ? outWidth - 1 - x : x;  // the column in the rotated image
          int sx = r, sy = y;
          if (angle == 90) {
            sx = y;
            sy = height - 1 - r;
          } else if (angle == 180) {
            sx = width - 1 - r;
            sy = height - 1 - y;
          } else if (angle == 270) {
            sx = width - 1 - y;
            sy = r;
          }
          std::memcpy(out + (size_t(y) * outWidth + x) * 3, in + (size_t(sy) * width + sx) * 3, 3);
        }
      }
    }
  }
}

// The input thread's work (see InputThread): every iMCU row of the scan, each published in `rows` once
// decoded. C-style as decode is: its errors and warnings jump back here, to publish the failure.
void consumeRows(j_decompress_ptr cinfo, InputThread* input) {
#ifdef __linux__
  pthread_setname_np(pthread_self(), "facedet-jpeg");  // as tools (and the tests) see it
#endif
  tInputThread = input;
  if (setjmp(input->jump)) {
    InputThread* failed = tInputThread;  // thread-local memory, not the argument
    tInputThread = nullptr;
    failed->rows.store(-1, std::memory_order_release);
    failed->rows.notify_one();
    return;
  }
  while (!input->stop.load(std::memory_order_relaxed)) {
    const int status = jpeg_consume_input(cinfo);
    if (status != JPEG_ROW_COMPLETED && status != JPEG_SCAN_COMPLETED) {
      std::snprintf(input->message, sizeof(input->message), "the scan ended early (%d)", status);
      longjmp(input->jump, 1);
    }
    input->rows.store(static_cast<int>(cinfo->input_iMCU_row), std::memory_order_release);
    input->rows.notify_one();
    if (status == JPEG_SCAN_COMPLETED) break;
  }
  tInputThread = nullptr;
}

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins before sleeping on InputThread::rows: about 0.1 ms on the CPUs measured.
constexpr int kSpins = 4096;

// Waits until the input thread has decoded iMCU row `row`: false if it failed instead. The output side
// is usually the faster one and waits at nearly every row for less than a row's decoding (1920x1080: 45 us),
// so it spins a while first: sleeping and waking at each row cost 0.5 ms of that JPEG's 3.3 (with
// libstdc++'s wait alone).
bool rowDecoded(InputThread* input, int row) {
  for (int spins = 0;; ++spins) {
    const int rows = input->rows.load(std::memory_order_acquire);
    if (rows < 0) return false;
    if (rows > row) return true;
    if (spins < kSpins) {
      cpuRelax();
    } else {
      input->rows.wait(rows, std::memory_order_acquire);
    }
  }
}

// Keeps `thread` off the CPU this one runs on. Linux starts a new thread on its parent's CPU, and when
// libuv's pool has threads idle (measured: 4, the default) it left both there for the whole decode, one
// after the other: 6.1 ms for the 1080p JPEG above instead of 3.3.
void awayFromThisCpu(std::thread* thread) {
#ifdef __linux__
  cpu_set_t allowed;
  const int cpu = sched_getcpu();
  if (cpu < 0 || sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || !CPU_ISSET(cpu, &allowed) ||
      CPU_COUNT(&allowed) < 2)
    return;
  CPU_CLR(cpu, &allowed);
  pthread_setaffinity_np(thread->native_handle(), sizeof(allowed), &allowed);
#endif
}

// Below this many iMCU rows (16 pixel rows each in a 4:2:0 JPEG) a second thread costs more than it saves.
constexpr unsigned kTwoThreadsMinRows = 16;

// Two threads hold the whole image's DCT coefficients (one thread, a few rows of them): 2 bytes a
// coefficient, 36 MB for a 12 MP 4:2:0 JPEG, 3 bytes a pixel; 4:4:4 takes 6. Beyond this, one thread.
constexpr size_t kTwoThreadsMaxCoefficientBytes = size_t(64) << 20;

// The bytes libjpeg's buffered-image mode allocates for the coefficients (header read).
size_t coefficientBytes(const jpeg_decompress_struct& cinfo) {
  size_t blocks = 0;
  for (int i = 0; i < cinfo.num_components; ++i) {
    const jpeg_component_info& c = cinfo.comp_info[i];
    // Each component's rows and columns of blocks, rounded up to whole MCUs (jdcoefct.c).
    const size_t columns = (c.width_in_blocks + c.h_samp_factor - 1) / c.h_samp_factor * c.h_samp_factor;
    const size_t rows = (c.height_in_blocks + c.v_samp_factor - 1) / c.v_samp_factor * c.v_samp_factor;
    blocks += columns * rows;
  }
  return blocks * sizeof(JBLOCK);
}

#ifdef FACEDET_HAVE_LCMS2
// For a JPEG with an ICC profile: in `transform`, the conversion sharp gives its colours (left empty
// where it changes none), or why sharp should decode it. `target` is the profile sharp converts to
// (libvips' sRGB), nullptr to leave every JPEG with a profile to sharp. A malformed profile draws a
// warning from libjpeg, which ends the decode like any other.
const char* colourFor(j_decompress_ptr cinfo, const uint8_t* target, size_t targetSize,
                      ColourTransformSlot* transform) {
  if (!target) return "has an ICC profile";
  // A greyscale JPEG with a profile comes out of sharp in three channels, through the profile.
  if (cinfo->jpeg_color_space != JCS_YCbCr) return "has an ICC profile and is not YCbCr";
  JOCTET* profile = nullptr;
  unsigned int size = 0;
  if (!jpeg_read_icc_profile(cinfo, &profile, &size)) return "ICC profile not read";
  const char* reason = nullptr;
  if (size > kMaxProfileBytes) {
    reason = "ICC profile over 1 MiB";
  } else {
    try {
      *transform = colourTransform(profile, size, target, targetSize, &reason);
    } catch (const std::bad_alloc&) {
      reason = "ICC profile: out of memory";
    }
  }
  std::free(profile);
  if (!reason && (*transform)->identity()) transform->reset();
  if (*transform) (*transform)->used();
  return reason;
}
#else
const char* colourFor(j_decompress_ptr, const uint8_t*, size_t, ColourTransformSlot*) {
  return "has an ICC profile (built without Little CMS)";
}
#endif

// The decoder proper, C-style: nothing with a destructor may live across the setjmp. `errors`,
// `reducer`, `input` and `transform` are the caller's, so that the message outlives this frame, the
// reducer's memory is freed, the input thread joined and the colour conversion released. With `threads` 2, a
// JPEG of one sequential scan (the usual baseline JPEG) is decoded on two threads (InputThread): at
// concurrency 1 on 2 CPUs, a 1920x1080 JPEG resized to 1080x608 in 3.5 instead of 6.0 ms.
const char* decode(const uint8_t* input, size_t inputSize, uint8_t* output, size_t outputSize, int width,
                   int height, int scale, int threads, const uint8_t* profile, size_t profileSize,
                   RgbReducer* reducer, std::vector<uint8_t>* staging, InputThread* inputThread,
                   ColourTransformSlot* transform, int* orientation, ErrorManager* errors) {
  jpeg_decompress_struct cinfo;
  jpeg_progress_mgr progress;
  progress.progress_monitor = onProgress;
  cinfo.err = jpeg_std_error(&errors->pub);
  errors->pub.error_exit = onError;
  errors->pub.emit_message = onMessage;
  errors->message[0] = '\0';
  cinfo.client_data = nullptr;  // the input thread once it runs
  if (setjmp(errors->jump)) {
    // Only what lives in memory is read here (cinfo, reached through its address), not the arguments.
    auto* manager = reinterpret_cast<ErrorManager*>(cinfo.err);
    if (cinfo.client_data) static_cast<InputThread*>(cinfo.client_data)->join();
    jpeg_destroy_decompress(&cinfo);
    return manager->message;
  }
  jpeg_create_decompress(&cinfo);
  cinfo.client_data = nullptr;
  cinfo.progress = &progress;
  jpeg_mem_src(&cinfo, input, static_cast<unsigned long>(inputSize));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 2, 0xffff);  // ICC profiles (jpeg_read_icc_profile)
  jpeg_read_header(&cinfo, TRUE);
  bool icc = false;
  const char* reason = notPlain(cinfo, orientation, &icc);
  if (!reason && icc) reason = colourFor(&cinfo, profile, profileSize, transform);
  // The colour conversion of each row as it is read, before the resize (sharp converts, then resizes).
  const auto convert = [transform](uint8_t* row, int pixels) {
    if (*transform) (*transform)->apply(row, pixels);
  };
  uint8_t* target = output;  // where the pixels go as stored; `output` gets them upright (orient)
  if (!reason && *orientation > 1) {
    try {
      staging->resize(outputSize);
      target = staging->data();
    } catch (const std::bad_alloc&) {
      reason = "out of memory";
    }
  }
  if (!reason) {
    cinfo.out_color_space = JCS_RGB;
    // Shrink-on-load as libvips' jpegload does it: libjpeg scales in the DCT, to ceil(size / scale).
    cinfo.scale_num = 1;
    cinfo.scale_denom = static_cast<unsigned>(scale);
    jpeg_calc_output_dimensions(&cinfo);
    // libjpeg rounds a scaled size up; libvips keeps floor(size / scale) of it, dropping the partial
    // last column and row (jpeg2vips.c: "strict round down on shrink-on-load").
    const int rowWidth = static_cast<int>(cinfo.output_width);
    const int sourceWidth = static_cast<int>(cinfo.image_width) / scale;
    const int sourceHeight = static_cast<int>(cinfo.image_height) / scale;
    const bool resize = scale > 1 || sourceWidth != width || sourceHeight != height;
    if (cinfo.output_components != 3 || size_t(width) * height * 3 != outputSize) {
      reason = "output size differs";
    } else if (sourceWidth < 1 || sourceHeight < 1) {
      reason = "shrinks to nothing";
    } else if (resize) {
      try {
        reason = reducer->plan(sourceWidth, sourceHeight, width, height, target, rowWidth);
      } catch (const std::bad_alloc&) {
        reason = "resize: out of memory";  // and cinfo is still destroyed below
      }
    }
    if (!reason) {
      const size_t stride = size_t(sourceWidth) * 3;
      // One scan with every component (progressive and multi-scan JPEGs are read whole before any
      // output, in any mode), rows enough to pay for a thread and not too many coefficients to hold.
      cinfo.buffered_image = threads > 1 && !cinfo.progressive_mode &&
                             cinfo.comps_in_scan == cinfo.num_components &&
                             cinfo.total_iMCU_rows >= kTwoThreadsMinRows &&
                             coefficientBytes(cinfo) <= kTwoThreadsMaxCoefficientBytes;
      jpeg_start_decompress(&cinfo);
      if (cinfo.buffered_image) {
        jpeg_start_output(&cinfo, cinfo.input_scan_number);
        try {
          inputThread->thread = std::thread(consumeRows, &cinfo, inputThread);
          cinfo.client_data = inputThread;
          awayFromThisCpu(&inputThread->thread);
        } catch (const std::system_error&) {
          // No thread: the output side decodes its input itself, as in one-thread buffered mode.
        }
      }
      while (!reason && cinfo.output_scanline < cinfo.output_height) {
        const JDIMENSION first = cinfo.output_scanline;
        // The row of blocks that libjpeg outputs next must have been decoded (it would decode it here).
        if (cinfo.client_data &&
            !rowDecoded(inputThread,
                        static_cast<int>(std::min(cinfo.output_iMCU_row, cinfo.total_iMCU_rows - 1)))) {
          std::memcpy(errors->message, inputThread->message, sizeof(errors->message));
          reason = errors->message;
          break;
        }
        if (resize) {
          // One row at a time into the reducer's ring, which writes the output rows each completes (a
          // partial last row of a scaled JPEG is read and left: every output row is written by then).
          JSAMPROW row = reducer->sourceRow(static_cast<int>(first));
          if (jpeg_read_scanlines(&cinfo, &row, 1) == 1 && static_cast<int>(first) < sourceHeight) {
            convert(row, rowWidth);
            if (!reducer->sourceRowDone()) reason = "resize: lost a row";
          }
        } else {
          JSAMPROW rows[16];
          const JDIMENSION count = std::min<JDIMENSION>(16, cinfo.output_height - first);
          for (JDIMENSION i = 0; i < count; ++i) rows[i] = target + (first + i) * stride;
          const JDIMENSION read = jpeg_read_scanlines(&cinfo, rows, count);
          for (JDIMENSION i = 0; i < read; ++i) convert(rows[i], sourceWidth);
        }
      }
      if (cinfo.client_data) {
        inputThread->join();
        cinfo.client_data = nullptr;
      }
      if (!reason && cinfo.buffered_image) {
        // Reads on to the next scan or the end. A second scan is an error outside this mode: the same one.
        jpeg_finish_output(&cinfo);
        if (!jpeg_input_complete(&cinfo)) {
          errors->pub.msg_code = JERR_EOI_EXPECTED;
          (*errors->pub.error_exit)(reinterpret_cast<j_common_ptr>(&cinfo));
        }
      }
      if (!reason) jpeg_finish_decompress(&cinfo);
      if (!reason && resize && !reducer->finished()) reason = "resize: rows missing";
      if (!reason && *orientation > 1) orient(target, width, height, *orientation, output);
    }
  }
  jpeg_destroy_decompress(&cinfo);
  return reason;
}

class DecodeWorker : public Napi::AsyncWorker {
 public:
  DecodeWorker(Napi::Env env, Napi::Uint8Array input, Napi::Uint8Array output, int width, int height,
               int scale, int threads, Napi::Value profile)
      : Napi::AsyncWorker(env, "facedet:decodeJpeg"),
        input_(input.Data()),
        inputSize_(input.ByteLength()),
        output_(output.Data()),
        outputSize_(output.ByteLength()),
        width_(width),
        height_(height),
        scale_(scale),
        threads_(threads),
        deferred_(env) {
    // The arrays are read and written on the worker thread: hold them until it is done.
    inputRef_ = Napi::Persistent(input.As<Napi::Object>());
    outputRef_ = Napi::Persistent(output.As<Napi::Object>());
    if (profile.IsTypedArray()) {
      const auto bytes = profile.As<Napi::Uint8Array>();
      profile_ = bytes.Data();
      profileSize_ = bytes.ByteLength();
      profileRef_ = Napi::Persistent(profile.As<Napi::Object>());
    }
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      reason_ = decodeJpegInto(input_, inputSize_, output_, outputSize_, width_, height_, scale_, threads_,
                               profile_, profileSize_, &orientation_);
    } catch (const std::exception& e) {
      reason_ = std::string("failed: ") + e.what();
    }
  }

  void OnOK() override {
    inputRef_.Reset();
    outputRef_.Reset();
    profileRef_.Reset();
    Napi::Env env = Env();
    deferred_.Resolve(reason_.empty() ? Napi::Number::New(env, orientation_).As<Napi::Value>()
                                      : Napi::String::New(env, reason_).As<Napi::Value>());
  }

  void OnError(const Napi::Error& e) override {
    inputRef_.Reset();
    outputRef_.Reset();
    profileRef_.Reset();
    deferred_.Reject(e.Value());
  }

 private:
  const uint8_t* input_;
  size_t inputSize_;
  uint8_t* output_;
  size_t outputSize_;
  int width_;
  int height_;
  int scale_;
  int threads_;
  const uint8_t* profile_ = nullptr;
  size_t profileSize_ = 0;
  int orientation_ = 1;
  std::string reason_;
  Napi::ObjectReference inputRef_;
  Napi::ObjectReference outputRef_;
  Napi::ObjectReference profileRef_;
  Napi::Promise::Deferred deferred_;
};

}  // namespace

std::string decodeJpegInto(const uint8_t* input, size_t inputSize, uint8_t* output, size_t outputSize,
                           int width, int height, int scale, int threads, const uint8_t* profile,
                           size_t profileSize, int* orientation) {
  ErrorManager errors;
  RgbReducer reducer;
  std::vector<uint8_t> staging;
  InputThread inputThread;
  ColourTransformSlot transform;
  const char* reason =
      decode(input, inputSize, output, outputSize, width, height, scale, threads, profile, profileSize,
             &reducer, &staging, &inputThread, &transform, orientation, &errors);
  if (!reason) return std::string();
  return reason == errors.message ? std::string("libjpeg: ") + reason : std::string(reason);
}

Napi::Value DecodeJpeg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // The library validates in TS; this only keeps a wrong call from reaching memory it does not own.
  const auto isBytes = [](const Napi::Value& value) {
    return value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array;
  };
  const auto isSide = [](const Napi::Value& value) {
    if (!value.IsNumber()) return false;
    const double side = value.As<Napi::Number>().DoubleValue();
    return side >= 1 && side <= 65535 && side == static_cast<int>(side);
  };
  const auto isScale = [](const Napi::Value& value) {
    if (!value.IsNumber()) return false;
    const double scale = value.As<Napi::Number>().DoubleValue();
    return scale == 1 || scale == 2 || scale == 4 || scale == 8;
  };
  const auto isThreads = [](const Napi::Value& value) {
    if (!value.IsNumber()) return false;
    const double threads = value.As<Napi::Number>().DoubleValue();
    return threads == 1 || threads == 2;
  };
  if (info.Length() != 7 || !isBytes(info[0]) || !isBytes(info[1]) || !isSide(info[2]) || !isSide(info[3]) ||
      !isScale(info[4]) || !isThreads(info[5]) || !(isBytes(info[6]) || info[6].IsUndefined())) {
    throw Napi::TypeError::New(
        env,
        "decodeJpeg(input, output, width, height, scale, threads, profile) takes two Uint8Arrays, "
        "two integers from 1 to 65535, a scale of 1, 2, 4 or 8, 1 or 2 threads and a Uint8Array or "
        "undefined");
  }
  auto* worker = new DecodeWorker(
      env, info[0].As<Napi::Uint8Array>(), info[1].As<Napi::Uint8Array>(),
      info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int32Value(),
      info[4].As<Napi::Number>().Int32Value(), info[5].As<Napi::Number>().Int32Value(), info[6]);
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

const char* jpegVersion() { return FACEDET_STRINGIFY(LIBJPEG_TURBO_VERSION); }

int colourVersion() {
#ifdef FACEDET_HAVE_LCMS2
  return lcmsVersion();
#else
  return 0;
#endif
}

#ifndef FACEDET_HAVE_LCMS2
void setColourTableLimit(int) {}
#endif

int colourTableCount(bool filled) {
#ifdef FACEDET_HAVE_LCMS2
  return filled ? colourTablesFilled() : colourTables();
#else
  return 0;
#endif
}

}  // namespace facedet
