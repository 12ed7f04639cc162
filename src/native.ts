// SPDX-License-Identifier: MIT
// The typed contract of the raw native addon (native/*.cc) and its loader. Nothing else in the
// library touches the addon directly.
import path from 'node:path';
import { FacedetError } from './errors';
import type { JpegDecoder } from './preprocess';

/**
 * Arithmetic of the network: 'fp32'; 'fp16' (CUDA); 'bf16' (CPU, LibTorch: model.pt's weights rounded to
 * bfloat16 at load, for CPUs with AVX512-BF16 or AMX); 'int8' (CPU, a model exported with --int8).
 */
export type Precision = 'fp32' | 'fp16' | 'bf16' | 'int8';

export interface NativeLoadOptions {
  modelPath: string;
  backend?: 'torch' | 'tensorrt';
  device?: string;
  precision?: Precision;
  threads?: number;
  cacheDir?: string;
  maxBatch?: number;
  maxSize?: number;
  /**
   * LibTorch, fp16 on CUDA: the first N convolutions (graph order) stay float32, the rest runs in fp16
   * (the model card's `fp16.float32_convolutions`). Ignored otherwise.
   */
  float32Convolutions?: number;
  /**
   * LibTorch on the CPU: infer then takes the decoded pixels (Uint8Array, RGB, NHWC, with the shape
   * still given as [n, 3, h, w]) and converts them to BGR minus this mean ([B, G, R]) itself.
   */
  uint8Mean?: [number, number, number];
  /**
   * LibTorch fp32 and bf16 on the CPU: the convolutions run by oneDNN directly, with weights prepared once and the
   * 3x3 ones with at least 64 input and output channels (followed by a ReLU or nothing) in oneDNN's
   * Winograd algorithm from 64² positions on (float32: results equal up to rounding), where the build has
   * it (`build.onednn`). Default true.
   */
  onednn?: boolean;
}

export interface NativeEngineInfo {
  backend: string;
  device: string;
  precision: string;
  threads: number;
  version: string;
  /** What infer takes: 'float32-nchw', or 'uint8-nhwc' when loaded with uint8Mean. */
  input: 'float32-nchw' | 'uint8-nhwc';
  /** How many convolutions oneDNN runs directly (LibTorch fp32 and bf16 on the CPU; 0 otherwise). */
  onednn: number;
  /** How many of them are Winograd candidates (3x3, ≥ 64 channels, ReLU or none; from 64² positions on). */
  winograd: number;
}

/** Raw RetinaFace outputs for a batch of n images with A anchors each. */
export interface RawOutputs {
  /** Box deltas, [n, A, 4]. */
  loc: Float32Array;
  /** Softmax scores, [n, A, 2]; index 1 is "face". */
  conf: Float32Array;
  /** Landmark deltas, [n, A, 10]. */
  landmarks: Float32Array;
  shapes: { loc: number[]; conf: number[]; landmarks: number[] };
  /** Time spent in the network, on the worker thread. */
  inferMs: number;
  /**
   * The input array, handed back by an engine that took it by transfer (`InferOptions.transfer`): its
   * memory is the caller's again, to reuse for a later batch. Absent from the native addon's outputs.
   */
  input?: Float32Array | Uint8Array;
}

export interface NativeEngine {
  /**
   * One packed NCHW batch (or NHWC bytes, see uint8Mean), or one CHW array per image (shape [c, h, w]).
   * Runs on a worker thread; LibTorch on the CPU with `threads` (1 to `info().threads`) of its intra-op
   * threads if given, all of them otherwise (other backends ignore it).
   */
  infer(
    input: Float32Array | Uint8Array,
    shape: [number, number, number, number],
    threads?: number,
  ): Promise<RawOutputs>;
  infer(input: Float32Array[], shape: [number, number, number], threads?: number): Promise<RawOutputs>;
  /** Resolves once every batch in flight has finished and the model is released. */
  dispose(): Promise<void>;
  info(): NativeEngineInfo;
  readonly disposed: boolean;
}

/** The JPEG fast path's decodeJpeg, on libuv's pool: see preprocess's JpegDecoder, the contract. */
export type NativeJpegDecode = JpegDecoder;

