// SPDX-License-Identifier: MIT
// The colour conversion sharp applies to a JPEG with an ICC profile, for the JPEG fast path (jpeg.cc):
// libvips' icc_transform from the embedded profile to its own sRGB profile, perceptual intent, 8 bits in
// and out (sharp's pipeline.cc), done by Little CMS exactly as libvips calls it (icc_transform.c:
// cmsCreateTransform with cmsFLAGS_NOCACHE, cmsDoTransform a row at a time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace facedet {

class ColourTransform {
 public:
  ColourTransform(void* handle, bool identity) : handle_(handle), identity_(identity) {}
  ~ColourTransform();
  ColourTransform(const ColourTransform&) = delete;
  ColourTransform& operator=(const ColourTransform&) = delete;
  // Every 8-bit RGB colour comes out as it went in (an sRGB profile to libvips' sRGB): nothing to do.
  bool identity() const { return identity_; }
  // Converts `pixels` RGB pixels in place. Safe from several threads at once (no cache: cmsFLAGS_NOCACHE).
  void apply(uint8_t* rgb, int pixels) const;

 private:
  void* handle_;
  bool identity_;
};

// The conversion from the RGB profile `profile` to `target` (libvips' sRGB profile, from sharp), or nullptr
// and why the fast path should leave the image to sharp: a profile Little CMS cannot read, not RGB, not a
// device profile, without the perceptual intent (libvips then falls back to its own sRGB profile), or a
// transform it cannot build. The last few are kept (most JPEGs of one source share their profile), each
// with whether it is the identity: all 2^24 colours are checked once, on the first JPEG with it (60-120
// ms for a profile that passes a first sample, under 1 ms for one that changes colours).
std::shared_ptr<const ColourTransform> colourTransform(const uint8_t* profile, size_t size,
                                                       const uint8_t* target, size_t targetSize,
                                                       const char** reason);

// Little CMS's version, as 2140 (LCMS_VERSION at build time).
int lcmsVersion();

}  // namespace facedet
