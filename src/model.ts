// SPDX-License-Identifier: MIT
// Model folders written by `facedet export`: model.json (the card) beside the exported files.
import fs from 'node:fs';
import path from 'node:path';
import { FacedetError } from './errors';

export type Backbone = 'mobilenet0.25' | 'resnet50';

export interface ModelCard {
  format: number;
  name: string;
  backbone: Backbone;
  /** True when exported with --synthetic-weights: for speed work only, detects nothing. */
  synthetic: boolean;
  weights: { file: string | null; sha256: string | null };
  input: {
    color: 'BGR';
    mean: [number, number, number];
    std: [number, number, number];
    layout: 'NCHW';
    dtype: 'float32';
    pad_multiple: number;
  };
  anchors: { min_sizes: number[][]; steps: number[]; variances: [number, number]; clip: boolean };
  recommended_max_size: number;
  /** Floating-point operations of the convolutions per input pixel (multiply-add = 2; exporter-written). */
  conv_flops_per_pixel?: number;
  files: {
    torchscript: string;
    torchscript_int8?: string;
    onnx?: string | null;
    /** model.onnx with the preprocessing in the graph: uint8 NHWC RGB input (ONNX Runtime). */
    onnx_uint8?: string | null;
    /** Statically quantised int8 network for ONNX Runtime (QDQ; exported with --int8). */
    onnx_int8?: string | null;
    /** model.int8.onnx with the preprocessing in the graph (uint8 NHWC RGB input). */
    onnx_int8_uint8?: string | null;
  };
  /** Mixed precision for fp16 on CUDA: the first N convolutions stay float32 (written by the exporter). */
  fp16?: { float32_convolutions: number };
  landmarks: string[];
  exported_with?: Record<string, string>;
}

export interface ModelSource {
  dir: string;
  card: ModelCard;
}

export const DEFAULT_MODEL_NAME = 'retinaface-mobilenet0.25';
const packageRoot = path.resolve(__dirname, '..');

/** The model folder used when none is given: $FACEDET_MODEL, else the one the setup exported. */
export function defaultModelDir(): string {
  return process.env.FACEDET_MODEL || path.join(packageRoot, 'models', DEFAULT_MODEL_NAME);
}

const setupHint =
  'Run `npm run setup` in the facedet-native folder (it exports the default model), or export one with ' +
  '`facedet export --backbone mobilenet0.25 --weights RetinaFace_mobilenet025.pth --out DIR` and pass ' +
  '`model: DIR` (or set FACEDET_MODEL=DIR).';

/** Reads and checks a model folder's card. */
export function readModel(dir: string): ModelSource {
  const resolved = path.resolve(dir);
  const cardPath = path.join(resolved, 'model.json');
  if (!fs.existsSync(resolved)) {
    throw new FacedetError('model_not_found', `No model folder at ${resolved}. ${setupHint}`);
  }
  if (!fs.existsSync(cardPath)) {
    throw new FacedetError(
      'model_not_found',
      `${resolved} has no model.json: it is not an exported model. ${setupHint}`,
    );
  }
  let card: ModelCard;
  try {
    card = JSON.parse(fs.readFileSync(cardPath, 'utf8')) as ModelCard;
  } catch (error) {
    throw new FacedetError('model_invalid', `${cardPath} is not valid JSON: ${(error as Error).message}`);
  }
  const problems: string[] = [];
  if (card.format !== 1) problems.push(`format ${String(card.format)} (expected 1)`);
  if (card.backbone !== 'mobilenet0.25' && card.backbone !== 'resnet50') problems.push('backbone');
  if (!Array.isArray(card.input?.mean) || card.input.mean.length !== 3) problems.push('input.mean');
  if (!Array.isArray(card.anchors?.steps) || card.anchors.steps.length !== card.anchors.min_sizes?.length) {
    problems.push('anchors');
  }
  if (typeof card.files?.torchscript !== 'string') problems.push('files.torchscript');
  if (card.fp16 !== undefined) {
    const n = card.fp16?.float32_convolutions;
    if (!Number.isInteger(n) || n < 0) problems.push('fp16.float32_convolutions');
  }
  if (problems.length) {
    throw new FacedetError(
      'model_invalid',
      `${cardPath} is not a facedet model card (bad ${problems.join(', ')})`,
    );
  }
  return { dir: resolved, card };
}

/** The file a backend loads for a device and precision. */
export function modelFile(
  model: ModelSource,
  backend: 'torch' | 'tensorrt' | 'onnxruntime',
  device: string,
  precision: string,
): string {
  const { files } = model.card;
  let file: string | undefined;
  if (backend === 'onnxruntime' && precision === 'int8') file = files.onnx_int8 ?? undefined;
  else if (backend === 'tensorrt' || backend === 'onnxruntime') file = files.onnx ?? undefined;
  else if (precision === 'int8') file = files.torchscript_int8;
  else file = files.torchscript;
  if (!file && backend === 'torch' && precision === 'int8' && files.onnx_int8) {
    // ResNet50: LibTorch 1.13's oneDNN cannot run it in int8, so export writes only model.int8.onnx.
    throw new FacedetError(
      'model_not_found',
      `${model.dir} has no int8 TorchScript file for backend 'torch' (LibTorch cannot run this network in ` +
        `int8); its int8 model is ${files.onnx_int8}, for backend 'onnxruntime' (install onnxruntime-node)`,
    );
  }
  if (!file) {
    const what =
      backend === 'torch'
        ? `${precision} TorchScript file`
        : precision === 'int8'
          ? 'int8 ONNX file'
          : 'ONNX file';
    throw new FacedetError(
      'model_not_found',
      `${model.dir} has no ${what} for backend '${backend}' (model.json "files"); re-export the model` +
        (precision === 'int8' ? ' with --int8' : ''),
    );
  }
  const full = path.join(model.dir, file);
  if (!fs.existsSync(full)) {
    throw new FacedetError(
      'model_not_found',
      `${full} is missing (listed in model.json); re-export the model`,
    );
  }
  return full;
}

/**
 * The ONNX file the ONNX Runtime engine runs and the input it takes: model.u8.onnx (the preprocessing in
 * the graph, uint8 NHWC RGB input) when the card lists it and it exists, else model.onnx (float32 NCHW);
 * for precision 'int8', model.int8.u8.onnx or model.int8.onnx.
 */
export function onnxRuntimeModel(
  model: ModelSource,
  precision: 'fp32' | 'int8' = 'fp32',
): { modelPath: string; input: 'float32' | 'uint8' } {
  const { files } = model.card;
  const u8 = precision === 'int8' ? files.onnx_int8_uint8 : files.onnx_uint8;
  if (u8 && fs.existsSync(path.join(model.dir, u8))) {
    return { modelPath: path.join(model.dir, u8), input: 'uint8' };
  }
  return { modelPath: modelFile(model, 'onnxruntime', 'cpu', precision), input: 'float32' };
}
