// SPDX-License-Identifier: MIT
// The OpenAPI 3.1 document served at /openapi.json, built from the routes' zod schemas and the error
// tables, with the configured limits filled in.
import { z } from 'zod';
import type { ServerConfig } from './config';
import { IMAGE_ERRORS, REQUEST_ERRORS, type RequestErrorCode } from './errors';
import { DETECT_PATHS } from './routes/detect';
import {
  DetectResponseSchema,
  ErrorResponseSchema,
  detectSchemas,
  EXAMPLE_BASE64_IMAGE,
} from './routes/detect.schema';

type Json = Record<string, unknown>;

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Json {
  const out = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Json;
  delete out.$schema;
  return out;
}

const ERROR_REF = { $ref: '#/components/schemas/ErrorResponse' };

function errorResponses(codes: RequestErrorCode[]): Json {
  const byStatus = new Map<number, RequestErrorCode[]>();
  for (const code of codes) {
    const { status } = REQUEST_ERRORS[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const responses: Json = {};
  for (const [status, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    const headers =
      status === 429 || status === 503
        ? {
            'Retry-After': {
              description: 'seconds to wait before retrying',
              schema: { type: 'integer' },
            },
          }
        : undefined;
    responses[String(status)] = {
      description: list.map((c) => `\`${c}\`: ${REQUEST_ERRORS[c].description}`).join('; '),
      ...(headers ? { headers } : {}),
      content: {
        'application/json': {
          schema: ERROR_REF,
          example: { error: { code: list[0], message: '...' } },
        },
      },
    };
  }
  return responses;
}

const DETECT_ERRORS: RequestErrorCode[] = [
  'invalid_json',
  'validation_error',
  'payload_too_large',
  'unsupported_media_type',
  'no_images',
  'too_many_images',
  'rate_limited',
  'internal_error',
  'overloaded',
  'not_ready',
];

function imageErrorTable(codes: string[]): string {
  return codes.map((c) => `- \`${c}\`: ${IMAGE_ERRORS[c]}`).join('\n');
}

const RULES =
  'The request is checked as a whole first: Content-Type, body syntax, field types and ranges, the ' +
  'number of images and sizes (body, file, base64 string). Any failure there answers the whole ' +
  'request with a 4xx and `{ "error": { "code", "message" } }`; nothing is detected. Then every ' +
  'image is read on its own: an image that cannot be decoded from base64, downloaded or decoded as ' +
  'an image gets an entry `{ "faces_count": 0, "faces": [], "error": { "code", "message" } }` in a ' +
  '200 response, in its place, while the other images succeed.';

export function buildOpenApi(config: ServerConfig, version: string): Json {
  const schemas = detectSchemas(config);
  const optionsSchema = jsonSchema(schemas.OptionsOnly, 'input');
  const decodeCodes = ['empty_image', 'image_decode_failed', 'image_too_large', 'inference_failed'];
  const urlCodes = Object.keys(IMAGE_ERRORS).filter((c) => c.startsWith('url_'));

  const detectOperation = (
    operationId: string,
    summary: string,
    description: string,
    requestBody: Json,
    imageCodes: string[],
    errors: RequestErrorCode[] = DETECT_ERRORS,
  ) => ({
    post: {
      operationId,
      summary,
      description:
        `${description}\n\n${RULES}\n\nPer-image error codes:\n\n${imageErrorTable(imageCodes)}\n\n` +
        `The path is also served without the trailing slash.`,
      tags: ['detection'],
      requestBody: { required: true, content: requestBody },
      responses: {
        '200': {
          description: 'one result per input image, in order',
          content: { 'application/json': { schema: { $ref: '#/components/schemas/DetectResponse' } } },
        },
        ...errorResponses(errors),
      },
    },
  });

  const filesSchema: Json = {
    type: 'object',
    properties: {
      files: {
        type: 'array',
        items: { type: 'string', format: 'binary' },
        minItems: 1,
        maxItems: config.maxImagesPerRequest,
        description: `image files (one or many, repeat the field), at most ${config.maxImageBytes} bytes each`,
      },
      ...(optionsSchema.properties as Json),
    },
    required: ['files'],
  };

  return {
    openapi: '3.1.0',
    info: {
      title: 'facedet-native',
      version,
      description:
        'RetinaFace face detection. Boxes and landmarks are in pixels of the original image. ' +
        `Limits: ${config.maxImagesPerRequest} images per request, ${config.maxBodyBytes} bytes per body, ` +
        `${config.maxPixels} pixels per image, ${config.rateLimit > 0 ? `${config.rateLimit} requests/s per client (burst ${config.rateLimitBurst})` : 'no rate limit'}. ` +
        'Every error is JSON `{ "error": { "code", "message" } }` with a stable code.',
      license: { name: 'MIT' },
    },
    tags: [
      { name: 'detection', description: 'face detection' },
      { name: 'operations', description: 'health, readiness, metrics' },
    ],
    paths: {
      [DETECT_PATHS.urls]: detectOperation(
        'detectFacesFromUrls',
        'Detect faces in images fetched from URLs',
        'The server downloads each URL (http/https only; redirects, size and time are limited; hosts ' +
          'that resolve to loopback, private, link-local, unspecified, multicast or reserved ' +
          'addresses are refused, also after redirects, unless the operator set ' +
          `FACEDET_ALLOW_PRIVATE_SOURCES=1). Allowed here: private sources ${config.allowPrivateSources ? 'yes' : 'no'}.`,
        {
          'application/json': {
            schema: jsonSchema(schemas.UrlsRequest, 'input'),
            example: {
              images_url: ['https://example.com/photo.jpg'],
              confidence_threshold: 0.5,
              clip_boxes: true,
            },
          },
        },
        [...urlCodes, ...decodeCodes],
      ),
      [DETECT_PATHS.base64]: detectOperation(
        'detectFacesFromBase64',
        'Detect faces in base64-encoded images',
        'Each string is plain base64 (standard or URL-safe alphabet; whitespace ignored) or a ' +
          '`data:<type>;base64,` URL. The example is a 1x1 PNG (no faces).',
        {
          'application/json': {
            schema: jsonSchema(schemas.Base64Request, 'input'),
            example: { images_base64: [EXAMPLE_BASE64_IMAGE], confidence_threshold: 0.5, clip_boxes: true },
          },
        },
        ['invalid_base64', ...decodeCodes],
      ),
      [DETECT_PATHS.files]: detectOperation(
        'detectFacesFromFiles',
        'Detect faces in uploaded image files',
        'multipart/form-data with the field `files` (one or many) and the options as form fields ' +
          '(numbers and booleans as text: `0.5`, `true`/`false`). A file field with another name is a ' +
          '`validation_error`; too many files `too_many_images`; a file over the limit `payload_too_large`.',
        { 'multipart/form-data': { schema: filesSchema } },
        decodeCodes,
        ['invalid_multipart', ...DETECT_ERRORS.filter((c) => c !== 'invalid_json')],
      ),
      '/ready/': {
        get: {
          summary: 'Readiness: 200 once the model is loaded and warmed up',
          tags: ['operations'],
          responses: {
            '200': {
              description: 'ready',
              content: {
                'application/json': {
                  schema: {
                    type: 'object',
                    properties: {
                      ready: { const: true },
                      model: { type: 'string' },
                      device: { type: 'string' },
                    },
                  },
                },
              },
            },
            ...errorResponses(['not_ready']),
          },
        },
      },
      '/health': {
        get: {
          summary: 'Liveness: 200 while the process serves requests',
          tags: ['operations'],
          responses: {
            '200': {
              description: 'alive',
              content: {
                'application/json': {
                  schema: { type: 'object', properties: { status: { const: 'ok' } } },
                },
              },
            },
          },
        },
      },
      '/metrics': {
        get: {
          summary: 'Prometheus metrics',
          description:
            'facedet_http_requests_total and facedet_http_request_duration_seconds (by method, route, ' +
            'status), facedet_images_total (by endpoint, outcome), facedet_faces_total, ' +
            'facedet_batches_total, facedet_batch_size, facedet_queue_depth, ' +
            'facedet_inference_duration_seconds, facedet_stage_duration_seconds (by stage), ' +
            'facedet_ready and the process metrics.',
          tags: ['operations'],
          responses: {
            '200': {
              description: 'Prometheus text format',
              content: { 'text/plain': { schema: { type: 'string' } } },
            },
          },
        },
      },
      '/openapi.json': {
        get: {
          summary: 'This document',
          tags: ['operations'],
          responses: { '200': { description: 'OpenAPI 3.1', content: { 'application/json': {} } } },
        },
      },
      '/docs': {
        get: {
          summary: 'Interactive documentation (Swagger UI)',
          tags: ['operations'],
          responses: { '200': { description: 'HTML', content: { 'text/html': {} } } },
        },
      },
    },
    components: {
      schemas: {
        DetectResponse: jsonSchema(DetectResponseSchema, 'output'),
        ErrorResponse: jsonSchema(ErrorResponseSchema, 'output'),
      },
    },
  };
}
