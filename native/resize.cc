// SPDX-License-Identifier: MIT
// sharp 0.35 resizes with libvips 8.18: resize(w, h, { fit: 'fill', kernel: 'linear' }) is vips_resize
// with scale 1 / (W / w) and vscale 1 / (H / h), which for a reduction by less than 4 is reducev then
// reduceh (libvips/resample/reducev.cpp, reduceh.cpp, templates.h; their Highway paths for 8-bit
// images give the same integers as their C paths). Both axes are reproduced here with the same doubles,
// computed in the same order, down to one detail: reducev's row positions are summed from the top of each
// 10-row strip and reduceh's from the left edge. (sharp reads a JPEG sequentially, so reducev's output
// goes through vips_sequential's line cache, which asks for rows 10 at a time; from raw pixels libvips
// would ask in strips of 16 instead.) test/jpeg.test.ts compares the result with sharp's over many sizes,
// chosen so that the rounding of those sums decides pixels.
#include "resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace facedet {
namespace {

constexpr int kTransformScale = 64;    // VIPS_TRANSFORM_SCALE: mask positions per pixel
constexpr int kInterpolateShift = 12;  // VIPS_INTERPOLATE_SHIFT: fixed-point weights
constexpr int kStripRows = 10;         // vips_sequential's tile_height in vips_reducev_build
constexpr int kMaxTaps = 16;           // a reduction by less than 4 needs at most 9
constexpr int kChannels = 3;

// templates.h: filter<VIPS_KERNEL_LINEAR> and calculate_coefficients (libvips 8.18 divides by shrink).
void linearMask(double* c, int taps, double shrink, double x) {
  const double half = x + taps / 2.0 - 1;
  double sum = 0.0;
  for (int i = 0; i < taps; i++) {
    const double xp = std::fabs((i - half) / shrink);
    c[i] = xp < 1.0 ? 1.0 - xp : 0.0;
    sum += c[i];
  }
  for (int i = 0; i < taps; i++) c[i] /= sum;
}

// One axis: sharp's shrink (in / out), vips_resize's scale (its reciprocal, at least 1 / in), and
// vips_reduceh/v with that scale's reciprocal, the linear kernel and gap 2. `strip`: the output indices
// at which libvips restarts its running position (0: only at the first).
const char* planAxis(int in, int out, int strip, RgbReducer::Axis& axis) {
  axis = RgbReducer::Axis();
  if (out == in) return nullptr;
  if (out < 1 || out > in) return "resize: not a reduction";
  const double scale = std::max(1.0 / (static_cast<double>(in) / out), 1.0 / in);
  const double shrink = 1.0 / scale;
  const int size = static_cast<int>(static_cast<double>(in) / shrink + 0.5);  // VIPS_ROUND_UINT
  if (size != out) return "resize: libvips would give another size";
  if (std::floor(static_cast<double>(in) / size / 2.0) > 1) return "resize: libvips would shrink first";
  if (shrink == 1.0) return nullptr;
  const double extra = size * shrink - in;
  const int taps = static_cast<int>(2 * std::rint(shrink) + 1);
  if (taps > kMaxTaps) return "resize: too many taps";
  const double offset = (1 + extra) / 2.0 - 1;

  int16_t masks[kTransformScale + 1][kMaxTaps];
  for (int t = 0; t <= kTransformScale; t++) {
    double mask[kMaxTaps];
    linearMask(mask, taps, shrink, static_cast<float>(t) / kTransformScale);
    for (int i = 0; i < taps; i++) masks[t][i] = static_cast<int16_t>(mask[i] * (1 << kInterpolateShift));
  }

  axis.taps = taps;
  axis.margin = static_cast<int>(std::ceil(taps / 2.0)) - 1;
  axis.identity = false;
  axis.first.resize(out);
  axis.weights.resize(size_t(out) * taps);
  double position = 0;
  for (int o = 0; o < out; o++) {
    if (o == 0 || (strip > 0 && o % strip == 0))
      position = (o + 0.5) * shrink - 0.5 - offset;
    else
      position += shrink;
    const int whole = static_cast<int>(position);
    const int fraction = static_cast<int>(position * kTransformScale * 2);
    const int t = ((fraction & (kTransformScale * 2 - 1)) + 1) >> 1;
    // Within the input as libvips extends it (in + taps elements: `margin` copies of the first element
    // before it, copies of the last after it).
    if (whole < 0 || whole > in) return "resize: reads outside the extended image";
    axis.first[o] = whole;
    std::memcpy(&axis.weights[size_t(o) * taps], masks[t], taps * sizeof(int16_t));
  }
  return nullptr;
}

uint8_t toByte(int32_t sum) { return static_cast<uint8_t>(std::clamp(sum >> kInterpolateShift, 0, 255)); }

constexpr int32_t kHalf = 1 << (kInterpolateShift - 1);

// reducev: `count` bytes of output from `taps` rows. The sums are exact integers, so any order of
// adding them gives libvips' bytes; on x86 SSE2 (always there on x86-64) adds 16 bytes' worth at a time,
// two rows per multiply-add as libvips' Highway path does. `from`: the offset in the rows at which `out`
// starts.
void reduceRows(const uint8_t* const* rows, const int16_t* weights, int taps, int count, uint8_t* out,
                int from = 0) {
  const uint8_t* shifted[kMaxTaps];
  for (int i = 0; i < taps; i++) shifted[i] = rows[i] + from;
  rows = shifted;
  int x = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  const __m128i half = _mm_set1_epi32(kHalf);
  for (; x + 16 <= count; x += 16) {
    __m128i sum0 = half, sum1 = half, sum2 = half, sum3 = half;
    for (int i = 0; i < taps; i += 2) {
      const bool pair = i + 1 < taps;
      const int32_t both = int32_t(uint16_t(weights[i])) | (int32_t(pair ? weights[i + 1] : 0) << 16);
      const __m128i k = _mm_set1_epi32(both);
      const __m128i top = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[i] + x));
      const __m128i bottom = pair ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[i + 1] + x)) : zero;
      const __m128i low = _mm_unpacklo_epi8(top, bottom);
      const __m128i high = _mm_unpackhi_epi8(top, bottom);
      sum0 = _mm_add_epi32(sum0, _mm_madd_epi16(_mm_unpacklo_epi8(low, zero), k));
      sum1 = _mm_add_epi32(sum1, _mm_madd_epi16(_mm_unpackhi_epi8(low, zero), k));
      sum2 = _mm_add_epi32(sum2, _mm_madd_epi16(_mm_unpacklo_epi8(high, zero), k));
      sum3 = _mm_add_epi32(sum3, _mm_madd_epi16(_mm_unpackhi_epi8(high, zero), k));
    }
    const __m128i low =
        _mm_packs_epi32(_mm_srai_epi32(sum0, kInterpolateShift), _mm_srai_epi32(sum1, kInterpolateShift));
    const __m128i high =
        _mm_packs_epi32(_mm_srai_epi32(sum2, kInterpolateShift), _mm_srai_epi32(sum3, kInterpolateShift));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x), _mm_packus_epi16(low, high));
  }
