import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import sharp from 'sharp';
import { FacedetError } from '../src/errors';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { batchSize, decodeImage, fitSize, headerSize, packBatch, packBatchUint8 } from '../src/preprocess';
import { gradient, pngHeaderClaiming, rawImage } from './helpers/images';

const options = { maxSize: 0, maxPixels: 1e8 };

async function decodeError(input: Buffer | string, opts = options): Promise<FacedetError> {
  try {
    await decodeImage(input, opts);
  } catch (error) {
    assert.instance(error, FacedetError);
    return error as FacedetError;
  }
  throw new Error('expected the decode to fail');
}

const formats = suite('decode: formats and colour');

formats('JPEG, PNG, WebP, TIFF, AVIF and GIF all decode to 3-channel RGB of the right size', async () => {
  const encoders = {
    jpeg: (s: sharp.Sharp) => s.jpeg(),
    png: (s: sharp.Sharp) => s.png(),
    webp: (s: sharp.Sharp) => s.webp(),
    tiff: (s: sharp.Sharp) => s.tiff(),
    avif: (s: sharp.Sharp) => s.avif(),
    gif: (s: sharp.Sharp) => s.gif(),
  };
  for (const [name, encode] of Object.entries(encoders)) {
    const bytes = await encode(rawImage(40, 30)).toBuffer();
    const image = await decodeImage(bytes, options);
    assert.is(image.width, 40, name);
    assert.is(image.height, 30, name);
    assert.is(image.data.length, 40 * 30 * 3, name);
  }
});

formats('lossless input keeps its exact pixels (RGB order)', async () => {
  const png = await rawImage(17, 9).png().toBuffer();
  const image = await decodeImage(png, options);
  assert.ok(image.data.equals(gradient(17, 9)));
});

formats('grayscale becomes three equal channels', async () => {
  const grey = await rawImage(16, 8).toColourspace('b-w').png().toBuffer();
  assert.is((await sharp(grey).metadata()).channels, 1);
  const image = await decodeImage(grey, options);
  assert.is(image.data.length, 16 * 8 * 3);
  for (let i = 0; i < image.data.length; i += 3) {
    assert.ok(image.data[i] === image.data[i + 1] && image.data[i] === image.data[i + 2]);
  }
});

formats('palette PNG, CMYK JPEG and alpha PNG become RGB', async () => {
  const red = { width: 8, height: 6, channels: 3 as const, background: { r: 255, g: 0, b: 0 } };
  const palette = await sharp({ create: red }).png({ palette: true }).toBuffer();
  const cmyk = await sharp({ create: red }).toColourspace('cmyk').jpeg({ quality: 100 }).toBuffer();
  assert.is((await sharp(cmyk).metadata()).space, 'cmyk');
  const alpha = await sharp({
    create: { width: 8, height: 6, channels: 4, background: { r: 0, g: 0, b: 255, alpha: 0.5 } },
  })
    .png()
    .toBuffer();
  for (const [name, bytes, rgb] of [
    ['palette', palette, [255, 0, 0]],
    ['cmyk', cmyk, [255, 0, 0]],
    ['alpha', alpha, [0, 0, 255]],
  ] as const) {
    const image = await decodeImage(bytes, options);
    assert.is(image.data.length, 8 * 6 * 3, name);
    const [r, g, b] = image.data;
    assert.ok(
      Math.abs(r! - rgb[0]) < 40 && Math.abs(g! - rgb[1]) < 40 && Math.abs(b! - rgb[2]) < 40,
      `${name}: ${r},${g},${b}`,
    );
  }
});

formats('an animated GIF gives its first frame', async () => {
  const frame = (r: number, b: number) =>
    sharp({ create: { width: 8, height: 6, channels: 3, background: { r, g: 0, b } } })
      .png()
      .toBuffer();
  const gif = await sharp([await frame(255, 0), await frame(0, 255)], { join: { animated: true } })
    .gif()
    .toBuffer();
  assert.is((await sharp(gif).metadata()).pages, 2);
  const image = await decodeImage(gif, options);
  assert.is(image.height, 6);
  assert.ok(image.data[0]! > 200 && image.data[2]! < 50);
});

