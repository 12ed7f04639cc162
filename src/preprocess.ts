// SPDX-License-Identifier: MIT
// Image bytes -> RGB pixels (sharp) -> one float32 NCHW batch (BGR minus mean, padded).
import fs from 'node:fs';
import sharp from 'sharp';
import { FacedetError } from './errors';

/** What `detect` accepts for one image: encoded bytes or a file path. */
export type ImageInput = Buffer | Uint8Array | string;

export interface DecodeOptions {
  /** Downscale so the longer side is at most this; never upscale; 0 keeps the original size. */
  maxSize: number;
  /** Refuse images with more pixels than this (checked from the header, before decoding). */
  maxPixels: number;
  /**
   * A decoder for plain JPEGs (the native addon's `decodeJpeg`, libjpeg-turbo: the same pixels as sharp's,
   * in 0.8 instead of 2 ms for 512x512, shrunk on load and resized as sharp does both; see
   * decodeJpegFast), in memory or in a regular file (then read here); anything it declines goes to sharp.
   */
  jpeg?: JpegDecoder | undefined;
  /**
   * A spare buffer of exactly `bytes` bytes for the pixels that `jpeg` decodes, if the caller keeps one
   * (a fresh 2 MB buffer costs its page faults: 0.5-0.7 ms of a 1080p JPEG's 6.2).
   */
  reuse?: ((bytes: number) => Buffer | undefined) | undefined;
  /**
   * Threads `jpeg` may use for this image (default 1). With 2 a JPEG of one sequential scan (the usual
   * baseline JPEG; at least 16 rows of blocks, at most 64 MiB of DCT coefficients, which two threads
   * hold whole) is entropy-decoded on a second thread while the first turns the rows decoded so far
   * into pixels: a 1920x1080 JPEG resized to 1080x608 in 3.5 instead of 6.0 ms on 2 CPUs, for a little
   * more CPU time in all, so only for an image decoded while nothing else is.
   */
  jpegThreads?: 1 | 2 | undefined;
}

/**
 * Decodes a JPEG into `output` (RGB, `width` x `height` as stored: the JPEG's own size, or smaller:
 * shrunk by `scale` while decoding as libvips' jpegload shrinks, then resized as sharp's resize(width,
 * height, { fit: 'fill', kernel: 'linear' }) would; then turned upright by its EXIF orientation as sharp's
 * autoOrient turns it) if it is a plain one (8-bit greyscale or YCbCr, at most 256 scans, not even a
 * warning from libjpeg): resolves with the EXIF orientation it applied (1 to 8; from 5 on the output is
 * `height` x `width`), or with why it did not decode it (then `output` holds nothing of use).
 * `threads`: see DecodeOptions.jpegThreads. `profile`: the ICC profile sharp converts a JPEG's colours to
 * from the profile it carries (sharpSrgbProfile); a YCbCr JPEG with an RGB profile is converted as sharp
 * converts it, before the resize. Undefined: JPEGs with a profile are left to sharp.
 */
export type JpegDecoder = (
  input: Uint8Array,
  output: Uint8Array,
  width: number,
  height: number,
  scale: 1 | 2 | 4 | 8,
  threads: 1 | 2,
  profile: Uint8Array | undefined,
) => Promise<number | string>;

export interface DecodedImage {
  /** RGB, 8 bits, row-major, `width * height * 3` bytes. */
  data: Buffer;
  /** Size of `data`, after EXIF orientation and resizing. */
  width: number;
  height: number;
  /** Size of the image as displayed (EXIF orientation applied), before resizing. */
  originalWidth: number;
  originalHeight: number;
  /** 'libjpeg-turbo' when `DecodeOptions.jpeg` decoded it; sharp did otherwise. */
  decodedBy?: 'libjpeg-turbo';
}

/** The size an image is resized to under `maxSize` (the longer side fits, aspect ratio kept). */
export function fitSize(width: number, height: number, maxSize: number): { width: number; height: number } {
  const longer = Math.max(width, height);
  if (maxSize <= 0 || longer <= maxSize) return { width, height };
  const scale = maxSize / longer;
  return {
    width: Math.max(1, Math.round(width * scale)),
    height: Math.max(1, Math.round(height * scale)),
  };
}

