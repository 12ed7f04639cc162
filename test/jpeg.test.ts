// The JPEG fast path (native/jpeg.cc, native/resize.cc): libjpeg-turbo decodes plain JPEGs into exactly
// sharp's pixels (shrunk on load and resized as sharp does both), declines everything sharp would change
// or complain about, and never takes the process down.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { orientedJpeg as benchOrientedJpeg } from '../src/bench/decode';
import { FaceDetector, type ImageResult } from '../src/detector';
import { FacedetError } from '../src/errors';
import { loadJpegBinding } from '../src/native';
import {
  type DecodeOptions,
  type DecodedImage,
  type JpegDecoder,
  NATIVE_RESIZE_LIBVIPS,
  decodeImage,
  colourProfileFor,
  sharpJpegShrink,
  sharpSrgbProfile,
} from '../src/preprocess';
import { MOBILENET_DIR, requireModel } from './helpers/model';

const FIXTURES = path.resolve(__dirname, '..', '..', 'shared', 'fixtures');
const jpegModule = loadJpegBinding();
const decodeJpeg = jpegModule?.decodeJpeg;
const native: DecodeOptions = { maxSize: 0, maxPixels: 1e8, jpeg: decodeJpeg };
const viaSharp: DecodeOptions = { maxSize: 0, maxPixels: 1e8 };

function fixtureJpegs(): string[] {
  const files: string[] = [];
  for (const folder of ['seed-images', 'dlib-faces', 'wider-val']) {
    const dir = path.join(FIXTURES, folder);
    if (!fs.existsSync(dir)) continue;
    const jpegs = fs
      .readdirSync(dir, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.jpg'))
      .sort()
      .slice(0, 12);
    files.push(...jpegs.map((f) => path.join(dir, f)));
  }
  return files;
}

/** A 96x64 photo-like image (gradients and noise), encoded by sharp with `encode`. */
async function encoded(encode: (s: sharp.Sharp) => sharp.Sharp): Promise<Buffer> {
  const base = sharp({
    create: {
      width: 96,
      height: 64,
      channels: 3,
      background: '#7a5c40',
      noise: { type: 'gaussian', mean: 120, sigma: 50 },
    },
  });
  return encode(sharp(await base.png().toBuffer())).toBuffer();
}

/** `image` as a JPEG (quality 95) with an EXIF orientation and no ICC profile. */
const orientedJpeg = (orientation: number, image: sharp.Sharp) => benchOrientedJpeg(image, orientation, 95);

const pixels = suite('jpeg fast path: the same pixels as sharp');

pixels('the build has it (libjpeg-turbo found by CMake), in a module that loads no LibTorch', () => {
  assert.type(decodeJpeg, 'function', 'built without libjpeg-turbo: install libjpeg-dev and rebuild');
  assert.match(jpegModule?.version ?? '', /^\d+\.\d+\.\d+$/);
  // In a fresh process: the module alone, then the libraries mapped into it.
  const script =
    "require(process.argv[1]); const maps = require('fs').readFileSync('/proc/self/maps', 'utf8');" +
    'console.log(JSON.stringify({ jpeg: /libjpeg/.test(maps), torch: /libtorch|libc10/.test(maps) }))';
  const module = path.resolve(__dirname, '..', 'build', 'Release', 'jpeg', 'facedet_jpeg.node');
  const mapped = JSON.parse(execFileSync(process.execPath, ['-e', script, module], { encoding: 'utf8' }));
  assert.equal(mapped, { jpeg: true, torch: false });
});

pixels(
  'fixture photos: byte for byte what sharp decodes, and nearly all of them decoded natively',
  async () => {
    const files = fixtureJpegs();
    assert.ok(files.length >= 15, `only ${files.length} fixture JPEGs`);
    let decoded = 0;
    for (const file of files) {
      const bytes = fs.readFileSync(file);
      const a = await decodeImage(bytes, native);
      const b = await decodeImage(bytes, viaSharp);
      assert.equal([a.width, a.height], [b.width, b.height], file);
      assert.ok(a.data.equals(b.data), `${file}: pixels differ from sharp's`);
      assert.is(b.decodedBy, undefined);
      if (a.decodedBy === 'libjpeg-turbo') decoded++;
    }
    assert.ok(decoded >= files.length - 2, `${decoded} of ${files.length} decoded natively`);
  },
);

pixels(
  'progressive, greyscale, 4:4:4, EXIF with orientation 1: decoded natively, equal to sharp',
  async () => {
    const cases = {
      progressive: (s: sharp.Sharp) => s.jpeg({ progressive: true }),
      greyscale: (s: sharp.Sharp) => s.greyscale().jpeg(),
      '4:4:4': (s: sharp.Sharp) => s.jpeg({ chromaSubsampling: '4:4:4' }),
      'EXIF, orientation 1': (s: sharp.Sharp) =>
        s.withExif({ IFD0: { Orientation: '1', Copyright: 'test' } }).jpeg(),
    };
    for (const [name, encode] of Object.entries(cases)) {
      const bytes = await encoded(encode);
      const a = await decodeImage(bytes, native);
      const b = await decodeImage(bytes, viaSharp);
      assert.is(a.decodedBy, 'libjpeg-turbo', name);
      assert.ok(a.data.equals(b.data), `${name}: pixels differ from sharp's`);
    }
  },
);

pixels('resized: decoded, shrunk on load and resized natively at any shrink; equal to sharp', async () => {
  const photo = path.join(FIXTURES, 'seed-images', 'diverse_group.jpg');
  const hd = await sharp(photo).resize(1920, 1080, { fit: 'cover' }).jpeg({ quality: 90 }).toBuffer();
  for (const [maxSize, decodedBy] of [
    [1080, 'libjpeg-turbo'],
    [961, 'libjpeg-turbo'],
    // sharp decodes at full size up to a shrink of 3 ("known libjpeg rounding errors" from 2 to 3).
    [960, 'libjpeg-turbo'],
    [641, 'libjpeg-turbo'],
    // From 3 on it has libjpeg decode at 1/2, 1/4 or 1/8 of the size, and so does the fast path.
    [640, 'libjpeg-turbo'],
    [480, 'libjpeg-turbo'],
    [200, 'libjpeg-turbo'],
  ] as const) {
    const a = await decodeImage(hd, { ...native, maxSize });
    const b = await decodeImage(hd, { ...viaSharp, maxSize });
    assert.is(a.decodedBy, decodedBy, `max size ${maxSize}`);
    assert.equal([a.width, a.height, a.originalWidth, a.originalHeight], [b.width, b.height, 1920, 1080]);
    assert.is(a.width, maxSize);
    assert.ok(a.data.equals(b.data), `max size ${maxSize}: pixels differ from sharp's`);
  }
});

/** Pseudo-random RGB bytes (a fixed sequence per seed): noise keeps every pixel of a resize telling. */
function noise(width: number, height: number, seed: number): Buffer {
  const data = Buffer.alloc(width * height * 3);
  let state = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    state = (state * 1103515245 + 12345) >>> 0;
    data[i] = state >>> 16;
  }
  return data;
}