formats('file paths and Uint8Arrays are accepted like Buffers', async () => {
  const png = await rawImage(10, 10).png().toBuffer();
  const fromArray = await decodeImage(new Uint8Array(png), options);
  const fromFile = await decodeImage('../shared/fixtures/seed-images/single_face.gif', options);
  assert.is(fromArray.width, 10);
  assert.is(fromFile.width, 490);
  assert.is(fromFile.height, 639);
});

formats.run();

const orientation = suite('decode: EXIF orientation');

orientation('an image stored rotated with an orientation tag decodes upright', async () => {
  const upright = await rawImage(40, 30).png().toBuffer();
  // Rotate the pixels 90 degrees clockwise and tag orientation 6 ("rotate 90 CW to display"):
  // stored 30x40, displayed 40x30 again. Orientation 8 is the other way round.
  for (const [angle, tag] of [
    [-90, 6],
    [90, 8],
    [180, 3],
  ] as const) {
    const stored = await sharp(await sharp(upright).rotate(angle).png().toBuffer())
      .withMetadata({ orientation: tag })
      .png()
      .toBuffer();
    const image = await decodeImage(stored, options);
    assert.is(image.width, 40, `tag ${tag}`);
    assert.is(image.height, 30, `tag ${tag}`);
    assert.ok(image.data.equals(gradient(40, 30)), `tag ${tag}: pixels`);
  }
});

orientation.run();

const resize = suite('decode: resize policy');

resize('fitSize: downscale so the longer side fits, never upscale, 0 = original', () => {
  assert.equal(fitSize(3000, 2000, 1080), { width: 1080, height: 720 });
  assert.equal(fitSize(2000, 3000, 1080), { width: 720, height: 1080 });
  assert.equal(fitSize(500, 400, 1080), { width: 500, height: 400 });
  assert.equal(fitSize(3000, 2000, 0), { width: 3000, height: 2000 });
  assert.equal(fitSize(10000, 1, 100), { width: 100, height: 1 });
});

resize('decodeImage applies it and reports the original size', async () => {
  const big = await rawImage(300, 200).png().toBuffer();
  const image = await decodeImage(big, { maxSize: 150, maxPixels: 1e8 });
  assert.equal([image.width, image.height, image.originalWidth, image.originalHeight], [150, 100, 300, 200]);
  const small = await decodeImage(big, { maxSize: 1000, maxPixels: 1e8 });
  assert.equal([small.width, small.height], [300, 200]);
});

resize.run();

const header = suite('decode: sizes from the header');

header('headerSize reads JPEG (baseline, progressive, EXIF-tagged) and PNG sizes as stored', async () => {
  const image = rawImage(37, 21);
  const cases = [
    ['jpeg', await image.clone().jpeg().toBuffer()],
    ['progressive jpeg', await image.clone().jpeg({ progressive: true }).toBuffer()],
    ['jpeg tagged orientation 6', await image.clone().withMetadata({ orientation: 6 }).jpeg().toBuffer()],
    ['png', await image.clone().png().toBuffer()],
  ] as const;
  for (const [name, bytes] of cases) {
    assert.equal(headerSize(bytes), { width: 37, height: 21 }, name);
    assert.equal(headerSize(new Uint8Array(bytes)), { width: 37, height: 21 }, `${name}, Uint8Array`);
    // A view that starts inside a larger buffer (Node's pooled Buffers do).
    const view = Buffer.concat([Buffer.from([1, 2, 3]), bytes]).subarray(3);
    assert.equal(headerSize(view), { width: 37, height: 21 }, `${name}, offset view`);
  }
  // Fill bytes before a marker are allowed.
  const jpeg = cases[0][1];
  const filled = Buffer.concat([jpeg.subarray(0, 2), Buffer.from([0xff, 0xff]), jpeg.subarray(2)]);
  assert.equal(headerSize(filled), { width: 37, height: 21 });
});

