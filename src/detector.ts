// SPDX-License-Identifier: MIT
// The public face detector: image inputs -> decode -> dynamic batches -> engine -> faces.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Batcher } from './batcher';
import { type EngineInfo, type InferenceEngine, NativeInferenceEngine, type RawOutputs } from './engine';
import { OnnxRuntimeEngine, onnxRuntimeVersion } from './engines/onnxruntime';
import { cpuHasBf16 } from './cpu';
import { FacedetError, OverloadedError, invalidParameterError } from './errors';
import {
  type ModelCard,
  type ModelSource,
  defaultModelDir,
  modelFile,
  onnxRuntimeModel,
  readModel,
} from './model';
import { AnchorCache, type AnchorConfig, type Face, decodeFaces, toFaces } from './postprocess';
import { type Precision, loadBinding, loadJpegBinding, nativeJpegDecoder } from './native';
import {
  type DecodedImage,
  type ImageInput,
  type JpegDecoder,
  colourProfileFor,
  decodeImage,
  packBatch,
  packBatchUint8,
} from './preprocess';

export interface FaceDetectorOptions {
  /** Model folder written by `facedet export` (default: $FACEDET_MODEL, else models/retinaface-mobilenet0.25). */
  model?: string;
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
  /**
   * 'fp32' (default); 'fp16' (CUDA); 'bf16' (CPU, backend 'torch': the weights and activations in
   * bfloat16, for CPUs with AVX512-BF16 or AMX, see the README's measurements); 'int8' (CPU, a model
   * exported with --int8).
   */
  precision?: Precision;
  /**
   * 'torch' (the LibTorch addon), 'tensorrt' (when the addon was built with TensorRT) or 'onnxruntime'
   * (CPU, fp32 or int8: model.onnx through the optional onnxruntime-node package, on a worker thread).
   * Default: see `defaultBackend`.
   */
  backend?: 'torch' | 'tensorrt' | 'onnxruntime';
  /**
   * LibTorch intra-op threads; default: the number of CPUs available. Process-wide in LibTorch. With 2
   * or more, a JPEG decoded while no other image is in progress may take two threads (see
   * DecodeOptions.jpegThreads).
   */
  threads?: number;
  /** Default resize policy for detect(): longer side at most this, never upscaled, 0 = original size. */
  maxSize?: number;
  /** Images with more pixels than this are refused before decoding (decompression bombs). */
  maxPixels?: number;
  /** Images per native batch, at most (see the README for the measured CPU default). */
  maxBatchSize?: number;
  /** How long an image may wait for a batch to fill, ms. */
  maxQueueDelayMs?: number;
  /** Images admitted at once (decoding, queued or in inference); beyond it detect() rejects with OverloadedError. */
  maxQueueSize?: number;
  /**
   * Native batches running at once: default 1, 2 with LibTorch on the CPU (where a second batch runs
   * beside the first only under load on 2 threads, each on one thread: besideMode).
   */
  maxConcurrentBatches?: number;
  /**
   * JPEGs with an ICC profile: how many profiles may keep a table of every colour's conversion (48 MiB
   * each, filled from a profile's second JPEG: see the README), 0 to 8; default 2, 0 for none (Little CMS
   * converts every pixel). Process-wide in the JPEG module, like `threads` in LibTorch; lowering it frees
   * the tables beyond it (the least recently used profiles').
   */
  colourTables?: number;
  /** Images decoded at once. */
  decodeConcurrency?: number;
  /** Batch height and width are rounded up to a multiple of this (shape buckets): default 32, on CUDA 128. */
  padMultiple?: number;
  /** Input sizes [height, width] run once at start-up so the first requests are not slow; [] for none. */
  warmup?: [number, number][];
  /** Folder for TensorRT engine plans. */
  cacheDir?: string;
  /** Called after each native batch (metrics). */
  onBatch?: (stats: BatchTimings) => void;
}

