// SPDX-License-Identifier: MIT
// The JPEG fast path. sharp (libvips with mozjpeg) takes 1.9-2.0 ms for a 512x512 JPEG that libjpeg-turbo
// decodes in 0.73 ms on the same core, most of the difference in libvips' thread hand-offs (about 50
// context switches a call). For a JPEG whose colours sharp would not change (no colour profile to apply)
// both give the same bytes, so the library decodes those here (shrunk on load by libjpeg where sharp
// would have it shrink them, resized as sharp would, row by row as they are decoded: resize.cc, and turned
// upright by their EXIF orientation as sharp turns them) and leaves every other image, and every JPEG that
// draws so much as a warning, to sharp.
#include "jpeg.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>
#include <vector>

#include "resize.h"

// jpeglib.h needs FILE and size_t declared before it.
#include <jpeglib.h>

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

[[noreturn]] void onError(j_common_ptr cinfo) {
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
// `orientation` is its EXIF orientation (1 when it has none).
const char* notPlain(const jpeg_decompress_struct& cinfo, int* orientation) {
  if (cinfo.data_precision != 8) return "not 8 bits per sample";
  if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_GRAYSCALE)
    return "colour space is not YCbCr or greyscale";
  *orientation = 1;
  bool exif = false;
  for (jpeg_saved_marker_ptr marker = cinfo.marker_list; marker; marker = marker->next) {
    if (marker->marker == JPEG_APP0 + 2 && marker->data_length >= 12 &&
        std::memcmp(marker->data, "ICC_PROFILE\0", 12) == 0)
      return "has an ICC profile";
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

// The decoder proper, C-style: nothing with a destructor may live across the setjmp. `errors` and
// `reducer` are the caller's, so that the message outlives this frame and the reducer's memory is freed.
const char* decode(const uint8_t* input, size_t inputSize, uint8_t* output, size_t outputSize, int width,
                   int height, int scale, RgbReducer* reducer, std::vector<uint8_t>* staging,
                   int* orientation, ErrorManager* errors) {
  jpeg_decompress_struct cinfo;
  jpeg_progress_mgr progress;
  progress.progress_monitor = onProgress;
  cinfo.err = jpeg_std_error(&errors->pub);
  errors->pub.error_exit = onError;
  errors->pub.emit_message = onMessage;
  errors->message[0] = '\0';
  if (setjmp(errors->jump)) {
    // Only what lives in memory is read here (cinfo, reached through its address), not the arguments.
    auto* manager = reinterpret_cast<ErrorManager*>(cinfo.err);
    jpeg_destroy_decompress(&cinfo);
    return manager->message;
  }
  jpeg_create_decompress(&cinfo);
  cinfo.progress = &progress;
  jpeg_mem_src(&cinfo, input, static_cast<unsigned long>(inputSize));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 2, 12);
  jpeg_read_header(&cinfo, TRUE);
  const char* reason = notPlain(cinfo, orientation);
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
      jpeg_start_decompress(&cinfo);
      while (!reason && cinfo.output_scanline < cinfo.output_height) {
        const JDIMENSION first = cinfo.output_scanline;
        if (resize) {
          // One row at a time into the reducer's ring, which writes the output rows each completes (a
          // partial last row of a scaled JPEG is read and left: every output row is written by then).
          JSAMPROW row = reducer->sourceRow(static_cast<int>(first));
          if (jpeg_read_scanlines(&cinfo, &row, 1) == 1 && static_cast<int>(first) < sourceHeight &&
              !reducer->sourceRowDone())
            reason = "resize: lost a row";
        } else {
          JSAMPROW rows[16];
          const JDIMENSION count = std::min<JDIMENSION>(16, cinfo.output_height - first);
          for (JDIMENSION i = 0; i < count; ++i) rows[i] = target + (first + i) * stride;
          jpeg_read_scanlines(&cinfo, rows, count);
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
               int scale)
      : Napi::AsyncWorker(env, "facedet:decodeJpeg"),
        input_(input.Data()),
        inputSize_(input.ByteLength()),
        output_(output.Data()),
        outputSize_(output.ByteLength()),
        width_(width),
        height_(height),
        scale_(scale),
        deferred_(env) {
    // Both arrays are read and written on the worker thread: hold them until it is done.
    inputRef_ = Napi::Persistent(input.As<Napi::Object>());
    outputRef_ = Napi::Persistent(output.As<Napi::Object>());
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      reason_ =
          decodeJpegInto(input_, inputSize_, output_, outputSize_, width_, height_, scale_, &orientation_);
    } catch (const std::exception& e) {
      reason_ = std::string("failed: ") + e.what();
    }
  }

  void OnOK() override {
    inputRef_.Reset();
    outputRef_.Reset();
    Napi::Env env = Env();
    deferred_.Resolve(reason_.empty() ? Napi::Number::New(env, orientation_).As<Napi::Value>()
                                      : Napi::String::New(env, reason_).As<Napi::Value>());
  }

  void OnError(const Napi::Error& e) override {
    inputRef_.Reset();
    outputRef_.Reset();
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
  int orientation_ = 1;
  std::string reason_;
  Napi::ObjectReference inputRef_;
  Napi::ObjectReference outputRef_;
  Napi::Promise::Deferred deferred_;
};

}  // namespace

std::string decodeJpegInto(const uint8_t* input, size_t inputSize, uint8_t* output, size_t outputSize,
                           int width, int height, int scale, int* orientation) {
  ErrorManager errors;
  RgbReducer reducer;
  std::vector<uint8_t> staging;
  const char* reason = decode(input, inputSize, output, outputSize, width, height, scale, &reducer, &staging,
                              orientation, &errors);
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
  if (info.Length() != 5 || !isBytes(info[0]) || !isBytes(info[1]) || !isSide(info[2]) || !isSide(info[3]) ||
      !isScale(info[4])) {
    throw Napi::TypeError::New(env,
                               "decodeJpeg(input, output, width, height, scale) takes two Uint8Arrays, two "
                               "integers from 1 to 65535 and a scale of 1, 2, 4 or 8");
  }
  auto* worker =
      new DecodeWorker(env, info[0].As<Napi::Uint8Array>(), info[1].As<Napi::Uint8Array>(),
                       info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int32Value(),
                       info[4].As<Napi::Number>().Int32Value());
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

const char* jpegVersion() { return FACEDET_STRINGIFY(LIBJPEG_TURBO_VERSION); }

}  // namespace facedet
