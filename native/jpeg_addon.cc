// SPDX-License-Identifier: MIT
// The JPEG fast path as a module of its own (jpeg/facedet_jpeg.node beside facedet.node): it links
// libjpeg-turbo and nothing of LibTorch, so the ONNX Runtime engine can decode with it too without
// loading LibTorch (150 MB more resident and 0.27 s to load).
#include <napi.h>

#include "jpeg.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("decodeJpeg", Napi::Function::New(env, facedet::DecodeJpeg, "decodeJpeg"));
  exports.Set("version", facedet::jpegVersion());
  exports.Set("lcmsVersion", facedet::colourVersion());
  // {tables, filled}: see facedet::colourTableCount.
  exports.Set("colourTables", Napi::Function::New(
                                  env,
                                  [](const Napi::CallbackInfo& info) {
                                    Napi::Object counts = Napi::Object::New(info.Env());
                                    counts.Set("tables", facedet::colourTableCount(false));
                                    counts.Set("filled", facedet::colourTableCount(true));
                                    return counts;
                                  },
                                  "colourTables"));
  // setColourTables(limit): the library validates it (0 to 8).
  exports.Set("setColourTables",
              Napi::Function::New(
                  env,
                  [](const Napi::CallbackInfo& info) {
                    if (info.Length() == 1 && info[0].IsNumber())
                      facedet::setColourTableLimit(info[0].As<Napi::Number>().Int32Value());
                  },
                  "setColourTables"));
  return exports;
}

}  // namespace

NODE_API_MODULE(facedet_jpeg, Init)
