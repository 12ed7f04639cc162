// SPDX-License-Identifier: MIT
export { FaceDetector } from './detector';
export type {
  BatchTimings,
  DetectOptions,
  DetectorInfo,
  FaceDetectorOptions,
  ImageError,
  ImageResult,
} from './detector';
export { FacedetError, OverloadedError } from './errors';
export type { ErrorCode } from './errors';
export type { Face, Landmark, LandmarkType } from './postprocess';
export { LANDMARK_TYPES } from './postprocess';
export type { ImageInput } from './preprocess';
export type { ModelCard } from './model';
export { defaultModelDir, readModel } from './model';