header(
  'headerSize: other formats, garbage and every truncation give undefined, never a wrong size',
  async () => {
    assert.is(headerSize(await rawImage(8, 8).webp().toBuffer()), undefined);
    assert.is(headerSize(await rawImage(8, 8).gif().toBuffer()), undefined);
    assert.is(headerSize(Buffer.from('definitely not an image')), undefined);
    assert.is(headerSize(Buffer.alloc(0)), undefined);
    for (const bytes of [await rawImage(37, 21).jpeg().toBuffer(), await rawImage(37, 21).png().toBuffer()]) {
      for (let n = 0; n < 700; n++) {
        const size = headerSize(bytes.subarray(0, n));
        assert.ok(size === undefined || (size.width === 37 && size.height === 21), `${n} bytes`);
      }
    }
  },
);

header('a Buffer (sizes from its header) decodes exactly like the same file (sizes from sharp)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-header-'));
  try {
    const upright = await rawImage(40, 30).png().toBuffer();
    // Every EXIF orientation (5-8 swap the sides), JPEG and PNG, at sizes that fit maxSize or not.
    for (let tag = 1; tag <= 8; tag++) {
      const tagged = sharp(upright).withMetadata({ orientation: tag });
      for (const [format, bytes] of [
        ['jpeg', await tagged.clone().jpeg().toBuffer()],
        ['png', await tagged.clone().png().toBuffer()],
      ] as const) {
        const file = path.join(dir, `${tag}.${format}`);
        fs.writeFileSync(file, bytes);
        for (const maxSize of [0, 20, 39, 40, 41, 1080]) {
          const opts = { maxSize, maxPixels: 1e8 };
          const [fromBytes, fromFile] = await Promise.all([
            decodeImage(bytes, opts),
            decodeImage(file, opts),
          ]);
          const label = `${format}, orientation ${tag}, maxSize ${maxSize}`;
          assert.equal(
            [fromBytes.width, fromBytes.height, fromBytes.originalWidth, fromBytes.originalHeight],
            [fromFile.width, fromFile.height, fromFile.originalWidth, fromFile.originalHeight],
            label,
          );
          assert.ok(fromBytes.data.equals(fromFile.data), `${label}: pixels`);
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

header('a JPEG that fails after a good header gets the same error as from a file', async () => {
  const jpeg = await rawImage(64, 64).jpeg().toBuffer();
  const truncated = jpeg.subarray(0, jpeg.length / 2);
  assert.ok(headerSize(truncated));
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-header-')), 'truncated.jpg');
  fs.writeFileSync(file, truncated);
  try {
    const [fromBytes, fromFile] = [await decodeError(truncated), await decodeError(file)];
    assert.is(fromBytes.code, 'image_decode_failed');
    assert.is(fromBytes.message, fromFile.message);
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
});

header.run();

const errors = suite('decode: errors');

errors('garbage, text, empty and truncated input are decode errors', async () => {
  const jpeg = await rawImage(64, 64).jpeg().toBuffer();
  for (const [name, bytes] of [
    ['garbage', Buffer.from('definitely not an image')],
    ['empty', Buffer.alloc(0)],
    ['truncated jpeg', jpeg.subarray(0, jpeg.length / 2)],
  ] as const) {
    const error = await decodeError(bytes);
    assert.is(error.code, 'image_decode_failed', name);
  }
});

errors('a missing file is image_unreadable', async () => {
  const error = await decodeError('/nonexistent/face.jpg');
  assert.is(error.code, 'image_unreadable');
});

errors('a 20000x20000 header is refused before decoding', async () => {
  const error = await decodeError(pngHeaderClaiming(20000, 20000), { maxSize: 0, maxPixels: 50e6 });
  assert.is(error.code, 'image_too_large');
  assert.match(error.message, /20000x20000/);
});

errors.run();

const pack = suite('packBatch');

pack('BGR minus mean, NCHW, padded at the bottom-right with zeros to the multiple', () => {
  const a = { data: gradient(5, 3), width: 5, height: 3, originalWidth: 5, originalHeight: 3 };
  const b = { data: gradient(2, 7), width: 2, height: 7, originalWidth: 2, originalHeight: 7 };
  const mean = [104, 117, 123] as const;
  const { tensor, shape } = packBatch([a, b], { mean, padMultiple: 4 });
  assert.equal(shape, [2, 3, 8, 8]);
  assert.equal(batchSize([a, b], 4), { height: 8, width: 8 });
  const at = (n: number, c: number, y: number, x: number) => tensor[((n * 3 + c) * 8 + y) * 8 + x]!;
  // pixel (x=4, y=2) of image a: RGB (20, 14, 18) -> B-104, G-117, R-123
  assert.is(at(0, 0, 2, 4), 18 - 104);
  assert.is(at(0, 1, 2, 4), 14 - 117);
  assert.is(at(0, 2, 2, 4), 20 - 123);
  // padding of image a (x >= 5 or y >= 3) and of image b (x >= 2) is zero
  assert.is(at(0, 0, 2, 5), 0);
  assert.is(at(0, 1, 3, 0), 0);
  assert.is(at(1, 2, 6, 2), 0);
  assert.is(at(1, 2, 6, 1), ((1 * 5) % 256) - 123);
});

pack(
  'packBatchUint8: the decoded RGB pixels, NHWC, padded with the mean colour (0 after the model subtracts it)',
  () => {
    const a = { data: gradient(5, 3), width: 5, height: 3, originalWidth: 5, originalHeight: 3 };
    const b = { data: gradient(2, 7), width: 2, height: 7, originalWidth: 2, originalHeight: 7 };
    const mean = [104, 117, 123] as const;
    const { tensor, shape } = packBatchUint8([a, b], { mean, padMultiple: 4 });
    assert.equal(shape, [2, 3, 8, 8]);
    assert.ok(tensor instanceof Uint8Array);
    assert.is(tensor.length, 2 * 8 * 8 * 3);
    const at = (n: number, y: number, x: number) => [
      ...tensor.subarray(((n * 8 + y) * 8 + x) * 3, ((n * 8 + y) * 8 + x) * 3 + 3),
    ];
    assert.equal(at(0, 2, 4), [20, 14, 18]); // as decoded: RGB
    // The float batch of the same images is this minus the mean, channels reversed, NCHW.
    const float = packBatch([a, b], { mean, padMultiple: 4 }).tensor;
    for (let n = 0; n < 2; n++)
      for (let y = 0; y < 8; y++)
        for (let x = 0; x < 8; x++) {
          const [r, g, bl] = at(n, y, x);
          const f = (c: number) => float[((n * 3 + c) * 8 + y) * 8 + x]!;
          assert.equal([bl! - 104, g! - 117, r! - 123], [f(0), f(1), f(2)], `image ${n} (${x}, ${y})`);
        }
  },
);

pack('a reused output array (any contents) is packed exactly as a fresh one, padding included', () => {
  const mean = [104, 117, 123] as const;
  // 6x3 and 3x6 pad to 8x4 and 4x8: the same length, the padding in different places.
  const wide = { data: gradient(6, 3), width: 6, height: 3, originalWidth: 6, originalHeight: 3 };
  const tall = { data: gradient(3, 6), width: 3, height: 6, originalWidth: 3, originalHeight: 6 };
  for (const images of [[wide], [tall], [tall, wide]]) {
    const fresh = packBatch(images, { mean, padMultiple: 4 });
    const dirty = new Float32Array(fresh.tensor.length).fill(-7);
    const reused = packBatch(images, { mean, padMultiple: 4 }, (length) =>
      length === dirty.length ? dirty : undefined,
    );
    assert.ok(reused.tensor === dirty, 'the offered array is used');
    assert.equal([...reused.tensor], [...fresh.tensor]);
    const fresh8 = packBatchUint8(images, { mean, padMultiple: 4 });
    const dirty8 = new Uint8Array(fresh8.tensor.length).fill(7);
    const reused8 = packBatchUint8(images, { mean, padMultiple: 4 }, () => dirty8);
    assert.ok(reused8.tensor === dirty8);
    assert.equal([...reused8.tensor], [...fresh8.tensor]);
  }
});

pack.run();