function decodeError(message: string, cause: unknown): FacedetError {
  const text = (cause as Error)?.message ?? String(cause);
  if (/ENOENT|EACCES|EISDIR|no such file|Input file is missing/i.test(text)) {
    return new FacedetError('image_unreadable', `${message}: ${text}`, { cause });
  }
  if (/pixel limit|exceeds/i.test(text))
    return new FacedetError('image_too_large', `${message}: ${text}`, { cause });
  return new FacedetError('image_decode_failed', `${message}: ${text}`, { cause });
}

/**
 * Width and height as stored in a JPEG's frame header or a PNG's IHDR (before EXIF orientation), read
 * without decoding; undefined for other formats or whenever the header is not plainly what it seems.
 */
export function headerSize(bytes: Uint8Array): { width: number; height: number } | undefined {
  const u16 = (at: number) => (bytes[at]! << 8) | bytes[at + 1]!;
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length >= 24 && png.every((b, i) => bytes[i] === b)) {
    if (String.fromCharCode(...bytes.subarray(12, 16)) !== 'IHDR') return undefined;
    const view = new DataView(bytes.buffer, bytes.byteOffset, 24);
    const width = view.getUint32(16);
    const height = view.getUint32(20);
    return width > 0 && height > 0 ? { width, height } : undefined;
  }
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return undefined;
  // JPEG: walk the marker segments up to the first frame header (SOF0..SOF15, not DHT, JPG or DAC).
  let at = 2;
  while (at + 4 <= bytes.length) {
    if (bytes[at] !== 0xff) return undefined;
    while (bytes[at] === 0xff && at < bytes.length) at++; // fill bytes
    const marker = bytes[at++]!;
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue; // no length
    if (marker === 0xd9 || marker === 0xda || at + 2 > bytes.length) return undefined;
    const length = u16(at);
    if (length < 2) return undefined;
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      if (length < 7 || at + 7 > bytes.length) return undefined;
      const height = u16(at + 3);
      const width = u16(at + 5);
      return width > 0 && height > 0 ? { width, height } : undefined;
    }
    at += length;
  }
  return undefined;
}

type SharpInputOptions = NonNullable<Parameters<typeof sharp>[1]>;

/** How images are resized: to the exact size, with libvips' linear kernel (see decodePixels). */
const RESIZE = { fit: 'fill', kernel: 'linear' } as const;

/** The whole image as 3-channel sRGB, EXIF orientation applied, resized to `size` when given. */
async function decodePixels(
  input: ImageInput,
  sharpOptions: SharpInputOptions,
  size?: { width: number; height: number },
): Promise<{ data: Buffer; width: number; height: number }> {
  let pipeline = sharp(input, { ...sharpOptions, autoOrient: true })
    .removeAlpha()
    .toColourspace('srgb');
  if (size) {
    // Linear (libvips' reduce widens it with the shrink factor, like PIL's BILINEAR in the original
    // project and the PyTorch reference): 1.2-1.5 ms faster than sharp's default lanczos3 on a
    // 1920x1080 JPEG resized to 1080x608 (11.5 -> 10.0 ms, 2 CPUs).
    pipeline = pipeline.resize(size.width, size.height, RESIZE);
  }
  const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || (size && (info.width !== size.width || info.height !== size.height))) {
    throw new Error(`unexpected decoded layout ${info.width}x${info.height}x${info.channels}`);
  }
  return { data, width: info.width, height: info.height };
}

/**
 * The factor by which sharp has libjpeg shrink a JPEG while decoding it (shrink-on-load) to resize it to
 * `target`: 2, 4 or 8 once the smaller of the two shrink factors reaches that, lowered when the shrink's
 * integer part equals it ("known libjpeg rounding errors"; sharp's pipeline.cc with fastShrinkOnLoad, its
 * default): 1 below 3, 2 from 3 to 5, 4 from 5 to 9, 8 from 9 on.
 */
export function sharpJpegShrink(
  width: number,
  height: number,
  target: { width: number; height: number },
): 1 | 2 | 4 | 8 {
  const shrink = Math.min(width / target.width, height / target.height);
  const factor = shrink >= 8 ? 8 : shrink >= 4 ? 4 : shrink >= 2 ? 2 : 1;
  return (factor > 1 && Math.trunc(shrink) === factor ? factor / 2 : factor) as 1 | 2 | 4 | 8;
}

/**
 * The libvips whose resize the addon reproduces (native/resize.cc: libvips 8.18's reducev and reduceh,
 * as sharp 0.35 calls them). With another, JPEGs that must shrink are left to sharp.
 */
export const NATIVE_RESIZE_LIBVIPS = /^8\.18\./;
export const nativeResizeMatchesSharp = NATIVE_RESIZE_LIBVIPS.test(sharp.versions.vips);