export interface DetectOptions {
  /** Faces scoring above this are returned (default 0.5). */
  confidenceThreshold?: number;
  /** Clamp boxes to the image (default true). */
  clipBoxes?: boolean;
  /** Resize policy for this call (default: the detector's maxSize). */
  maxSize?: number;
  /** NMS IoU threshold (default 0.4). */
  nmsIou?: number;
  /** Candidates kept before NMS (default 5000). */
  topK?: number;
  /** Faces kept after NMS (default 750). */
  keepTopK?: number;
}

export interface ImageError {
  code: string;
  message: string;
}

/** The result for one image, field for field as the original project's JSON (plus `error`). */
export interface ImageResult {
  faces_count: number;
  faces: Face[];
  /** Present when this image could not be read or decoded; the other images are unaffected. */
  error?: ImageError;
}

export interface BatchTimings {
  size: number;
  shape: [number, number, number, number];
  queueMs: number[];
  /** Time each image took to decode and resize, ms. */
  decodeMs: number[];
  /** Who decoded each image: the JPEG fast path (see `DetectorInfo.jpegDecoder`) or sharp. */
  decoders: ('libjpeg-turbo' | 'sharp')[];
  packMs: number;
  inferMs: number;
  postprocessMs: number;
  /**
   * The intra-op threads the batch's network was given (the engine's own count unless fewer were
   * asked for: see `FaceDetector`'s thread policy; engines other than LibTorch on the CPU use all theirs).
   */
  threads: number;
}

export interface DetectorInfo {
  engine: EngineInfo;
  /**
   * Who decodes plain JPEGs (see preprocess's JpegDecoder): 'libjpeg-turbo X.Y.Z' (the JPEG fast path,
   * with every backend, where its module was built: CMake found libjpeg-turbo), otherwise 'sharp'. Every
   * other image is decoded by sharp.
   */
  jpegDecoder: string;
  model: ModelCard;
  modelDir: string;
  options: Required<Omit<FaceDetectorOptions, 'model' | 'onBatch' | 'cacheDir' | 'warmup' | 'colourTables'>>;
}

interface Job {
  image: DecodedImage;
  decodeMs: number;
  options: Required<Omit<DetectOptions, 'maxSize'>>;
}

/**
 * Batch tensors kept for reuse, in bytes at most. A fresh 2-8 MB array per batch grows V8's external
 * memory by as much, and V8 then collected garbage on the main thread every few requests. Measured in
 * alternation, `facedet serve` with a 1920x1080 JPEG on 2 CPUs, torch backend (8 MB float arrays):
 * concurrency 1, 27.3-27.8 requests/s and p50 36 ms with fresh arrays, 30.7-32.8 and 27-29 ms reusing
 * them (the decode stage, which waits for the main thread, 14-15 -> 11-12 ms); concurrency 4, 28.4-29.1
 * -> 31.7-32.5 requests/s. ONNX Runtime (2 MB uint8 arrays, handed back by its worker): the same within
 * the noise.
 */
const SPARE_TENSOR_BYTES = 64 * 2 ** 20;
/** Decoded-pixel buffers kept for the JPEG fast path's next images (see DecodeOptions.reuse). */
const SPARE_PIXEL_BUFFERS = 4;

const DEFAULTS = {
  device: 'cpu',
  precision: 'fp32' as const,
  maxSize: 1080,
  maxPixels: 0x3fff * 0x3fff,
  // Measured on a 2-core CPU: batching gains nothing there (docs/performance.md, "Batching on CPU"), so a
  // CPU detector runs one image per batch; on CUDA batches pay.
  maxBatchSizeCpu: 1,
  maxBatchSizeCuda: 8,
  maxQueueDelayMs: 0,
  maxQueueSize: 256,
  maxConcurrentBatches: 1,
  // LibTorch on the CPU: a second batch beside the first, each on one thread, under load on 2 threads
  // (besideMode); the addon has one thread beside its primary one.
  maxConcurrentBatchesCpuTorch: 2,
  padMultiple: 32,
  // On CUDA, H and W are padded to a multiple of 128: each distinct batch shape costs the GPU cached
  // memory (LibTorch's allocator, cuDNN plans) and a slow first run, so fewer, coarser shape buckets keep
  // memory bounded and warm-ups few (up to 1152 px: 9 sizes per side instead of 34), for at most 127 px
  // of padding per side (a 1080 x 720 image: 1152 x 768, about 10 % more pixels than 1088 x 736).
  padMultipleCuda: 128,
};

