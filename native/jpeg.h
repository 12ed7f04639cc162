// SPDX-License-Identifier: MIT
// decodeJpeg(input, output): libjpeg-turbo straight into the caller's buffer, for the plain JPEGs whose
// pixels sharp would give unchanged (see jpeg.cc); everything else is left to sharp.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace facedet {

// Decodes `input` into `output` (RGB, 8 bits, width * height * 3 bytes, the JPEG's own size) when the
// JPEG is a plain one: 8-bit greyscale or YCbCr, no ICC profile, EXIF orientation absent or 1, at most
// 256 scans, and libjpeg reports neither an error nor a warning. Returns an empty string when it did,
// or why not.
std::string decodeJpegInto(const uint8_t* input, size_t inputSize, uint8_t* output, size_t outputSize);

// The JS function: decodeJpeg(input: Uint8Array, output: Uint8Array): Promise<string | null>, null when
// the pixels are in `output`, else the reason it was left alone. Runs on libuv's pool.
Napi::Value DecodeJpeg(const Napi::CallbackInfo& info);

// libjpeg-turbo's version, as "2.1.5" (LIBJPEG_TURBO_VERSION at build time).
const char* jpegVersion();

}  // namespace facedet
