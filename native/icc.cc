// SPDX-License-Identifier: MIT
// See icc.h. Little CMS gives these conversions byte for byte as sharp's libvips does (Debian's lcms 2.14
// against the 2.19 inside sharp's libvips: test/jpeg.test.ts compares libvips' P3 and sRGB profiles and
// generated ones; preprocess.ts's colourProfileFor checks it once per process).
#include "icc.h"

#include <lcms2.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

namespace facedet {
namespace {

struct Entry {
  std::vector<uint8_t> profile;
  std::vector<uint8_t> target;
  std::shared_ptr<ColourTransform> transform;
  const char* reason;
};

// Most recently used last.
constexpr size_t kCacheSize = 8;
// Tables of every colour's result built or being built (ColourTransform::used).
std::atomic<int> tables{0};
// How many there may be (setColourTableLimit).
std::atomic<int> maxTables{2};
// Of those, the ones built; and tables filled since the process started.
std::atomic<int> readyTables{0};
std::atomic<int> filledTables{0};
std::mutex cacheMutex;
std::vector<Entry> cache;

// Closes a profile when it goes out of scope.
struct Profile {
  cmsHPROFILE handle;
  explicit Profile(cmsHPROFILE h) : handle(h) {}
  ~Profile() {
    if (handle) cmsCloseProfile(handle);
  }
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;
};

Entry build(const uint8_t* profile, size_t size, const uint8_t* target, size_t targetSize) {
  Entry entry{std::vector<uint8_t>(profile, profile + size),
              std::vector<uint8_t>(target, target + targetSize), nullptr, nullptr};
  Profile in(cmsOpenProfileFromMem(profile, static_cast<cmsUInt32Number>(size)));
  Profile out(cmsOpenProfileFromMem(target, static_cast<cmsUInt32Number>(targetSize)));
  if (!in.handle) {
    entry.reason = "ICC profile unreadable";
  } else if (!out.handle || cmsGetColorSpace(out.handle) != cmsSigRgbData) {
    entry.reason = "target ICC profile unreadable";
  } else if (cmsGetColorSpace(in.handle) != cmsSigRgbData) {
    entry.reason = "ICC profile not RGB";
  } else if (const cmsProfileClassSignature c = cmsGetDeviceClass(in.handle);
             c != cmsSigDisplayClass && c != cmsSigInputClass && c != cmsSigOutputClass &&
             c != cmsSigColorSpaceClass) {
    entry.reason = "ICC profile not a device profile";
  } else if (!cmsIsIntentSupported(in.handle, INTENT_PERCEPTUAL, LCMS_USED_AS_INPUT) ||
             !cmsIsIntentSupported(out.handle, INTENT_PERCEPTUAL, LCMS_USED_AS_OUTPUT)) {
    entry.reason = "ICC profile without the perceptual intent";
  } else if (cmsHTRANSFORM transform = cmsCreateTransform(in.handle, TYPE_RGB_8, out.handle, TYPE_RGB_8,
                                                          INTENT_PERCEPTUAL, cmsFLAGS_NOCACHE)) {
    entry.transform = std::make_shared<ColourTransform>(transform);
  } else {
    entry.reason = "ICC transform not built";
  }
  return entry;
}

bool same(const std::vector<uint8_t>& bytes, const uint8_t* data, size_t size) {
  return bytes.size() == size && std::memcmp(bytes.data(), data, size) == 0;
}

}  // namespace

ColourTransform::~ColourTransform() {
  if (table_) {
    tables.fetch_sub(1);
    readyTables.fetch_sub(1);
  }
  cmsDeleteTransform(static_cast<cmsHTRANSFORM>(handle_));
}

void ColourTransform::apply(uint8_t* rgb, int pixels) const {
  if (const uint8_t* table = ready_.load(std::memory_order_acquire)) {
    for (int i = 0; i < pixels; ++i, rgb += 3) {
      const uint8_t* out = table + ((size_t(rgb[0]) << 16) | (size_t(rgb[1]) << 8) | rgb[2]) * 3;
      rgb[0] = out[0];
      rgb[1] = out[1];
      rgb[2] = out[2];
    }
    return;
  }
  cmsDoTransform(static_cast<cmsHTRANSFORM>(handle_), rgb, rgb, static_cast<cmsUInt32Number>(pixels));
}

void ColourTransform::used() {
  if (uses_.fetch_add(1) < 1 || building_.exchange(true)) return;
  if (tables.fetch_add(1) >= maxTables.load()) {
    tables.fetch_sub(1);
    building_ = false;  // asked again on a later use: a table may have been freed by then
    return;
  }
  counted_ = true;
  try {
    // The thread keeps this alive until the table is in.
    std::thread([self = shared_from_this()] { self->buildTable(); }).detach();
  } catch (const std::system_error&) {
    counted_ = false;
    tables.fetch_sub(1);
    building_ = false;
  }
}

void ColourTransform::buildTable() {
  // On a thread of its own: nothing may escape (an exception here would end the process).
  try {
    std::unique_ptr<uint8_t[]> table(new uint8_t[size_t(3) << 24]);
    std::vector<uint8_t> in(size_t(65536) * 3);
    for (int r = 0; r < 256; ++r) {
      uint8_t* p = in.data();
      for (int g = 0; g < 256; ++g) {
        for (int b = 0; b < 256; ++b) {
          *p++ = static_cast<uint8_t>(r);
          *p++ = static_cast<uint8_t>(g);
          *p++ = static_cast<uint8_t>(b);
        }
      }
      cmsDoTransform(static_cast<cmsHTRANSFORM>(handle_), in.data(), table.get() + (size_t(r) << 16) * 3,
                     65536);
    }
    bool identity = true;
    for (size_t i = 0; identity && i < (size_t(1) << 24); ++i) {
      const uint8_t* out = table.get() + i * 3;
      identity = out[0] == (i >> 16) && out[1] == ((i >> 8) & 0xff) && out[2] == (i & 0xff);
    }
    if (identity) {
      identity_.store(true, std::memory_order_release);
      counted_ = false;
      tables.fetch_sub(1);  // the table goes; `building_` stays set
    } else {
      table_ = std::move(table);
      ready_.store(table_.get(), std::memory_order_release);
      readyTables.fetch_add(1);
    }
    filledTables.fetch_add(1);
  } catch (const std::exception&) {
    counted_ = false;
    tables.fetch_sub(1);  // out of memory: `building_` stays set, no second try
  }
}

int colourTables() { return readyTables.load(); }

int colourTablesFilled() { return filledTables.load(); }

void setColourTableLimit(int limit) {
  limit = std::clamp(limit, 0, 8);
  maxTables.store(limit);
  // Profiles whose table is built or being built, beyond the limit, least recently used first, leave the
  // cache: their tables go with the last decode still using them (destroyed outside the lock).
  std::vector<Entry> dropped;
  std::lock_guard<std::mutex> lock(cacheMutex);
  int kept = 0;
  for (auto it = cache.end(); it != cache.begin();) {
    --it;
    if (!it->transform || !it->transform->holdsTable() || ++kept <= limit) continue;
    dropped.push_back(std::move(*it));
    it = cache.erase(it);
  }
}

std::shared_ptr<ColourTransform> colourTransform(const uint8_t* profile, size_t size, const uint8_t* target,
                                                 size_t targetSize, const char** reason) {
  {
    std::lock_guard<std::mutex> lock(cacheMutex);
    for (auto it = cache.begin(); it != cache.end(); ++it) {
      if (same(it->profile, profile, size) && same(it->target, target, targetSize)) {
        std::rotate(it, it + 1, cache.end());
        *reason = cache.back().reason;
        return cache.back().transform;
      }
    }
  }
  // Built outside the lock (Little CMS may take a while over a large profile); two threads may both build
  // one.
  Entry entry = build(profile, size, target, targetSize);
  *reason = entry.reason;
  std::shared_ptr<ColourTransform> transform = entry.transform;
  std::lock_guard<std::mutex> lock(cacheMutex);
  if (cache.size() >= kCacheSize) cache.erase(cache.begin());
  cache.push_back(std::move(entry));
  return transform;
}

int lcmsVersion() { return LCMS_VERSION; }

}  // namespace facedet