/** Whether the addon loads and runs LibTorch's fp32 CPU convolutions with oneDNN directly. */
function addonHasOneDnn(): boolean {
  try {
    return loadBinding().build.onednn !== undefined;
  } catch {
    return false;
  }
}

/**
 * The backend when none is asked for. On CPU in fp32: LibTorch when the addon runs its convolutions with
 * oneDNN directly (Debian's LibTorch: `build.onednn`). Its engine measured 1.08-1.24x faster than ONNX
 * Runtime's for ResNet50 at 512² and 1.24-1.38x at 1024², and for MobileNet0.25, with its score softmax
 * and pixel conversion made cheap and its threads given up to decoding under load (`threadsFor`), its
 * whole path at 512² 7.98-8.12 ms against ONNX Runtime's 8.02-8.86 (1024²: 24.4 against 26.9-28.1) and
 * the server (1080p JPEGs) 36.1 against 33.4 requests/s at 1 at a time, 42.8 against 41.2 at 4 and 42.3
 * against 38.9 at 8 (`npm run bench`, `npm run bench:load`; docs/performance.md, "CPU engine").
 * Otherwise ONNX Runtime when onnxruntime-node is installed and the model has its ONNX file. In int8
 * likewise with model.int8.onnx: the only int8 file for ResNet50, and for MobileNet0.25 within the noise
 * of LibTorch's model.int8.pt (scripts/precision_report.ts).
 * Otherwise the native LibTorch addon (CUDA, fp16, or no onnxruntime-node).
 */
export function defaultBackend(
  model: ModelSource,
  device: string,
  precision: string,
): 'torch' | 'onnxruntime' {
  const { files } = model.card;
  const file = precision === 'fp32' ? files.onnx : precision === 'int8' ? files.onnx_int8 : undefined;
  if (device !== 'cpu' || !file) return 'torch';
  if (precision === 'fp32' && addonHasOneDnn()) return 'torch';
  return onnxRuntimeVersion() !== undefined && fs.existsSync(path.join(model.dir, file))
    ? 'onnxruntime'
    : 'torch';
}

function checkInteger(name: string, value: unknown, min: number, max: number): void {
  if (
    value !== undefined &&
    !(Number.isInteger(value) && (value as number) >= min && (value as number) <= max)
  ) {
    throw invalidParameterError(name, `integer between ${min} and ${max}`, value);
  }
}

function checkNumber(name: string, value: unknown, min: number, max: number): void {
  if (value !== undefined && !(typeof value === 'number' && value >= min && value <= max)) {
    throw invalidParameterError(name, `number between ${min} and ${max}`, value);
  }
}

function checkOneOf(name: string, value: unknown, allowed: readonly string[]): void {
  if (value !== undefined && !allowed.includes(value as string)) {
    throw invalidParameterError(name, `one of ${allowed.join(', ')}`, value);
  }
}

