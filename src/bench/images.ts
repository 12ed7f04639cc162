// SPDX-License-Identifier: MIT
// Benchmark images: a real photo with faces, cropped and resized to width x height and encoded as JPEG.
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';

const packageRoot = path.resolve(__dirname, '..', '..');

/** The photo the benchmark images are cut from: a group of faces from the project's fixtures. */
export function defaultSourceImage(): string | undefined {
  const candidates = [
    path.resolve(packageRoot, '..', 'shared', 'fixtures', 'seed-images', 'diverse_group.jpg'),
    path.resolve(process.cwd(), '..', 'shared', 'fixtures', 'seed-images', 'diverse_group.jpg'),
  ];
  return candidates.find((file) => fs.existsSync(file));
}

export interface BenchImage {
  jpeg: Buffer;
  width: number;
  height: number;
  source: string;
}

/**
 * `source` cropped to the aspect ratio (centre) and resized (bilinear-ish, sharp's default) to
 * width x height, sRGB JPEG quality 90; without a source, a noise image of that size.
 */
export async function benchImage(
  source: string | undefined,
  width: number,
  height = width,
): Promise<BenchImage> {
  const base = source
    ? sharp(source).rotate().resize(width, height, { fit: 'cover' })
    : sharp({
        create: {
          width,
          height,
          channels: 3,
          background: '#808080',
          noise: { type: 'gaussian', mean: 128, sigma: 40 },
        },
      });
  const jpeg = await base.toColourspace('srgb').jpeg({ quality: 90 }).toBuffer();
  return {
    jpeg,
    width,
    height,
    source: source ? path.basename(source) : 'gaussian noise (no fixture photo found)',
  };
}
