#!/usr/bin/python3
"""Export a RetinaFace checkpoint to the artifacts facedet-native loads, plus reference outputs.

Usage:
  /usr/bin/python3 scripts/export_model.py --backbone {mobilenet0.25,resnet50}
      (--weights FILE | --synthetic-weights) --out DIR
      [--reference-images DIR ...] [--raw-image FILE] [--skip-onnx] [--opset N]
      [--int8 [--calibration-images DIR ...] [--calibration-sizes 1080,640] [--calibration-limit N]]

Writes into DIR: model.pt (scripted TorchScript, unfrozen: device- and dtype-portable; the addon freezes
it on load), model.onnx and model.u8.onnx (its preprocessing in the graph; unless --skip-onnx),
model.json (model card), reference/raw.json with raw_*.bin (fixed input and eager outputs), and with
--reference-images also reference/detections.json and reference/images/*.png. With --int8 also the
statically quantised networks for precision 'int8' on CPU, calibrated on photos (default: the
fixtures): model.int8.pt for LibTorch's oneDNN engine (MobileNet0.25 only; scripts/quantize_int8.py)
and model.int8.onnx / model.int8.u8.onnx for ONNX Runtime (scripts/quantize_onnx.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(SCRIPT_DIR)
sys.path.insert(0, SCRIPT_DIR)

DEFAULT_RAW_IMAGE = os.path.join(REPO_DIR, '..', 'shared', 'fixtures', 'seed-images', 'diverse_group.jpg')
RAW_SHAPE = (2, 3, 320, 256)  # batch, channels, height, width: not square, multiples of 32
MAX_SIZE = 1080
THRESHOLDS = (0.5, 0.02)
LOW_THRESHOLD_CAP = 200
NMS_IOU = 0.4
TOP_K = 5000
KEEP_TOP_K = 750
TOLERANCE = 1e-4  # TorchScript vs eager, absolute (see _save_verified)
# Backbones LibTorch 1.13's oneDNN runs in int8 (model.int8.pt); ResNet50's int8 convolutions fail when
# the input size changes (scripts/quantize_int8.py, shape_sweep), so --int8 writes only model.int8.onnx.
TORCH_INT8_BACKBONES = ('mobilenet0.25',)
TORCH_INT8_MISSING = (
    "LibTorch 1.13's oneDNN int8 convolutions fail on ResNet50 when the input size changes; "
    'model.int8.onnx (ONNX Runtime) is the int8 path for it'
)
NOISE_FACTOR = 4.0


class ExportError(Exception):
    """An expected failure: reported as one line on stderr, exit status 1."""


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def human_size(n: int) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024.0
    return str(n)


def write_json(path: str, obj, indent: Optional[int] = 1) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as fh:
        json.dump(obj, fh, indent=indent, allow_nan=False, separators=(',', ': ') if indent else (',', ':'))
        fh.write('\n')
    os.replace(tmp, path)


def max_abs_diff(a: Sequence, b: Sequence) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def remove_if_exists(path: str) -> None:
    if os.path.isfile(path) or os.path.islink(path):
        os.remove(path)


# --------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------


def make_model(args):
    import retinaface_model as rm

    if args.synthetic_weights:
        return rm.build_synthetic_model(args.backbone, seed=0), None
    if not os.path.isfile(args.weights):
        raise ExportError(f'weights file not found: {args.weights}')
    model = rm.build_model(args.backbone)
    try:
        rm.load_weights(model, args.weights)
    except rm.WeightsError as exc:
        raise ExportError(str(exc)) from None
    return model, rm.sha256_file(args.weights)


def raw_input_images(raw_image: Optional[str]):
    """Two deterministic 256x320 (WxH) RGB crops of a real photo; a seeded pattern if none is found."""
    import numpy as np
    from PIL import Image

    import retinaface_ref as ref

    height, width = RAW_SHAPE[2], RAW_SHAPE[3]
    path = raw_image or DEFAULT_RAW_IMAGE
    if not os.path.isfile(path):
        if raw_image:
            raise ExportError(f'raw input image not found: {raw_image}')
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base, 'RGB').resize((width, height), Image.NEAREST)
        first = np.asarray(img, dtype=np.uint8)
        return [first, np.ascontiguousarray(first[::-1, ::-1])], 'synthetic (seeded pattern)'
    try:
        pixels, _ = ref.load_image_rgb(path, max_size=0)
    except Exception as exc:
        raise ExportError(f'cannot read raw input image {path}: {exc}') from None
    src = Image.fromarray(pixels, 'RGB')
    w, h = src.size
    aspect = width / height
    # crop 1: centred, full height; crop 2: the left ~half, a little below the top (a closer view)
    cw = min(w, int(round(h * aspect)))
    box1 = ((w - cw) // 2, 0, (w - cw) // 2 + cw, h)
    cw2 = max(1, int(round(w * 0.48)))
    ch2 = min(h, int(round(cw2 / aspect)))
    y2 = min(int(round(h * 0.06)), h - ch2)
    box2 = (0, y2, cw2, y2 + ch2)
    resample = getattr(Image, 'Resampling', Image).BILINEAR
    crops = [np.asarray(src.crop(b).resize((width, height), resample), dtype=np.uint8) for b in (box1, box2)]
    return crops, os.path.relpath(os.path.abspath(path), REPO_DIR)


class _Check:
    """One verification input with its eager float32 outputs and, computed only when needed, the
    float32 rounding noise of eager itself (max |eager32 - eager64| per output)."""

    def __init__(self, model, label: str, x) -> None:
        self.model, self.label, self.x = model, label, x
        self.want = model(x)
        self._noise: Optional[List[float]] = None

    def noise(self) -> List[float]:
        if self._noise is None:
            import copy

            import torch

            with torch.no_grad():
                ref64 = copy.deepcopy(self.model).double()(self.x.double())
            self._noise = [float((w.double() - r).abs().max()) for w, r in zip(self.want, ref64)]
        return self._noise


def _save_verified(module, path: str, checks: List[_Check]) -> float:
    """Save `module`, load it back and compare with eager; returns the worst |diff|.

    Passes when every output is within TOLERANCE (1e-4) of eager, or else within NOISE_FACTOR times
    eager's own float32 rounding error (measured against a float64 eager run): deep random-weight
    ResNets reach ~5e-4 from BatchNorm folding alone, as much as eager float32 is off from float64.
    Raises ExportError on a mismatch and RuntimeError when the saved file cannot be loaded."""
    import torch

    tmp = path + '.tmp'
    try:
        torch.jit.save(module, tmp)
        loaded = torch.jit.load(tmp, map_location='cpu')
        worst = 0.0
        for check in checks:
            got = loaded(check.x)
            diffs = [float((g - w).abs().max()) for g, w in zip(got, check.want)]
            if any(not d <= TOLERANCE for d in diffs):
                limits = [max(TOLERANCE, NOISE_FACTOR * n) for n in check.noise()]
                bad = [
                    f'{name} {d:.3g} > {lim:.3g}'
                    for name, d, lim in zip(('loc', 'conf', 'landmarks'), diffs, limits)
                    if not d <= lim
                ]
                if bad:
                    raise ExportError(
                        f'{os.path.basename(path)}: TorchScript output differs from eager on the '
                        f'{check.label}: '
                        + ', '.join(bad)
                        + '; not written'
                    )
            worst = max(worst, *diffs)
    except BaseException:
        remove_if_exists(tmp)
        raise
    os.replace(tmp, path)
    return worst


def export_torchscript(model, x, out_dir: str) -> Dict[str, str]:
    """model.pt: scripted, unfrozen (weights as parameters), so the addon can move it to its device and
    dtype before freezing it. Checked against eager in the form the addon runs on CPU (frozen, fed
    channels-last input) before being written."""
    import torch

    check_x = torch.randn(1, 3, 100, 140, generator=torch.Generator().manual_seed(1)) * 50.0
    with torch.no_grad():
        checks = [_Check(model, 'reference input', x), _Check(model, '100x140 input', check_x)]
        scripted = torch.jit.script(model).eval()
        worst = _save_verified(scripted, os.path.join(out_dir, 'model.pt'), checks)
        frozen = torch.jit.freeze(torch.jit.load(os.path.join(out_dir, 'model.pt')).eval())
        for check in checks:
            got = frozen(check.x.contiguous(memory_format=torch.channels_last))
            worst = max(worst, *(float((g - w).abs().max()) for g, w in zip(got, check.want)))
        if not worst <= max(TOLERANCE, NOISE_FACTOR * max(max(c.noise()) for c in checks)):
            raise ExportError(f'model.pt: frozen channels-last output differs from eager by {worst:.3g}')
    return {'model.pt': f'scripted, unfrozen (frozen on load), max |diff| vs eager {worst:.2g}'}


def _onnx_depends_on_shape(graph, name: str) -> bool:
    producers = {out: node for node in graph.node for out in node.output}
    stack, seen = [name], set()
    while stack:
        cur = stack.pop()
        if cur in seen or not cur:
            continue
        seen.add(cur)
        node = producers.get(cur)
        if node is None:
            continue
        if node.op_type == 'Shape':
            return True
        stack.extend(node.input)
    return False


def onnx_runtime_model(model, x):
    """retinaface_model.for_onnx_runtime(model), checked to give eager's outputs on `x` (within 1e-4)."""
    import torch

    import retinaface_model as rm

    variant = rm.for_onnx_runtime(model)
    with torch.no_grad():
        diff = max(float((a - b).abs().max()) for a, b in zip(variant(x), model(x)))
    if not diff <= TOLERANCE:
        raise ExportError(f'model.onnx: the network as ONNX Runtime gets it differs from eager by {diff:.3g}')
    return variant