#endif
  for (; x < count; x++) {
    int32_t sum = kHalf;
    for (int i = 0; i < taps; i++) sum += weights[i] * rows[i][x];
    out[x] = toByte(sum);
  }
}

#if defined(__x86_64__) || defined(__i386__)
// The same, 32 bytes at a time (AVX2 unpacks and packs within 128-bit lanes, which leaves bytes in order).
__attribute__((target("avx2"))) void reduceRowsAvx2(const uint8_t* const* rows, const int16_t* weights,
                                                    int taps, int count, uint8_t* out) {
  int x = 0;
  const __m256i zero = _mm256_setzero_si256();
  const __m256i half = _mm256_set1_epi32(kHalf);
  for (; x + 32 <= count; x += 32) {
    __m256i sum0 = half, sum1 = half, sum2 = half, sum3 = half;
    for (int i = 0; i < taps; i += 2) {
      const bool pair = i + 1 < taps;
      const int32_t both = int32_t(uint16_t(weights[i])) | (int32_t(pair ? weights[i + 1] : 0) << 16);
      const __m256i k = _mm256_set1_epi32(both);
      const __m256i top = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + x));
      const __m256i bottom =
          pair ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i + 1] + x)) : zero;
      const __m256i low = _mm256_unpacklo_epi8(top, bottom);
      const __m256i high = _mm256_unpackhi_epi8(top, bottom);
      sum0 = _mm256_add_epi32(sum0, _mm256_madd_epi16(_mm256_unpacklo_epi8(low, zero), k));
      sum1 = _mm256_add_epi32(sum1, _mm256_madd_epi16(_mm256_unpackhi_epi8(low, zero), k));
      sum2 = _mm256_add_epi32(sum2, _mm256_madd_epi16(_mm256_unpacklo_epi8(high, zero), k));
      sum3 = _mm256_add_epi32(sum3, _mm256_madd_epi16(_mm256_unpackhi_epi8(high, zero), k));
    }
    const __m256i low = _mm256_packs_epi32(_mm256_srai_epi32(sum0, kInterpolateShift),
                                           _mm256_srai_epi32(sum1, kInterpolateShift));
    const __m256i high = _mm256_packs_epi32(_mm256_srai_epi32(sum2, kInterpolateShift),
                                            _mm256_srai_epi32(sum3, kInterpolateShift));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + x), _mm256_packus_epi16(low, high));
  }
  if (x < count) reduceRows(rows, weights, taps, count - x, out + x, x);
}
#endif

