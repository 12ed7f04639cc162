#!/usr/bin/env python3
"""PyTorch baseline for `facedet bench` (src/bench/): the same RetinaFace network in EAGER PyTorch, with
pre- and post-processing written the way the original Python project (after biubug6/Pytorch_Retinaface's
detect.py) does it. Our own code; the point is to time that style, not to be fast:

  whole path, per batch of B images (one JPEG, decoded B times):
    PIL decode from bytes -> convert('RGB') -> PIL resize to the target size (bilinear)
    -> np.float32 HWC, RGB -> BGR, minus the mean (104, 117, 123) -> transpose to CHW -> stack
    -> torch.from_numpy -> eager model under torch.no_grad()
    -> per image: prior boxes built in a Python loop (itertools.product, normalised to the image size,
       as the original PriorBox), decode ALL anchors with torch ops, scale to pixels, .numpy(),
       threshold 0.5, argsort, top-k 5000, py_cpu_nms (IoU 0.4, "+1" pixel areas), keep-top-k 750,
       faces as Python dicts (the original's JSON result)
  network only: the eager model on a prepared input tensor of the same batch.

Runs as a server for the Node benchmark, one JSON request per stdin line, one JSON reply per stdout line,
so that Node can interleave its own timings with these in the same run:

  {"op": "load", "key": K, "backbone": "mobilenet0.25"|"resnet50", "weights": PATH|null,
   "synthetic": bool, "threads": N}                          -> {"ok": true, "versions": {...}}
  {"op": "image", "key": K, "path": JPEG}                    -> {"ok": true, "bytes": n}
  {"op": "run", "model": K, "image": K, "mode": "net"|"whole", "size": S, "batch": B}
                                                              -> {"ok": true, "ms": t, "faces": n}
  {"op": "quit"}
Errors: {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from itertools import product
from math import ceil

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPT_DIR)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

CFG = {
    'min_sizes': [[16, 32], [64, 128], [256, 512]],
    'steps': [8, 16, 32],
    'variance': [0.1, 0.2],
}
MEAN_BGR = (104, 117, 123)
CONFIDENCE = 0.5
NMS_IOU = 0.4
TOP_K = 5000
KEEP_TOP_K = 750
LANDMARKS = ('left_eye', 'right_eye', 'nose', 'left_mouth', 'right_mouth')


class PriorBox:
    """Anchors normalised to the image size, built element by element in Python (the original's way)."""

    def __init__(self, image_size):
        self.image_size = image_size
        self.feature_maps = [[ceil(image_size[0] / s), ceil(image_size[1] / s)] for s in CFG['steps']]

    def forward(self):
        anchors = []
        for k, f in enumerate(self.feature_maps):
            step = CFG['steps'][k]
            for i, j in product(range(f[0]), range(f[1])):
                for min_size in CFG['min_sizes'][k]:
                    s_kx = min_size / self.image_size[1]
                    s_ky = min_size / self.image_size[0]
                    cx = (j + 0.5) * step / self.image_size[1]
                    cy = (i + 0.5) * step / self.image_size[0]
                    anchors += [cx, cy, s_kx, s_ky]
        return torch.Tensor(anchors).view(-1, 4)


def decode(loc, priors, variances):
    boxes = torch.cat(
        (
            priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
            priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1]),
        ),
        1,
    )
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def decode_landm(pre, priors, variances):
    return torch.cat(
        [priors[:, :2] + pre[:, 2 * k : 2 * k + 2] * variances[0] * priors[:, 2:] for k in range(5)],
        dim=1,
    )


def py_cpu_nms(dets, thresh):
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def preprocess(jpeg: bytes, size: int):
    im = Image.open(io.BytesIO(jpeg)).convert('RGB')
    resample = getattr(Image, 'Resampling', Image).BILINEAR
    im = im.resize((size, size), resample)
    img = np.float32(np.asarray(im))[:, :, ::-1]  # RGB -> BGR, as cv2.imread gives
    img -= MEAN_BGR
    return img.transpose(2, 0, 1)


