// SPDX-License-Identifier: MIT
// The ONNX Runtime engine: runs the exported model.onnx through onnxruntime-node (an optional
// dependency, no native build of ours), behind the same `InferenceEngine` interface as the LibTorch
// addon. onnxruntime-node's `session.run()` blocks the thread that calls it for the whole network,
// so the session lives in a worker thread (onnxruntime-worker.ts) and the main event loop keeps
// turning: inputs go to the worker by transfer (or one copy), outputs come back by transfer.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  type EngineInfo,
  type InferenceEngine,
  type InferOptions,
  type Shape4,
  validateBatchOf,
} from '../engine';
import { FacedetError, invalidParameterError, withCallSite } from '../errors';
import type { RawOutputs } from '../native';
import {
  EXITING,
  RUNNING,
  type WorkerData,
  type WorkerReply,
  type WorkerRequest,
} from './onnxruntime-protocol';

export interface OnnxRuntimeLoadOptions {
  /** An ONNX file exported by `facedet export` (model.onnx). */
  modelPath: string;
  /** ONNX Runtime intra-op threads (inter-op is 1); default: the number of CPUs available. */
  threads?: number;
  /**
   * What ONNX Runtime's intra-op threads do while they wait for work:
   * - `'exclusive'` (default): two sessions of the model. Runs the caller marks `exclusive` (the
   *   detector does when nothing else of its own is pending) use one whose threads spin for the length
   *   of the run and stop when it returns; the others use one whose threads block at once, so decoding
   *   and other requests get the CPUs. Costs a second copy of the weights.
   * - `false`: one session, threads block at once.
   * - `true`: ONNX Runtime's own default: threads keep spinning for ≈ 20-30 ms after every run too.
   *
   * Measured on 2 CPUs, MobileNet0.25 1088x608, network alone: blocking 14.0 ms, spinning during the
   * run 12.9 ms, ONNX Runtime's default 13.0 ms (at 512²: 6.8, 5.9, 5.0 ms); with one other busy
   * process on the machine, blocking 19 ms and spinning 22 ms; the server at concurrency 4 served 38-41
   * requests/s with blocking threads and 36 with spinning ones (decoding competes with them).
   */
  spinning?: boolean | 'exclusive';
  /**
   * What the model takes: `'float32'` (default, model.onnx: BGR minus mean, NCHW) or `'uint8'`
   * (model.u8.onnx: the decoded RGB pixels, NHWC; the graph converts them). `infer` takes a Float32Array
   * or a Uint8Array accordingly, with shape [n, 3, h, w] either way.
   */
  input?: 'float32' | 'uint8';
  /**
   * What the model computes in, as `info()` reports it: `'fp32'` (default) or `'int8'` (model.int8.onnx:
   * QuantizeLinear/DequantizeLinear pairs that ONNX Runtime runs as int8 kernels).
   */
  precision?: 'fp32' | 'int8';
}

export const ONNXRUNTIME_INSTALL_HINT =
  "The 'onnxruntime' backend needs the onnxruntime-node package: run `npm install onnxruntime-node` " +
  'in your project. Its install script only downloads optional CUDA parts (the CPU binary is in the ' +
  'package); skip it with `ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install onnxruntime-node` (or ' +
  '`--ignore-scripts`).';

/** The path of onnxruntime-node's entry point, or a FacedetError that says how to install it. */
export function resolveOnnxRuntime(): string {
  try {
    return require.resolve('onnxruntime-node');
  } catch (error) {
    throw new FacedetError(
      'native_unavailable',
      `onnxruntime-node is not installed. ${ONNXRUNTIME_INSTALL_HINT}`,
      {
        cause: error,
      },
    );
  }
}

/** The installed onnxruntime-node version, or undefined when it is not installed. */
export function onnxRuntimeVersion(): string | undefined {
  try {
    const entry = resolveOnnxRuntime();
    let dir = path.dirname(entry);
    for (let i = 0; i < 4; i++, dir = path.dirname(dir)) {
      const pkg = path.join(dir, 'package.json');
      if (fs.existsSync(pkg)) {
        const json = JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string; version?: string };
        if (json.name === 'onnxruntime-node') return json.version;
      }
    }
  } catch {
    // not installed
  }
  return undefined;
}

function startWorker(data: WorkerData): Worker {
  const ext = path.extname(__filename);
  const file = path.join(__dirname, `onnxruntime-worker${ext}`);
  if (ext === '.ts') {
    // Running from the TypeScript sources (tests, tsx): the worker compiles its file with tsx too.
    const tsx = JSON.stringify(require.resolve('tsx/cjs/api'));
    const bootstrap = `require(${tsx}).register(); require(${JSON.stringify(file)});`;
    return new Worker(bootstrap, { eval: true, workerData: data });
  }
  return new Worker(file, { workerData: data });
}