function validateDetectorOptions(o: FaceDetectorOptions): void {
  if (o === null || typeof o !== 'object' || Array.isArray(o))
    throw invalidParameterError('options', 'object', o);
  if (o.model !== undefined && (typeof o.model !== 'string' || o.model === '')) {
    throw invalidParameterError('model', 'path of a model folder', o.model);
  }
  if (o.device !== undefined && !(typeof o.device === 'string' && /^(cpu|cuda(:\d+)?)$/.test(o.device))) {
    throw invalidParameterError('device', "'cpu', 'cuda' or 'cuda:N'", o.device);
  }
  checkOneOf('precision', o.precision, ['fp32', 'fp16', 'bf16', 'int8']);
  checkOneOf('backend', o.backend, ['torch', 'tensorrt', 'onnxruntime']);
  if (o.precision === 'bf16' && (o.device ?? 'cpu') === 'cpu' && !cpuHasBf16()) {
    throw new FacedetError(
      'invalid_argument',
      "precision 'bf16' needs a CPU with AVX512-BF16 or AMX-BF16 instructions (flags avx512_bf16, " +
        "amx_bf16 in /proc/cpuinfo), and this one has neither; use 'fp32'",
    );
  }
  if (o.backend === 'onnxruntime') {
    if (o.device !== undefined && o.device !== 'cpu') {
      throw invalidParameterError("device (backend 'onnxruntime' runs on the CPU)", "'cpu'", o.device);
    }
    if (o.precision !== undefined && o.precision !== 'fp32' && o.precision !== 'int8') {
      throw invalidParameterError("precision (backend 'onnxruntime')", "'fp32' or 'int8'", o.precision);
    }
  }
  checkInteger('threads', o.threads, 1, 1024);
  checkInteger('maxSize', o.maxSize, 0, 16384);
  checkInteger('maxPixels', o.maxPixels, 1, 2 ** 40);
  checkInteger('maxBatchSize', o.maxBatchSize, 1, 1024);
  checkNumber('maxQueueDelayMs', o.maxQueueDelayMs, 0, 60_000);
  checkInteger('maxQueueSize', o.maxQueueSize, 1, 1_000_000);
  checkInteger('maxConcurrentBatches', o.maxConcurrentBatches, 1, 64);
  checkInteger('colourTables', o.colourTables, 0, 8);
  checkInteger('decodeConcurrency', o.decodeConcurrency, 1, 256);
  checkInteger('padMultiple', o.padMultiple, 1, 1024);
  if (
    o.warmup !== undefined &&
    !(
      Array.isArray(o.warmup) &&
      o.warmup.every(
        (s) =>
          Array.isArray(s) && s.length === 2 && s.every((d) => Number.isInteger(d) && d >= 32 && d <= 16384),
      )
    )
  ) {
    throw invalidParameterError(
      'warmup',
      'array of [height, width] pairs of integers between 32 and 16384',
      o.warmup,
    );
  }
  if (o.onBatch !== undefined && typeof o.onBatch !== 'function') {
    throw invalidParameterError('onBatch', 'function', o.onBatch);
  }
}

function validateDetectOptions(o: DetectOptions): void {
  if (o === null || typeof o !== 'object' || Array.isArray(o))
    throw invalidParameterError('options', 'object', o);
  checkNumber('confidenceThreshold', o.confidenceThreshold, 0, 1);
  if (o.clipBoxes !== undefined && typeof o.clipBoxes !== 'boolean') {
    throw invalidParameterError('clipBoxes', 'boolean', o.clipBoxes);
  }
  checkInteger('maxSize', o.maxSize, 0, 16384);
  checkNumber('nmsIou', o.nmsIou, 0, 1);
  checkInteger('topK', o.topK, 1, 1_000_000);
  checkInteger('keepTopK', o.keepTopK, 1, 1_000_000);
}

function isImageInput(x: unknown): x is ImageInput {
  return typeof x === 'string' || x instanceof Uint8Array;
}

/** A counting semaphore: at most `limit` holders at once. */
class Semaphore {
  private waiting: (() => void)[] = [];
  private held = 0;
  constructor(private readonly limit: number) {}
  async acquire(): Promise<void> {
    if (this.held < this.limit) {
      this.held++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.held--;
  }
}

function errorOf(error: unknown): ImageError {
  if (error instanceof FacedetError) return { code: error.code, message: error.message };
  return { code: 'inference_failed', message: (error as Error)?.message ?? String(error) };
}

export class FaceDetector {
  private readonly batcher: Batcher<Job, Face[] | Error>;
  private readonly anchors: AnchorCache;
  private readonly decodeSlots: Semaphore;
  private readonly spareTensors: (Float32Array | Uint8Array)[] = [];
  private readonly sparePixels: Buffer[] = [];
  /** The engine takes the decoded pixels (uint8 NHWC) and converts them in its model. */
  private readonly uint8Input: boolean;
  private readonly engineThreads: number;
  /** The engine can run a batch with fewer of its threads (LibTorch on the CPU). */
  private readonly threadsPerRun: boolean;
  private admitted = 0;
  /** Running averages (ms) for the thread policy: decoding one image, and the network's CPU time per image. */
  private decodeMsAverage = 0;
  private networkCpuMsAverage = 0;
  private idleWaiters: (() => void)[] = [];
  private disposing: Promise<void> | undefined;