// reduceh over one extended row (RGB), one output pixel at a time.
void reduceColumns(const uint8_t* in, const RgbReducer::Axis& axis, int outWidth, uint8_t* out) {
  const int n = axis.taps;
  for (int x = 0; x < outWidth; x++) {
    const uint8_t* p = in + axis.first[x] * kChannels;
    const int16_t* w = &axis.weights[size_t(x) * n];
    int32_t r = kHalf, g = kHalf, b = kHalf;
    for (int i = 0; i < n; i++) {
      r += w[i] * p[i * kChannels];
      g += w[i] * p[i * kChannels + 1];
      b += w[i] * p[i * kChannels + 2];
    }
    out[x * kChannels] = toByte(r);
    out[x * kChannels + 1] = toByte(g);
    out[x * kChannels + 2] = toByte(b);
  }
}

#if defined(__x86_64__) || defined(__i386__)
// The same with SSSE3's byte shuffle, as libvips' Highway path: two pixels' channels paired per
// multiply-add. Reads up to 16 bytes from each pixel it starts at (the row has that much slack).
struct Shuffles {
  __m128i pairLow, pairHigh, single;
};

__attribute__((target("ssse3"))) inline Shuffles shuffles() {
  return {_mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1),
          _mm_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1),
          _mm_setr_epi8(0, -1, -1, -1, 1, -1, -1, -1, 2, -1, -1, -1, -1, -1, -1, -1)};
}

