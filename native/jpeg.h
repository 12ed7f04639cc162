// SPDX-License-Identifier: MIT
// decodeJpeg(input, output, width, height, scale, threads, profile): libjpeg-turbo straight into the caller's
// buffer, shrunk on load, converted by an ICC profile and resized as sharp does all three (resize.h, icc.h),
// for the plain JPEGs (see jpeg.cc); everything else is left to sharp.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace facedet {

// Decodes `input` into `output` (RGB, 8 bits, width * height * 3 bytes) when the JPEG is a plain one:
// 8-bit greyscale or YCbCr, EXIF plainly readable, at most 256 scans, and libjpeg reports neither an error
// nor a warning. A YCbCr JPEG with an RGB ICC profile is converted from it to `profile` (libvips' sRGB,
// what sharp converts to; nullptr leaves JPEGs with a profile to sharp) as sharp converts it (icc.h), before
// the resize. `scale` (1, 2, 4 or 8) has libjpeg shrink it while decoding
// (in the DCT, to ceil(size / scale), as libvips' jpegload does with its `shrink`); a width and height
// (as stored) other than that size resize it as sharp's resize(width, height, { fit: 'fill', kernel:
// 'linear' }) would (RgbReducer: reductions by less than 4); then its EXIF orientation turns it upright,
// as sharp's autoOrient does after resizing. `threads` 2 lets a JPEG of one sequential scan be decoded
// on two threads (libjpeg's entropy decoding on a second one), into the same pixels. Returns an empty
// string and sets `orientation` (1 to 8) when it did, or says why not.
std::string decodeJpegInto(const uint8_t* input, size_t inputSize, uint8_t* output, size_t outputSize,
                           int width, int height, int scale, int threads, const uint8_t* profile,
                           size_t profileSize, int* orientation);

// The JS function: decodeJpeg(input: Uint8Array, output: Uint8Array, width: number, height: number,
// scale: 1 | 2 | 4 | 8, threads: 1 | 2, profile: Uint8Array | undefined): Promise<number | string>, the EXIF
// orientation it applied (1 to 8) when the pixels are in `output`, else the reason it was left alone. Runs on
// libuv's pool (and with 2 threads, on one thread more of its own).
Napi::Value DecodeJpeg(const Napi::CallbackInfo& info);

// libjpeg-turbo's version, as "2.1.5" (LIBJPEG_TURBO_VERSION at build time).
const char* jpegVersion();

// Little CMS's version (2140 for 2.14) where the module converts JPEGs with an ICC profile, else 0.
int colourVersion();

// Profiles whose table of every colour's result is built and in use, or (`filled`) the tables filled so
// far, identities included (icc.h), for tests and benchmarks.
int colourTableCount(bool filled);

// At most `limit` tables at once (0 to 8; icc.h); nothing without Little CMS.
void setColourTableLimit(int limit);

}  // namespace facedet