  private constructor(
    private readonly engine: InferenceEngine,
    private readonly model: ModelSource,
    private readonly options: DetectorInfo['options'],
    private readonly onBatch: FaceDetectorOptions['onBatch'],
    private readonly jpeg: { decode: JpegDecoder; name: string } | undefined,
  ) {
    const a = model.card.anchors;
    const config: AnchorConfig = { minSizes: a.min_sizes, steps: a.steps, variances: a.variances };
    this.anchors = new AnchorCache(config);
    this.decodeSlots = new Semaphore(options.decodeConcurrency);
    const info = engine.info();
    this.uint8Input = info.input === 'uint8-nhwc';
    this.engineThreads = info.threads;
    this.threadsPerRun = info.backend === 'torch' && info.device === 'cpu';
    this.batcher = new Batcher<Job, Face[] | Error>((jobs, queueMs) => this.runBatch(jobs, queueMs), {
      maxBatchSize: options.maxBatchSize,
      maxQueueDelayMs: options.maxQueueDelayMs,
      // LibTorch on the CPU: a second batch beside the first only when each gets one thread (besideMode).
      maxConcurrentBatches: this.threadsPerRun ? () => this.batchLimit() : options.maxConcurrentBatches,
    });
  }

  /** Loads the model (on a worker thread) and warms it up. */
  static async create(options: FaceDetectorOptions = {}): Promise<FaceDetector> {
    validateDetectorOptions(options);
    const model = readModel(options.model ?? defaultModelDir());
    const device = options.device ?? DEFAULTS.device;
    const cpu = device === 'cpu';
    const chosen = options.backend ?? defaultBackend(model, device, options.precision ?? DEFAULTS.precision);
    const resolved: DetectorInfo['options'] = {
      device,
      precision: options.precision ?? DEFAULTS.precision,
      backend: chosen,
      threads: options.threads ?? os.availableParallelism(),
      maxSize: options.maxSize ?? DEFAULTS.maxSize,
      maxPixels: options.maxPixels ?? DEFAULTS.maxPixels,
      maxBatchSize: options.maxBatchSize ?? (cpu ? DEFAULTS.maxBatchSizeCpu : DEFAULTS.maxBatchSizeCuda),
      maxQueueDelayMs: options.maxQueueDelayMs ?? DEFAULTS.maxQueueDelayMs,
      maxQueueSize: options.maxQueueSize ?? DEFAULTS.maxQueueSize,
      maxConcurrentBatches:
        options.maxConcurrentBatches ??
        (cpu && chosen === 'torch' ? DEFAULTS.maxConcurrentBatchesCpuTorch : DEFAULTS.maxConcurrentBatches),
      decodeConcurrency: options.decodeConcurrency ?? Math.max(2, os.availableParallelism()),
      padMultiple:
        options.padMultiple ??
        (cpu ? (model.card.input.pad_multiple ?? DEFAULTS.padMultiple) : DEFAULTS.padMultipleCuda),
    };
    const backend = resolved.backend;
    const engine: InferenceEngine =
      backend === 'onnxruntime'
        ? await OnnxRuntimeEngine.load({
            ...onnxRuntimeModel(model, resolved.precision === 'int8' ? 'int8' : 'fp32'),
            precision: resolved.precision === 'int8' ? 'int8' : 'fp32',
            threads: resolved.threads,
          })
        : await NativeInferenceEngine.load({
            modelPath: modelFile(model, backend, device, resolved.precision),
            backend,
            device,
            precision: resolved.precision,
            threads: resolved.threads,
            maxBatch: resolved.maxBatchSize,
            // A padded batch can exceed maxSize by up to one pad multiple: TensorRT's profile covers it.
            maxSize:
              Math.ceil(Math.max(32, resolved.maxSize || 2048) / resolved.padMultiple) * resolved.padMultiple,
            ...(options.cacheDir ? { cacheDir: options.cacheDir } : {}),
            ...(resolved.precision === 'fp16' && model.card.fp16
              ? { float32Convolutions: model.card.fp16.float32_convolutions }
              : {}),
            // On the CPU LibTorch takes the decoded pixels and converts them itself (see the README).
            ...(backend === 'torch' && cpu ? { uint8Mean: model.card.input.mean } : {}),
          });
    // The JPEG fast path, for every engine: its module holds no LibTorch (see native.ts).
    const jpeg = nativeJpegDecoder();
    if (options.colourTables !== undefined) loadJpegBinding()?.setColourTables(options.colourTables);
    // Its colour conversion is checked against sharp's here rather than at the first image (≈ 25 ms).
    if (jpeg) await colourProfileFor(jpeg.decode);
    const detector = new FaceDetector(engine, model, resolved, options.onBatch, jpeg);
    const bucket = cpu ? 32 : resolved.padMultiple;
    const side = Math.ceil(Math.max(32, Math.min(resolved.maxSize || 640, 1088)) / bucket) * bucket;
    await detector.warmup(options.warmup ?? [[side, side]]);
    return detector;
  }