def postprocess(loc, conf, landms, height: int, width: int):
    priors = PriorBox((height, width)).forward()
    scale = torch.Tensor([width, height, width, height])
    boxes = decode(loc, priors, CFG['variance']) * scale
    boxes = boxes.numpy()
    scores = conf[:, 1].numpy()
    landms = decode_landm(landms, priors, CFG['variance'])
    landms = (landms * torch.Tensor([width, height] * 5)).numpy()
    inds = np.where(scores > CONFIDENCE)[0]
    boxes, landms, scores = boxes[inds], landms[inds], scores[inds]
    order = scores.argsort()[::-1][:TOP_K]
    boxes, landms, scores = boxes[order], landms[order], scores[order]
    dets = np.hstack((boxes, scores[:, np.newaxis])).astype(np.float32, copy=False)
    keep = py_cpu_nms(dets, NMS_IOU)
    dets, landms = dets[keep][:KEEP_TOP_K], landms[keep][:KEEP_TOP_K]
    return [
        {
            'bounding_box': [float(v) for v in d[:4]],
            'confidence': float(d[4]),
            'landmarks': [
                {'type': LANDMARKS[k], 'position': [float(lm[2 * k]), float(lm[2 * k + 1])]} for k in range(5)
            ],
        }
        for d, lm in zip(dets, landms)
    ]


class Bench:
    def __init__(self) -> None:
        self.models = {}
        self.images = {}
        self.inputs = {}

    def load(self, req):
        import retinaface_model as rm

        torch.set_num_threads(int(req['threads']))
        if req.get('synthetic'):
            model = rm.build_synthetic_model(req['backbone'], seed=0)
        else:
            if not req.get('weights') or not os.path.isfile(req['weights']):
                raise ValueError(f'weights file not found: {req.get("weights")}')
            model = rm.load_weights(rm.build_model(req['backbone']), req['weights'])
        self.models[req['key']] = model.eval()
        import PIL

        return {
            'versions': {
                'python': sys.version.split()[0],
                'torch': torch.__version__,
                'numpy': np.__version__,
                'pillow': PIL.__version__,
                'threads': torch.get_num_threads(),
                'mkldnn': bool(torch.backends.mkldnn.is_available()),
            }
        }

    def image(self, req):
        with open(req['path'], 'rb') as f:
            self.images[req['key']] = f.read()
        return {'bytes': len(self.images[req['key']])}

    def run(self, req):
        model = self.models[req['model']]
        jpeg = self.images[req['image']]
        size, batch = int(req['size']), int(req['batch'])
        if req['mode'] == 'net':
            key = (req['image'], size, batch)
            if key not in self.inputs:
                self.inputs.clear()
                self.inputs[key] = torch.from_numpy(np.stack([preprocess(jpeg, size)] * batch))
            x = self.inputs[key]
            t0 = time.perf_counter()
            with torch.no_grad():
                model(x)
            return {'ms': (time.perf_counter() - t0) * 1000, 'faces': None}
        t0 = time.perf_counter()
        x = torch.from_numpy(np.stack([preprocess(jpeg, size) for _ in range(batch)]))
        with torch.no_grad():
            loc, conf, landms = model(x)
        faces = 0
        for b in range(batch):
            faces += len(postprocess(loc[b], conf[b], landms[b], x.shape[2], x.shape[3]))
        return {'ms': (time.perf_counter() - t0) * 1000, 'faces': faces / batch}


def main() -> int:
    bench = Bench()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            op = req.get('op')
            if op == 'quit':
                break
            handler = {'load': bench.load, 'image': bench.image, 'run': bench.run}.get(op)
            if handler is None:
                raise ValueError(f'unknown op {op!r}')
            reply = {'ok': True, **handler(req)}
        except Exception as exc:  # reported to the Node side, which decides
            reply = {'ok': False, 'error': f'{type(exc).__name__}: {exc}'}
        sys.stdout.write(json.dumps(reply) + '\n')
        sys.stdout.flush()
    return 0


if __name__ == '__main__':
    sys.exit(main())