// The sums (before the shift) of one output pixel, in the first three 32-bit lanes.
__attribute__((target("ssse3"))) inline __m128i columnSums(const uint8_t* p, const int16_t* w, int n,
                                                           const Shuffles& s) {
  __m128i sum = _mm_set1_epi32(kHalf);
  int i = 0;
  for (; i + 4 <= n; i += 4, p += 4 * kChannels) {
    const __m128i source = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    int32_t k01, k23;
    std::memcpy(&k01, w + i, 4);
    std::memcpy(&k23, w + i + 2, 4);
    sum = _mm_add_epi32(sum, _mm_madd_epi16(_mm_shuffle_epi8(source, s.pairLow), _mm_set1_epi32(k01)));
    sum = _mm_add_epi32(sum, _mm_madd_epi16(_mm_shuffle_epi8(source, s.pairHigh), _mm_set1_epi32(k23)));
  }
  for (; i + 2 <= n; i += 2, p += 2 * kChannels) {
    const __m128i source = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    int32_t k01;
    std::memcpy(&k01, w + i, 4);
    sum = _mm_add_epi32(sum, _mm_madd_epi16(_mm_shuffle_epi8(source, s.pairLow), _mm_set1_epi32(k01)));
  }
  for (; i < n; i++, p += kChannels) {
    const __m128i source = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    sum = _mm_add_epi32(sum,
                        _mm_madd_epi16(_mm_shuffle_epi8(source, s.single), _mm_set1_epi32(uint16_t(w[i]))));
  }
  return sum;
}

// Four output pixels' sums to bytes, written as 12 bytes.
__attribute__((target("ssse3"))) inline void storeFour(__m128i a, __m128i b, __m128i c, __m128i d,
                                                       uint8_t* out) {
  const __m128i ab =
      _mm_packs_epi32(_mm_srai_epi32(a, kInterpolateShift), _mm_srai_epi32(b, kInterpolateShift));
  const __m128i cd =
      _mm_packs_epi32(_mm_srai_epi32(c, kInterpolateShift), _mm_srai_epi32(d, kInterpolateShift));
  // Bytes: a0 a1 a2 _ b0 b1 b2 _ c0 c1 c2 _ d0 d1 d2 _ -> the 12 bytes of RGB.
  const __m128i rgb = _mm_shuffle_epi8(_mm_packus_epi16(ab, cd),
                                       _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
  alignas(16) uint8_t bytes[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(bytes), rgb);
  std::memcpy(out, bytes, 4 * kChannels);
}

template <int kTaps>
__attribute__((target("ssse3"))) void reduceColumnsSsse3(const uint8_t* in, const RgbReducer::Axis& axis,
                                                         int outWidth, uint8_t* out) {
  const int n = kTaps > 0 ? kTaps : axis.taps;
  const int* first = axis.first.data();
  const int16_t* weights = axis.weights.data();
  const Shuffles s = shuffles();
  int x = 0;
  for (; x + 4 <= outWidth; x += 4) {
    const __m128i a = columnSums(in + first[x] * kChannels, weights + size_t(x) * n, n, s);
    const __m128i b = columnSums(in + first[x + 1] * kChannels, weights + size_t(x + 1) * n, n, s);
    const __m128i c = columnSums(in + first[x + 2] * kChannels, weights + size_t(x + 2) * n, n, s);
    const __m128i d = columnSums(in + first[x + 3] * kChannels, weights + size_t(x + 3) * n, n, s);
    storeFour(a, b, c, d, out + x * kChannels);
  }
  for (; x < outWidth; x++) {
    const __m128i a = columnSums(in + first[x] * kChannels, weights + size_t(x) * n, n, s);
    alignas(16) uint8_t bytes[16];
    _mm_store_si128(
        reinterpret_cast<__m128i*>(bytes),
        _mm_shuffle_epi8(_mm_packus_epi16(_mm_packs_epi32(_mm_srai_epi32(a, kInterpolateShift), a), a),
                         _mm_setr_epi8(0, 1, 2, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)));
    std::memcpy(out + x * kChannels, bytes, kChannels);
  }
}
#endif

}  // namespace