  /** Runs the network on zero images of these sizes, twice each (first-run and optimisation passes). */
  async warmup(sizes: [number, number][]): Promise<void> {
    for (const [height, width] of sizes) {
      const shape: [number, number, number, number] = [1, 3, height, width];
      const tensor = new (this.uint8Input ? Uint8Array : Float32Array)(3 * height * width);
      for (let i = 0; i < 2; i++) await this.engine.infer(tensor, shape);
    }
  }

  /** Detects faces in one image, or in each of several images. */
  detect(input: ImageInput, options?: DetectOptions): Promise<ImageResult>;
  detect(inputs: ImageInput[], options?: DetectOptions): Promise<ImageResult[]>;
  async detect(
    inputs: ImageInput | ImageInput[],
    options: DetectOptions = {},
  ): Promise<ImageResult | ImageResult[]> {
    const single = !Array.isArray(inputs);
    const list = single ? [inputs] : inputs;
    if (!single && list.length === 0)
      throw invalidParameterError('inputs', 'non-empty array of images', inputs);
    list.forEach((input, i) => {
      if (!isImageInput(input)) {
        throw invalidParameterError(
          single ? 'input' : `inputs[${i}]`,
          'Buffer, Uint8Array or file path',
          input,
        );
      }
    });
    validateDetectOptions(options);
    if (this.disposing) throw new FacedetError('engine_disposed', 'the detector is disposed');
    if (this.admitted + list.length > this.options.maxQueueSize) {
      throw new OverloadedError(
        `the detector is busy: ${this.admitted} image(s) in progress, limit ${this.options.maxQueueSize}`,
      );
    }
    this.admitted += list.length;
    const jobOptions: Job['options'] = {
      confidenceThreshold: options.confidenceThreshold ?? 0.5,
      clipBoxes: options.clipBoxes ?? true,
      nmsIou: options.nmsIou ?? 0.4,
      topK: options.topK ?? 5000,
      keepTopK: options.keepTopK ?? 750,
    };
    const maxSize = options.maxSize ?? this.options.maxSize;
    const results = await Promise.all(
      list.map((input, index) =>
        this.detectOne(input, maxSize, jobOptions).then(
          (faces): ImageResult => ({ faces_count: faces.length, faces }),
          (error: unknown): ImageResult => {
            const e = errorOf(error);
            return {
              faces_count: 0,
              faces: [],
              error: { code: e.code, message: `image ${index}: ${e.message}` },
            };
          },
        ),
      ),
    );
    return single ? results[0]! : results;
  }

