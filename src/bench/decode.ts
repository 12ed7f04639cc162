// SPDX-License-Identifier: MIT
// npm run bench:decode: the JPEG fast path (on one thread, and on two as for an image decoded alone)
// against sharp on the images a server sees (a 512² crop, a 1920x1080 frame, photos of 6 and 12 MP, one
// of them rotated by its EXIF orientation, two with the ICC profiles phones and sharp write), each decoded
// and resized as the library decodes it, the three alternating in one process, with their pixels compared.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { loadJpegBinding, nativeJpegDecoder } from '../native';
import { type DecodeOptions, type DecodedImage, type JpegDecoder, decodeImage } from '../preprocess';
import { replaceReadmeSection } from '../readme';
import { benchImage, defaultSourceImage } from './images';
import { machineFacts } from './machine';
import { type Summary, fmtMs, summarize } from './stats';

export interface DecodeCase {
  width: number;
  height: number;
  /** EXIF orientation written into the JPEG (1: none). */
  orientation: number;
  /** The library's maxSize (0: kept at full size). */
  maxSize: number;
  /**
   * An ICC profile the JPEG carries, libvips' own (its pixels converted to it by sharp): 'p3' (Display
   * P3, what phones write), 'srgb' (what sharp's withMetadata writes: no colour changes).
   */
  icc?: 'p3' | 'srgb';
}

export const DECODE_CASES: DecodeCase[] = [
  { width: 512, height: 512, orientation: 1, maxSize: 0 },
  { width: 1920, height: 1080, orientation: 1, maxSize: 1080 },
  { width: 3000, height: 2000, orientation: 1, maxSize: 1080 },
  { width: 4032, height: 3024, orientation: 1, maxSize: 1080 },
  { width: 4032, height: 3024, orientation: 6, maxSize: 1080 },
  { width: 1920, height: 1080, orientation: 1, maxSize: 1080, icc: 'p3' },
  { width: 4032, height: 3024, orientation: 1, maxSize: 1080, icc: 'p3' },
  { width: 1920, height: 1080, orientation: 1, maxSize: 1080, icc: 'srgb' },
];

export interface DecodeRow extends DecodeCase {
  bytes: number;
  decodedWidth: number;
  decodedHeight: number;
  fastPath: Summary;
  /** The fast path with two threads (DecodeOptions.jpegThreads 2: what the detector gives a lone image). */
  fastPathTwoThreads: Summary;
  sharp: Summary;
  /** All three decoded the same pixels. */
  samePixels: boolean;
  /** Whether the fast path took the image (else both columns are sharp). */
  native: boolean;
}

export interface DecodeReport {
  date: string;
  machine: ReturnType<typeof machineFacts>;
  runs: number;
  image: string;
  rows: DecodeRow[];
}

/**
 * `image` as a JPEG with this EXIF orientation and no ICC profile (sharp's withMetadata would add one;
 * its withExif writes orientation 1 here, so the tag's value is set afterwards).
 */
export async function orientedJpeg(
  image: sharp.Sharp,
  orientation: number,
  quality: number,
): Promise<Buffer> {
  const jpeg = await image
    .withExif({ IFD0: { Orientation: '1', Copyright: 'facedet' } })
    .jpeg({ quality })
    .toBuffer();
  // libexif writes the tag little-endian: 0x0112, SHORT, count 1, then the value.
  const entry = jpeg.indexOf(Buffer.from([0x12, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00]));
  if (entry < 0) throw new Error('no orientation entry in the EXIF sharp wrote');
  jpeg[entry + 8] = orientation;
  return jpeg;
}

/** `jpeg` re-encoded with an EXIF orientation (as it is when that is 1). */
async function withOrientation(jpeg: Buffer, orientation: number): Promise<Buffer> {
  if (orientation === 1) return jpeg;
  const { data, info } = await sharp(jpeg).raw().toBuffer({ resolveWithObject: true });
  const raw = { width: info.width, height: info.height, channels: info.channels };
  return orientedJpeg(sharp(data, { raw }), orientation, 90);
}

/**
 * A process's second JPEG with a profile has the addon fill the table of all its colours' conversions on
 * a thread of its own (native/icc.h; one that changes no colour, libvips' sRGB, is then known to be the
 * identity): decode this one twice and wait (up to 10 s) for the table, so the timed runs are those of a
 * server that has seen the profile before. Nothing to wait for where a table was already filled.
 */
