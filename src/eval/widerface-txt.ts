// SPDX-License-Identifier: MIT
// Per-image detection files in the official WIDER FACE submission format ("widerface_txt"), which the
// official evaluation (wider_eval.m, evaluation.py) reads:
//   <dir>/<event>/<name>.txt
//     line 1: image name without extension
//     line 2: number of detections
//     then one "x y w h score" line per detection (pixels of the original image).
// We write full-precision numbers (the biubug6 test_widerface.py script truncates boxes to integers).
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Detection } from './widerface';

export interface TxtImage {
  event: string;
  /** Image name without extension. */
  name: string;
  /** [x1, y1, x2, y2, score]. */
  detections: readonly Detection[];
}

function safeSegment(s: string, what: string): string {
  if (s === '' || s === '.' || s === '..' || /[\\/\0]/.test(s)) {
    throw new TypeError(`Expected a plain file name for ${what} but received ${s} of type ${typeof s}`);
  }
  return s;
}

/** The text of one result file. */
export function formatWiderFaceTxt(name: string, detections: readonly Detection[]): string {
  const lines = [name, String(detections.length)];
  for (const d of detections) {
    const x = d[0] as number;
    const y = d[1] as number;
    lines.push(`${x} ${y} ${(d[2] as number) - x} ${(d[3] as number) - y} ${d[4] as number}`);
  }
  return lines.join('\n') + '\n';
}

/** Writes <dir>/<event>/<name>.txt for every image; returns the files written. */
export function writeWiderFaceTxt(dir: string, images: readonly TxtImage[]): string[] {
  const files: string[] = [];
  for (const image of images) {
    const eventDir = path.join(dir, safeSegment(image.event, 'event'));
    mkdirSync(eventDir, { recursive: true });
    const file = path.join(eventDir, `${safeSegment(image.name, 'name')}.txt`);
    writeFileSync(file, formatWiderFaceTxt(image.name, image.detections));
    files.push(file);
  }
  return files;
}

/** Parses one result file into its name and [x1, y1, x2, y2, score] detections. */
export function parseWiderFaceTxt(
  text: string,
  where = 'result file',
): { name: string; detections: number[][] } {
  const lines = text.split(/\r?\n/);
  const name = (lines[0] ?? '').trim().split('/').pop() ?? '';
  const count = Number((lines[1] ?? '').trim());
  if (!Number.isInteger(count) || count < 0)
    throw new Error(`${where}: line 2 must be the number of detections`);
  const detections: number[][] = [];
  for (let i = 2; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    const v = line.split(/\s+/).slice(0, 5).map(Number);
    if (v.length < 5 || !v.every(Number.isFinite))
      throw new Error(`${where}: line ${i + 1} is not "x y w h score"`);
    const [x, y, w, h, s] = v as [number, number, number, number, number];
    detections.push([x, y, x + w, y + h, s]);
  }
  if (detections.length !== count) {
    throw new Error(`${where}: says ${count} detections but lists ${detections.length}`);
  }
  return { name, detections };
}

/** Reads a widerface_txt folder: a map from '<event>/<name>' to detections [x1, y1, x2, y2, score]. */
export function readWiderFaceTxt(dir: string): Map<string, number[][]> {
  const out = new Map<string, number[][]>();
  for (const event of readdirSync(dir, { withFileTypes: true })) {
    if (!event.isDirectory()) continue;
    for (const entry of readdirSync(path.join(dir, event.name), { withFileTypes: true })) {
      if (!entry.isFile() || !entry.name.endsWith('.txt')) continue;
      const file = path.join(dir, event.name, entry.name);
      const { detections } = parseWiderFaceTxt(readFileSync(file, 'utf8'), file);
      out.set(`${event.name}/${entry.name.slice(0, -4)}`, detections);
    }
  }
  return out;
}
