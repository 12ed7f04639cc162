// SPDX-License-Identifier: MIT
// The server's errors: named factories, each with an HTTP status and a stable machine-readable code.
// The error middleware is the one place they (and anything else thrown) become JSON.

/** Codes of errors that answer a whole request (`{ error: { code, message } }`). */
export type RequestErrorCode =
  | 'invalid_json'
  | 'invalid_multipart'
  | 'validation_error'
  | 'not_found'
  | 'method_not_allowed'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'no_images'
  | 'too_many_images'
  | 'rate_limited'
  | 'internal_error'
  | 'overloaded'
  | 'not_ready';

export class HttpError extends Error {
  /** Safe to show the client (every HttpError is; internal errors are replaced before answering). */
  readonly expose = true;
  constructor(
    readonly status: number,
    readonly code: RequestErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export const invalidJsonError = (message: string) => new HttpError(400, 'invalid_json', message);
export const invalidMultipartError = (message: string) => new HttpError(400, 'invalid_multipart', message);
export const validationError = (message: string) => new HttpError(400, 'validation_error', message);
export const notFoundError = (message = 'no such endpoint') => new HttpError(404, 'not_found', message);
export const methodNotAllowedError = (message = 'method not allowed') =>
  new HttpError(405, 'method_not_allowed', message);
export const payloadTooLargeError = (message: string) => new HttpError(413, 'payload_too_large', message);
export const unsupportedMediaTypeError = (message: string) =>
  new HttpError(415, 'unsupported_media_type', message);
export const noImagesError = (message: string) => new HttpError(422, 'no_images', message);
export const tooManyImagesError = (message: string) => new HttpError(422, 'too_many_images', message);
export const rateLimitedError = (retryAfterSeconds: number) =>
  new HttpError(429, 'rate_limited', 'too many requests from this client; retry later', {
    'Retry-After': String(retryAfterSeconds),
  });
export const internalError = () => new HttpError(500, 'internal_error', 'internal server error');
export const overloadedError = (message: string, retryAfterSeconds = 1) =>
  new HttpError(503, 'overloaded', message, { 'Retry-After': String(retryAfterSeconds) });
export const notReadyError = (message: string) =>
  new HttpError(503, 'not_ready', message, { 'Retry-After': '1' });

/** Every request-level error: status and when it happens (the OpenAPI document and README use it). */
export const REQUEST_ERRORS: Record<RequestErrorCode, { status: number; description: string }> = {
  invalid_json: { status: 400, description: 'the body is not valid JSON (or not a JSON object or array)' },
  invalid_multipart: { status: 400, description: 'the multipart body is malformed' },
  validation_error: {
    status: 400,
    description:
      'a field has the wrong type or range, a required field is missing, or a multipart field is not `files`; the message names the field',
  },
  not_found: { status: 404, description: 'no such endpoint' },
  method_not_allowed: { status: 405, description: 'the endpoint does not take this method (see `Allow`)' },
  payload_too_large: {
    status: 413,
    description: 'the body, an uploaded file or a base64 string is over its configured limit',
  },
  unsupported_media_type: {
    status: 415,
    description:
      'wrong Content-Type: JSON endpoints take `application/json` (UTF-8), the files endpoint `multipart/form-data`',
  },
  no_images: { status: 422, description: 'the list of images is empty' },
  too_many_images: { status: 422, description: 'more images than the per-request limit' },
  rate_limited: {
    status: 429,
    description: 'this client sent more requests than its rate limit (see `Retry-After`)',
  },
  internal_error: {
    status: 500,
    description: 'an unexpected error; it is logged with the request id, details are never sent',
  },
  overloaded: {
    status: 503,
    description:
      'the detection queue is full; answered at once instead of queueing without bound (see `Retry-After`)',
  },
  not_ready: { status: 503, description: 'the model is still loading, or the server is shutting down' },
};

/** Codes of per-image errors (an entry of `result` with `faces_count: 0, faces: [], error`). */
export const IMAGE_ERRORS: Record<string, string> = {
  invalid_base64: 'the string is not base64 (standard or URL-safe alphabet) or not a base64 data: URL',
  empty_image: 'the image has zero bytes',
  image_decode_failed: 'the bytes are not an image the decoder reads (a text file, a truncated JPEG, ...)',
  image_too_large: 'the header declares more pixels than the limit (decompression bomb guard)',
  inference_failed: 'the native batch holding this image failed',
  url_invalid: 'not a valid absolute URL',
  url_scheme_not_allowed: 'only http and https URLs are fetched',
  url_host_forbidden:
    'the host resolves to a loopback, private, link-local, unspecified, multicast or reserved address (also after a redirect); allowed only with FACEDET_ALLOW_PRIVATE_SOURCES=1',
  url_dns_failed: 'the host name does not resolve',
  url_too_many_redirects: 'more redirects than the limit',
  url_too_large: 'the download is larger than the limit (Content-Length or streamed bytes)',
  url_timeout: 'the download took longer than the limit',
  url_http_status: 'the server answered with a non-2xx status',
  url_fetch_failed: 'the connection failed or broke off',
};
