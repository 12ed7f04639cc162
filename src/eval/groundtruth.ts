// SPDX-License-Identifier: MIT
// WIDER FACE ground truth loaders:
//  - our fixture `gt.json` (wider-val/, wider-val-416/): {note?, images: [{path, event?, boxes,
//    easy_keep, medium_keep, hard_keep, boxes_orig?, orig_size_wh?, scale_xy?}]}, paths relative to the json;
//  - the official layout: wider_face_val.mat (event_list, file_list, face_bbx_list) and
//    wider_{easy,medium,hard}_val.mat (gt_list) in one folder, images in <images>/<event>/<name>.jpg.
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { MatFileError, matCells, matRows, matString, matValues, readMat5 } from './mat5';
import { type EvalImage, SUBSETS, type Subset } from './widerface';

export interface GroundTruthImage extends EvalImage {
  /** The image as the ground truth lists it, relative to `GroundTruth.root` (the matching key). */
  path: string;
  /** Absolute path of the image file. */
  file: string;
  /** Event folder, e.g. '0--Parade'. */
  event: string;
  /** File name without extension (the name the official per-image result files use). */
  name: string;
  boxes: number[][];
  keep: Record<Subset, number[]>;
  /** wider-val-416 layout: the official boxes for the original image, and its size and the stretch. */
  boxesOrig?: number[][];
  origSizeWh?: [number, number];
  scaleXy?: [number, number];
}

export interface GroundTruth {
  /** The gt.json file, or the folder of the .mat files. */
  source: string;
  layout: 'json' | 'mat';
  /** Folder the image paths are relative to. */
  root: string;
  note?: string;
  images: GroundTruthImage[];
}

export class GroundTruthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GroundTruthError';
  }
}

/** Images of the full official WIDER FACE validation set. */
export const WIDER_VAL_IMAGES = 3226;

function isBox(v: unknown): v is number[] {
  return Array.isArray(v) && v.length === 4 && v.every((x) => typeof x === 'number' && Number.isFinite(x));
}

function boxList(v: unknown, where: string): number[][] {
  if (!Array.isArray(v) || !v.every(isBox)) {
    throw new GroundTruthError(`${where} must be an array of [x, y, w, h] boxes of finite numbers`);
  }
  return v.map((b) => b.slice());
}

function keepList(v: unknown, boxes: number, where: string): number[] {
  if (!Array.isArray(v) || !v.every((k) => Number.isInteger(k) && k >= 1 && k <= boxes)) {
    throw new GroundTruthError(`${where} must be an array of 1-based box indices between 1 and ${boxes}`);
  }
  return (v as number[]).slice();
}

function pair(v: unknown, where: string): [number, number] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new GroundTruthError(`${where} must be a pair of finite numbers`);
  }
  return [v[0] as number, v[1] as number];
}

function nameOf(p: string): string {
  const base = p.split(/[\\/]/).pop() ?? p;
  const dot = base.lastIndexOf('.');
  return dot > 0 ? base.slice(0, dot) : base;
}

/**
 * Reads a fixture-style `gt.json` (a file, or a folder that contains gt.json). Boxes may be in the
 * original-image layout (wider-val/) or the stretched layout (wider-val-416/, with boxes_orig,
 * orig_size_wh and scale_xy kept alongside).
 */
export function loadGroundTruthJson(file: string): GroundTruth {
  let source = path.resolve(file);
  if (existsSync(source) && statSync(source).isDirectory()) source = path.join(source, 'gt.json');
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(source, 'utf8'));
  } catch (err) {
    throw new GroundTruthError(`cannot read ground truth ${source}: ${(err as Error).message}`);
  }
  const images = (doc as { images?: unknown })?.images;
  if (!Array.isArray(images)) throw new GroundTruthError(`${source}: expected {"images": [...]}`);
  const root = path.dirname(source);
  const seen = new Set<string>();
  const out = images.map((raw: Record<string, unknown>, i): GroundTruthImage => {
    const where = `${source}: images[${i}]`;
    if (raw === null || typeof raw !== 'object') throw new GroundTruthError(`${where} must be an object`);
    const rel = raw.path;
    if (typeof rel !== 'string' || rel === '') throw new GroundTruthError(`${where}.path must be a string`);
    if (seen.has(rel)) throw new GroundTruthError(`${where}.path ${rel} is listed twice`);
    seen.add(rel);
    const boxes = boxList(raw.boxes, `${where}.boxes`);
    const keep = {} as Record<Subset, number[]>;
    for (const subset of SUBSETS)
      keep[subset] = keepList(raw[`${subset}_keep`], boxes.length, `${where}.${subset}_keep`);
    const parts = rel.split(/[\\/]/);
    const event = typeof raw.event === 'string' ? raw.event : (parts[parts.length - 2] ?? '');
    const image: GroundTruthImage = {
      path: rel,
      file: path.resolve(root, rel),
      event,
      name: nameOf(rel),
      boxes,
      keep,
    };
    if (raw.boxes_orig !== undefined) {
      image.boxesOrig = boxList(raw.boxes_orig, `${where}.boxes_orig`);
      if (image.boxesOrig.length !== boxes.length) {
        throw new GroundTruthError(`${where}.boxes_orig must have as many boxes as boxes`);
      }
    }
    const size = pair(raw.orig_size_wh, `${where}.orig_size_wh`);
    if (size) image.origSizeWh = size;
    const scale = pair(raw.scale_xy, `${where}.scale_xy`);
    if (scale) image.scaleXy = scale;
    return image;
  });
  const note = (doc as { note?: unknown }).note;
  return { source, layout: 'json', root, ...(typeof note === 'string' ? { note } : {}), images: out };
}

