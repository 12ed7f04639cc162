// SPDX-License-Identifier: MIT
// The three detection endpoints of the original server: from URLs, from base64 strings, from
// uploaded files. Each checks the request as a whole first (content type, body, fields, counts,
// sizes: a 4xx for the whole request), then reads every image on its own: an image that cannot be
// decoded from base64, fetched or decoded gets an error entry in a 200 response, the others succeed.
import type Router from '@koa/router';
import { koaBody } from 'koa-body';
import type { Middleware } from 'koa';
import { Writable } from 'node:stream';
import type { DetectOptions, FaceDetector, ImageError, ImageResult } from '../../detector';
import {
  noImagesError,
  overloadedError,
  payloadTooLargeError,
  tooManyImagesError,
  unsupportedMediaTypeError,
  validationError,
} from '../errors';
import type { ServerConfig } from '../config';
import { FetchImageError } from '../fetch-image';
import type { Metrics } from '../metrics';
import { validate } from '../middleware/validate';
import type { AppContext, AppState } from '../types';
import {
  type Base64Request,
  type DetectOptionsInput,
  type UrlsRequest,
  detectSchemas,
} from './detect.schema';

/** Downloads one image; rejects with a FetchImageError (a per-image `url_*` code) when it cannot. */
export type FetchSource = (url: string, signal?: AbortSignal) => Promise<Buffer>;

export interface DetectRouteDeps {
  config: ServerConfig;
  metrics: Metrics;
  /** The loaded detector; throws not_ready while loading or shutting down. */
  detector: () => FaceDetector;
  fetchSource: FetchSource;
  /** Runs before the body is read (rate limiting, readiness). */
  guards: Middleware<AppState>[];
}

export const DETECT_PATHS = {
  urls: '/detect_faces_from_urls/',
  base64: '/detect_faces_from_base64/',
  files: '/detect_faces_from_files/',
} as const;

/** Per image: the bytes, or why there are none. */
type Source = Buffer | ImageError;

function imageError(index: number, code: string, reason: string): ImageError {
  return { code, message: `image ${index}: ${reason}` };
}

/** The detector numbers the images it was given; renumber them as in the request. */
function renumber(error: ImageError, index: number): ImageError {
  return { code: error.code, message: `image ${index}: ${error.message.replace(/^image \d+: /, '')}` };
}

const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** Plain base64 (standard or URL-safe, line breaks allowed) or a `data:<type>;base64,` URL. */
export function decodeBase64Image(text: string, index: number): Source {
  let payload = text;
  if (/^data:/i.test(text)) {
    const comma = text.indexOf(',');
    const meta = comma < 0 ? '' : text.slice(5, comma);
    if (comma < 0 || !/;base64$/i.test(meta)) {
      return imageError(
        index,
        'invalid_base64',
        'a data: URL must be base64-encoded (data:<type>;base64,...)',
      );
    }
    payload = text.slice(comma + 1);
  }
  if (/\s/.test(payload)) payload = payload.replace(/\s+/g, '');
  if (!BASE64.test(payload) || payload.length % 4 === 1) {
    return imageError(
      index,
      'invalid_base64',
      'not a base64 string (alphabet A-Z a-z 0-9 + / or - _, = padding)',
    );
  }
  const bytes = Buffer.from(payload, 'base64');
  if (bytes.length === 0) return imageError(index, 'empty_image', 'the image has zero bytes');
  return bytes;
}

function detectOptions(input: DetectOptionsInput, maxSizeLimit: number): DetectOptions {
  // max_size 0 asks for the original size: bounded by the server's limit (memory: a 50-megapixel
  // image would need a 600 MB input tensor).
  const maxSize = input.max_size === 0 && maxSizeLimit > 0 ? maxSizeLimit : input.max_size;
  return {
    confidenceThreshold: input.confidence_threshold,
    clipBoxes: input.clip_boxes,
    nmsIou: input.nms_iou,
    topK: input.top_k,
    keepTopK: input.keep_top_k,
    ...(maxSize !== undefined ? { maxSize } : {}),
  };
}

function requireContentType(wanted: 'application/json' | 'multipart/form-data'): Middleware<AppState> {
  return async (ctx, next) => {
    if (ctx.request.type !== wanted) {
      throw unsupportedMediaTypeError(
        `expected Content-Type ${wanted}, got ${ctx.request.type ? `'${ctx.request.type}'` : 'none'}`,
      );
    }
    if (ctx.is(wanted) === null) throw validationError('body: the request has no body');
    await next();
  };
}