def export_onnx(model, x, path: str, opset: int) -> str:
    import onnx
    import torch

    tmp = path + '.tmp'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(
            model,
            (x,),
            tmp,
            opset_version=opset,
            input_names=['input'],
            output_names=['loc', 'conf', 'landmarks'],
            dynamic_axes={
                'input': {0: 'batch', 2: 'height', 3: 'width'},
                'loc': {0: 'batch', 1: 'anchors'},
                'conf': {0: 'batch', 1: 'anchors'},
                'landmarks': {0: 'batch', 1: 'anchors'},
            },
            do_constant_folding=True,
        )
    try:
        proto = onnx.load(tmp)
        onnx.checker.check_model(proto)
        graph = proto.graph
        dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        if dims != ['batch', 3, 'height', 'width']:
            raise ExportError(f'model.onnx: unexpected input dims {dims}')
        for out in graph.output:
            odims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
            if odims[:2] != ['batch', 'anchors']:
                raise ExportError(f'model.onnx: output {out.name} has static dims {odims}')
        resizes = [n for n in graph.node if n.op_type == 'Resize']
        if len(resizes) != 2:
            raise ExportError(f'model.onnx: expected 2 Resize nodes, found {len(resizes)}')
        for node in resizes:
            size_inputs = [i for i in list(node.input)[2:] if i]
            if not size_inputs or not all(_onnx_depends_on_shape(graph, i) for i in size_inputs):
                raise ExportError(f'model.onnx: Resize {node.name} has a fixed size/scale; graph not dynamic')
        for node in graph.node:
            if node.op_type == 'Reshape' and not _onnx_depends_on_shape(graph, node.input[1]):
                raise ExportError(f'model.onnx: Reshape {node.name} has a fixed target shape')
    except ExportError:
        os.remove(tmp)
        raise
    except Exception as exc:
        os.remove(tmp)
        raise ExportError(f'model.onnx failed the ONNX checker: {exc}') from None
    os.replace(tmp, path)
    return f'opset {opset}, {len(graph.node)} nodes, Resize sizes from Shape (dynamic H/W)'