const RESIZE = { fit: 'fill', kernel: 'linear' } as const;

pixels(
  'resized natively: byte for byte sharp’s, also where the rounding of libvips’ running positions decides',
  async () => {
    assert.match(
      sharp.versions.vips,
      NATIVE_RESIZE_LIBVIPS,
      'sharp’s libvips is not the one resize.cc copies',
    );
    // 289 -> 192 rows: every third row's position lands exactly between two of libvips' 64 sub-pixel
    // masks, so which one it takes depends on how its running sum of positions rounds, which depends on
    // where libvips restarts it (every 10 rows here, the rows its line cache asks for). sharp from raw
    // pixels restarts every 16 rows and gives other pixels: this size tells the two apart.
    const cases: [number, number, number, number][] = [
      [289, 289, 192, 192],
      [1920, 1080, 1080, 608],
      [577, 385, 384, 256],
      [2047, 1151, 1080, 607],
      [97, 3, 65, 2],
      [7, 200, 3, 101],
      [400, 300, 399, 300],
      [400, 300, 400, 299],
    ];
    let seed = 7;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    while (cases.length < 60) {
      const width = 2 + random(700);
      const height = 2 + random(700);
      const shrink = 1 + random(1999) / 1000;
      cases.push([width, height, Math.round(width / shrink) || 1, Math.round(height / shrink) || 1]);
    }
    // Shrunk on load first (by 2, 4 or 8: libjpeg rounds the scaled size up, libvips keeps the floor):
    // odd sizes, and shrinks from 3 to 20.
    cases.push([1001, 667, 300, 200], [2001, 1333, 500, 333], [999, 1001, 100, 100], [1203, 799, 60, 40]);
    while (cases.length < 76) {
      const width = 30 + random(1500);
      const height = 30 + random(1500);
      const shrink = 3 + random(17000) / 1000;
      cases.push([width, height, Math.round(width / shrink) || 1, Math.round(height / shrink) || 1]);
    }
    const encodings = [
      (s: sharp.Sharp) => s.jpeg({ quality: 95 }),
      (s: sharp.Sharp) => s.greyscale().jpeg({ quality: 95 }),
      (s: sharp.Sharp) => s.jpeg({ quality: 95, progressive: true, chromaSubsampling: '4:4:4' }),
    ];
    for (const [i, [width, height, w, h]] of cases.entries()) {
      const raw = noise(width, height, i + 1);
      const jpeg = await encodings[i % 3]!(sharp(raw, { raw: { width, height, channels: 3 } })).toBuffer();
      const expected = await sharp(jpeg).resize(w, h, RESIZE).toColourspace('srgb').raw().toBuffer();
      const output = Buffer.alloc(w * h * 3);
      const scale = sharpJpegShrink(width, height, { width: w, height: h });
      // On one thread and on two (a sequential JPEG of 16 rows of blocks or more: most of these).
      for (const threads of [1, 2] as const) {
        output.fill(0);
        const name = `${width}x${height} -> ${w}x${h}, ${threads} thread(s)`;
        assert.is(await decodeJpeg!(jpeg, output, w, h, scale, threads, undefined), 1, name);
        assert.ok(output.equals(expected), `${name}: pixels differ from sharp's`);
      }
      if (i === 0) {
        const full = Buffer.alloc(width * height * 3);
        assert.is(await decodeJpeg!(jpeg, full, width, height, 1, 1, undefined), 1);
        const fromRaw = await sharp(full, { raw: { width, height, channels: 3 } })
          .resize(w, h, RESIZE)
          .raw()
          .toBuffer();
        assert.not.ok(
          fromRaw.equals(expected),
          'sharp from raw pixels no longer differs: the case tells nothing',
        );
      }
    }
    // What it does not do as sharp would: declined, and left to sharp.
    const jpeg = await sharp(noise(64, 48, 1), { raw: { width: 64, height: 48, channels: 3 } })
      .jpeg()
      .toBuffer();
    assert.is(
      await decodeJpeg!(jpeg, Buffer.alloc(65 * 48 * 3), 65, 48, 1, 1, undefined),
      'resize: not a reduction',
    );
    assert.is(
      await decodeJpeg!(jpeg, Buffer.alloc(16 * 48 * 3), 16, 48, 1, 1, undefined),
      'resize: libvips would shrink first',
    );
    assert.is(
      await decodeJpeg!(jpeg, Buffer.alloc(3), 1, 1, 8, 1, undefined),
      'resize: libvips would shrink first',
    );
  },
);

pixels(
  'EXIF orientations 2 to 8: turned upright as sharp turns them, after resizing or shrinking on load',
  async () => {
    for (let orientation = 2; orientation <= 8; orientation++) {
      const raw = noise(301, 283, orientation);
      const bytes = await orientedJpeg(
        orientation,
        sharp(raw, { raw: { width: 301, height: 283, channels: 3 } }),
      );
      // At full size, resized (by 1.2) and shrunk on load (by 2, then resized), on two threads where
      // there are rows enough (at full size).
      for (const maxSize of [0, 250, 90]) {
        const a = await decodeImage(bytes, { ...native, maxSize, jpegThreads: 2 });
        const b = await decodeImage(bytes, { ...viaSharp, maxSize });
        const name = `orientation ${orientation}, max size ${maxSize}`;
        assert.is(a.decodedBy, 'libjpeg-turbo', name);
        assert.equal(
          [a.width, a.height, a.originalWidth, a.originalHeight],
          [b.width, b.height, b.originalWidth, b.originalHeight],
          name,
        );
        assert.ok(a.data.equals(b.data), `${name}: pixels differ from sharp's`);
      }
    }
  },
);