/** How long process exit waits for a run in flight on the worker (it cannot be interrupted). */
const EXIT_WAIT_MS = 60_000;

/**
 * Node stops worker threads when the process exits; onnxruntime-node aborts the whole process
 * (`terminate called after throwing an instance of 'Napi::Error'`) when that happens during a run or
 * a model load. So on exit the main thread raises a flag that stops new runs and waits, blocking, for
 * the ones in flight. Returns the function that removes the guard.
 */
function guardExit(state: Int32Array): () => void {
  const onExit = () => {
    Atomics.store(state, EXITING, 1);
    const deadline = Date.now() + EXIT_WAIT_MS;
    for (let n = Atomics.load(state, RUNNING); n > 0; n = Atomics.load(state, RUNNING)) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      Atomics.wait(state, RUNNING, n, left);
    }
  };
  process.on('exit', onExit);
  return () => process.off('exit', onExit);
}

interface Pending {
  resolve: (outputs: RawOutputs) => void;
  reject: (error: Error) => void;
}

/**
 * ONNX Runtime (CPU) on a worker thread. Runs are serial on that thread; each uses `threads`
 * intra-op threads. `infer(input, shape, { transfer: true })` hands the input's memory to the worker
 * (the array is detached, length 0, when the call returns): the detector does so with the fresh array
 * it packs per batch. Without it, the input is copied once and the caller keeps its array.
 */
export class OnnxRuntimeEngine implements InferenceEngine {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private idleWaiters: (() => void)[] = [];
  private closedWaiter: (() => void) | undefined;
  private disposing: Promise<void> | undefined;
  private failure: string | undefined;

  private constructor(
    private readonly worker: Worker,
    private readonly threads: number,
    private readonly version: string,
    private readonly input: 'float32' | 'uint8',
    private readonly precision: 'fp32' | 'int8',
    private readonly unguard: () => void,
  ) {
    worker.on('message', (reply: WorkerReply) => this.onReply(reply));
    worker.on('error', (error: Error) => this.fail(`the ONNX Runtime worker failed: ${error.message}`));
    worker.on('exit', (code) => {
      this.closedWaiter?.();
      if (!this.disposing) this.fail(`the ONNX Runtime worker exited unexpectedly (code ${code})`);
    });
    // An idle engine does not keep the process alive (as the native addon); a run in flight does.
    worker.unref();
  }

  /** Starts the worker and loads the model; rejects with a FacedetError when it cannot. */
  static async load(options: OnnxRuntimeLoadOptions): Promise<OnnxRuntimeEngine> {
    const callSite = new Error();
    if (options === null || typeof options !== 'object')
      throw invalidParameterError('options', 'object', options);
    const { modelPath } = options;
    if (typeof modelPath !== 'string' || modelPath === '') {
      throw invalidParameterError('modelPath', 'path of an ONNX file', modelPath);
    }
    const threads = options.threads ?? os.availableParallelism();
    if (!(Number.isInteger(threads) && threads >= 1 && threads <= 1024)) {
      throw invalidParameterError('threads', 'integer between 1 and 1024', threads);
    }
    const spinning = options.spinning ?? 'exclusive';
    if (typeof spinning !== 'boolean' && spinning !== 'exclusive') {
      throw invalidParameterError('spinning', "boolean or 'exclusive'", spinning);
    }
    const input = options.input ?? 'float32';
    if (input !== 'float32' && input !== 'uint8') {
      throw invalidParameterError('input', "'float32' or 'uint8'", input);
    }
    const precision = options.precision ?? 'fp32';
    if (precision !== 'fp32' && precision !== 'int8') {
      throw invalidParameterError('precision', "'fp32' or 'int8'", precision);
    }
    const ortPath = resolveOnnxRuntime();
    if (!fs.existsSync(modelPath)) {
      throw withCallSite(new FacedetError('model_not_found', `model file not found: ${modelPath}`), callSite);
    }
    const state = new SharedArrayBuffer(8);
    const view = new Int32Array(state);
    // The worker's model load counts as a run until it reports (see guardExit).
    Atomics.store(view, RUNNING, 1);
    const unguard = guardExit(view);
    const worker = startWorker({
      ortPath,
      modelPath: path.resolve(modelPath),
      threads,
      spinning,
      input,
      state,
    });
    let onMessage: ((reply: WorkerReply) => void) | undefined;
    let onError: ((error: Error) => void) | undefined;
    let onExit: ((code: number) => void) | undefined;
    const detach = () => {
      worker.off('message', onMessage!).off('error', onError!).off('exit', onExit!);
    };
    try {
      const version = await new Promise<string>((resolve, reject) => {
        onMessage = (reply: WorkerReply) => {
          if (reply.type === 'ready') resolve(reply.version);
          else if (reply.type === 'load_error') {
            const code = reply.stage === 'require' ? 'native_unavailable' : 'model_invalid';
            const hint = reply.stage === 'require' ? ` ${ONNXRUNTIME_INSTALL_HINT}` : '';
            reject(new FacedetError(code, `${reply.message}${hint}`));
          } else reject(new Error(`unexpected first message from the worker: ${reply.type}`));
        };
        onError = reject;
        onExit = (code) => reject(new Error(`the ONNX Runtime worker exited (code ${code})`));
        worker.once('message', onMessage).once('error', onError).once('exit', onExit);
      });
      detach();
      return new OnnxRuntimeEngine(worker, threads, version, input, precision, unguard);
    } catch (error) {
      detach();
      await worker.terminate();
      unguard();
      const err =
        error instanceof FacedetError
          ? error
          : new FacedetError('model_invalid', (error as Error)?.message ?? String(error), { cause: error });
      throw withCallSite(err, callSite);
    }
  }

