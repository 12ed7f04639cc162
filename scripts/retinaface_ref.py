"""Straightforward NumPy reference of the RetinaFace pre- and post-processing used by facedet-native.

The TypeScript pipeline (src/) implements the same steps; this module is the oracle its tests compare
against (through the reference files written by export_model.py). Exact conventions:

Image loading (load_image_rgb)
    PIL open -> first frame -> ImageOps.exif_transpose -> convert('RGB'); if max(w, h) > max_size > 0,
    resize to (round(w*s), round(h*s)) with s = max_size / max(w, h) (PIL bilinear); never upscale.

Network input (to_input_tensor)
    RGB HWC uint8 -> BGR, float32, minus mean (104, 117, 123), NCHW; then zero-padded (zero in the
    normalised space, i.e. the mean colour) at the bottom and right up to the next multiple of
    `pad_multiple` (32) in both H and W.

Anchors (prior_boxes) -- PIXEL units of the padded network input, float64, rows [cx, cy, w, h]
    For step, sizes in ((8, (16, 32)), (16, (64, 128)), (32, (256, 512))):
        for i in range(ceil(H/step)): for j in range(ceil(W/step)): for s in sizes:
            [(j + 0.5) * step, (i + 0.5) * step, s, s]
    (Upstream RetinaFace normalises these by W/H and multiplies back after decoding; in pixels the
    result is the same up to rounding.)  No clipping.

Decoding (decode, decode_landm), float64, variances v0 = 0.1, v1 = 0.2, evaluated left to right:
    cx = p_cx + loc0 * v0 * p_w          cy = p_cy + loc1 * v0 * p_h
    w  = p_w * exp(loc2 * v1)            h  = p_h * exp(loc3 * v1)
    x1 = cx - w / 2    y1 = cy - h / 2    x2 = x1 + w    y2 = y1 + h
    landmark k: (p_cx + lm[2k] * v0 * p_w, p_cy + lm[2k+1] * v0 * p_h)

Selection (postprocess)
    score = conf[:, 1] (float32 value, compared as float64); keep score > threshold (strict);
    sort by score descending, ties by ascending anchor index (stable sort); first top_k (5000);
    greedy NMS; first keep_top_k (750).

NMS (py_cpu_nms), float64, NO "+1" pixel convention:
    area = (x2 - x1) * (y2 - y1)
    inter = max(0, min(x2a, x2b) - max(x1a, x1b)) * max(0, min(y2a, y2b) - max(y1a, y1b))
    iou = inter / (area_a + area_b - inter)   (0 when that union is <= 0)
    walk the score-sorted list; keep the first remaining box, drop every later box with iou > thresh
    (strictly greater; iou == thresh is kept).
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

MEAN_BGR = (104.0, 117.0, 123.0)
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
LANDMARK_NAMES = ('left_eye', 'right_eye', 'nose', 'left_mouth', 'right_mouth')


# --------------------------------------------------------------------------------------------------
# Images and input tensors
# --------------------------------------------------------------------------------------------------


def load_image_rgb(path: str, max_size: int = 1080) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Decode an image file to RGB uint8 HWC, downscaled to fit max_size (0 or less: no limit).

    Returns (pixels, (scale_x, scale_y)) where scale = new size / original (EXIF-rotated) size, so an
    x coordinate in the returned image maps back to the original as x / scale_x.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        try:
            im.seek(0)  # first frame of animated GIF/WebP/TIFF
        except EOFError:
            pass
        im.load()
        im = ImageOps.exif_transpose(im)
        im = im.convert('RGB')
    w, h = im.size
    sx = sy = 1.0
    if max_size > 0 and max(w, h) > max_size:
        s = max_size / max(w, h)
        nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
        resample = getattr(Image, 'Resampling', Image).BILINEAR
        im = im.resize((nw, nh), resample)
        sx, sy = nw / w, nh / h
    return np.asarray(im, dtype=np.uint8).copy(), (sx, sy)


IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif')


def find_images(root: str) -> List[str]:
    """Image files below `root` (jpg, jpeg, png, gif), in a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return found


def padded_size(height: int, width: int, pad_multiple: int = 32) -> Tuple[int, int]:
    if pad_multiple <= 1:
        return height, width
    return (
        int(math.ceil(height / pad_multiple)) * pad_multiple,
        int(math.ceil(width / pad_multiple)) * pad_multiple,
    )


def to_input_tensor(rgb_uint8_hwc: np.ndarray, pad_multiple: int = 32) -> np.ndarray:
    """RGB HWC uint8 -> float32 [1, 3, Hp, Wp] BGR minus mean, zero-padded bottom/right to pad_multiple."""
    img = np.asarray(rgb_uint8_hwc)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected uint8 HxWx3 RGB, got {img.dtype} {img.shape}')
    h, w = img.shape[:2]
    hp, wp = padded_size(h, w, pad_multiple)
    out = np.zeros((1, 3, hp, wp), dtype=np.float32)
    for c_out, c_in in enumerate((2, 1, 0)):  # B, G, R
        out[0, c_out, :h, :w] = img[:, :, c_in].astype(np.float32) - np.float32(MEAN_BGR[c_out])
    return out


# --------------------------------------------------------------------------------------------------
# Anchors, decoding, NMS
# --------------------------------------------------------------------------------------------------


def feature_sizes(height: int, width: int) -> List[Tuple[int, int]]:
    return [(int(math.ceil(height / s)), int(math.ceil(width / s))) for s in STEPS]