pixels(
  'file paths: a JPEG file is read and decoded natively; other files and errors as sharp gives them',
  async () => {
    const jpeg = path.join(FIXTURES, 'seed-images', 'diverse_group.jpg');
    const a = await decodeImage(jpeg, native);
    const b = await decodeImage(jpeg, viaSharp);
    assert.is(a.decodedBy, 'libjpeg-turbo');
    assert.ok(a.data.equals(b.data));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-jpeg-'));
    try {
      const png = path.join(dir, 'image.png');
      await sharp(jpeg).png().toFile(png);
      const c = await decodeImage(png, native);
      assert.is(c.decodedBy, undefined);
      assert.ok(c.data.equals((await decodeImage(png, viaSharp)).data));
      for (const bad of [path.join(dir, 'missing.jpg'), dir]) {
        const errors: string[] = [];
        for (const options of [native, viaSharp]) {
          await decodeImage(bad, options).then(
            () => errors.push('decoded'),
            (error: FacedetError) => errors.push(`${error.code}: ${error.message}`),
          );
        }
        assert.is(errors[0], errors[1], bad);
        assert.not.equal(errors[0], 'decoded');
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);

/** Whether a thread named facedet-jpeg (the two-thread decode's second) runs in this process during `work`. */
async function sawJpegThread(work: () => Promise<unknown>): Promise<boolean> {
  const named = (task: string) => {
    try {
      return fs.readFileSync(`/proc/self/task/${task}/comm`, 'utf8').trim() === 'facedet-jpeg';
    } catch {
      return false; // the thread ended meanwhile
    }
  };
  let seen = false;
  let done = false;
  const watch = (async () => {
    while (!done) {
      seen ||= fs.readdirSync('/proc/self/task').some(named);
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  try {
    await work();
  } finally {
    done = true;
    await watch;
  }
  return seen;
}

const threads = suite('jpeg fast path: on two threads');

threads(
  'a sequential JPEG is entropy-decoded on a second thread; not with one thread, a progressive one or one too large',
  async () => {
    const photo = path.join(FIXTURES, 'seed-images', 'diverse_group.jpg');
    const base = sharp(photo).resize(2400, 1600, { fit: 'cover' });
    const sequential = await base.clone().jpeg({ quality: 90 }).toBuffer();
    const progressive = await base.clone().jpeg({ quality: 90, progressive: true }).toBuffer();
    const expected = await sharp(sequential).resize(1080, 720, RESIZE).raw().toBuffer();
    const output = Buffer.alloc(1080 * 720 * 3);
    const decode = (jpeg: Buffer, threads: 1 | 2) => async () => {
      assert.is(await decodeJpeg!(jpeg, output, 1080, 720, 1, threads, undefined), 1);
    };
    // It lives for the decode's few milliseconds; the watch reads /proc between its own turns.
    let seen = false;
    for (let i = 0; i < 10 && !seen; i++) seen = await sawJpegThread(decode(sequential, 2));
    assert.ok(seen, 'no facedet-jpeg thread seen in 10 two-thread decodes');
    assert.ok(output.equals(expected));
    for (let i = 0; i < 3; i++) {
      assert.not.ok(await sawJpegThread(decode(sequential, 1)), 'a second thread with threads 1');
      assert.not.ok(await sawJpegThread(decode(progressive, 2)), 'a second thread for a progressive JPEG');
    }
    // 4800x3600 in 4:4:4: 104 MB of DCT coefficients to hold for two threads (the cap is 64 MiB).
    const large = await sharp(photo)
      .resize(4800, 3600, { fit: 'cover' })
      .jpeg({ quality: 90, chromaSubsampling: '4:4:4' })
      .toBuffer();
    const scale = sharpJpegShrink(4800, 3600, { width: 1080, height: 810 });
    const small = Buffer.alloc(1080 * 810 * 3);
    const decodeLarge = async () => {
      assert.is(await decodeJpeg!(large, small, 1080, 810, scale, 2, undefined), 1);
    };
    assert.not.ok(await sawJpegThread(decodeLarge), 'a second thread for 104 MB of coefficients');
  },
);

threads(
  'a second scan after the first: the same error on two threads as on one, and sharp decides',
  async () => {
    const photo = path.join(FIXTURES, 'seed-images', 'diverse_group.jpg');
    const jpeg = await sharp(photo).resize(512, 384, { fit: 'cover' }).jpeg({ quality: 85 }).toBuffer();
    // The scan (SOS to EOI) once more before EOI: a sequential JPEG may not have two.
    const sos = jpeg.indexOf(Buffer.from([0xff, 0xda]));
    const twice = Buffer.concat([jpeg.subarray(0, jpeg.length - 2), jpeg.subarray(sos)]);
    const output = Buffer.alloc(512 * 384 * 3);
    for (const threads of [1, 2] as const) {
      assert.is(
        await decodeJpeg!(twice, output, 512, 384, 1, threads, undefined),
        "libjpeg: Didn't expect more than one scan",
        `${threads} thread(s)`,
      );
    }
    const a = await decodeImage(twice, { ...native, jpegThreads: 2 }).catch((e: Error) => e.message);
    const b = await decodeImage(twice, viaSharp).catch((e: Error) => e.message);
    assert.equal(a, b);
  },
);

threads(
  'restart markers and arithmetic coding: sharp’s pixels on two threads; damaged, the same as on one',
  async () => {
    // test/data/jpeg/restarts.c made them: a restart marker after every row of MCUs; arithmetic-coded.
    for (const name of ['restarts.jpg', 'arithmetic.jpg']) {
      const bytes = fs.readFileSync(path.join(__dirname, 'data', 'jpeg', name));
      for (const maxSize of [0, 300]) {
        const a = await decodeImage(bytes, { ...native, maxSize, jpegThreads: 2 });
        const b = await decodeImage(bytes, { ...viaSharp, maxSize });
        assert.is(a.decodedBy, 'libjpeg-turbo', name);
        assert.ok(a.data.equals(b.data), `${name}, max size ${maxSize}: pixels differ from sharp's`);
      }
      let seed = name.length;
      const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
      const outcome = async (input: Buffer, threads: 1 | 2) => {
        const output = Buffer.alloc(384 * 288 * 3);
        const result = await decodeJpeg!(input, output, 384, 288, 1, threads, undefined);
        return typeof result === 'string' ? result : output.toString('base64');
      };
      const reasons = new Set<string>();
      for (let i = 0; i < 100; i++) {
        const damaged = Buffer.from(bytes);
        for (let k = 1 + Math.floor(random() * 3); k > 0; k--) {
          damaged[700 + Math.floor(random() * (damaged.length - 700))] = Math.floor(random() * 256);
        }
        const one = await outcome(damaged, 1);
        assert.is(await outcome(damaged, 2), one, `${name}, mutant ${i}`);
        if (one.startsWith('libjpeg: ')) reasons.add(one);
      }
      assert.ok(reasons.size >= 2, `${name}: ${[...reasons].join('; ')}`);
    }
  },
);

threads(
  '300 damaged sequential JPEGs (fixed seed): on two threads the same pixels or reason as on one',
  async () => {
    // 384 pixel rows: 24 rows of blocks, enough for the second thread; damage mostly in the entropy-
    // coded data (most of the file), where the second thread meets it.
    const photo = path.join(FIXTURES, 'seed-images', 'diverse_group.jpg');
    const source = await sharp(photo).resize(512, 384, { fit: 'cover' }).jpeg({ quality: 85 }).toBuffer();
    let seed = 11;
    const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const outcome = async (input: Buffer, w: number, h: number, threads: 1 | 2) => {
      const output = Buffer.alloc(w * h * 3);
      const result = await decodeJpeg!(input, output, w, h, 1, threads, undefined);
      return typeof result === 'string' ? result : `${result} ${output.toString('base64')}`;
    };
    const reasons = new Set<string>();
    let decoded = 0;
    for (let i = 0; i < 300; i++) {
      const bytes = Buffer.from(source);
      for (let k = 1 + Math.floor(random() * 4); k > 0; k--) {
        bytes[600 + Math.floor(random() * (bytes.length - 600))] = Math.floor(random() * 256);
      }
      const input = random() < 0.2 ? bytes.subarray(0, Math.floor(random() * bytes.length)) : bytes;
      const [w, h] = i % 2 ? [512, 384] : [400, 300];
      const one = await outcome(input, w, h, 1);
      assert.is(await outcome(input, w, h, 2), one, `mutant ${i}`);
      if (one.startsWith('libjpeg: ')) reasons.add(one);
      else decoded++;
    }
    // Both kinds: damage libjpeg reports (several kinds), and damage that still decodes.
    assert.ok(reasons.size >= 3, [...reasons].join('; '));
    assert.ok(decoded > 10, `${decoded} of 300 decoded`);
  },
);

const declines = suite('jpeg fast path: declines what sharp would change or refuse');

declines(
  'an ICC profile without the profile to convert to, CMYK: left to sharp, which converts them',
  async () => {
    const cases = {
      'ICC profile': [() => encoded((s) => s.withIccProfile('p3').jpeg()), /^has an ICC profile$/],
      CMYK: [() => encoded((s) => s.toColourspace('cmyk').jpeg()), /colour space/],
    } as const;
    for (const [name, [encode, reason]] of Object.entries(cases)) {
      const bytes = await encode();
      const meta = await sharp(bytes).metadata();
      const reply = await decodeJpeg!(
        bytes,
        Buffer.alloc(meta.width * meta.height * 3),
        meta.width,
        meta.height,
        1,
        1,
        undefined,
      );
      assert.match(String(reply), reason, name);
      const a = await decodeImage(bytes, native);
      const b = await decodeImage(bytes, viaSharp);
      // decodeImage gives the fast path the profile to convert to: it converts this one.
      assert.is(a.decodedBy, name === 'ICC profile' ? 'libjpeg-turbo' : undefined, name);
      assert.equal([a.width, a.height], [b.width, b.height], name);
      assert.ok(a.data.equals(b.data), name);
    }
  },
);

declines(
  'truncated or corrupt JPEGs: declined with libjpeg’s reason, then the same error as sharp gives',
  async () => {
    const bytes = fs.readFileSync(path.join(FIXTURES, 'seed-images', 'diverse_group.jpg'));
    const meta = await sharp(bytes).metadata();
    const size = meta.width * meta.height * 3;
    const decode = (input: Buffer, output: Buffer, threads: 1 | 2 = 1) =>
      decodeJpeg!(input, output, meta.width, meta.height, 1, threads, undefined);
    const truncated = bytes.subarray(0, bytes.length >> 1);
    // Bytes flipped in the middle of the entropy-coded data: at most a warning for libjpeg.
    const corrupt = Buffer.from(bytes);
    for (let i = corrupt.length >> 1; i < (corrupt.length >> 1) + 64; i++) corrupt[i] = 0xff;
    // On two threads the entropy decoding (where both go wrong) is the second thread's.
    for (const threads of [1, 2] as const) {
      assert.match(String(await decode(truncated, Buffer.alloc(size), threads)), /^libjpeg: Premature end/);
      assert.match(String(await decode(corrupt, Buffer.alloc(size), threads)), /^libjpeg: /);
    }
    assert.match(
      String(await decodeJpeg!(Buffer.from([0xff, 0xd8, 0xff]), Buffer.alloc(3), 1, 1, 1, 1, undefined)),
      /^libjpeg: /,
    );
    assert.match(
      String(await decodeJpeg!(Buffer.from('not a jpeg'), Buffer.alloc(3), 1, 1, 1, 1, undefined)),
      /^libjpeg: Not a JPEG/,
    );
    assert.is(await decode(bytes, Buffer.alloc(size - 3)), 'output size differs');
    for (const input of [truncated, corrupt]) {
      const errors: string[] = [];
      for (const options of [native, viaSharp]) {
        await decodeImage(input, options).then(
          () => errors.push('decoded'),
          (error: FacedetError) => errors.push(`${error.code}: ${error.message}`),
        );
      }
      assert.is(errors[0], errors[1]);
      assert.match(errors[0]!, /^image_decode_failed: /);
    }
  },
);

declines(
  'a progressive JPEG of more than 256 scans: declined before its passes add up, sharp decodes it',
  async () => {
    // 379 valid scans, each a pass over the image (test/data/jpeg/many-scans.c made it).
    const bytes = fs.readFileSync(path.join(__dirname, 'data', 'jpeg', 'many-scans.jpg'));
    assert.is(
      await decodeJpeg!(bytes, Buffer.alloc(64 * 64 * 3), 64, 64, 1, 2, undefined),
      'libjpeg: more than 256 scans',
    );
    const a = await decodeImage(bytes, native);
    const b = await decodeImage(bytes, viaSharp);
    assert.is(a.decodedBy, undefined);
    assert.ok(a.data.equals(b.data));
  },
);

declines(
  '400 damaged JPEGs (fixed seed): the same pixels or the same error as sharp alone, never a crash',
  async () => {
    const photo = path.join(FIXTURES, 'seed-images', 'diverse_group.jpg');
    const sources = [
      await sharp(photo).resize(96, 64).jpeg({ quality: 80 }).toBuffer(),
      await sharp(photo).resize(96, 64).jpeg({ quality: 80, progressive: true }).toBuffer(),
    ];
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const outcome = (result: Promise<{ data: Buffer; width: number; decodedBy?: string }>) =>
      result.then(
        (image) => ({ text: `${image.width} ${image.data.toString('base64')}`, native: !!image.decodedBy }),
        (error: FacedetError) => ({ text: `${error.code}: ${error.message}`, native: false }),
      );
    let decodedNatively = 0;
    for (let i = 0; i < 400; i++) {
      const bytes = Buffer.from(sources[i % 2]!);
      for (let k = 1 + Math.floor(random() * 4); k > 0; k--) {
        bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      }
      const input = random() < 0.2 ? bytes.subarray(0, Math.floor(random() * bytes.length)) : bytes;
      // Every other one resized as it is decoded (96x64 to 80x53), the others at full size.
      const maxSize = i % 4 < 2 ? 80 : 0;
      const a = await outcome(decodeImage(input, { ...native, maxSize }));
      const b = await outcome(decodeImage(input, { ...viaSharp, maxSize }));
      assert.is(a.text, b.text, `mutant ${i}`);
      if (a.native) decodedNatively++;
    }
    // Damage that libjpeg does not notice (in markers it skips, or pixels that still decode) stays native.
    assert.ok(decodedNatively > 50, `${decodedNatively} of 400 decoded natively`);
  },
);

declines(
  '300 JPEGs with damaged EXIF (fixed seed): turned as sharp turns them, or left to it, never otherwise',
  async () => {
    // The orientation is read here by our own parser and in sharp by libexif: where they could disagree
    // (a damaged block that one still reads), the fast path must decline.
    const base = sharp(noise(48, 32, 5), { raw: { width: 48, height: 32, channels: 3 } });
    const sources = [
      await orientedJpeg(6, base.clone()),
      await orientedJpeg(3, base.clone()),
      await orientedJpeg(8, base.clone()),
    ];
    const app1 = sources[0]!.indexOf(Buffer.from([0xff, 0xe1]));
    const length = sources[0]!.readUInt16BE(app1 + 2);
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const outcome = (result: Promise<DecodedImage>) =>
      result.then(
        (image) => ({
          text: `${image.width}x${image.height} ${image.originalWidth} ${image.data.toString('base64')}`,
          native: !!image.decodedBy,
        }),
        (error: FacedetError) => ({ text: `${error.code}: ${error.message}`, native: false }),
      );
    let decodedNatively = 0;
    for (let i = 0; i < 300; i++) {
      const bytes = Buffer.from(sources[i % 3]!);
      for (let k = 1 + Math.floor(random() * 3); k > 0; k--) {
        const at = app1 + 4 + Math.floor(random() * (length - 2));
        bytes[at] =
          random() < 0.5 ? Math.floor(random() * 256) : bytes[at]! ^ (1 << Math.floor(random() * 8));
      }
      const maxSize = i % 2 ? 0 : 40;
      const a = await outcome(decodeImage(bytes, { ...native, maxSize }));
      const b = await outcome(decodeImage(bytes, { ...viaSharp, maxSize }));
      assert.is(a.text, b.text, `mutant ${i}`);
      if (a.native) decodedNatively++;
    }
    assert.ok(decodedNatively > 150, `${decodedNatively} of 300 decoded natively`);
  },
);

declines('wrong arguments are a TypeError, not a crash', () => {
  const call = decodeJpeg as unknown as (...args: unknown[]) => unknown;
  const bytes = Buffer.alloc(3);
  for (const args of [
    [],
    [bytes],
    [1, 2],
    [bytes, bytes],
    [bytes, bytes, 1, 1],
    [bytes, bytes, 1, 1, 1],
    [new Float32Array(4), bytes, 1, 1, 1, 1],
    ['a', 'b', 1, 1, 1, 1],
    [bytes, bytes, 0, 1, 1, 1],
    [bytes, bytes, 1.5, 1, 1, 1],
    [bytes, bytes, 1, 65536, 1, 1],
    [bytes, bytes, 1, '1', 1, 1],
    [bytes, bytes, 1, 1, 3, 1],
    [bytes, bytes, 1, 1, 16, 1],
    [bytes, bytes, 1, 1, 1, 0],
    [bytes, bytes, 1, 1, 1, 3],
    [bytes, bytes, 1, 1, 1, '2'],
    [bytes, bytes, 1, 1, 1, 1],
    [bytes, bytes, 1, 1, 1, 1, 1],
    [bytes, bytes, 1, 1, 1, 1, null],
    [bytes, bytes, 1, 1, 1, 1, new Uint16Array(4)],
    [bytes, bytes, 1, 1, 1, 1, undefined, undefined],
  ]) {
    assert.throws(
      () => call(...args),
      (e: Error) =>
        e instanceof TypeError &&
        /two Uint8Arrays, two integers .* scale of 1, 2, 4 or 8, 1 or 2 threads and a Uint8Array or undefined$/.test(
          e.message,
        ),
    );
  }
});

const icc = suite('jpeg fast path: ICC profiles, converted as sharp converts them');

/**
 * An ICC v2 matrix/TRC profile: 'RGB ' with three colorants (XYZ, D50-adapted) and one tone curve for all
 * three channels (a gamma, or a table of 16-bit entries), or 'GRAY' with the curve alone.
 */
function iccProfile(space: 'RGB ' | 'GRAY', curve: number | number[], colorants: number[][] = []): Buffer {
  const s15 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(Math.round(v * 65536));
    return b;
  };
  const xyz = (v: number[]) => Buffer.concat([Buffer.from('XYZ \0\0\0\0', 'latin1'), ...v.map(s15)]);
  const entries = typeof curve === 'number' ? [Math.round(curve * 256)] : curve;
  const curv = Buffer.alloc(12 + 2 * entries.length + ((2 * entries.length) % 4));
  curv.write('curv', 0, 'latin1');
  curv.writeUInt32BE(entries.length, 8);
  entries.forEach((v, i) => curv.writeUInt16BE(v, 12 + 2 * i));
  const text = 'facedet test profile';
  const desc = Buffer.alloc(12 + text.length + 1 + 12 + 67);
  desc.write('desc', 0, 'latin1');
  desc.writeUInt32BE(text.length + 1, 8);
  desc.write(text, 12, 'latin1');
  const tags: [string, Buffer][] = [
    ['desc', desc],
    ['cprt', Buffer.from('text\0\0\0\0none\0', 'latin1')],
    ['wtpt', xyz([0.9642, 1, 0.8249])],
  ];
  if (space === 'GRAY') tags.push(['kTRC', curv]);
  else {
    ['rXYZ', 'gXYZ', 'bXYZ'].forEach((sig, i) => tags.push([sig, xyz(colorants[i]!)]));
    tags.push(['rTRC', curv], ['gTRC', curv], ['bTRC', curv]);
  }
  const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
  const table = Buffer.alloc(4 + 12 * tags.length);
  table.writeUInt32BE(tags.length);
  let offset = 128 + table.length;
  const data: Buffer[] = [];
  tags.forEach(([sig, bytes], i) => {
    table.write(sig, 4 + 12 * i, 'latin1');
    table.writeUInt32BE(offset, 8 + 12 * i);
    table.writeUInt32BE(bytes.length, 12 + 12 * i);
    data.push(pad(bytes));
    offset += pad(bytes).length;
  });
  const header = Buffer.alloc(128);
  header.writeUInt32BE(offset, 0);
  header.writeUInt32BE(0x02100000, 8);
  header.write('mntr' + space + 'XYZ ', 12, 'latin1');
  header.write('acsp', 36, 'latin1');
  s15(0.9642).copy(header, 68);
  s15(1).copy(header, 72);
  s15(0.8249).copy(header, 76);
  return Buffer.concat([header, table, ...data]);
}

/** `jpeg` (without a profile) with `profile` in APP2 ICC_PROFILE markers (65519 bytes each) after SOI. */
function withIcc(jpeg: Buffer, profile: Buffer): Buffer {
  const chunks: Buffer[] = [];
  for (let at = 0; at < profile.length; at += 65519) chunks.push(profile.subarray(at, at + 65519));
  const markers = chunks.map((chunk, i) => {
    const length = 2 + 12 + 2 + chunk.length;
    return Buffer.concat([
      Buffer.from([0xff, 0xe2, length >> 8, length & 0xff]),
      Buffer.from('ICC_PROFILE\0', 'latin1'),
      Buffer.from([i + 1, chunks.length]),
      chunk,
    ]);
  });
  return Buffer.concat([jpeg.subarray(0, 2), ...markers, jpeg.subarray(2)]);
}

/** sRGB's colorants, D50-adapted, and wider ones (a ProPhoto-like gamut). */
const SRGB_COLORANTS = [
  [0.4361, 0.2225, 0.0139],
  [0.3851, 0.7169, 0.0971],
  [0.1431, 0.0606, 0.7141],
];
const WIDE_COLORANTS = [
  [0.7977, 0.288, 0],
  [0.1352, 0.7119, 0],
  [0.0313, 0.0001, 0.8249],
];

icc('the colours as sharp converts them: shrunk, resized, turned, on one and two threads', async () => {
  const srgb = await sharpSrgbProfile();
  assert.ok(srgb && srgb.length > 0, "sharp gives libvips' sRGB profile");
  const photo = await sharp(path.join(FIXTURES, 'seed-images', 'diverse_group.jpg'))
    .resize(640, 480, { fit: 'cover' })
    .toBuffer();
  const table = Array.from({ length: 256 }, (_, i) => Math.round(65535 * (i / 255) ** 1.8));
  const libvips = async (name: 'p3' | 'srgb') =>
    (
      await sharp(photo)
        .withIccProfile(name)
        .jpeg()
        .toBuffer()
        .then((b) => sharp(b).metadata())
    ).icc!;
  const profiles: Record<string, Buffer> = {
    "libvips' P3": await libvips('p3'),
    "libvips' sRGB (no colour changes)": await libvips('srgb'),
    'wide gamut, gamma 2.2': iccProfile('RGB ', 2.2, WIDE_COLORANTS),
    'sRGB colorants, a 256-entry tone curve': iccProfile('RGB ', table, SRGB_COLORANTS),
  };
  for (const [name, profile] of Object.entries(profiles)) {
    const jpeg = withIcc(await sharp(photo).jpeg({ quality: 90 }).toBuffer(), profile);
    const oriented = withIcc(await orientedJpeg(6, sharp(photo)), profile);
    const plain = await sharp(jpeg, { ignoreIcc: true }).raw().toBuffer();
    const converted = await sharp(jpeg).raw().toBuffer();
    assert.is(plain.equals(converted), name.includes('no colour changes'), `${name}: sharp converts`);
    // Its own size, resized, shrunk on load (1/2) and resized; then with an EXIF orientation.
    for (const [input, maxSize] of [
      [jpeg, 0],
      [jpeg, 500],
      [jpeg, 200],
      [oriented, 300],
    ] as const) {
      for (const jpegThreads of [1, 2] as const) {
        const what = `${name}, max size ${maxSize}, ${jpegThreads} thread(s)`;
        const fast = await decodeImage(input, { ...native, maxSize, jpegThreads });
        const slow = await decodeImage(input, { ...viaSharp, maxSize });
        assert.is(fast.decodedBy, 'libjpeg-turbo', what);
        assert.equal([fast.width, fast.height], [slow.width, slow.height], what);
        assert.ok(fast.data.equals(slow.data), `${what}: pixels differ from sharp's`);
      }
    }
  }
});

icc('profiles it does not convert are left to sharp, which decodes them as ever', async () => {
  const srgb = await sharpSrgbProfile();
  const rgb = await encoded((s) => s.jpeg());
  const grey = await encoded((s) => s.toColourspace('b-w').jpeg());
  const cases: [string, Buffer, RegExp][] = [
    ['unreadable', withIcc(rgb, Buffer.from('not an ICC profile at all')), /^ICC profile unreadable$/],
    ['a grey profile on colour', withIcc(rgb, iccProfile('GRAY', 2.2)), /^ICC profile not RGB$/],
    [
      'greyscale with an RGB profile',
      withIcc(grey, iccProfile('RGB ', 2.2, WIDE_COLORANTS)),
      /^has an ICC profile and is not YCbCr$/,
    ],
    // A real profile with 1 MiB of padding after it (its header's size unchanged), in 17 markers.
    [
      'over 1 MiB',
      withIcc(rgb, Buffer.concat([iccProfile('RGB ', 2.2, WIDE_COLORANTS), Buffer.alloc(2 ** 20)])),
      /^ICC profile over 1 MiB$/,
    ],
  ];
  for (const [name, bytes, reason] of cases) {
    const meta = await sharp(bytes).metadata();
    const output = Buffer.alloc(meta.width * meta.height * 3);
    assert.match(String(await decodeJpeg!(bytes, output, meta.width, meta.height, 1, 1, srgb)), reason, name);
    const a = await decodeImage(bytes, native);
    const b = await decodeImage(bytes, viaSharp);
    assert.is(a.decodedBy, undefined, name);
    assert.ok(a.data.equals(b.data), name);
  }
  // Without the profile to convert to, every JPEG with one goes to sharp.
  const p3 = await encoded((s) => s.withIccProfile('p3').jpeg());
  assert.is(await decodeJpeg!(p3, Buffer.alloc(96 * 64 * 3), 96, 64, 1, 1, undefined), 'has an ICC profile');
  assert.is(await decodeJpeg!(p3, Buffer.alloc(96 * 64 * 3), 96, 64, 1, 1, srgb), 1);
});

icc('200 damaged profiles: converted as sharp converts them, or left to it', async () => {
  const p3 = await encoded((s) => s.withIccProfile('p3').jpeg());
  const profile = (await sharp(p3).metadata()).icc!;
  const start = p3.indexOf(Buffer.from('ICC_PROFILE\0', 'latin1')) + 14;
  assert.ok(p3.subarray(start, start + profile.length).equals(profile));
  let state = 12345;
  const random = () => ((state = (state * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
  let converted = 0;
  let declined = 0;
  for (let i = 0; i < 200; i++) {
    const damaged = Buffer.from(p3);
    for (let n = 1 + Math.floor(random() * 4); n > 0; n--) {
      damaged[start + Math.floor(random() * profile.length)] = Math.floor(random() * 256);
    }
    const fast = await decodeImage(damaged, native).catch((e: unknown) => String(e));
    const slow = await decodeImage(damaged, viaSharp).catch((e: unknown) => String(e));
    if (typeof fast === 'string' || typeof slow === 'string') {
      assert.is(fast, slow, `mutant ${i}: the same error`);
      continue;
    }
    assert.ok(fast.data.equals(slow.data), `mutant ${i}: pixels differ from sharp's`);
    if (fast.decodedBy) converted++;
    else declined++;
  }
  // Both kinds: damage Little CMS reads through, and damage it (or our checks) refuses.
  assert.ok(converted >= 20 && declined >= 20, `${converted} converted, ${declined} declined`);
});

icc(
  'a profile seen twice gets a table of every colour: the same pixels, before, while and after it is built',
  async () => {
    const tables = () => jpegModule!.colourTables().tables;
    const photo = await sharp(path.join(FIXTURES, 'seed-images', 'diverse_group.jpg'))
      .resize(640, 480, { fit: 'cover' })
      .jpeg({ quality: 90 })
      .toBuffer();
    // Profiles of their own: gammas no other test uses.
    const tagged = (gamma: number) => withIcc(photo, iccProfile('RGB ', gamma, WIDE_COLORANTS));
    const decode = (jpeg: Buffer, jpegThreads: 1 | 2 = 1) =>
      decodeImage(jpeg, { ...native, maxSize: 500, jpegThreads });
    // Eight profiles used once each push every earlier one out of the addon's cache, with its table.
    for (let i = 0; i < 8; i++) await decode(tagged(1.3 + i / 100));
    assert.is(tables(), 0, 'tables of profiles no longer kept are freed');
    const a = tagged(2.05);
    const expected = await decodeImage(a, { ...viaSharp, maxSize: 500 });
    const same = (image: DecodedImage, what: string) => {
      assert.is(image.decodedBy, 'libjpeg-turbo', what);
      assert.ok(image.data.equals(expected.data), `${what}: pixels differ from sharp's`);
    };
    same(await decode(a), 'first use: Little CMS');
    assert.is(tables(), 0, 'no table for a profile seen once');
    // The second use starts the table; these run while it is built.
    const during = await Promise.all([decode(a), decode(a, 2), decode(a), decode(a, 2)]);
    during.forEach((image, i) => same(image, `while the table is built (${i})`));
    const deadline = Date.now() + 20_000;
    while (tables() < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.is(tables(), 1, 'the table was built');
    same(await decode(a), 'from the table');
    same(await decode(a, 2), 'from the table, two threads');
    // libvips' sRGB: converted (to the same bytes) until its table is filled, then known to change nothing,
    // and no table kept for it.
    const srgb = withIcc(photo, (await sharpSrgbProfile())!);
    const plain = await decodeImage(srgb, { ...viaSharp, maxSize: 500 });
    const filled = jpegModule!.colourTables().filled;
    for (let i = 0; i < 2; i++) assert.ok((await decode(srgb)).data.equals(plain.data));
    const by = Date.now() + 20_000;
    while (jpegModule!.colourTables().filled === filled && Date.now() < by) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.is(jpegModule!.colourTables().filled, filled + 1, "sRGB's table filled");
    assert.is(tables(), 1, 'and not kept');
    assert.ok((await decode(srgb, 2)).data.equals(plain.data));
    // At most two at once: two more profiles seen twice, one table more.
    for (const gamma of [2.15, 2.25]) for (let i = 0; i < 2; i++) await decode(tagged(gamma));
    const until = Date.now() + 20_000;
    while (tables() < 2 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.is(tables(), 2, 'two tables, no more');
    const c = tagged(2.25);
    const fromLcms = await decode(c);
    assert.ok(fromLcms.data.equals((await decodeImage(c, { ...viaSharp, maxSize: 500 })).data));
  },
);

icc(
  'colourTables: 0 keeps no table (Little CMS converts every time), set process-wide by the detector',
  async () => {
    const photo = await encoded((s) => s.jpeg());
    const tagged = (gamma: number) => withIcc(photo, iccProfile('RGB ', gamma, WIDE_COLORANTS));
    // Eight profiles used once push the earlier ones (and their tables) out of the addon's cache.
    for (let i = 0; i < 8; i++) await decodeImage(tagged(1.5 + i / 100), native);
    // A profile of its own, seen four times.
    const jpeg = tagged(1.9);
    const expected = await decodeImage(jpeg, viaSharp);
    const filled = jpegModule!.colourTables().filled;
    const d = await FaceDetector.create({ model: requireModel(MOBILENET_DIR), colourTables: 0, warmup: [] });
    try {
      for (let i = 0; i < 3; i++) assert.ok((await decodeImage(jpeg, native)).data.equals(expected.data));
      assert.type((await d.detect(jpeg)).faces_count, 'number');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assert.is(jpegModule!.colourTables().filled, filled, 'no table filled');
    } finally {
      await d.dispose();
      jpegModule!.setColourTables(2);
    }
    // Back at 2: the same profile's next JPEG starts its table.
    assert.ok((await decodeImage(jpeg, native)).data.equals(expected.data));
    const deadline = Date.now() + 20_000;
    while (jpegModule!.colourTables().filled === filled && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.is(jpegModule!.colourTables().filled, filled + 1);
  },
);

icc('a lower colourTables frees the tables beyond it, the least recently used first', async () => {
  const tables = () => jpegModule!.colourTables().tables;
  const filled = () => jpegModule!.colourTables().filled;
  const photo = await encoded((s) => s.jpeg());
  const tagged = (gamma: number) => withIcc(photo, iccProfile('RGB ', gamma, WIDE_COLORANTS));
  const settle = async (done: () => boolean) => {
    const deadline = Date.now() + 20_000;
    while (!done() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  };
  for (let i = 0; i < 8; i++) await decodeImage(tagged(1.6 + i / 100), native);
  assert.is(tables(), 0);
  const [a, b] = [tagged(2.35), tagged(2.45)];
  try {
    for (const jpeg of [b, a]) for (let i = 0; i < 2; i++) await decodeImage(jpeg, native);
    await settle(() => tables() === 2);
    assert.is(tables(), 2);
    await decodeImage(a, native); // a: the most recently used
    jpegModule!.setColourTables(1);
    assert.is(tables(), 1, "b's table freed at once");
    jpegModule!.setColourTables(2);
    const before = filled();
    for (let i = 0; i < 2; i++) await decodeImage(a, native);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.is(filled(), before, 'a kept its table');
    for (let i = 0; i < 2; i++) await decodeImage(b, native);
    await settle(() => tables() === 2);
    assert.is(filled(), before + 1, "b's table built anew");
    jpegModule!.setColourTables(0);
    assert.is(tables(), 0, 'none at 0');
  } finally {
    jpegModule!.setColourTables(2);
  }
});

icc('the conversion is checked against sharp once before JPEGs with a profile are given to it', async () => {
  const srgb = await sharpSrgbProfile();
  assert.ok((await colourProfileFor(decodeJpeg!))?.equals(srgb!), 'the check passes on this machine');
  // A decoder whose conversion is one level off somewhere, and one that does not convert.
  const offByOne: JpegDecoder = async (input, output, width, height, scale, threads, profile) => {
    const outcome = await decodeJpeg!(input, output, width, height, scale, threads, profile);
    if (profile) output[output.length >> 1]! ^= 1;
    return outcome;
  };
  const without: JpegDecoder = (input, output, width, height, scale, threads) =>
    decodeJpeg!(input, output, width, height, scale, threads, undefined);
  const p3 = await encoded((s) => s.withIccProfile('p3').jpeg());
  const expected = await decodeImage(p3, viaSharp);
  for (const decoder of [offByOne, without]) {
    assert.is(await colourProfileFor(decoder), undefined);
    const image = await decodeImage(p3, { ...native, jpeg: decoder });
    assert.is(image.decodedBy, undefined, 'left to sharp');
    assert.ok(image.data.equals(expected.data));
  }
});

const detector = suite('jpeg fast path: in the detector');

detector('both CPU engines decode plain JPEGs with it (resized or not), the rest with sharp', async () => {
  for (const backend of ['torch', 'onnxruntime'] as const) {
    const decoders: string[] = [];
    const d = await FaceDetector.create({
      model: requireModel(MOBILENET_DIR),
      backend,
      warmup: [],
      onBatch: (stats) => decoders.push(...stats.decoders),
    });
    try {
      assert.match(d.info().jpegDecoder, /^libjpeg-turbo \d+\.\d+\.\d+$/);
      const photo = fs.readFileSync(path.join(FIXTURES, 'seed-images', 'diverse_group.jpg'));
      const plain = await d.detect(photo);
      const fromFile = await d.detect(path.join(FIXTURES, 'seed-images', 'diverse_group.jpg'));
      const resized = await d.detect(photo, { maxSize: 800 });
      const shrunk = await d.detect(photo, { maxSize: 320 });
      // withMetadata gives it libvips' sRGB profile too, and the P3 one a conversion to make.
      const rotated = await d.detect(await sharp(photo).withMetadata({ orientation: 3 }).jpeg().toBuffer());
      const p3 = await d.detect(await sharp(photo).withIccProfile('p3').jpeg().toBuffer());
      const png = await d.detect(await sharp(photo).png().toBuffer());
      assert.equal(decoders, [...Array(6).fill('libjpeg-turbo'), 'sharp'], backend);
      for (const result of [plain, fromFile, resized, shrunk, rotated, p3, png]) {
        assert.ok(!Array.isArray(result) && result.faces_count > 0);
      }
    } finally {
      await d.dispose();
    }
  }
});

detector(
  'an image alone is decoded on two threads, images together on one each, threads: 1 on one',
  async () => {
    const photo = path.join(FIXTURES, 'seed-images', 'diverse_group.jpg');
    const jpeg = await sharp(photo).resize(2400, 1600, { fit: 'cover' }).jpeg({ quality: 90 }).toBuffer();
    for (const threads of [2, 1]) {
      const d = await FaceDetector.create({
        model: requireModel(MOBILENET_DIR),
        backend: 'torch',
        threads,
        warmup: [],
      });
      try {
        let alone = false;
        for (let i = 0; i < 10 && !alone; i++) alone = await sawJpegThread(() => d.detect(jpeg));
        assert.is(alone, threads === 2, `threads ${threads}: a second thread for an image alone`);
        const together = await sawJpegThread(() => d.detect([jpeg, jpeg, jpeg, jpeg]));
        assert.not.ok(together, `threads ${threads}: a second thread for images decoded together`);
      } finally {
        await d.dispose();
      }
    }
  },
);

detector(
  'decoded-pixel buffers reused from image to image: concurrent detections give what one at a time give',
  async () => {
    const d = await FaceDetector.create({ model: requireModel(MOBILENET_DIR), backend: 'torch', warmup: [] });
    try {
      // Six different photos of one size, so that each decode can take a buffer another image has left.
      const dir = path.join(FIXTURES, 'wider-val');
      const files = fixtureJpegs()
        .filter((f) => f.startsWith(dir))
        .slice(0, 6);
      assert.is(files.length, 6);
      const jpegs = await Promise.all(
        files.map((f) => sharp(f).resize(1280, 720, { fit: 'cover' }).jpeg({ quality: 90 }).toBuffer()),
      );
      const one: ImageResult[] = [];
      for (const jpeg of jpegs) one.push((await d.detect(jpeg, { maxSize: 800 })) as ImageResult);
      for (let round = 0; round < 3; round++) {
        const all = await Promise.all(jpegs.map((jpeg) => d.detect(jpeg, { maxSize: 800 })));
        assert.equal(all, one, `round ${round}`);
      }
      assert.ok(one.some((r) => r.faces_count > 0));
    } finally {
      await d.dispose();
    }
  },
);

pixels.run();
threads.run();
declines.run();
icc.run();
detector.run();
