// SPDX-License-Identifier: MIT
// Request and response schemas of the detection endpoints: they validate requests (validate()) and
// are the source of the OpenAPI document (z.toJSONSchema).
import { z } from 'zod';
import { LANDMARK_TYPES } from '../../postprocess';

/** A 1x1 PNG: a valid image with no face (the docs' example, so "Try it out" works as is). */
export const EXAMPLE_BASE64_IMAGE =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

export interface SchemaLimits {
  maxImagesPerRequest: number;
  maxSize: number;
  maxSizeLimit: number;
  maxBase64Length: number;
}

/** The detection options every endpoint takes (snake_case, as the original server). */
export function optionFields(limits: Pick<SchemaLimits, 'maxSize' | 'maxSizeLimit'>) {
  const sizeLimit = limits.maxSizeLimit > 0 ? limits.maxSizeLimit : 16384;
  return {
    confidence_threshold: z
      .number()
      .min(0)
      .max(1)
      .default(0.5)
      .describe('faces scoring above this are returned'),
    clip_boxes: z.boolean().default(true).describe('clamp boxes and landmarks to the image'),
    max_size: z
      .int()
      .min(0)
      .max(sizeLimit)
      .optional()
      .describe(
        `the longer side is resized to at most this before detection (never upscaled; default: the ` +
          `server's ${limits.maxSize}; 0: original size` +
          (limits.maxSizeLimit > 0 ? `, up to this server's limit of ${limits.maxSizeLimit}` : '') +
          '). Coordinates are always in pixels of the original image.',
      ),
    nms_iou: z.number().min(0).max(1).default(0.4).describe('IoU threshold of non-maximum suppression'),
    top_k: z.int().min(1).max(1_000_000).default(5000).describe('candidates kept before NMS'),
    keep_top_k: z.int().min(1).max(1_000_000).default(750).describe('faces kept after NMS, at most'),
  };
}

function imageList(description: string, limits: SchemaLimits, example: string[]) {
  // The count is checked by the route (422 no_images / too_many_images), not here (400).
  return z
    .array(z.string())
    .meta({ description, minItems: 1, maxItems: limits.maxImagesPerRequest, example });
}

export function detectSchemas(limits: SchemaLimits) {
  const options = optionFields(limits);
  const UrlsRequest = z
    .object({
      images_url: imageList(
        'http(s) URLs of images, fetched by the server (private and loopback hosts are refused unless ' +
          'the operator allowed them)',
        limits,
        ['https://example.com/photo.jpg'],
      ),
      ...options,
    })
    .meta({ title: 'DetectFromUrlsRequest' });
  const Base64Request = z
    .object({
      images_base64: imageList(
        `images as base64 strings (standard or URL-safe alphabet) or data: URLs ` +
          `(\`data:image/jpeg;base64,...\`), at most ${limits.maxBase64Length} characters each`,
        limits,
        [EXAMPLE_BASE64_IMAGE],
      ),
      ...options,
    })
    .meta({ title: 'DetectFromBase64Request' });
  const OptionsOnly = z.object(options);
  return { UrlsRequest, Base64Request, OptionsOnly, FilesForm: filesFormSchema(OptionsOnly) };
}

export type DetectOptionsInput = z.infer<ReturnType<typeof detectSchemas>['OptionsOnly']>;
export type UrlsRequest = z.infer<ReturnType<typeof detectSchemas>['UrlsRequest']>;
export type Base64Request = z.infer<ReturnType<typeof detectSchemas>['Base64Request']>;

const NUMBER_TEXT = /^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i;
const TRUE_TEXT = new Set(['true', '1', 'yes', 'on']);
const FALSE_TEXT = new Set(['false', '0', 'no', 'off']);

/** Multipart form fields are strings: numbers and booleans are converted, then validated as in JSON. */
function formValue(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  if (NUMBER_TEXT.test(value)) return Number(value);
  const lower = value.trim().toLowerCase();
  if (TRUE_TEXT.has(lower)) return true;
  if (FALSE_TEXT.has(lower)) return false;
  return value;
}

function filesFormSchema<S extends z.ZodObject>(optionsSchema: S) {
  return z.preprocess((fields) => {
    if (fields === null || typeof fields !== 'object') return fields;
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(fields)) out[key] = formValue(value);
    return out;
  }, optionsSchema);
}

// Response schemas (documentation only: the server builds these objects itself).
const Landmark = z.object({
  position: z.tuple([z.number(), z.number()]).describe('[x, y] in pixels of the original image'),
  type: z.enum(LANDMARK_TYPES),
});

const Face = z.object({
  bounding_box: z
    .tuple([z.number(), z.number(), z.number(), z.number()])
    .describe('[x1, y1, x2, y2] in pixels of the original image (EXIF orientation applied)'),
  landmarks: z.array(Landmark).describe('five points: eyes, nose, mouth corners'),
  confidence: z.number().min(0).max(1),
});

export const ImageErrorSchema = z.object({
  code: z.string().describe('a stable per-image error code (see the description of the endpoints)'),
  message: z.string().describe('"image <index>: <reason>"'),
});

export const ImageResultSchema = z
  .object({
    faces_count: z.int().min(0),
    faces: z.array(Face),
    error: ImageErrorSchema.optional().describe(
      'present when this image could not be read, fetched or decoded (then faces_count is 0)',
    ),
  })
  .meta({ title: 'ImageResult' });

export const DetectResponseSchema = z
  .object({
    result: z.array(ImageResultSchema).describe('one entry per input image, in order'),
  })
  .meta({ title: 'DetectResponse' });

export const ErrorResponseSchema = z
  .object({
    error: z.object({
      code: z.string().describe('a stable error code'),
      message: z.string().describe('what went wrong, for humans'),
    }),
  })
  .meta({ title: 'ErrorResponse' });
