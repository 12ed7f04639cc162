// SPDX-License-Identifier: MIT
// The colour conversion sharp applies to a JPEG with an ICC profile, for the JPEG fast path (jpeg.cc):
// libvips' icc_transform from the embedded profile to its own sRGB profile, perceptual intent, 8 bits in
// and out (sharp's pipeline.cc), done by Little CMS exactly as libvips calls it (icc_transform.c:
// cmsCreateTransform with cmsFLAGS_NOCACHE, cmsDoTransform a row at a time).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace facedet {

class ColourTransform : public std::enable_shared_from_this<ColourTransform> {
 public:
  explicit ColourTransform(void* handle) : handle_(handle) {}
  ~ColourTransform();
  ColourTransform(const ColourTransform&) = delete;
  ColourTransform& operator=(const ColourTransform&) = delete;
  // Every 8-bit RGB colour comes out as it went in (an sRGB profile to libvips' sRGB): nothing to do.
  // Known once the table below is built (until then such a profile is converted, to the same bytes).
  bool identity() const { return identity_.load(std::memory_order_acquire); }
  // Converts `pixels` RGB pixels in place: from the table of every colour's result once it is built,
  // else through Little CMS. Safe from several threads at once (no cache: cmsFLAGS_NOCACHE).
  void apply(uint8_t* rgb, int pixels) const;
  // One more JPEG converted with it. From the second on, the table of all 2^24 colours' results (48 MiB:
  // Little CMS's results, looked up 3-5x faster than it computes them, ≈ 0.15 s to fill) is built on a
  // thread of its own, for at most setColourTableLimit's profiles at once (default 2); until it is, apply
  // goes through Little CMS.
  // A table that maps every colour to itself is dropped and the conversion marked as the identity. Only
  // from the second JPEG: a profile seen once costs no more than Little CMS's own work on its pixels.
  void used();
  // Its table is built or being built (and counts against setColourTableLimit's limit).
  bool holdsTable() const { return counted_.load(); }

 private:
  void buildTable();

  void* handle_;
  std::atomic<bool> identity_{false};
  std::atomic<int> uses_{0};
  std::atomic<bool> building_{false};
  std::atomic<bool> counted_{false};  // in `tables` (icc.cc): from used() until the table goes
  std::unique_ptr<uint8_t[]> table_;  // written once by the building thread, before `ready_`
  std::atomic<const uint8_t*> ready_{nullptr};
};

// Profiles whose table is built and in use, and tables filled so far (those found to be the identity
// included: ColourTransform::used), for tests and benchmarks.
int colourTables();
int colourTablesFilled();

// How many profiles may have a table at once (0 to 8; default 2). Lowering it drops the least recently used
// profiles with a table from the cache: their tables are freed once no decode uses them.
void setColourTableLimit(int limit);

// Larger profiles are left to sharp (real ones are a few KB to a few hundred).
constexpr size_t kMaxProfileBytes = size_t(1) << 20;

// The conversion from the RGB profile `profile` to `target` (libvips' sRGB profile, from sharp), or nullptr
// and why the fast path should leave the image to sharp: a profile Little CMS cannot read, not RGB, not a
// device profile, without the perceptual intent (libvips then falls back to its own sRGB profile), or a
// transform it cannot build. The last 8 are kept (most JPEGs of one source share their profile), with
// their tables (ColourTransform::used).
std::shared_ptr<ColourTransform> colourTransform(const uint8_t* profile, size_t size, const uint8_t* target,
                                                 size_t targetSize, const char** reason);

// Little CMS's version, as 2140 (LCMS_VERSION at build time).
int lcmsVersion();

}  // namespace facedet
