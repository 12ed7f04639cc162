#!/usr/bin/env python3
"""PyTorch reference detections for the WIDER FACE evaluation of facedet-native.

Runs the eager PyTorch RetinaFace (scripts/retinaface_model.py) with the NumPy reference pre- and
post-processing (scripts/retinaface_ref.py) on every image of a fixture gt.json and writes

    {"model": {...}, "settings": {...}, "gt": "<gt.json>",
     "images": [{"path": "<as in gt.json>", "size_wh": [W, H], "scale_xy": [sx, sy],
                 "detections": [[x1, y1, x2, y2, score], ...]}]}

with boxes in ORIGINAL image pixels (network-input boxes divided by the resize scale per axis),
sorted by score (descending). src/eval/run.ts reads this file to report reference APs next to ours.

    /usr/bin/python3 scripts/eval_reference.py --model-dir models/retinaface-mobilenet0.25 \\
        --weights ../shared/models/retinaface-mobilenet0.25/RetinaFace_mobilenet025.pth \\
        --gt ../shared/fixtures/wider-val-416/gt.json --max-size 0 --out eval-results/reference.json

Defaults are the standard WIDER FACE evaluation settings of RetinaFace: threshold 0.02, NMS IoU 0.4,
top-k 5000 before NMS, keep-top-k 750 after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPT_DIR)


class EvalReferenceError(Exception):
    pass


def read_card(model_dir: str) -> dict:
    card_path = os.path.join(model_dir, 'model.json')
    if not os.path.isfile(card_path):
        raise EvalReferenceError(f'no model card: {card_path} (export the model first)')
    with open(card_path, 'r', encoding='utf-8') as f:
        card = json.load(f)
    if card.get('backbone') not in ('mobilenet0.25', 'resnet50'):
        raise EvalReferenceError(f'{card_path}: unknown backbone {card.get("backbone")!r}')
    if card.get('synthetic'):
        raise EvalReferenceError(
            f'{card_path}: this model has synthetic weights (speed work only, it detects nothing); '
            'an accuracy evaluation needs a model exported from real weights'
        )
    return card


def resolve_weights(card: dict, model_dir: str, weights: str | None) -> str:
    import retinaface_model as rm

    if weights is None:
        name = (card.get('weights') or {}).get('file')
        recorded = (card.get('weights') or {}).get('path')
        candidate = os.path.join(model_dir, name) if name else None
        if (not candidate or not os.path.isfile(candidate)) and recorded and os.path.isfile(recorded):
            candidate = recorded
        if not candidate or not os.path.isfile(candidate):
            raise EvalReferenceError(
                '--weights FILE is required (the .pth checkpoint the model was exported from'
                + (f', {name}' if name else '')
                + ')'
            )
        weights = candidate
    if not os.path.isfile(weights):
        raise EvalReferenceError(f'weights file not found: {weights}')
    expected = (card.get('weights') or {}).get('sha256')
    if expected:
        actual = rm.sha256_file(weights)
        if actual != expected:
            raise EvalReferenceError(
                f'{weights} has sha256 {actual}, but the model in the model folder was exported from {expected}'
            )
    return weights


def read_gt(path: str) -> list:
    with open(path, 'r', encoding='utf-8') as f:
        doc = json.load(f)
    images = doc.get('images') if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise EvalReferenceError(f'{path}: expected {{"images": [...]}}')
    return images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model-dir', required=True, help='model folder with model.json (backbone, weights hash)')
    parser.add_argument('--weights', help='PyTorch checkpoint (.pth) the model was exported from')
    parser.add_argument('--gt', required=True, help='fixture gt.json (image paths are relative to it)')
    parser.add_argument('--max-size', type=int, default=0, help='longer side at most this, never upscale; 0 = original')
    parser.add_argument('--threshold', type=float, default=0.02)
    parser.add_argument('--nms', type=float, default=0.4)
    parser.add_argument('--top-k', type=int, default=5000)
    parser.add_argument('--keep-top-k', type=int, default=750)
    parser.add_argument('--limit', type=int, default=0, help='only the first N images (0 = all)')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads (default 2)')
    parser.add_argument('--out', required=True, help='output JSON file')
    args = parser.parse_args(argv)

    try:
        card = read_card(args.model_dir)
        weights = resolve_weights(card, args.model_dir, args.weights)
        images = read_gt(args.gt)
    except EvalReferenceError as exc:
        print(f'eval_reference: {exc}', file=sys.stderr)
        return 2
    if args.limit > 0:
        images = images[: args.limit]

    import torch

    import retinaface_model as rm
    import retinaface_ref as ref

    torch.set_num_threads(max(1, args.threads))
    model = rm.load_weights(rm.build_model(card['backbone']), weights)

    root = os.path.dirname(os.path.abspath(args.gt))
    out_images = []
    started = time.time()
    for n, image in enumerate(images):
        rel = image['path']
        rgb, (sx, sy) = ref.load_image_rgb(os.path.join(root, rel), args.max_size)
        faces = ref.detect(
            model,
            rgb,
            conf_threshold=args.threshold,
            nms_iou=args.nms,
            top_k=args.top_k,
            keep_top_k=args.keep_top_k,
        )
        dets = [
            [f['box'][0] / sx, f['box'][1] / sy, f['box'][2] / sx, f['box'][3] / sy, f['score']] for f in faces
        ]
        h, w = rgb.shape[:2]
        out_images.append(
            {
                'path': rel,
                'size_wh': [int(round(w / sx)), int(round(h / sy))],
                'scale_xy': [sx, sy],
                'detections': dets,
            }
        )
        if (n + 1) % 20 == 0 or n + 1 == len(images):
            print(f'  {n + 1}/{len(images)} images, {time.time() - started:.1f} s', file=sys.stderr)

    doc = {
        'model': {
            'dir': os.path.abspath(args.model_dir),
            'name': card.get('name'),
            'backbone': card['backbone'],
            'weights': os.path.abspath(weights),
            'weights_sha256': (card.get('weights') or {}).get('sha256'),
        },
        'settings': {
            'max_size': args.max_size,
            'threshold': args.threshold,
            'nms': args.nms,
            'top_k': args.top_k,
            'keep_top_k': args.keep_top_k,
            'torch': torch.__version__,
            'threads': torch.get_num_threads(),
        },
        'gt': os.path.abspath(args.gt),
        'images': out_images,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w', encoding='utf-8') as f:
        json.dump(doc, f)
        f.write('\n')
    total = sum(len(i['detections']) for i in out_images)
    print(f'eval_reference: {len(out_images)} images, {total} detections -> {args.out}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