export interface WiderMatLayout {
  /** Folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat (the official eval_tools/ground_truth). */
  gtDir: string;
  /** Folder with the <event>/<name>.jpg images (WIDER_val/images; WIDER_val itself is accepted too). */
  imagesDir: string;
}

/** Reads the official WIDER FACE validation ground truth (.mat files). */
export function loadGroundTruthMat(layout: WiderMatLayout): GroundTruth {
  const gtDir = path.resolve(layout.gtDir);
  let root = path.resolve(layout.imagesDir);
  if (existsSync(path.join(root, 'images')) && !existsSync(path.join(root, '0--Parade'))) {
    root = path.join(root, 'images');
  }
  const read = (file: string) => {
    const full = path.join(gtDir, file);
    if (!existsSync(full)) throw new GroundTruthError(`official ground truth file not found: ${full}`);
    return { vars: readMat5(full), full };
  };
  const main = read('wider_face_val.mat');
  const where = (name: string) => `${main.full}: ${name}`;
  try {
    const events = matCells(main.vars.get('event_list'), where('event_list'));
    const files = matCells(main.vars.get('file_list'), where('file_list'));
    const boxLists = matCells(main.vars.get('face_bbx_list'), where('face_bbx_list'));
    if (files.length !== events.length || boxLists.length !== events.length) {
      throw new GroundTruthError(`${main.full}: event_list, file_list and face_bbx_list differ in length`);
    }
    const keepLists = {} as Record<Subset, { cells: ReturnType<typeof matCells>; full: string }>;
    for (const subset of SUBSETS) {
      const m = read(`wider_${subset}_val.mat`);
      const cells = matCells(m.vars.get('gt_list'), `${m.full}: gt_list`);
      if (cells.length !== events.length) {
        throw new GroundTruthError(
          `${m.full}: gt_list has ${cells.length} events, expected ${events.length}`,
        );
      }
      keepLists[subset] = { cells, full: m.full };
    }
    const images: GroundTruthImage[] = [];
    events.forEach((ev, e) => {
      const event = matString(ev, where(`event_list{${e + 1}}`));
      const names = matCells(files[e], where(`file_list{${e + 1}}`));
      const boxCells = matCells(boxLists[e], where(`face_bbx_list{${e + 1}}`));
      if (boxCells.length !== names.length) {
        throw new GroundTruthError(
          `${where(`face_bbx_list{${e + 1}}`)} has ${boxCells.length} images, expected ${names.length}`,
        );
      }
      const subsetCells = {} as Record<Subset, ReturnType<typeof matCells>>;
      for (const subset of SUBSETS) {
        const { cells, full } = keepLists[subset];
        subsetCells[subset] = matCells(cells[e], `${full}: gt_list{${e + 1}}`);
        if (subsetCells[subset].length !== names.length) {
          throw new GroundTruthError(
            `${full}: gt_list{${e + 1}} has ${subsetCells[subset].length} images, expected ${names.length}`,
          );
        }
      }
      names.forEach((n, j) => {
        const name = matString(n, where(`file_list{${e + 1}}{${j + 1}}`));
        const boxWhere = where(`face_bbx_list{${e + 1}}{${j + 1}}`);
        const rows = matRows(boxCells[j], boxWhere);
        const boxes = boxList(rows.length === 0 ? [] : rows, boxWhere);
        const keep = {} as Record<Subset, number[]>;
        for (const subset of SUBSETS) {
          const kw = `${keepLists[subset].full}: gt_list{${e + 1}}{${j + 1}}`;
          keep[subset] = keepList(matValues(subsetCells[subset][j], kw), boxes.length, kw);
        }
        const rel = `${event}/${name}.jpg`;
        images.push({ path: rel, file: path.join(root, event, `${name}.jpg`), event, name, boxes, keep });
      });
    });
    return { source: gtDir, layout: 'mat', root, images };
  } catch (err) {
    if (err instanceof MatFileError) throw new GroundTruthError(err.message);
    throw err;
  }
}

/**
 * Loads ground truth: a string is a gt.json file (or a folder holding one); an object is the official
 * .mat layout.
 */
export function loadGroundTruth(source: string | WiderMatLayout): GroundTruth {
  return typeof source === 'string' ? loadGroundTruthJson(source) : loadGroundTruthMat(source);
}

/** Faces per subset over the whole ground truth. */
export function countFaces(gt: GroundTruth): Record<Subset, number> & { all: number } {
  const out = { easy: 0, medium: 0, hard: 0, all: 0 };
  for (const image of gt.images) {
    out.all += image.boxes.length;
    for (const subset of SUBSETS) out[subset] += image.keep[subset].length;
  }
  return out;
}