def export_onnx_uint8(onnx_path: str, path: str) -> str:
    """model.u8.onnx: model.onnx with its preprocessing inside the graph, for ONNX Runtime. Input 'image':
    uint8 [batch, height, width, 3], RGB (sharp's raw output as it is); then NHWC -> NCHW and RGB -> BGR
    on the bytes, and one DequantizeLinear (scale 1, the mean as per-channel zero point) that gives
    float(pixel - mean): exactly what packBatch does in JS (so outputs are identical), done by ONNX
    Runtime's threads instead of a JS loop. Moving bytes before the float conversion, and converting and
    subtracting in one operator, took 0.25 ms off a run at 512x512 and at 1088x608 (MobileNet0.25, 2
    threads, in alternation with Cast, Transpose, Gather and Sub on floats; per-channel DequantizeLinear
    needs opset 13, which the dynamic Resize of model.onnx needs too). Padding must be the mean colour
    (RGB 123, 117, 104): it becomes 0, as the float path pads."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import retinaface_ref as ref

    proto = onnx.load(onnx_path)
    graph = proto.graph
    network_input = graph.input[0].name
    image = helper.make_tensor_value_info('image', TensorProto.UINT8, ['batch', 'height', 'width', 3])
    mean = [float(v) for v in ref.MEAN_BGR]
    if any(v != int(v) or not 0 <= v <= 255 for v in mean):
        raise ExportError(f'model.u8.onnx needs a mean of whole numbers in 0..255, not {mean}')
    graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), 'facedet_rgb_to_bgr'))
    nodes = [
        helper.make_node('Transpose', ['image'], ['facedet_image_nchw'], perm=[0, 3, 1, 2]),
        helper.make_node('Gather', ['facedet_image_nchw', 'facedet_rgb_to_bgr'], ['facedet_image_bgr'], axis=1),
    ]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(mean, dtype=np.uint8), 'facedet_mean_bgr'),
            numpy_helper.from_array(np.ones(3, dtype=np.float32), 'facedet_unit_scale'),
        ]
    )
    nodes.append(
        helper.make_node(
            'DequantizeLinear',
            ['facedet_image_bgr', 'facedet_unit_scale', 'facedet_mean_bgr'],
            [network_input],
            axis=1,
        )
    )
    del graph.input[0]
    graph.input.insert(0, image)
    for node in reversed(nodes):
        graph.node.insert(0, node)
    tmp = path + '.tmp'
    try:
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
    except Exception as exc:
        remove_if_exists(tmp)
        raise ExportError(f'model.u8.onnx failed the ONNX checker: {exc}') from None
    os.replace(tmp, path)
    return 'model.onnx with preprocessing in the graph: uint8 NHWC RGB input'


def calibration_sources(args) -> Tuple[list, List[int]]:
    """--int8's calibration photos (folders, or the fixtures) and sizes."""
    import quantize_int8 as q8
    import retinaface_ref as ref

    try:
        sizes = [int(v) for v in str(args.calibration_sizes).split(',') if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(v < 32 for v in sizes):
        raise ExportError(
            f'--calibration-sizes must be integers >= 32, e.g. 1080,640 (got {args.calibration_sizes})'
        )
    if args.calibration_images:
        sources = []
        for root in args.calibration_images:
            if not os.path.isdir(root):
                raise ExportError(f'calibration image folder not found: {root}')
            sources.append((os.path.abspath(root), ref.find_images(root)))
    else:
        sources = q8.default_calibration_sources(os.path.join(REPO_DIR, '..', 'shared', 'fixtures'))
        if not sources:
            raise ExportError('--int8 needs photos to calibrate on: pass --calibration-images DIR')
    return sources, sizes


def export_int8(args, model, raw_x, path: str) -> dict:
    """model.int8.pt (scripts/quantize_int8.py): calibrates, quantises, saves and checks it against float."""
    import quantize_int8 as q8

    sources, sizes = calibration_sources(args)
    try:
        return q8.export_int8(model, args.backbone, path, sources, sizes, args.calibration_limit, raw_x)
    except q8.Int8Error as exc:
        raise ExportError(f'model.int8.pt: {exc}') from None


def export_int8_onnx(args, model, raw_x, path: str, u8_path: str) -> dict:
    """model.int8.onnx and model.int8.u8.onnx (scripts/quantize_onnx.py), for ONNX Runtime."""
    import torch

    import quantize_int8 as q8
    import quantize_onnx as qo

    sources, sizes = calibration_sources(args)
    t0 = time.perf_counter()
    try:
        inputs, calibration = q8.calibration_inputs(sources, sizes, args.calibration_limit)
    except q8.Int8Error as exc:
        raise ExportError(f'model.int8.onnx: {exc}') from None
    t1 = time.perf_counter()
    gen = torch.Generator().manual_seed(3)
    checks = [
        ('reference input', raw_x),
        ('calibration input', inputs[0]),
        ('2x3x333x417 input', torch.rand(2, 3, 333, 417, generator=gen) * 255.0 - 117.0),
    ]
    try:
        info = qo.quantize(
            model, args.backbone, inputs, lambda net, out: export_onnx(net, raw_x, out, args.opset), path, checks
        )
    except (qo.QuantizeOnnxError, q8.Int8Error) as exc:
        raise ExportError(f'model.int8.onnx: {exc}') from None
    t2 = time.perf_counter()
    export_onnx_uint8(path, u8_path)
    info['calibration'] = calibration
    info['seconds'] = {'calibration_data': round(t1 - t0, 1), 'quantize_and_check': round(t2 - t1, 1)}
    return info


def model_card(args, model, weights_sha: Optional[str], onnx_written: bool, opset: int) -> dict:
    import torch

    import retinaface_ref as ref
    from retinaface_model import conv_flops_per_pixel, fp16_float32_convolutions

    return {
        'format': 1,
        'name': f'retinaface-{args.backbone}',
        'backbone': args.backbone,
        'synthetic': bool(args.synthetic_weights),
        'weights': {
            'file': None if args.synthetic_weights else os.path.basename(args.weights),
            # Where the weights were read from: the evaluation's PyTorch reference reloads them.
            'path': None if args.synthetic_weights else os.path.abspath(args.weights),
            'sha256': weights_sha,
        },
        'input': {
            'color': 'BGR',
            'mean': [int(v) for v in ref.MEAN_BGR],
            'std': [1, 1, 1],
            'layout': 'NCHW',
            'dtype': 'float32',
            'pad_multiple': 32,
        },
        'outputs': {'names': ['loc', 'conf', 'landmarks'], 'conf': 'softmax, index 1 = face'},
        'anchors': {
            'min_sizes': [list(s) for s in ref.MIN_SIZES],
            'steps': list(ref.STEPS),
            'variances': list(ref.VARIANCES),
            'clip': False,
        },
        'recommended_max_size': MAX_SIZE,
        'conv_flops_per_pixel': conv_flops_per_pixel(model),
        'files': {
            'torchscript': 'model.pt',
            'onnx': 'model.onnx' if onnx_written else None,
            'onnx_uint8': 'model.u8.onnx' if onnx_written else None,
        },
        'exported_with': {
            'torch': torch.__version__,
            'onnx_opset': opset if onnx_written else None,
        },
        'landmarks': list(ref.LANDMARK_NAMES),
        'fp16': {'float32_convolutions': fp16_float32_convolutions(model)},
    }


def write_raw_reference(model, ref_dir: str, inputs, source: str) -> Tuple[Dict[str, List[int]], object]:
    import numpy as np
    import torch

    import retinaface_ref as ref

    x = np.concatenate([ref.to_input_tensor(img) for img in inputs], axis=0)
    assert x.shape == RAW_SHAPE, x.shape
    with torch.no_grad():
        loc, conf, landm = model(torch.from_numpy(x))
    entries = {'input': x, 'loc': loc.numpy(), 'conf': conf.numpy(), 'landmarks': landm.numpy()}
    meta: Dict[str, object] = {'dtype': 'float32', 'byte_order': 'little', 'source': source}
    shapes = {}
    for key, arr in entries.items():
        name = 'raw_input.bin' if key == 'input' else f'raw_{key}.bin'
        np.ascontiguousarray(arr, dtype='<f4').tofile(os.path.join(ref_dir, name))
        meta[key] = {'file': name, 'shape': list(arr.shape)}
        shapes[key] = list(arr.shape)
    write_json(os.path.join(ref_dir, 'raw.json'), meta)
    return shapes, torch.from_numpy(x)




def write_detections(model, ref_dir: str, roots: List[str], card_name: str, synthetic: bool) -> List[dict]:
    from PIL import Image

    import retinaface_ref as ref

    img_dir = os.path.join(ref_dir, 'images')
    os.makedirs(img_dir, exist_ok=True)
    used_names: Dict[str, int] = {}
    records = []
    for root_index, root in enumerate(roots):
        for path in ref.find_images(root):
            rel = os.path.relpath(path, root).replace(os.sep, '/')
            try:
                pixels, (sx, sy) = ref.load_image_rgb(path, MAX_SIZE)
            except Exception as exc:
                raise ExportError(f'cannot read reference image {path}: {exc}') from None
            stem = os.path.splitext(os.path.basename(path))[0]
            count = used_names.get(stem, 0)
            used_names[stem] = count + 1
            png_name = f'{stem}.png' if count == 0 else f'{stem}-{count + 1}.png'
            # plain PNG: RGB, 8 bit, no metadata chunks
            Image.fromarray(pixels, 'RGB').save(os.path.join(img_dir, png_name), format='PNG')
            raw = ref.run_model(model, pixels)
            record = {
                'source': rel,
                'root': root_index,
                'png': f'images/{png_name}',
                'width': int(pixels.shape[1]),
                'height': int(pixels.shape[0]),
                'scale': [sx, sy],
                'input_width': int(raw['width']),
                'input_height': int(raw['height']),
            }
            for thr in THRESHOLDS:
                faces = ref.postprocess(
                    raw['loc'],
                    raw['conf'],
                    raw['landmarks'],
                    int(raw['height']),
                    int(raw['width']),
                    conf_threshold=thr,
                    nms_iou=NMS_IOU,
                    top_k=TOP_K,
                    keep_top_k=KEEP_TOP_K,
                )
                key = f'threshold_{thr}'
                if thr < 0.5:
                    record[f'{key}_total'] = len(faces)
                    faces = faces[:LOW_THRESHOLD_CAP]
                record[key] = faces
            records.append(record)
    doc = {
        'format': 1,
        'model': card_name,
        'synthetic': synthetic,
        'roots': roots,
        'max_size': MAX_SIZE,
        'pad_multiple': 32,
        'nms_iou': NMS_IOU,
        'top_k': TOP_K,
        'keep_top_k': KEEP_TOP_K,
        'thresholds': list(THRESHOLDS),
        'threshold_0.02_cap': LOW_THRESHOLD_CAP,
        'coordinates': 'pixels of the PNG (network input before padding), not clipped',
        'images': records,
    }
    write_json(os.path.join(ref_dir, 'detections.json'), doc, indent=None)
    return records


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='export_model.py', description='Export RetinaFace to TorchScript/ONNX with reference outputs.'
    )
    parser.add_argument('--backbone', required=True, choices=['mobilenet0.25', 'resnet50'])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--weights', metavar='FILE', help='checkpoint (.pth state dict)')
    src.add_argument(
        '--synthetic-weights',
        action='store_true',
        help='seeded random backbone with silent heads (resnet50 only; for speed work)',
    )
    parser.add_argument('--out', required=True, metavar='DIR')
    parser.add_argument(
        '--reference-images',
        action='append',
        default=[],
        metavar='DIR',
        help='folder of images (recursive) for reference/detections.json; repeatable',
    )
    parser.add_argument(
        '--raw-image',
        metavar='FILE',
        help='photo the raw reference input is cropped from '
        '(default: ../shared/fixtures/seed-images/diverse_group.jpg; a seeded pattern if absent)',
    )
    parser.add_argument('--skip-onnx', action='store_true')
    parser.add_argument('--opset', type=int, default=13)
    parser.add_argument(
        '--int8',
        action='store_true',
        help='also write the int8 networks: model.int8.pt (LibTorch oneDNN, MobileNet0.25) and model.int8.onnx '
        '(ONNX Runtime); static quantisation calibrated on photos',
    )
    parser.add_argument(
        '--calibration-images',
        action='append',
        default=[],
        metavar='DIR',
        help='--int8: folder of photos (recursive) to calibrate on; repeatable (default: '
        '../shared/fixtures seed-images, dlib-faces and the even half of wider-val-416)',
    )
    parser.add_argument(
        '--calibration-sizes',
        default='1080,640',
        metavar='S,S',
        help='--int8: each photo resized to fit each of these (never upscaled; default 1080,640)',
    )
    parser.add_argument(
        '--calibration-limit',
        type=int,
        default=0,
        metavar='N',
        help='--int8: calibrate on N inputs spread over the set (default 0: all)',
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    if args.synthetic_weights and args.backbone != 'resnet50':
        raise ExportError('--synthetic-weights is only supported with --backbone resnet50')
    for root in args.reference_images:
        if not os.path.isdir(root):
            raise ExportError(f'reference image folder not found: {root}')
    if args.weights is not None and not os.path.isfile(args.weights):
        raise ExportError(f'weights file not found: {args.weights}')
    if args.int8:
        calibration_sources(args)  # fail before the slow steps

    import torch

    torch.manual_seed(0)
    model, weights_sha = make_model(args)
    model.eval()
    t_model = time.perf_counter()

    out_dir = args.out
    ref_dir = os.path.join(out_dir, 'reference')
    try:
        os.makedirs(os.path.join(ref_dir), exist_ok=True)
    except OSError as exc:
        raise ExportError(f'cannot create output folder {out_dir}: {exc.strerror}') from None
    # drop reference files of an earlier export so nothing stale survives
    stale = ('raw.json', 'raw_input.bin', 'raw_loc.bin', 'raw_conf.bin', 'raw_landmarks.bin', 'detections.json')
    for name in stale:
        remove_if_exists(os.path.join(ref_dir, name))
    img_dir = os.path.join(ref_dir, 'images')
    if os.path.isdir(img_dir):
        for name in os.listdir(img_dir):
            if name.endswith('.png'):
                remove_if_exists(os.path.join(img_dir, name))

    inputs, raw_source = raw_input_images(args.raw_image)
    shapes, raw_x = write_raw_reference(model, ref_dir, inputs, raw_source)
    t_raw = time.perf_counter()

    ts_notes = export_torchscript(model, raw_x, out_dir)
    t_ts = time.perf_counter()

    onnx_path = os.path.join(out_dir, 'model.onnx')
    onnx_u8_path = os.path.join(out_dir, 'model.u8.onnx')
    onnx_note = 'skipped (--skip-onnx)'
    onnx_u8_note = ''
    if args.skip_onnx:
        remove_if_exists(onnx_path)
        remove_if_exists(onnx_u8_path)
    else:
        onnx_note = export_onnx(onnx_runtime_model(model, raw_x), raw_x, onnx_path, args.opset)
        onnx_u8_note = export_onnx_uint8(onnx_path, onnx_u8_path)
    t_onnx = time.perf_counter()

    int8_path = os.path.join(out_dir, 'model.int8.pt')
    int8_onnx_path = os.path.join(out_dir, 'model.int8.onnx')
    int8_u8_path = os.path.join(out_dir, 'model.int8.u8.onnx')
    int8_info = None
    int8_onnx_info = None
    int8_pt_note = ''
    if args.int8 and args.backbone in TORCH_INT8_BACKBONES:
        int8_info = export_int8(args, model, raw_x, int8_path)
    else:
        remove_if_exists(int8_path)
        if args.int8:
            int8_pt_note = TORCH_INT8_MISSING
    if args.int8 and not args.skip_onnx:
        int8_onnx_info = export_int8_onnx(args, model, raw_x, int8_onnx_path, int8_u8_path)
    else:
        remove_if_exists(int8_onnx_path)
        remove_if_exists(int8_u8_path)
    t_int8 = time.perf_counter()

    card = model_card(args, model, weights_sha, not args.skip_onnx, args.opset)
    if int8_info is not None:
        card['files']['torchscript_int8'] = 'model.int8.pt'
        card['int8'] = int8_info
    if int8_onnx_info is not None:
        card['files']['onnx_int8'] = 'model.int8.onnx'
        card['files']['onnx_int8_uint8'] = 'model.int8.u8.onnx'
        card['int8_onnx'] = int8_onnx_info
    write_json(os.path.join(out_dir, 'model.json'), card)

    records: List[dict] = []
    if args.reference_images:
        roots = list(args.reference_images)
        records = write_detections(model, ref_dir, roots, card['name'], card['synthetic'])
    t_end = time.perf_counter()

    # summary
    print(f'{card["name"]}{" (synthetic weights)" if card["synthetic"] else ""} -> {out_dir}')
    if weights_sha:
        print(f'  weights {args.weights} sha256 {weights_sha}')
    listed = (
        'model.pt',
        'model.int8.pt',
        'model.onnx',
        'model.u8.onnx',
        'model.int8.onnx',
        'model.int8.u8.onnx',
        'model.json',
        'reference/raw.json',
    )
    for name in listed:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            note = ts_notes.get(name) or {'model.onnx': onnx_note, 'model.u8.onnx': onnx_u8_note}.get(name, '')
            if name == 'model.int8.pt' and int8_info is not None:
                cal = int8_info['calibration']
                note = (
                    f'int8 ({int8_info["engine"]}), calibrated on {cal["inputs"]} inputs '
                    f'of {cal["images"]} images'
                )
            if name == 'model.int8.onnx' and int8_onnx_info is not None:
                cal = int8_onnx_info['calibration']
                note = (
                    f'int8 QDQ for ONNX Runtime, {int8_onnx_info["quantized_convolutions"]} int8 convolutions, '
                    f'calibrated on {cal["inputs"]} inputs of {cal["images"]} images'
                )
            if name == 'model.int8.u8.onnx':
                note = 'model.int8.onnx with the preprocessing in the graph'
            print(f'  {name:<20} {human_size(os.path.getsize(path)):>10}  {note}')
    if int8_pt_note:
        print(f'  model.int8.pt        not written: {int8_pt_note}')
    if args.skip_onnx:
        print(f'  model.onnx           {onnx_note}')
    print('  raw reference: ' + ', '.join(f'{k} {v}' for k, v in shapes.items()) + f' from {raw_source}')
    for file, info in (('model.int8.pt', int8_info), ('model.int8.onnx', int8_onnx_info)):
        if info is None:
            continue
        for label, err in info['check_vs_float'].items():
            print(
                f'  {file} vs float, {label} {err["shape"]}: '
                + ', '.join(
                    f'{k} max {err[k]["max"]:.3g} mean {err[k]["mean"]:.3g}'
                    for k in ('loc', 'conf', 'landmarks')
                )
            )
    if records:
        print(f'  reference/detections.json: {len(records)} images (faces at 0.5 / at 0.02)')
        for rec in records:
            print(
                f'    {rec["source"]:<58} {rec["width"]:>4}x{rec["height"]:<4} '
                f'{len(rec["threshold_0.5"]):>4} / {rec["threshold_0.02_total"]}'
            )
    print(
        f'  time: model {t_model - t_start:.1f}s, raw reference {t_raw - t_model:.1f}s, '
        f'torchscript {t_ts - t_raw:.1f}s, onnx {t_onnx - t_ts:.1f}s, '
        + (f'int8 {t_int8 - t_onnx:.1f}s, ' if args.int8 else '')
        + f'detections {t_end - t_int8:.1f}s, '
        f'total {t_end - t_start:.1f}s'
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except ExportError as exc:
        print(f'export_model.py: error: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('export_model.py: interrupted', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