const char* RgbReducer::plan(int width, int height, int outWidth, int outHeight, uint8_t* output,
                             int rowWidth) {
  if (const char* why = planAxis(height, outHeight, kStripRows, vertical_)) return why;
  if (const char* why = planAxis(width, outWidth, 0, horizontal_)) return why;
  width_ = width;
  height_ = height;
  outWidth_ = outWidth;
  outHeight_ = outHeight;
  output_ = output;
  ringRows_ = vertical_.taps + 2;
  // Every row starts 16 bytes past a cache line, never on a 32-byte boundary: libjpeg-turbo's SIMD colour
  // conversion writes a row whose start is aligned with non-temporal stores, straight to memory, and
  // reducev reads those rows right back (the whole resize then took 2.6 instead of 1.1 ms for the
  // 1920x1080 JPEG, depending on where malloc put the buffer).
  rowStride_ = (size_t(std::max(width, rowWidth)) * kChannels + 63) / 64 * 64;
  reducedOffset_ = size_t(ringRows_) * rowStride_;
  buffer_.resize(reducedOffset_ + size_t(width + horizontal_.taps) * kChannels + 16 +
                 80);  // + 16: read ahead
  start_ = (80 - reinterpret_cast<uintptr_t>(buffer_.data()) % 64) % 64;
  decoded_ = 0;
  next_ = 0;
  return nullptr;
}

uint8_t* RgbReducer::sourceRow(int y) { return &buffer_[start_ + size_t(y % ringRows_) * rowStride_]; }

bool RgbReducer::sourceRowDone() {
  ++decoded_;
  while (next_ < outHeight_) {
    int top = next_, bottom = next_;
    if (!vertical_.identity) {
      top = std::clamp(vertical_.first[next_] - vertical_.margin, 0, height_ - 1);
      bottom = std::clamp(vertical_.first[next_] + vertical_.taps - 1 - vertical_.margin, 0, height_ - 1);
    }
    if (bottom >= decoded_) return true;
    if (top < decoded_ - ringRows_) return false;
    writeRow(next_++);
  }
  return true;
}

void RgbReducer::writeRow(int y) {
  uint8_t* out = output_ + size_t(y) * outWidth_ * kChannels;
  const size_t rowBytes = size_t(width_) * kChannels;
  // The vertically reduced row goes where reduceh wants it: after `margin` pixels of its extension.
  uint8_t* reduced = &buffer_[start_ + reducedOffset_];
  uint8_t* row = horizontal_.identity ? out : reduced + size_t(horizontal_.margin) * kChannels;
  if (vertical_.identity) {
    std::memcpy(row, sourceRow(y), rowBytes);
  } else {
    const uint8_t* rows[kMaxTaps];
    for (int i = 0; i < vertical_.taps; i++)
      rows[i] = sourceRow(std::clamp(vertical_.first[y] + i - vertical_.margin, 0, height_ - 1));
    const int16_t* weights = &vertical_.weights[size_t(y) * vertical_.taps];
#if defined(__x86_64__) || defined(__i386__)
    static const bool avx2 = __builtin_cpu_supports("avx2");
    if (avx2)
      reduceRowsAvx2(rows, weights, vertical_.taps, int(rowBytes), row);
    else
#endif
      reduceRows(rows, weights, vertical_.taps, int(rowBytes), row);
  }
  if (horizontal_.identity) return;
  // vips_embed with VIPS_EXTEND_COPY: the first pixel repeated on the left, the last on the right.
  for (int i = 0; i < horizontal_.margin; i++) std::memcpy(reduced + size_t(i) * kChannels, row, kChannels);
  for (int i = horizontal_.margin + width_; i < width_ + horizontal_.taps; i++)
    std::memcpy(reduced + size_t(i) * kChannels, row + rowBytes - kChannels, kChannels);
#if defined(__x86_64__) || defined(__i386__)
  static const bool ssse3 = __builtin_cpu_supports("ssse3");
  if (ssse3) {
    switch (horizontal_.taps) {
      case 3:
        return reduceColumnsSsse3<3>(reduced, horizontal_, outWidth_, out);
      case 5:
        return reduceColumnsSsse3<5>(reduced, horizontal_, outWidth_, out);
      case 7:
        return reduceColumnsSsse3<7>(reduced, horizontal_, outWidth_, out);
      default:
        return reduceColumnsSsse3<0>(reduced, horizontal_, outWidth_, out);
    }
  }
#endif
  reduceColumns(reduced, horizontal_, outWidth_, out);
}

}  // namespace facedet
