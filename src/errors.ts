// SPDX-License-Identifier: MIT
// Errors of the library. Every error a user can meet has a stable `code`; validation messages use
// one uniform sentence so tests (and users) can rely on them.

/** A stable, machine-readable error code. */
export type ErrorCode =
  | 'invalid_argument'
  | 'model_not_found'
  | 'model_invalid'
  | 'native_unavailable'
  | 'engine_disposed'
  | 'inference_failed'
  | 'image_decode_failed'
  | 'image_too_large'
  | 'image_unreadable'
  | 'overloaded';

export class FacedetError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FacedetError';
    this.code = code;
  }
}

/** The detector's queue is full: retry later (HTTP 503 with Retry-After). */
export class OverloadedError extends FacedetError {
  readonly retryAfterSeconds: number;
  constructor(message: string, retryAfterSeconds = 1) {
    super('overloaded', message);
    this.name = 'OverloadedError';
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return value.length > 40 ? `${value.slice(0, 40)}...` : value;
  if (value === null || value === undefined || typeof value !== 'object') return String(value);
  if (Array.isArray(value)) return `array of length ${value.length}`;
  const name = (value as object).constructor?.name;
  return name && name !== 'Object' ? name : 'object';
}

/**
 * `Expected ${expected} for ${name} but received ${actual} of type ${typeof actual}` -- the
 * sentence every validation error of the library uses (after sharp's `invalidParameterError`).
 */
export function invalidParameterError(name: string, expected: string, actual: unknown): TypeError {
  return new TypeError(
    `Expected ${expected} for ${name} but received ${describe(actual)} of type ${typeof actual}`,
  );
}

/**
 * Re-throws an error from the native addon (or another asynchronous source) with the stack of the
 * JS call site, captured synchronously before the asynchronous work started.
 */
export function withCallSite<E extends Error>(error: unknown, callSite: Error): E {
  const err = (error instanceof Error ? error : new Error(String(error))) as E;
  const where = callSite.stack?.split('\n').slice(1).join('\n');
  if (where) err.stack = `${err.name}: ${err.message}\n${where}`;
  return err;
}