/**
 * The JPEG fast path (`DecodeOptions.jpeg`): a JPEG whose header fits the pixel limit is decoded by
 * libjpeg-turbo if it is a plain one (sizes here are as stored, before its EXIF orientation turns it
 * upright: fitSize gives the same size either way round), shrunk on load as sharp would have libjpeg
 * shrink it (sharpJpegShrink; libvips keeps floor(size / factor) of libjpeg's rounded-up rows and
 * columns), and resized as it is decoded, row by row, by the addon's copy of sharp's resize (its integer
 * arithmetic, to the rounding of its running positions): the result equals sharp's own, byte for byte.
 * Anything the decoder declines goes to sharp. Undefined: not decoded here.
 */
async function decodeJpegFast(
  input: Uint8Array,
  header: { width: number; height: number },
  options: DecodeOptions,
  decode: JpegDecoder,
): Promise<DecodedImage | undefined> {
  const { width, height } = header;
  if (width * height > options.maxPixels) return undefined;
  const size = fitSize(width, height, options.maxSize);
  if ((size.width !== width || size.height !== height) && !nativeResizeMatchesSharp) return undefined;
  const scale = sharpJpegShrink(width, height, size);
  const data =
    options.reuse?.(size.width * size.height * 3) ?? Buffer.allocUnsafe(size.width * size.height * 3);
  const orientation = await decode(
    input,
    data,
    size.width,
    size.height,
    scale,
    options.jpegThreads ?? 1,
    await colourProfileFor(decode),
  ).catch((error: unknown) => String(error));
  if (typeof orientation === 'string') return undefined;
  // sharp resizes as stored and turns the result upright (EXIF orientations 5 to 8 swap the sides).
  const turned = orientation >= 5;
  return {
    data,
    width: turned ? size.height : size.width,
    height: turned ? size.width : size.height,
    originalWidth: turned ? height : width,
    originalHeight: turned ? width : height,
    decodedBy: 'libjpeg-turbo',
  };
}

let srgbProfile: Promise<Buffer | undefined> | undefined;

/**
 * libvips' own sRGB profile, the one sharp converts a JPEG's colours to from the ICC profile it carries
 * (pipeline.cc: icc_transform to "srgb"): sharp embeds the same bytes in what it writes with
 * withIccProfile('srgb'). Undefined if sharp would not give it.
 */
export function sharpSrgbProfile(): Promise<Buffer | undefined> {
  srgbProfile ??= sharp({ create: { width: 1, height: 1, channels: 3, background: '#000' } })
    .withIccProfile('srgb')
    .jpeg()
    .toBuffer()
    .then((jpeg) => sharp(jpeg).metadata())
    .then((meta) => meta.icc)
    .catch(() => undefined);
  return srgbProfile;
}

const checkedProfiles = new WeakMap<JpegDecoder, Promise<Buffer | undefined>>();

/**
 * The profile to give `decode` for JPEGs with an ICC profile (sharpSrgbProfile), once it has shown on
 * this machine that it converts them as sharp does: a 64x48 JPEG carrying libvips' P3 profile, decoded and
 * resized to 40x30 by both (at its own size where the fast path does not resize), must give the same bytes (Little CMS's builds can differ; the tests
 * compare more, this guards a machine that never ran them). Undefined otherwise, and then JPEGs with a
 * profile go to sharp. Checked once per decoder (≈ 25 ms: FaceDetector.create does it, else the first JPEG).
 */
export function colourProfileFor(decode: JpegDecoder): Promise<Buffer | undefined> {
  let checked = checkedProfiles.get(decode);
  if (!checked) {
    checked = (async () => {
      const profile = await sharpSrgbProfile();
      if (!profile) return undefined;
      const noise = { type: 'gaussian' as const, mean: 128, sigma: 60 };
      const png = await sharp({
        create: { width: 64, height: 48, channels: 3, background: '#808080', noise },
      })
        .png()
        .toBuffer();
      const jpeg = await sharp(png).withIccProfile('p3').jpeg().toBuffer();
      // Resized where the fast path resizes (nativeResizeMatchesSharp), else at its own size. Once: a
      // second JPEG with the profile would have the addon fill its table (native/icc.h).
      const [width, height] = nativeResizeMatchesSharp ? [40, 30] : [64, 48];
      const expected = await sharp(jpeg).resize(width, height, RESIZE).raw().toBuffer();
      const output = Buffer.alloc(width * height * 3);
      const outcome = await decode(jpeg, output, width, height, 1, 1, profile).catch(() => undefined);
      return outcome === 1 && output.equals(expected) ? profile : undefined;
    })().catch(() => undefined);
    checkedProfiles.set(decode, checked);
  }
  return checked;
}

