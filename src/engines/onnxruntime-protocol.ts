// SPDX-License-Identifier: MIT
// Messages between the ONNX Runtime engine (main thread) and its worker thread.
import type { Shape4 } from '../engine';
import type { RawOutputs } from '../native';

/** What the worker is started with. */
export interface WorkerData {
  ortPath: string;
  modelPath: string;
  threads: number;
  /** See OnnxRuntimeLoadOptions.spinning. */
  spinning: boolean | 'exclusive';
  /** See OnnxRuntimeLoadOptions.input. */
  input: 'float32' | 'uint8';
  /** Int32Array view: [RUNNING] runs started and not finished, [EXITING] 1 once the process exits. */
  state: SharedArrayBuffer;
}

export const RUNNING = 0;
export const EXITING = 1;

/** Main thread -> worker. */
export type WorkerRequest =
  | { type: 'infer'; id: number; input: Float32Array | Uint8Array; shape: Shape4; exclusive: boolean }
  | { type: 'close' };

/** Worker -> main thread. */
export type WorkerReply =
  | { type: 'ready'; version: string }
  | { type: 'load_error'; message: string; stage?: 'require' | 'session' }
  | ({ type: 'result'; id: number } & RawOutputs)
  | { type: 'error'; id: number; message: string }
  | { type: 'closed' };