export function detectRoutes(router: Router<AppState>, deps: DetectRouteDeps): void {
  const { config, metrics } = deps;
  const schemas = detectSchemas(config);

  function checkCount(field: string, count: number): void {
    if (count === 0) throw noImagesError(`${field}: the list of images is empty`);
    if (count > config.maxImagesPerRequest) {
      throw tooManyImagesError(
        `${field}: ${count} images, more than the limit of ${config.maxImagesPerRequest} per request`,
      );
    }
  }

  /** Refuses at once, before reading images, when the detector cannot admit them all. */
  function admit(count: number): FaceDetector {
    const detector = deps.detector();
    const limit = detector.info().options.maxQueueSize;
    if (count > limit) {
      // Could never be admitted: not a reason to retry.
      throw tooManyImagesError(`${count} images, more than the detector's queue of ${limit} can ever hold`);
    }
    if (detector.pending + count > limit) {
      throw overloadedError(
        `the detector is busy: ${detector.pending} image(s) in progress, limit ${limit}; retry later`,
      );
    }
    return detector;
  }

  async function respond(
    ctx: AppContext,
    endpoint: string,
    detector: FaceDetector,
    sources: Source[],
    options: DetectOptions,
  ): Promise<void> {
    const inputs: Buffer[] = [];
    const positions: number[] = [];
    sources.forEach((s, i) => {
      if (Buffer.isBuffer(s)) {
        inputs.push(s);
        positions.push(i);
      }
    });
    const result: ImageResult[] = sources.map((s) =>
      Buffer.isBuffer(s) ? { faces_count: 0, faces: [] } : { faces_count: 0, faces: [], error: s },
    );
    if (inputs.length > 0) {
      const t0 = performance.now();
      // Only Buffers reach the detector: a string would be read as a file path.
      const detected = await detector.detect(inputs, options);
      metrics.stage('detect', performance.now() - t0);
      detected.forEach((r, k) => {
        const i = positions[k]!;
        result[i] = r.error ? { ...r, error: renumber(r.error, i) } : r;
      });
    }
    let faces = 0;
    for (const r of result) {
      metrics.images.inc({ endpoint, outcome: r.error ? r.error.code : 'ok' });
      faces += r.faces_count;
    }
    metrics.faces.inc({ endpoint }, faces);
    const t1 = performance.now();
    ctx.type = 'application/json';
    ctx.body = JSON.stringify({ result });
    metrics.stage('serialize', performance.now() - t1);
  }

  const jsonBody = koaBody({
    json: true,
    jsonStrict: true,
    jsonLimit: config.maxBodyBytes,
    jsonTypes: ['application/json'],
    multipart: false,
    urlencoded: false,
    text: false,
  });

  const timedBody = (parse: Middleware<AppState>): Middleware<AppState> => {
    return async (ctx, next) => {
      const t0 = performance.now();
      await parse(ctx, async () => {
        metrics.stage('body_parse', performance.now() - t0);
        await next();
      });
    };
  };

  // POST /detect_faces_from_urls/ (also without the trailing slash)
  router.post(
    DETECT_PATHS.urls.slice(0, -1),
    label(DETECT_PATHS.urls),
    ...deps.guards,
    requireContentType('application/json'),
    timedBody(jsonBody),
    validate(schemas.UrlsRequest),
    async (ctx) => {
      const input = ctx.state.input as UrlsRequest;
      checkCount('images_url', input.images_url.length);
      const detector = admit(input.images_url.length);
      // A client that goes away before its answer cancels the downloads.
      const abort = new AbortController();
      const onClose = () => {
        if (!ctx.res.writableFinished) abort.abort();
      };
      ctx.res.once('close', onClose);
      const t0 = performance.now();
      let sources: Source[];
      try {
        sources = await Promise.all(
          input.images_url.map((url, i) =>
            deps.fetchSource(url, abort.signal).then(
              (bytes): Source =>
                bytes.length === 0 ? imageError(i, 'empty_image', 'the image has zero bytes') : bytes,
              (error: unknown): Source => {
                if (!(error instanceof FetchImageError)) throw error;
                ctx.state.log.info(
                  { image: i, code: error.code, detail: error.detail, upstreamStatus: error.upstreamStatus },
                  'image download refused or failed',
                );
                return imageError(i, error.code, error.message);
              },
            ),
          ),
        );
      } finally {
        ctx.res.off('close', onClose);
      }
      metrics.stage('download', performance.now() - t0);
      await respond(ctx, 'urls', detector, sources, detectOptions(input, config.maxSizeLimit));
    },
  );

  // POST /detect_faces_from_base64/
  router.post(
    DETECT_PATHS.base64.slice(0, -1),
    label(DETECT_PATHS.base64),
    ...deps.guards,
    requireContentType('application/json'),
    timedBody(jsonBody),
    validate(schemas.Base64Request),
    async (ctx) => {
      const input = ctx.state.input as Base64Request;
      checkCount('images_base64', input.images_base64.length);
      input.images_base64.forEach((text, i) => {
        if (text.length > config.maxBase64Length) {
          throw payloadTooLargeError(
            `images_base64[${i}]: ${text.length} characters, more than the limit of ${config.maxBase64Length}`,
          );
        }
      });
      const detector = admit(input.images_base64.length);
      const t0 = performance.now();
      const sources = input.images_base64.map((text, i) => decodeBase64Image(text, i));
      metrics.stage('base64_decode', performance.now() - t0);
      await respond(ctx, 'base64', detector, sources, detectOptions(input, config.maxSizeLimit));
    },
  );

  // POST /detect_faces_from_files/ (multipart/form-data, field `files`; files are kept in memory)
  const uploads = new WeakMap<object, Buffer[]>();
  const multipartBody = koaBody({
    multipart: true,
    json: false,
    urlencoded: false,
    text: false,
    formidable: {
      maxFiles: config.maxImagesPerRequest,
      maxFileSize: config.maxImageBytes,
      maxTotalFileSize: config.maxBodyBytes,
      maxFields: 64,
      maxFieldsSize: 64 * 1024,
      allowEmptyFiles: true,
      minFileSize: 0,
      fileWriteStreamHandler: (file) => {
        const chunks: Buffer[] = [];
        let size = 0;
        if (file) uploads.set(file, chunks);
        const name = (file as { originalFilename?: string | null } | undefined)?.originalFilename;
        return new Writable({
          write(chunk: Buffer, _encoding, callback) {
            size += chunk.length;
            if (size > config.maxImageBytes) {
              callback(
                payloadTooLargeError(
                  `the file ${name ? `'${name}' ` : ''}is larger than the limit of ${config.maxImageBytes} bytes`,
                ),
              );
              return;
            }
            chunks.push(chunk);
            callback();
          },
        });
      },
    },
    onError: (error) => {
      const code = (error as { code?: unknown }).code;
      if (code === 1015) {
        throw tooManyImagesError(`files: more than the limit of ${config.maxImagesPerRequest} per request`);
      }
      if (code === 1009) {
        throw payloadTooLargeError(`the files are larger than the limit of ${config.maxBodyBytes} bytes`);
      }
      throw error;
    },
  });

  router.post(
    DETECT_PATHS.files.slice(0, -1),
    label(DETECT_PATHS.files),
    ...deps.guards,
    requireContentType('multipart/form-data'),
    timedBody(multipartBody),
    validate(schemas.FilesForm),
    async (ctx) => {
      const input = ctx.state.input as DetectOptionsInput;
      const files = ctx.request.files ?? {};
      const fields = ctx.request.body as Record<string, unknown> | undefined;
      if (fields && 'files' in fields) {
        throw validationError("files: expected files, received a text field (use -F 'files=@photo.jpg')");
      }
      for (const field of Object.keys(files)) {
        if (field !== 'files') {
          throw validationError(`${field}: unexpected file field; send images in the field 'files'`);
        }
      }
      const list = [files.files ?? []].flat();
      checkCount('files', list.length);
      const detector = admit(list.length);
      const sources = list.map((file, i): Source => {
        const bytes = Buffer.concat(uploads.get(file) ?? []);
        return bytes.length === 0 ? imageError(i, 'empty_image', 'the image has zero bytes') : bytes;
      });
      await respond(ctx, 'files', detector, sources, detectOptions(input, config.maxSizeLimit));
    },
  );
}

/** Names the route for metrics and logs. */
export function label(route: string): Middleware<AppState> {
  return async (ctx, next) => {
    ctx.state.route = route;
    await next();
  };
}
