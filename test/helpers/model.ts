// The models the setup exported (scripts/setup.sh, .ci/run); tests fail, not skip, when one is missing.
import fs from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import type { InferenceEngine, Shape4 } from '../../src/engine';

const root = path.resolve(__dirname, '..', '..');

export const MOBILENET_DIR =
  process.env.FACEDET_TEST_MODEL ?? path.join(root, 'models', 'retinaface-mobilenet0.25');
export const RESNET50_SYNTHETIC_DIR =
  process.env.FACEDET_TEST_MODEL_R50 ?? path.join(root, 'models', 'retinaface-resnet50-synthetic');
export const FIXTURES = path.resolve(root, '..', 'shared', 'fixtures');

export function requireModel(dir: string): string {
  if (!fs.existsSync(path.join(dir, 'model.json'))) {
    throw new Error(`test model missing at ${dir}: run \`npm run setup\` (or see .ci/run) to export it`);
  }
  return dir;
}

export interface Tensor {
  data: Float32Array;
  shape: number[];
}

function readFloats(file: string): Float32Array {
  const bytes = fs.readFileSync(file);
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return new Float32Array(copy.buffer);
}

/** The fixed input and PyTorch's outputs written by the export script (reference/raw.json). */
export function rawReference(dir: string): Record<'input' | 'loc' | 'conf' | 'landmarks', Tensor> {
  const refDir = path.join(requireModel(dir), 'reference');
  const meta = JSON.parse(fs.readFileSync(path.join(refDir, 'raw.json'), 'utf8')) as Record<
    string,
    { file: string; shape: number[] }
  >;
  const load = (key: string): Tensor => ({
    data: readFloats(path.join(refDir, meta[key]!.file)),
    shape: meta[key]!.shape,
  });
  return { input: load('input'), loc: load('loc'), conf: load('conf'), landmarks: load('landmarks') };
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** A deterministic image-like network input of `shape` (BGR minus mean: integers in -117..138). */
export function imageLikeInput(shape: readonly number[], seed = 7): Float32Array {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let state = seed;
  for (let i = 0; i < data.length; i++) {
    state = (state * 1103515245 + 12345) >>> 0;
    data[i] = (state >>> 24) - 117;
  }
  return data;
}

/**
 * ResNet50 with SYNTHETIC weights in a reduced precision: on a [2, 3, 160, 224] image-like input the
 * outputs have fp32's shapes, and its silent heads still score no face (< 0.01).
 */
export async function assertSilentLikeFp32(
  reduced: InferenceEngine,
  fp32: InferenceEngine,
  seed = 7,
): Promise<void> {
  const shape: Shape4 = [2, 3, 160, 224];
  const input = imageLikeInput(shape, seed);
  const got = await reduced.infer(input, shape);
  const want = await fp32.infer(input, shape);
  assert.equal(got.shapes, want.shapes);
  let top = 0;
  for (let i = 1; i < got.conf.length; i += 2) top = Math.max(top, got.conf[i]!);
  assert.ok(top < 0.01, `highest face score ${top}`);
}