/** Files larger than this are left to sharp rather than read whole for the JPEG fast path. */
const FAST_PATH_MAX_FILE_BYTES = 256 * 2 ** 20;

/**
 * A regular file's bytes if it starts like a JPEG (its first two bytes read first), else undefined:
 * missing, unreadable, not a regular file, too large or another format.
 */
async function readJpegFile(file: string): Promise<Buffer | undefined> {
  // stat before open: opening a FIFO would wait for a writer.
  const stat = await fs.promises.stat(file).catch(() => undefined);
  if (!stat?.isFile() || stat.size < 2 || stat.size > FAST_PATH_MAX_FILE_BYTES) return undefined;
  const handle = await fs.promises.open(file, 'r').catch(() => undefined);
  if (!handle) return undefined;
  try {
    const soi = Buffer.alloc(2);
    await handle.read(soi, 0, 2, 0);
    if (soi[0] !== 0xff || soi[1] !== 0xd8) return undefined;
    return await handle.readFile();
  } catch {
    return undefined;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Decodes one image with sharp: any format sharp reads (first frame of animations), EXIF orientation
 * applied, grey/palette/CMYK/alpha turned into 3-channel RGB, downscaled to fit `maxSize`.
 */
export async function decodeImage(input: ImageInput, options: DecodeOptions): Promise<DecodedImage> {
  const sharpOptions = { limitInputPixels: options.maxPixels, pages: 1, page: 0, failOn: 'warning' as const };
  const fits = (width: number, height: number) =>
    width * height <= options.maxPixels &&
    (options.maxSize <= 0 || Math.max(width, height) <= options.maxSize);
  // A JPEG or PNG in memory whose header says it needs no resizing is decoded in one call, without
  // asking sharp for its size first (one trip to libuv's pool fewer: 0.25 ms of a 512x512 JPEG's
  // 2.4). Orientation may swap the sides, so the decoded size is checked, and anything unexpected
  // (including a failure) goes the general way below, which gives the errors their messages.
  const header = typeof input === 'string' ? undefined : headerSize(input);
  if (options.jpeg) {
    // A JPEG file is read here for the fast path; if it is not one the fast path takes, sharp gets the
    // path (and reads the file itself: its errors and messages stay those for a file).
    const bytes = typeof input === 'string' ? await readJpegFile(input) : input;
    const jpegHeader =
      bytes && bytes[0] === 0xff ? (bytes === input ? header : headerSize(bytes)) : undefined;
    if (bytes && jpegHeader) {
      const image = await decodeJpegFast(bytes, jpegHeader, options, options.jpeg);
      if (image) return image;
    }
  }
  if (header && fits(header.width, header.height)) {
    const image = await decodePixels(input, sharpOptions).catch(() => undefined);
    if (
      image &&
      image.width * image.height === header.width * header.height &&
      fits(image.width, image.height)
    ) {
      return { ...image, originalWidth: image.width, originalHeight: image.height };
    }
  }
  let width: number;
  let height: number;
  try {
    // The header alone: sizes are checked below, with a message that gives them.
    const meta = await sharp(input, { ...sharpOptions, limitInputPixels: false }).metadata();
    width = meta.autoOrient?.width ?? meta.width;
    height = meta.autoOrient?.height ?? meta.height;
  } catch (error) {
    throw decodeError('cannot read the image', error);
  }
  if (!width || !height) throw new FacedetError('image_decode_failed', 'the image has no size');
  if (width * height > options.maxPixels) {
    throw new FacedetError(
      'image_too_large',
      `the image has ${width}x${height} pixels, more than the limit of ${options.maxPixels}`,
    );
  }
  const size = fitSize(width, height, options.maxSize);
  try {
    const resized = size.width !== width || size.height !== height;
    const image = await decodePixels(input, sharpOptions, resized ? size : undefined);
    if (!resized && (image.width !== width || image.height !== height)) {
      throw new Error(`unexpected decoded layout ${image.width}x${image.height}x3`);
    }
    return { ...image, originalWidth: width, originalHeight: height };
  } catch (error) {
    throw decodeError('cannot decode the image', error);
  }
}

export interface PackOptions {
  /** Per-channel values subtracted, in the network's channel order (B, G, R). */
  mean: readonly [number, number, number];
  /** The batch's height and width are rounded up to a multiple of this. */
  padMultiple: number;
}

export interface Batch {
  tensor: Float32Array;
  shape: [number, number, number, number];
}

/** The padded size of a batch holding these images. */
export function batchSize(images: readonly { width: number; height: number }[], padMultiple: number) {
  let height = 0;
  let width = 0;
  for (const image of images) {
    height = Math.max(height, image.height);
    width = Math.max(width, image.width);
  }
  const m = Math.max(1, padMultiple);
  return { height: Math.ceil(height / m) * m, width: Math.ceil(width / m) * m };
}

/**
 * Where a packer may take its output array from: an array of exactly `length` elements that the caller
 * no longer uses (every element is overwritten), or undefined for a fresh one.
 */
export type ReuseArray<T> = (length: number) => T | undefined;

/**
 * Packs RGB images into one NCHW float32 batch: BGR minus mean, each image at the top-left corner,
 * the rest zero (zero after mean subtraction, as the network's own padding), so coordinates do not move.
 */
export function packBatch(
  images: readonly DecodedImage[],
  options: PackOptions,
  reuse?: ReuseArray<Float32Array>,
): Batch {
  const { height: H, width: W } = batchSize(images, options.padMultiple);
  const plane = H * W;
  const length = images.length * 3 * plane;
  const reused = reuse?.(length);
  // A fresh array is zero-filled, so its padding needs no writes; a reused one gets them.
  const tensor = reused ?? new Float32Array(length);
  const [mb, mg, mr] = options.mean;
  for (let n = 0; n < images.length; n++) {
    const { data, width: w, height: h } = images[n]!;
    // One pass over the pixels, writing the three planes (B, G, R) of each output row together.
    const b0 = n * 3 * plane;
    const g0 = b0 + plane;
    const r0 = g0 + plane;
    let src = 0;
    for (let y = 0; y < h; y++) {
      const row = y * W;
      const end = row + w;
      for (let o = row; o < end; o++, src += 3) {
        tensor[r0 + o] = data[src]! - mr;
        tensor[g0 + o] = data[src + 1]! - mg;
        tensor[b0 + o] = data[src + 2]! - mb;
      }
    }
    if (reused) {
      for (const p0 of [b0, g0, r0]) {
        if (w < W) for (let y = 0; y < h; y++) tensor.fill(0, p0 + y * W + w, p0 + (y + 1) * W);
        tensor.fill(0, p0 + h * W, p0 + plane);
      }
    }
  }
  return { tensor, shape: [images.length, 3, H, W] };
}

/**
 * Packs RGB images into one NHWC uint8 batch, the pixels as decoded, for an engine whose model converts
 * them itself (model.u8.onnx): each image at the top-left corner, the rest the mean colour, which the
 * model's mean subtraction turns into 0, as packBatch pads. Shape [n, 3, H, W] like packBatch's.
 */
export function packBatchUint8(
  images: readonly DecodedImage[],
  options: PackOptions,
  reuse?: ReuseArray<Uint8Array>,
): { tensor: Uint8Array; shape: [number, number, number, number] } {
  const { height: H, width: W } = batchSize(images, options.padMultiple);
  const rowBytes = W * 3;
  const length = images.length * H * rowBytes;
  // Every byte is written below, so a reused array needs no clearing.
  const tensor = reuse?.(length) ?? new Uint8Array(length);
  // One row of the padding colour (RGB), copied where images do not reach.
  const [mb, mg, mr] = options.mean;
  const pad = new Uint8Array(rowBytes);
  for (let o = 0; o < rowBytes; o += 3) {
    pad[o] = mr;
    pad[o + 1] = mg;
    pad[o + 2] = mb;
  }
  for (let n = 0; n < images.length; n++) {
    const { data, width: w, height: h } = images[n]!;
    const imageRow = w * 3;
    const base = n * H * rowBytes;
    for (let y = 0; y < H; y++) {
      const at = base + y * rowBytes;
      if (y < h) {
        tensor.set(data.subarray(y * imageRow, (y + 1) * imageRow), at);
        if (imageRow < rowBytes) tensor.set(pad.subarray(imageRow), at + imageRow);
      } else {
        tensor.set(pad, at);
      }
    }
  }
  return { tensor, shape: [images.length, 3, H, W] };
}