  private async detectOne(input: ImageInput, maxSize: number, options: Job['options']): Promise<Face[]> {
    try {
      let image: DecodedImage;
      await this.decodeSlots.acquire();
      const started = performance.now();
      try {
        image = await decodeImage(input, {
          maxSize,
          maxPixels: this.options.maxPixels,
          jpeg: this.jpeg?.decode,
          reuse: (bytes) => this.takeSparePixels(bytes),
          // Alone, an image's JPEG may take two of the detector's threads (the network waits for it;
          // TensorRT's engine reports none of its own); under load the other images' decoding and
          // networks have the other cores.
          jpegThreads: this.admitted === 1 && this.options.threads >= 2 ? 2 : 1,
        });
      } finally {
        this.decodeSlots.release();
      }
      const faces = await this.batcher.submit({ image, decodeMs: performance.now() - started, options });
      if (faces instanceof Error) throw faces;
      return faces;
    } finally {
      if (--this.admitted === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  private async runBatch(jobs: Job[], queueMs: number[]): Promise<(Face[] | Error)[]> {
    const t0 = performance.now();
    const images = jobs.map((j) => j.image);
    const pack = { mean: this.model.card.input.mean, padMultiple: this.options.padMultiple };
    const { tensor, shape } = this.uint8Input
      ? packBatchUint8(images, pack, (length) => this.takeSpare(Uint8Array, length))
      : packBatch(images, pack, (length) => this.takeSpare(Float32Array, length));
    // Packed: the decoded pixels can take the next images' (the JPEG fast path's fresh buffers cost page faults).
    for (const image of images) this.keepSparePixels(image.data);
    const t1 = performance.now();
    // The tensor is this batch's own: an engine on another thread may take it without a copy. When
    // these are the only images admitted, nothing else of ours needs the CPUs during the run.
    const exclusive = this.admitted === jobs.length;
    const threads = this.threadsFor(jobs.length);
    let outputs: RawOutputs;
    try {
      outputs = await this.engine.infer(tensor, shape, { transfer: true, exclusive, threads });
    } catch (error) {
      this.keepSpare(tensor);
      throw error;
    }
    // The native addon is done with the array once the call settles; ONNX Runtime's worker hands it back.
    this.keepSpare(outputs.input ?? tensor);
    const t2 = performance.now();
    const average = (current: number, x: number) => (current === 0 ? x : current + 0.2 * (x - current));
    for (const job of jobs) this.decodeMsAverage = average(this.decodeMsAverage, job.decodeMs);
    this.networkCpuMsAverage = average(this.networkCpuMsAverage, (outputs.inferMs * threads) / jobs.length);
    const anchors = this.anchors.get(shape[2], shape[3]);
    const results = jobs.map(({ image, options }, index) => {
      try {
        const raw = decodeFaces(outputs, index, anchors, options, this.model.card.anchors.variances);
        return toFaces(raw, {
          scaleX: image.originalWidth / image.width,
          scaleY: image.originalHeight / image.height,
          clip: options.clipBoxes,
          width: image.originalWidth,
          height: image.originalHeight,
        });
      } catch (error) {
        return error as Error;
      }
    });
    const t3 = performance.now();
    this.onBatch?.({
      size: jobs.length,
      shape,
      queueMs,
      decodeMs: jobs.map((j) => j.decodeMs),
      decoders: jobs.map((j) => j.image.decodedBy ?? 'sharp'),
      packMs: t1 - t0,
      inferMs: t2 - t1,
      postprocessMs: t3 - t2,
      threads,
    });
    return results;
  }

  /**
   * How many threads a batch's network gets. With nothing else admitted, all of them. Under load (other
   * images admitted), every image must also be decoded, on the same cores: a network on every core then
   * shares them with the decoders, and its threads wait at each operator for the one a decoder displaced.
   * So it gets the share of the T cores that balances the two, T x N / (N + D), rounded, for the
   * network's CPU time per image N (its time x its threads) and an image's decoding time D (running
   * averages). MobileNet0.25 on 1080p JPEGs (N ≈ 20-24 ms, D ≈ 12-17 ms), 2 CPUs, 4 or 8 requests at a
   * time: 1 thread of 2; 38.5-40.2 requests/s with 2 threads, 42-44 with 1. ResNet50 (N is 20-40x D)
   * keeps all. Engines that cannot change their threads per run (ONNX Runtime, CUDA) always use all theirs.
   * On 2 threads the network may instead run two batches at once, one thread each (besideMode).
   */
  private threadsFor(batchSize: number): number {
    const all = this.engineThreads;
    if (!this.threadsPerRun || this.admitted <= batchSize || this.networkCpuMsAverage === 0) return all;
    if (this.besideMode()) return 1;
    const network = this.networkCpuMsAverage;
    return Math.min(all, Math.max(1, Math.round((all * network) / (network + this.decodeMsAverage))));
  }

  /**
   * Under load on 2 threads (LibTorch on the CPU), while the network takes at most 4x an image's
   * decoding (MobileNet0.25 near 1080p; not ResNet50, whose network is 20-40x it): two batches at once,
   * each on one thread, one of them on the addon's thread beside its primary one (native/engine.cc),
   * instead of one batch at a time. Measured, MobileNet0.25, 1080p JPEGs, 2 CPUs: 59.8-61.4 requests/s
   * at concurrency 4 and 8 against 46.6-47.5 one batch at a time, concurrency 1 unchanged. (The ratio is
   * of running averages, which two batches at once inflate: the network's CPU time per image 31 against
   * 20 ms, the decoding 13 against 10; the share formula above, on those, would flip between 1 and 2.)
   */
  private besideMode(): boolean {
    return (
      this.engineThreads === 2 &&
      // fp32 and bf16: the graphs whose convolutions the addon runs (one scratchpad per run); int8's
      // quantised kernels were not checked running two at once.
      this.options.precision !== 'int8' &&
      this.options.maxConcurrentBatches >= 2 &&
      this.admitted > 1 &&
      this.networkCpuMsAverage > 0 &&
      this.networkCpuMsAverage <= 4 * this.decodeMsAverage
    );
  }

  /** Batches at once, LibTorch on the CPU (see besideMode): at most maxConcurrentBatches. */
  private batchLimit(): number {
    return Math.min(this.options.maxConcurrentBatches, this.besideMode() ? 2 : 1);
  }

  /** An unused batch tensor of this type and length, if one is kept. */
  private takeSpare<T extends Float32Array | Uint8Array>(
    kind: new (length: number) => T,
    length: number,
  ): T | undefined {
    const i = this.spareTensors.findIndex((a) => a instanceof kind && a.length === length);
    return i < 0 ? undefined : (this.spareTensors.splice(i, 1)[0] as T);
  }

  /** Keeps a batch tensor for reuse (not one transferred away), the most recent first, within a budget. */
  private keepSpare(array: Float32Array | Uint8Array): void {
    if (array.byteLength === 0 || array.byteLength > SPARE_TENSOR_BYTES) return;
    this.spareTensors.unshift(array);
    let bytes = 0;
    const kept = this.spareTensors.findIndex((a) => (bytes += a.byteLength) > SPARE_TENSOR_BYTES);
    if (kept >= 0) this.spareTensors.length = kept;
  }

  /** A decoded-pixel buffer of exactly this many bytes, if one is kept. */
  private takeSparePixels(bytes: number): Buffer | undefined {
    const i = this.sparePixels.findIndex((b) => b.length === bytes);
    return i < 0 ? undefined : this.sparePixels.splice(i, 1)[0];
  }

  /** Keeps an image's pixel buffer once packed, the most recent first, a few of them. */
  private keepSparePixels(data: Buffer): void {
    if (data.byteOffset !== 0 || data.length !== data.buffer.byteLength) return; // a view: not ours to reuse
    this.sparePixels.unshift(data);
    if (this.sparePixels.length > SPARE_PIXEL_BUFFERS) this.sparePixels.length = SPARE_PIXEL_BUFFERS;
  }

  /** Images admitted and not yet finished. */
  get pending(): number {
    return this.admitted;
  }

  /** Native batches run so far. */
  get batches(): number {
    return this.batcher.batches;
  }

  info(): DetectorInfo {
    return {
      engine: this.engine.info(),
      jpegDecoder: this.jpeg?.name ?? 'sharp',
      model: this.model.card,
      modelDir: this.model.dir,
      options: { ...this.options },
    };
  }

  /** Finishes the work in progress, then releases the model. */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      if (this.admitted > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      await this.engine.dispose();
    })();
    return this.disposing;
  }
}