  get disposed(): boolean {
    return this.disposing !== undefined;
  }

  async infer(
    input: Float32Array | Uint8Array,
    shape: Shape4,
    options: InferOptions = {},
  ): Promise<RawOutputs> {
    const callSite = new Error();
    if (this.disposing)
      throw withCallSite(new FacedetError('engine_disposed', 'the engine is disposed'), callSite);
    if (this.input === 'uint8') validateBatchOf(Uint8Array, input, shape);
    else validateBatchOf(Float32Array, input, shape);
    if (this.failure) throw withCallSite(new FacedetError('inference_failed', this.failure), callSite);
    // Transfer only an array that owns its whole, non-shared buffer; otherwise copy exactly the view
    // (a structured clone would copy the whole underlying buffer).
    const owned =
      options.transfer === true &&
      input.buffer instanceof ArrayBuffer &&
      input.byteOffset === 0 &&
      input.byteLength === input.buffer.byteLength;
    const data = owned ? input : input.slice();
    const id = this.nextId++;
    const result = new Promise<RawOutputs>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    if (this.pending.size === 1) this.worker.ref();
    const request: WorkerRequest = {
      type: 'infer',
      id,
      input: data,
      shape: [...shape] as Shape4,
      exclusive: options.exclusive === true,
    };
    this.worker.postMessage(request, [data.buffer as ArrayBuffer]);
    try {
      const outputs = await result;
      // Our own copy is not the caller's to reuse.
      if (!owned) delete outputs.input;
      return outputs;
    } catch (error) {
      const message = (error as Error)?.message ?? String(error);
      throw withCallSite(new FacedetError('inference_failed', message, { cause: error }), callSite);
    }
  }

  /** Waits for the runs in flight (they complete normally), then releases the session and the worker. */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      if (this.pending.size > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      if (!this.failure) {
        this.worker.ref();
        const closed = new Promise<void>((resolve) => (this.closedWaiter = resolve));
        this.worker.postMessage({ type: 'close' } satisfies WorkerRequest);
        await closed;
      }
      await this.worker.terminate();
      this.unguard();
    })();
    return this.disposing;
  }

  info(): EngineInfo {
    return {
      backend: 'onnxruntime',
      device: 'cpu',
      precision: this.precision,
      threads: this.threads,
      version: this.version,
      input: this.input === 'uint8' ? 'uint8-nhwc' : 'float32-nchw',
    };
  }

  private settle(id: number): Pending | undefined {
    const pending = this.pending.get(id);
    this.pending.delete(id);
    if (this.pending.size === 0) {
      this.worker.unref();
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
    return pending;
  }

  private onReply(reply: WorkerReply): void {
    switch (reply.type) {
      case 'result': {
        const { loc, conf, landmarks, shapes, inferMs, input } = reply;
        this.settle(reply.id)?.resolve({
          loc,
          conf,
          landmarks,
          shapes,
          inferMs,
          ...(input ? { input } : {}),
        });
        break;
      }
      case 'error':
        this.settle(reply.id)?.reject(new Error(reply.message));
        break;
      case 'closed':
        this.closedWaiter?.();
        break;
      default:
        break;
    }
  }

  private fail(message: string): void {
    this.failure ??= message;
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(new Error(message));
    this.closedWaiter?.();
  }
}