async function settleColourTable(jpeg: Buffer, maxSize: number, decode: JpegDecoder): Promise<void> {
  const tables = () => loadJpegBinding()?.colourTables().filled ?? 0;
  const before = tables();
  for (let i = 0; i < 2; i++) await decodeImage(jpeg, { maxSize, maxPixels: 2 ** 40, jpeg: decode });
  const deadline = Date.now() + 10_000;
  while (tables() === before && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export async function runDecodeBench(options: {
  cases?: DecodeCase[];
  runs?: number;
  log?: (line: string) => void;
}): Promise<DecodeReport> {
  const decoder = nativeJpegDecoder();
  if (!decoder) throw new Error('the JPEG fast path was not built (CMake found no libjpeg-turbo)');
  const runs = options.runs ?? 30;
  const source = defaultSourceImage();
  const rows: DecodeRow[] = [];
  for (const c of options.cases ?? DECODE_CASES) {
    let jpeg = await withOrientation((await benchImage(source, c.width, c.height)).jpeg, c.orientation);
    if (c.icc) {
      jpeg = await sharp(jpeg).withIccProfile(c.icc).jpeg({ quality: 90 }).toBuffer();
      await settleColourTable(jpeg, c.maxSize, decoder.decode);
    }
    // As the detector decodes: the fast path into a buffer kept from the image before.
    let spare: Buffer | undefined;
    let spareTwo: Buffer | undefined;
    const fast = { maxSize: c.maxSize, maxPixels: 2 ** 40, jpeg: decoder.decode, reuse: () => spare };
    const two = { ...fast, reuse: () => spareTwo, jpegThreads: 2 as const };
    const slow = { maxSize: c.maxSize, maxPixels: 2 ** 40 };
    const times = { fast: [] as number[], two: [] as number[], slow: [] as number[] };
    let a: DecodedImage | undefined;
    let a2: DecodedImage | undefined;
    let b: DecodedImage | undefined;
    const timed = async (options: DecodeOptions, into: number[], i: number) => {
      const t0 = performance.now();
      const image = await decodeImage(jpeg, options);
      if (i >= 5) into.push(performance.now() - t0);
      return image;
    };
    for (let i = 0; i < runs + 5; i++) {
      a = await timed(fast, times.fast, i);
      spare = a.data;
      a2 = await timed(two, times.two, i);
      spareTwo = a2.data;
      b = await timed(slow, times.slow, i);
    }
    const row: DecodeRow = {
      ...c,
      bytes: jpeg.length,
      decodedWidth: a!.width,
      decodedHeight: a!.height,
      fastPath: summarize(times.fast),
      fastPathTwoThreads: summarize(times.two),
      sharp: summarize(times.slow),
      samePixels:
        a!.width === b!.width &&
        a!.height === b!.height &&
        a!.data.equals(b!.data) &&
        a2!.data.equals(b!.data),
      native: a!.decodedBy === 'libjpeg-turbo',
    };
    options.log?.(
      `${c.width}x${c.height} (orientation ${c.orientation}): fast path ${fmtMs(row.fastPath.median)} ms, ` +
        `on two threads ${fmtMs(row.fastPathTwoThreads.median)} ms, sharp ${fmtMs(row.sharp.median)} ms`,
    );
    rows.push(row);
  }
  return {
    date: new Date().toISOString(),
    machine: machineFacts({
      libtorch: null,
      jpeg: decoder.name.replace(/^libjpeg-turbo /, ''),
      ...(decoder.lcms ? { lcms: decoder.lcms } : {}),
      onnxruntime: null,
      python: null,
    }),
    runs,
    image: source ? path.basename(source) : 'gaussian noise (no fixture photo found)',
    rows,
  };
}

export function decodeMarkdown(report: DecodeReport): string {
  const m = report.machine;
  const ms = (s: Summary) => `${fmtMs(s.median)} [${fmtMs(s.min)}–${fmtMs(s.max)}]`;
  const lines = [
    `**JPEG decoding: the fast path against sharp** — ${report.date.slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `**Machine:** ${m.cpu} (${m.cpus} CPUs), Node ${m.node}; sharp ${m.sharp} / libvips ${m.libvips}; ` +
      `libjpeg-turbo ${m.jpeg}${m.lcms ? ` and Little CMS ${m.lcms}` : ''} (the JPEG fast path). **Images:** ${report.image}, cropped and resized to ` +
      'each size, JPEG q90. Each decoded as the library decodes it (`decodeImage`: to the max size, EXIF ' +
      "orientation applied), one at a time on libuv's pool, the fast path into the buffer of the image " +
      'before (as the detector decodes), on one thread (as under load) and on two (as the detector decodes ' +
      'an image alone: libjpeg-turbo entropy-decodes a sequential JPEG on the second), alternating with ' +
      `sharp: ms per image, median [min–max] of ${report.runs} runs each, after 5 untimed. JPEGs with ` +
      "an ICC profile: timed once the fast path's table of the profile's conversions is filled (from a " +
      "process's second JPEG with it; before, Little CMS converts each pixel, libvips' sRGB too: ≈ 7 ms " +
      'more for a 1920×1080 JPEG).',
    '',
    '| image | EXIF orientation | ICC profile | max size | decoded to | fast path | fast path, 2 threads | sharp | ' +
      'sharp ÷ fast path | sharp ÷ fast path, 2 threads | same pixels |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...report.rows.map(
      (r) =>
        `| ${r.width}×${r.height}, ${(r.bytes / 1024).toFixed(0)} KiB | ${r.orientation} | ` +
        `${r.icc === 'p3' ? "libvips' P3" : r.icc === 'srgb' ? "libvips' sRGB" : 'none'} | ${r.maxSize || 'none'} | ` +
        `${r.decodedWidth}×${r.decodedHeight} | ${r.native ? ms(r.fastPath) : 'declined: sharp'} | ` +
        `${r.native ? ms(r.fastPathTwoThreads) : 'declined: sharp'} | ${ms(r.sharp)} | ` +
        `${(r.sharp.median / r.fastPath.median).toFixed(2)}× | ` +
        `${(r.sharp.median / r.fastPathTwoThreads.median).toFixed(2)}× | ${r.samePixels ? 'yes' : 'NO'} |`,
    ),
  ];
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string' },
      readme: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('Usage: npm run bench:decode -- [--runs N] [--out FILE] [--readme FILE]\n');
    return 0;
  }
  const report = await runDecodeBench({
    runs: Number(values.runs ?? 30),
    log: (line) => process.stderr.write(`[bench:decode] ${line}\n`),
  });
  const stamp = report.date.replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const file = values.out ?? path.join(process.cwd(), 'bench-results', `decode-${stamp}.json`);
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(report, null, 1) + '\n');
  if (values.readme) replaceReadmeSection(values.readme, 'decode', decodeMarkdown(report));
  process.stdout.write(decodeMarkdown(report) + `\n\nJSON: ${path.relative(process.cwd(), file)}\n`);
  return report.rows.every((r) => r.samePixels) ? 0 : 1;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (error: unknown) => {
      process.stderr.write(`bench:decode: ${(error as Error).stack ?? String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
