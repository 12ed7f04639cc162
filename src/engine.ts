// SPDX-License-Identifier: MIT
// Engines run the network: raw NCHW batch in, raw outputs out. The native LibTorch addon is one;
// every engine offers the same small interface, so the detector never knows which one it has.
import { FacedetError, invalidParameterError, withCallSite } from './errors';
import { loadBinding, type NativeEngine, type NativeLoadOptions, type RawOutputs } from './native';

export type { RawOutputs } from './native';

export type Shape4 = [number, number, number, number];

export interface EngineInfo {
  backend: string;
  device: string;
  precision: string;
  threads: number;
  version: string;
  /**
   * The batch `infer` takes: `'float32-nchw'` (absent means this too): BGR minus the mean, NCHW, as
   * packBatch makes it; `'uint8-nhwc'`: the decoded RGB pixels, NHWC, as packBatchUint8 makes it (the
   * engine's model does the rest). `shape` is [n, 3, h, w] either way.
   */
  input?: 'float32-nchw' | 'uint8-nhwc';
  /** LibTorch: how many convolutions oneDNN runs directly, and how many of them are Winograd candidates. */
  onednn?: number;
  winograd?: number;
}

export interface InferOptions {
  /**
   * The caller hands the input's memory over and will not use the array again: an engine that runs
   * on another thread (ONNX Runtime) may then transfer it instead of copying (the array is detached,
   * length 0, once `infer` returns). Engines that read the memory in place (the native addon) ignore it.
   */
  transfer?: boolean;
  /**
   * Nothing else of the caller's is running or waiting (no image being decoded, no other batch): an
   * engine may then keep its threads spinning for the length of this run instead of putting them to
   * sleep between operators, which is faster when no other work needs the CPUs (ONNX Runtime with
   * `spinning: 'exclusive'`, its default). Other engines ignore it.
   */
  exclusive?: boolean;
  /**
   * At most this many of the engine's intra-op threads for this run (1 to `info().threads`): LibTorch on
   * the CPU. Other engines ignore it.
   */
  threads?: number;
}

export interface InferenceEngine {
  /**
   * Runs one packed batch, in the layout `info().input` names; the array must not change until the
   * promise settles.
   */
  infer(input: Float32Array | Uint8Array, shape: Shape4, options?: InferOptions): Promise<RawOutputs>;
  dispose(): Promise<void>;
  info(): EngineInfo;
}

/** The addon's load options (NativeLoadOptions), with the engine, device, precision and threads settled. */
export type EngineLoadOptions = NativeLoadOptions &
  Required<Pick<NativeLoadOptions, 'backend' | 'device' | 'precision' | 'threads'>>;

const isPositiveInteger = (x: unknown): x is number => Number.isInteger(x) && (x as number) > 0;

/** Checks an `infer` call in JS, with exact messages, before it reaches the addon. */
export function validateBatch(input: unknown, shape: unknown): asserts input is Float32Array {
  validateBatchOf(Float32Array, input, shape);
}

/** validateBatch for an engine that takes `kind` (Float32Array, or Uint8Array for uint8-nhwc). */
export function validateBatchOf<T extends Float32Array | Uint8Array>(
  kind: { new (n: number): T; name: string },
  input: unknown,
  shape: unknown,
): asserts input is T {
  if (!(input instanceof kind)) throw invalidParameterError('input', kind.name, input);
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every(isPositiveInteger)) {
    throw invalidParameterError('shape', 'array of 4 positive integers [n, c, h, w]', shape);
  }
  if (shape[1] !== 3) throw invalidParameterError('shape[1] (channels)', '3', shape[1]);
  const expected = (shape as number[]).reduce((a, b) => a * b, 1);
  if (input.length !== expected) {
    throw new RangeError(
      `Expected ${kind.name} of length ${expected} for input of shape [${shape.join(', ')}] but received length ${input.length}`,
    );
  }
}

/** The native LibTorch (or TensorRT) engine. */
export class NativeInferenceEngine implements InferenceEngine {
  private readonly uint8: boolean;
  /** The most threads a run may ask for: the engine's. */
  private readonly threads: number;

  private constructor(private readonly native: NativeEngine) {
    const info = native.info();
    this.uint8 = info.input === 'uint8-nhwc';
    this.threads = Math.max(1, info.threads);
  }

  static async load(options: EngineLoadOptions): Promise<NativeInferenceEngine> {
    const callSite = new Error();
    const binding = loadBinding();
    try {
      return new NativeInferenceEngine(await binding.Engine.load(options));
    } catch (error) {
      const err = withCallSite<Error>(error, callSite);
      if (!(err instanceof RangeError) && !(err instanceof TypeError)) {
        throw withCallSite(new FacedetError('model_invalid', err.message, { cause: error }), callSite);
      }
      throw err;
    }
  }

  async infer(input: Float32Array | Uint8Array, shape: Shape4, options?: InferOptions): Promise<RawOutputs> {
    const callSite = new Error();
    if (this.native.disposed)
      throw withCallSite(new FacedetError('engine_disposed', 'the engine is disposed'), callSite);
    if (this.uint8) validateBatchOf(Uint8Array, input, shape);
    else validateBatch(input, shape);
    const threads = options?.threads;
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= this.threads)) {
      throw invalidParameterError('threads', `integer between 1 and ${this.threads}`, threads);
    }
    try {
      return await this.native.infer(input, shape, threads);
    } catch (error) {
      const message = (error as Error)?.message ?? String(error);
      throw withCallSite(new FacedetError('inference_failed', message, { cause: error }), callSite);
    }
  }

  dispose(): Promise<void> {
    return this.native.dispose();
  }

  info(): EngineInfo {
    return this.native.info();
  }
}
