// SPDX-License-Identifier: MIT
// The one place where errors become responses: `{ error: { code, message } }` with a stable code.
// Known errors keep their status and message; anything unexpected is logged with the request id and
// answered as a bare 500 (never a stack trace or an internal message).
import type { Middleware } from 'koa';
import { FacedetError, OverloadedError } from '../../errors';
import {
  HttpError,
  internalError,
  invalidJsonError,
  invalidMultipartError,
  methodNotAllowedError,
  notFoundError,
  notReadyError,
  overloadedError,
  payloadTooLargeError,
  tooManyImagesError,
  unsupportedMediaTypeError,
  validationError,
} from '../errors';
import type { AppState } from '../types';

interface BodyError {
  type?: string;
  status?: number;
  expose?: boolean;
  limit?: number;
  message: string;
  httpCode?: number;
  code?: unknown;
}

// formidable's numeric error codes (formidable/src/FormidableError.js).
const FORMIDABLE_TOO_MANY_FILES = 1015;
const FORMIDABLE_TOO_LARGE = new Set([1006, 1007, 1009, 1016]);

/** Maps a thrown value to the HttpError the client gets, or undefined for an unexpected error. */
export function toHttpError(error: unknown): HttpError | undefined {
  if (error instanceof HttpError) return error;
  if (error instanceof OverloadedError) return overloadedError(error.message, error.retryAfterSeconds);
  if (error instanceof FacedetError && error.code === 'engine_disposed') {
    return notReadyError('the server is shutting down');
  }
  if (!(error instanceof Error)) return undefined;
  const e = error as BodyError;
  // formidable (multipart) errors: a numeric code and an httpCode.
  if (typeof e.code === 'number' && typeof e.httpCode === 'number') {
    if (e.code === FORMIDABLE_TOO_MANY_FILES)
      return tooManyImagesError(`too many files: ${e.message.replace(/^options\./, '')}`);
    if (FORMIDABLE_TOO_LARGE.has(e.code)) return payloadTooLargeError(e.message.replace(/options\./g, ''));
    if (e.httpCode >= 400 && e.httpCode < 500) return invalidMultipartError(e.message);
    return undefined;
  }
  // co-body: a JSON syntax error (or a forbidden __proto__ key) with status 400.
  if (error instanceof SyntaxError && e.status === 400) {
    return invalidJsonError(`the body is not valid JSON: ${e.message}`);
  }
  // raw-body errors: a `type`.
  switch (e.type) {
    case 'entity.too.large':
      return payloadTooLargeError(`the body is larger than the limit of ${e.limit ?? '?'} bytes`);
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return unsupportedMediaTypeError(e.message);
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
      return validationError(e.message);
  }
  if (e.expose && typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    if (e.status === 404) return notFoundError(e.message);
    if (e.status === 405) return methodNotAllowedError(e.message);
    if (e.status === 413) return payloadTooLargeError(e.message);
    if (e.status === 415) return unsupportedMediaTypeError(e.message);
    return validationError(e.message);
  }
  return undefined;
}

export function errorHandler(): Middleware<AppState> {
  return async (ctx, next) => {
    try {
      await next();
      // Nothing answered: 404 (no route) or 405 (set by the router's allowedMethods, with Allow).
      if (ctx.body == null && ctx.status === 404) throw notFoundError(`no such endpoint: ${ctx.path}`);
      if (ctx.body == null && ctx.status === 405) {
        throw methodNotAllowedError(`${ctx.method} is not allowed on ${ctx.path}`);
      }
    } catch (error) {
      let httpError = toHttpError(error);
      if (!httpError) {
        ctx.state.log.error({ err: error }, 'unexpected error');
        httpError = internalError();
      } else if (
        (error as { code?: unknown }).code === 1002 ||
        (error as BodyError).type === 'request.aborted'
      ) {
        ctx.state.log.debug({ err: error }, 'client aborted the request');
      }
      ctx.state.errorCode = httpError.code;
      if (ctx.headerSent || !ctx.writable) return;
      ctx.status = httpError.status;
      for (const [name, value] of Object.entries(httpError.headers)) ctx.set(name, value);
      ctx.body = { error: { code: httpError.code, message: httpError.message } };
    }
  };
}
