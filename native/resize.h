// SPDX-License-Identifier: MIT
// RgbReducer: sharp's resize(width, height, { fit: 'fill', kernel: 'linear' }) of 8-bit RGB, byte for byte,
// for reductions by less than 4 on each axis, fed one source row at a time so that the JPEG decoder
// (jpeg.cc) streams into it: the full-size image never exists, only a few of its rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace facedet {

class RgbReducer {
 public:
  // Prepares reducing a width x height image into `output` (outWidth x outHeight, RGB; the same size
  // copies it). Its rows may come rowWidth >= width pixels wide: the first `width` are the image. Returns
  // nullptr when it can do it exactly as sharp would, else why not (a static string).
  const char* plan(int width, int height, int outWidth, int outHeight, uint8_t* output, int rowWidth);

  // Where source row `y` goes (rowWidth * 3 bytes). Rows come in order: 0, 1, 2, ...
  uint8_t* sourceRow(int y);

  // The next source row has been written: writes every output row it completes. False if a row it
  // needs has already left its ring of rows (not expected: then the output is incomplete).
  bool sourceRowDone();

  // Whether every output row has been written.
  bool finished() const { return next_ == outHeight_; }

  // One axis of libvips' reduce: for each output index, the first input index it reads (in the input
  // extended by `margin` copies of its first element) and its `taps` weights (fixed point, 12 bits).
  struct Axis {
    int taps = 1;
    int margin = 0;
    bool identity = true;
    std::vector<int> first;
    std::vector<int16_t> weights;
  };

 private:
  void writeRow(int y);

  Axis vertical_;
  Axis horizontal_;
  int width_ = 0;
  int height_ = 0;
  int outWidth_ = 0;
  int outHeight_ = 0;
  uint8_t* output_ = nullptr;
  int ringRows_ = 0;
  size_t rowStride_ = 0;
  size_t reducedOffset_ = 0;
  size_t start_ = 0;  // where in buffer_ the first row starts (16 bytes past a cache line)
  // The last ringRows_ source rows, then one vertically reduced row extended left and right for reduceh.
  std::vector<uint8_t> buffer_;
  int decoded_ = 0;
  int next_ = 0;
};

}  // namespace facedet