export interface NativeBinding {
  Engine: { load(options: NativeLoadOptions): Promise<NativeEngine> };
  build: {
    torch: string;
    tensorrt?: string;
    /** oneDNN's version, when it runs LibTorch's fp32 CPU convolutions directly (native/onednn_conv.cc). */
    onednn?: string;
    backends: string[];
    cuda: boolean;
  };
  cudaDeviceCount(): number;
  /**
   * LibTorch's cache of freed CPU tensors of 1 MiB and more (native/onednn_conv.cc; all 0 where it is off
   * or not built): it keeps up to 1 GiB or 4× the most in use at once, whichever is more, or up to
   * FACEDET_CPU_TENSOR_CACHE_MB where that is set.
   */
  tensorCache(): TensorCacheStats;
}

export interface TensorCacheStats {
  /** 1 GiB, or FACEDET_CPU_TENSOR_CACHE_MB where set. */
  floorBytes: number;
  /** FACEDET_CPU_TENSOR_CACHE_MB is set: the budget is that, fixed. */
  fixed: boolean;
  /** What it may keep now: the floor or 4× the peak in use, whichever is more (the floor where fixed). */
  budgetBytes: number;
  cachedBytes: number;
  inUseBytes: number;
  peakInUseBytes: number;
  /** Blocks it had to ask the system for. */
  fresh: number;
}

/** The JPEG fast path's own module (native/jpeg_addon.cc: no LibTorch in it). */
export interface NativeJpegBinding {
  decodeJpeg: NativeJpegDecode;
  /** libjpeg-turbo's version, as "2.1.5". */
  version: string;
  /**
   * Little CMS's version (2140 for 2.14) where the module converts JPEGs with an ICC profile as sharp
   * does (CMake found liblcms2), else 0: such JPEGs then go to sharp.
   */
  lcmsVersion: number;
  /**
   * Profiles whose table of every colour's conversion is built and in use, and the tables filled so far
   * (those found to be the identity included: native/icc.h), for tests and benchmarks.
   */
  colourTables(): { tables: number; filled: number };
  /**
   * At most this many tables at once (0 to 8, validated by the library; process-wide); lowering it frees
   * the least recently used profiles' tables beyond it, once no decode uses them.
   */
  setColourTables(limit: number): void;
}

const packageRoot = path.resolve(__dirname, '..');
let binding: NativeBinding | undefined;

function explain(error: Error): string {
  const message = error.message;
  const hints: string[] = [];
  if (/lib(torch|c10|torch_cpu|torch_cuda)[^ ]*\.so/.test(message)) {
    hints.push(
      "LibTorch's shared libraries could not be loaded. Install Debian's `libtorch-dev` (or the package " +
        'that provides the LibTorch the addon was built with), or add its lib/ folder to LD_LIBRARY_PATH.',
    );
  } else if (/No native build was found/.test(message)) {
    hints.push(
      'The addon has not been built. Run `npm run build:native` in the package folder; it needs cmake, ' +
        'g++ and LibTorch (`sudo apt-get install cmake g++ libtorch-dev` on Debian/Ubuntu).',
      'With npm >= 11.19 dependency install scripts are blocked until approved: ' +
        '`npm install-scripts approve facedet-native`, then `npm rebuild facedet-native`.',
    );
  } else if (/GLIBC|CXXABI|GLIBCXX/.test(message)) {
    hints.push('The addon was built for a newer C/C++ runtime than this system has: rebuild it here.');
  } else if (/NODE_MODULE_VERSION|napi/i.test(message)) {
    hints.push('The addon was built for another Node.js: run `npm rebuild facedet-native`.');
  }
  return [
    `facedet-native: could not load the native addon: ${message.split('\n')[0]}`,
    ...hints.map((h) => `  - ${h}`),
    '  - Set FACEDET_NATIVE=/path/to/facedet.node to load a specific build.',
  ].join('\n');
}

let jpegBinding: NativeJpegBinding | null | undefined;