def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors for a network input of height x width, in PIXELS: float64 [A, 4] rows (cx, cy, w, h)."""
    levels = []
    for step, sizes, (fh, fw) in zip(STEPS, MIN_SIZES, feature_sizes(height, width)):
        cy, cx = np.meshgrid(
            (np.arange(fh, dtype=np.float64) + 0.5) * step,
            (np.arange(fw, dtype=np.float64) + 0.5) * step,
            indexing='ij',
        )
        per_size = [
            np.stack([cx, cy, np.full_like(cx, s), np.full_like(cx, s)], axis=-1) for s in sizes
        ]  # each [fh, fw, 4]
        levels.append(np.stack(per_size, axis=2).reshape(-1, 4))  # row-major cells, sizes innermost
    return np.concatenate(levels, axis=0)


def decode(loc: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES) -> np.ndarray:
    """Box offsets [A, 4] + anchors [A, 4] (cx, cy, w, h) -> boxes [A, 4] (x1, y1, x2, y2), float64."""
    loc = np.asarray(loc, dtype=np.float64)
    p = np.asarray(priors, dtype=np.float64)
    v0, v1 = float(variances[0]), float(variances[1])
    cx = p[:, 0] + loc[:, 0] * v0 * p[:, 2]
    cy = p[:, 1] + loc[:, 1] * v0 * p[:, 3]
    w = p[:, 2] * np.exp(loc[:, 2] * v1)
    h = p[:, 3] * np.exp(loc[:, 3] * v1)
    x1 = cx - w / 2
    y1 = cy - h / 2
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1)


def decode_landm(
    landm: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES
) -> np.ndarray:
    """Landmark offsets [A, 10] -> points [A, 10] (x0, y0, ..., x4, y4), float64."""
    lm = np.asarray(landm, dtype=np.float64).reshape(-1, 5, 2)
    p = np.asarray(priors, dtype=np.float64)
    v0 = float(variances[0])
    xs = p[:, None, 0] + lm[:, :, 0] * v0 * p[:, None, 2]
    ys = p[:, None, 1] + lm[:, :, 1] * v0 * p[:, None, 3]
    return np.stack([xs, ys], axis=-1).reshape(-1, 10)


def py_cpu_nms(dets: np.ndarray, thresh: float) -> List[int]:
    """Greedy NMS over dets [K, 5] (x1, y1, x2, y2, score) ALREADY sorted by the caller's order.

    Returns indices into dets. No +1 in widths; a box is dropped when IoU > thresh.
    """
    dets = np.asarray(dets, dtype=np.float64)
    if dets.shape[0] == 0:
        return []
    x1, y1, x2, y2 = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.arange(dets.shape[0])
    keep: List[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        with np.errstate(divide='ignore', invalid='ignore'):
            iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= thresh]
    return keep


# --------------------------------------------------------------------------------------------------
# Full pipeline
# --------------------------------------------------------------------------------------------------


def run_model(model, rgb_uint8_hwc: np.ndarray, pad_multiple: int = 32) -> Dict[str, np.ndarray]:
    """Eager forward pass on the padded input. Returns loc/conf/landmarks [A, *] (float32) for batch
    element 0, and the padded network input size."""
    import torch

    x = to_input_tensor(rgb_uint8_hwc, pad_multiple)
    with torch.no_grad():
        loc, conf, landm = model(torch.from_numpy(x))
    return {
        'loc': loc[0].numpy(),
        'conf': conf[0].numpy(),
        'landmarks': landm[0].numpy(),
        'height': np.int64(x.shape[2]),
        'width': np.int64(x.shape[3]),
    }


def postprocess(
    loc: np.ndarray,
    conf: np.ndarray,
    landmarks: np.ndarray,
    height: int,
    width: int,
    conf_threshold: float = 0.5,
    nms_iou: float = 0.4,
    top_k: int = 5000,
    keep_top_k: int = 750,
) -> List[dict]:
    """Raw outputs of one image (network input height x width) -> faces sorted by score descending."""
    priors = prior_boxes(int(height), int(width))
    if priors.shape[0] != loc.shape[0]:
        raise ValueError(f'model produced {loc.shape[0]} anchors, expected {priors.shape[0]}')
    scores = np.asarray(conf, dtype=np.float32)[:, 1].astype(np.float64)
    idx = np.nonzero(scores > conf_threshold)[0]
    idx = idx[np.argsort(-scores[idx], kind='stable')][:top_k]
    boxes = decode(loc[idx], priors[idx])
    points = decode_landm(landmarks[idx], priors[idx])
    dets = np.concatenate([boxes, scores[idx, None]], axis=1)
    keep = py_cpu_nms(dets, nms_iou)[:keep_top_k]
    faces = []
    for k in keep:
        faces.append(
            {
                'box': [float(v) for v in boxes[k]],
                'score': float(scores[idx[k]]),
                'landmarks': [[float(points[k, 2 * n]), float(points[k, 2 * n + 1])] for n in range(5)],
            }
        )
    return faces


def detect(
    model,
    rgb_uint8_hwc: np.ndarray,
    conf_threshold: float = 0.5,
    nms_iou: float = 0.4,
    top_k: int = 5000,
    keep_top_k: int = 750,
) -> List[dict]:
    """Faces {box [x1, y1, x2, y2], score, landmarks [[x, y] x 5]} in network-input pixel coordinates
    (the coordinates of rgb_uint8_hwc; no clipping to the image)."""
    raw = run_model(model, rgb_uint8_hwc)
    return postprocess(
        raw['loc'],
        raw['conf'],
        raw['landmarks'],
        int(raw['height']),
        int(raw['width']),
        conf_threshold=conf_threshold,
        nms_iou=nms_iou,
        top_k=top_k,
        keep_top_k=keep_top_k,
    )
