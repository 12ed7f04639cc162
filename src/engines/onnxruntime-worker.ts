// SPDX-License-Identifier: MIT
// The worker thread of the ONNX Runtime engine (src/engines/onnxruntime.ts). onnxruntime-node's
// `session.run()` runs the whole network synchronously on the thread that calls it (it only defers
// the start with setImmediate), so the session lives here, off the main event loop. One message in,
// one message out; runs are serial (ONNX Runtime parallelises inside a run with its intra-op threads).
import { parentPort, workerData } from 'node:worker_threads';
import type * as Ort from 'onnxruntime-node';
import {
  EXITING,
  RUNNING,
  type WorkerData,
  type WorkerReply,
  type WorkerRequest,
} from './onnxruntime-protocol';

const OUTPUTS = ['loc', 'conf', 'landmarks'] as const;

/** The reply for one run; the output arrays are transferred, not copied. */
function resultMessage(
  id: number,
  result: Ort.InferenceSession.OnnxValueMapType,
  inferMs: number,
  input: Float32Array | Uint8Array,
): [WorkerReply, ArrayBuffer[]] {
  const tensors = OUTPUTS.map((name) => {
    const tensor = result[name]!;
    if (tensor.type !== 'float32') throw new Error(`output ${name} is ${tensor.type}, expected float32`);
    return tensor;
  });
  const [loc, conf, landmarks] = tensors.map((t) => t.data as Float32Array) as [
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  const transfer = [loc, conf, landmarks]
    .filter((a) => a.byteOffset === 0 && a.byteLength === a.buffer.byteLength)
    .map((a) => a.buffer as ArrayBuffer);
  const shapes = {
    loc: [...tensors[0]!.dims],
    conf: [...tensors[1]!.dims],
    landmarks: [...tensors[2]!.dims],
  };
  // The input goes back too, so that the caller can reuse its memory (see RawOutputs.input).
  transfer.push(input.buffer as ArrayBuffer);
  return [{ type: 'result', id, loc, conf, landmarks, shapes, inferMs, input }, [...new Set(transfer)]];
}

function messageOf(error: unknown): string {
  return (error as Error)?.message ?? String(error);
}

/** Ends the model load's count as a run (the main thread started it at 1, see guardExit). */
function loaded(state: Int32Array): void {
  Atomics.store(state, RUNNING, 0);
  Atomics.notify(state, RUNNING);
}

interface Loaded {
  ort: typeof Ort;
  session: Ort.InferenceSession;
  /** With spinning 'exclusive': the session for runs marked exclusive. */
  exclusive: Ort.InferenceSession | undefined;
  inputName: string;
}

/** Loads onnxruntime-node and the model; posts a load_error and returns undefined when it cannot. */
async function load(data: WorkerData, post: (reply: WorkerReply) => void): Promise<Loaded | undefined> {
  let ort: typeof Ort;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- resolved by the main thread
    ort = require(data.ortPath) as typeof Ort;
  } catch (error) {
    post({
      type: 'load_error',
      stage: 'require',
      message: `cannot load onnxruntime-node: ${messageOf(error)}`,
    });
    return undefined;
  }
  let session: Ort.InferenceSession;
  let exclusive: Ort.InferenceSession | undefined;
  const create = (extra: Record<string, string>) =>
    ort.InferenceSession.create(data.modelPath, {
      intraOpNumThreads: data.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      executionProviders: ['cpu'],
      extra,
    });
  try {
    if (Atomics.load(new Int32Array(data.state), EXITING)) throw new Error('the process is exiting');
    // spinning true: ONNX Runtime's defaults (threads spin between runs too). Otherwise a session whose
    // threads block at once, and with 'exclusive' a second one whose threads spin during a run and
    // stop when it returns (session.force_spinning_stop), for the runs the caller marks exclusive.
    session = await create(data.spinning === true ? {} : { 'session.intra_op.allow_spinning': '0' });
    if (data.spinning === 'exclusive') exclusive = await create({ 'session.force_spinning_stop': '1' });
  } catch (error) {
    post({
      type: 'load_error',
      stage: 'session',
      message: `cannot load ${data.modelPath}: ${messageOf(error)}`,
    });
    return undefined;
  }
  const missing = OUTPUTS.filter((name) => !session.outputNames.includes(name));
  if (session.inputNames.length !== 1 || missing.length > 0) {
    post({
      type: 'load_error',
      message:
        `${data.modelPath} is not a facedet RetinaFace model: expected 1 input and outputs ` +
        `${OUTPUTS.join(', ')}, found inputs [${session.inputNames.join(', ')}] and outputs ` +
        `[${session.outputNames.join(', ')}]`,
    });
    await session.release();
    await exclusive?.release();
    return undefined;
  }
  return { ort, session, exclusive, inputName: session.inputNames[0]! };
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('onnxruntime-worker must run in a worker thread');
  const data = workerData as WorkerData;
  const state = new Int32Array(data.state);
  const post = (reply: WorkerReply, transfer: ArrayBuffer[] = []) => port.postMessage(reply, transfer);

  let ready: Loaded | undefined;
  try {
    ready = await load(data, post);
  } finally {
    loaded(state);
  }
  if (!ready) return;
  const { ort, session, exclusive, inputName } = ready;

  port.on('message', (request: WorkerRequest) => {
    if (request.type === 'close') {
      Promise.allSettled([session.release(), exclusive?.release()]).then(
        () => post({ type: 'closed' }),
        () => post({ type: 'closed' }),
      );
      return;
    }
    const { id, input, shape } = request;
    const runner = (request.exclusive && exclusive) || session;
    void (async () => {
      // Counted before the exit flag is read (both sequentially consistent): the main thread's exit
      // handler either sees this run and waits for it, or this run sees the flag and does not start.
      Atomics.add(state, RUNNING, 1);
      let result: Ort.InferenceSession.OnnxValueMapType;
      let inferMs: number;
      try {
        if (Atomics.load(state, EXITING)) throw new Error('the process is exiting');
        const [n, c, h, w] = shape;
        const feed =
          data.input === 'uint8'
            ? new ort.Tensor('uint8', input as Uint8Array, [n, h, w, c])
            : new ort.Tensor('float32', input as Float32Array, shape);
        const t0 = performance.now();
        result = await runner.run({ [inputName]: feed });
        inferMs = performance.now() - t0;
      } catch (error) {
        post({ type: 'error', id, message: messageOf(error) });
        return;
      } finally {
        Atomics.sub(state, RUNNING, 1);
        Atomics.notify(state, RUNNING);
      }
      try {
        post(...resultMessage(id, result, inferMs, input));
      } catch (error) {
        post({ type: 'error', id, message: messageOf(error) });
      }
    })();
  });
  post({ type: 'ready', version: ort.env.versions.node ?? ort.env.versions.common });
}

main().catch((error: unknown) => {
  parentPort?.postMessage({ type: 'load_error', message: messageOf(error) } satisfies WorkerReply);
});