/**
 * The JPEG fast path's module, jpeg/facedet_jpeg.node beside the addon (FACEDET_NATIVE's, or the one
 * node-gyp-build finds), loaded once; null where it was not built (CMake found no libjpeg-turbo) or
 * does not load. It holds no LibTorch, so loading it costs the ONNX Runtime engine nothing noticeable.
 */
export function loadJpegBinding(): NativeJpegBinding | null {
  if (jpegBinding !== undefined) return jpegBinding;
  try {
    const explicit = process.env.FACEDET_NATIVE;
    /* eslint-disable @typescript-eslint/no-require-imports -- native addons load through require */
    const addon = explicit
      ? path.resolve(explicit)
      : (require('node-gyp-build') as { resolve(dir: string): string }).resolve(packageRoot);
    jpegBinding = require(path.join(path.dirname(addon), 'jpeg', 'facedet_jpeg.node')) as NativeJpegBinding;
    /* eslint-enable @typescript-eslint/no-require-imports */
  } catch {
    jpegBinding = null;
  }
  return jpegBinding;
}

interface NativeJpegDecoder {
  decode: NativeJpegDecode;
  name: string;
  lcms: string | undefined;
}
let jpegDecoder: NativeJpegDecoder | null | undefined;

/**
 * The JPEG fast path as preprocess's JpegDecoder, with its name ('libjpeg-turbo X.Y.Z') and Little CMS's
 * version where it converts JPEGs with an ICC profile ('2.14'), or undefined where its module was not built.
 */
export function nativeJpegDecoder(): NativeJpegDecoder | undefined {
  if (jpegDecoder !== undefined) return jpegDecoder ?? undefined;
  const jpeg = loadJpegBinding();
  if (!jpeg) {
    jpegDecoder = null;
    return undefined;
  }
  const { decodeJpeg, version, lcmsVersion } = jpeg;
  // One per process: the library checks its colour conversion once per decoder (colourProfileFor).
  jpegDecoder = {
    decode: (...args) => decodeJpeg(...args),
    name: `libjpeg-turbo ${version}`,
    // 2140 → "2.14", 2160 → "2.16"
    lcms: lcmsVersion
      ? `${Math.floor(lcmsVersion / 1000)}.${Math.floor((lcmsVersion % 1000) / 10)}`
      : undefined,
  };
  return jpegDecoder;
}

/**
 * The native caches' memory, from the modules this process has loaded (nothing is loaded for it): the
 * addon's CPU tensor cache and the JPEG module's colour tables (48 MiB each).
 */
export function nativeCaches(): { tensorCache?: TensorCacheStats; colourTables?: number } {
  return {
    ...(binding ? { tensorCache: binding.tensorCache() } : {}),
    ...(jpegBinding ? { colourTables: jpegBinding.colourTables().tables } : {}),
  };
}

/** Loads the addon once; throws a FacedetError that says how to fix what went wrong. */
export function loadBinding(): NativeBinding {
  if (binding) return binding;
  // LibTorch's OpenMP (libgomp) reads how long idle workers spin once, when the addon loads it. Its
  // default (300000 spins) is too long for a VM: the first runs after a pause took 40-160 ms instead of
  // 7 (MobileNet0.25 512², 2 vCPUs); too short (100-300) and each of the network's parallel regions
  // waits for a worker to wake (12 ms). 1000 keeps the runs at 6.5-7 ms without those stalls. The
  // user's GOMP_SPINCOUNT or OMP_WAIT_POLICY wins; child processes do not inherit ours.
  const spin = process.env.GOMP_SPINCOUNT === undefined && process.env.OMP_WAIT_POLICY === undefined;
  if (spin) process.env.GOMP_SPINCOUNT = '1000';
  try {
    const explicit = process.env.FACEDET_NATIVE;
    /* eslint-disable @typescript-eslint/no-require-imports -- native addons load through require */
    binding = (
      explicit ? require(path.resolve(explicit)) : require('node-gyp-build')(packageRoot)
    ) as NativeBinding;
    /* eslint-enable @typescript-eslint/no-require-imports */
  } catch (error) {
    throw new FacedetError('native_unavailable', explain(error as Error), { cause: error });
  } finally {
    if (spin) delete process.env.GOMP_SPINCOUNT;
  }
  return binding;
}
