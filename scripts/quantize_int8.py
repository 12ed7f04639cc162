"""Static post-training int8 quantisation of RetinaFace for LibTorch's oneDNN engine.

Used by export_model.py --int8 to write model.int8.pt. Debian's torch 1.13 has the `onednn` and
`qnnpack` quantised engines (no fbgemm); the native addon selects oneDNN before loading the file
(native/torch_backend.cc), as export does here.

Recipe (each step measured with scripts/precision_report.ts, WIDER AP on the fixtures, int8 - fp32):
  * FX graph mode (prepare_fx / convert_fx) with the default oneDNN qconfig mapping: HistogramObserver
    activations (quint8, full range), per-channel symmetric qint8 weights. Fully quantised and without
    the steps below, MinMax observers lose 8 to 15 AP points on wider-val-416, histograms 4 to 6.
  * BatchNorm folded into the convolutions first, then (MobileNet only) activation range equalisation:
    between two convolutions joined by BatchNorm and LeakyReLU (positively homogeneous), each channel is
    scaled so that every channel of the tensor in between spans the same range, and the next
    convolution's weights for that input channel are divided by the same factor (exact in float).
    MobileNet0.25's narrow early layers (8-64 channels) otherwise leave some channels a few
    quantisation steps.
  * MobileNet: the first convolution and the first depthwise convolution stay float. That depthwise
    layer (high-gain, high-pass 3x3 filters on 8 channels) amplifies the quantisation noise of its
    input by about 15 dB (SQNR 45 -> 30 dB), which no channel scaling removes. In float and
    channels-last the model runs as fast as fully int8 (the input quantisation it saves costs as much),
    and the graph is quantised at the depthwise output. With all this the loss is about 1 to 2 points
    on medium/hard (it moves by ~0.5-1 point with float-rounding-level changes to the calibration).
  * The convolutions of the heads are quantised; the permute / reshape / cat / softmax of the outputs
    run in float. The model converts its input to channels-last (oneDNN's native layout for both the
    float and the quantised convolutions).
  * The FX graph's dequantize-just-to-read-a-size nodes of the FPN are removed (size() of a quantised
    tensor is the same).

ResNet50: LibTorch 1.13's oneDNN int8 convolutions cache a primitive for the first input shape; for
ResNet50, a later input of another size class (e.g. below ~256 px after a large one) fails with "could
not create a primitive descriptor for a reorder primitive". shape_sweep() catches this, so --int8
refuses ResNet50 with a clear error (MobileNet passes the sweep).

Caveat for other CPUs: activations use the full 8-bit range (reduce_range=False, the oneDNN default).
On x86 CPUs without VNNI, oneDNN's int8 convolutions may saturate 16-bit intermediate sums with such
inputs; the machine this was measured on has AVX-512 VNNI.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

ENGINE = 'onednn'
CALIBRATION_SIZES = (1080, 640)
# Modules (qualified names in RetinaFace) kept in float, per backbone.
FLOAT_MODULES: Dict[str, Tuple[str, ...]] = {
    'mobilenet0.25': ('body.stage1.0', 'body.stage1.1.0', 'body.stage1.1.1', 'body.stage1.1.2'),
    'resnet50': (),
}
EQUALIZE_MAX_SCALE = 64.0
# Equalisation ranges from every EQUALIZE_EVERY-th calibration input (1, 3: within the AP noise of the
# fixtures, 3 measured a little better and is cheaper).
EQUALIZE_EVERY = 3


class Int8Error(Exception):
    """An expected failure of the int8 export (reported by export_model.py as one line)."""


# --------------------------------------------------------------------------------------------------
# calibration data
# --------------------------------------------------------------------------------------------------




def default_calibration_sources(fixtures: str) -> List[Tuple[str, List[str]]]:
    """The fixture images: seed-images and dlib-faces (all), wider-val-416 (the images at EVEN positions
    of its gt.json only: the odd half and wider-val stay held out for the AP evaluation)."""
    import retinaface_ref as ref

    sources = []
    for name in ('seed-images', 'dlib-faces'):
        root = os.path.join(fixtures, name)
        if os.path.isdir(root):
            sources.append((name, ref.find_images(root)))
    gt = os.path.join(fixtures, 'wider-val-416', 'gt.json')
    if os.path.isfile(gt):
        with open(gt, 'r', encoding='utf-8') as fh:
            images = json.load(fh).get('images', [])
        root = os.path.dirname(gt)
        paths = [os.path.join(root, im['path']) for im in images[::2]]
        sources.append(('wider-val-416 (even positions of gt.json)', [p for p in paths if os.path.isfile(p)]))
    return [(label, paths) for label, paths in sources if paths]


def calibration_inputs(
    sources: Sequence[Tuple[str, List[str]]], sizes: Sequence[int], limit: int = 0
) -> Tuple[List[torch.Tensor], dict]:
    """Each image at each size (longer side at most `size`, never upscaled; identical inputs once), as
    padded network inputs [1, 3, H, W]. `limit` > 0 keeps that many, spread evenly over the list."""
    import retinaface_ref as ref

    tensors: List[torch.Tensor] = []
    shapes: Dict[str, int] = {}
    seen = set()
    for _label, paths in sources:
        for path in paths:
            for size in sizes:
                try:
                    pixels, _ = ref.load_image_rgb(path, size)
                except Exception as exc:
                    raise Int8Error(f'cannot read calibration image {path}: {exc}') from None
                key = (path, pixels.shape)
                if key in seen:
                    continue
                seen.add(key)
                tensors.append(torch.from_numpy(ref.to_input_tensor(pixels)))
    if not tensors:
        raise Int8Error('no calibration images: pass --calibration-images DIR (photos with faces)')
    if limit > 0 and len(tensors) > limit:
        step = len(tensors) / limit
        tensors = [tensors[int(i * step)] for i in range(limit)]
    for t in tensors:
        key = f'{t.shape[2]}x{t.shape[3]}'
        shapes[key] = shapes.get(key, 0) + 1
    summary = {
        'sources': [{'name': label, 'images': len(paths)} for label, paths in sources],
        'images': sum(len(paths) for _, paths in sources),
        'inputs': len(tensors),
        'sizes': list(sizes),
        'size_rule': 'longer side at most each size, never upscaled, padded to a multiple of 32',
        'input_shapes_hw': dict(sorted(shapes.items(), key=lambda kv: -kv[1])),
    }
    return tensors, summary


# --------------------------------------------------------------------------------------------------
# float preparation: BatchNorm folding and range equalisation
# --------------------------------------------------------------------------------------------------


def fold_batchnorm(module: nn.Module) -> int:
    """In place: each Conv2d directly followed by a BatchNorm2d in an nn.Sequential becomes the folded
    conv (with bias) followed by nn.Identity. Returns the number folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for seq in list(module.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        keys = list(seq._modules.keys())
        for a, b in zip(keys, keys[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
                folded += 1
    return folded


def _mobilenet_pairs(model) -> List[Tuple[nn.Conv2d, nn.Conv2d]]:
    """Consecutive convolutions of the MobileNet trunk, joined only by (folded) BatchNorm + LeakyReLU.
    The last conv of each stage also feeds the FPN, so it is not a producer."""
    stages = (model.body.stage1, model.body.stage2, model.body.stage3)
    convs: List[nn.Conv2d] = []
    for stage in stages:
        for block in stage:
            convs.extend(m for m in block.children() if isinstance(m, nn.Conv2d))
    stage_last = {[m for m in stage[-1].children() if isinstance(m, nn.Conv2d)][-1] for stage in stages}
    return [(p, c) for p, c in zip(convs, convs[1:]) if p not in stage_last]


def equalize_mobilenet(model, inputs: Sequence[torch.Tensor]) -> int:
    """Activation range equalisation (see the module docstring); BatchNorm must be folded first.

    For each producer/consumer pair, r_c = max |producer output| of channel c over the calibration
    inputs; the producer's weights and bias of channel c are multiplied by k_c = max(r) / r_c (at most
    EQUALIZE_MAX_SCALE) and the consumer's weights for input channel c divided by k_c. LeakyReLU(k x) =
    k LeakyReLU(x) for k > 0, so the float network computes the same function."""
    pairs = _mobilenet_pairs(model)
    ranges: Dict[int, torch.Tensor] = {}
    hooks = []
    for index, (producer, _) in enumerate(pairs):

        def hook(_m, _i, out, index=index):
            r = out.detach().transpose(0, 1).reshape(out.shape[1], -1).abs().amax(dim=1)
            ranges[index] = r if index not in ranges else torch.maximum(ranges[index], r)

        hooks.append(producer.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for x in inputs:
                model(x)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for index, (producer, consumer) in enumerate(pairs):
            r = ranges[index].clamp_min(1e-12)
            k = (r.max() / r).clamp(1.0, EQUALIZE_MAX_SCALE)
            producer.weight.mul_(k.view(-1, 1, 1, 1))
            producer.bias.mul_(k)
            if consumer.groups > 1:  # depthwise: input channel c is output channel c
                consumer.weight.div_(k.view(-1, 1, 1, 1))
            else:
                consumer.weight.div_(k.view(1, -1, 1, 1))
    return len(pairs)


# --------------------------------------------------------------------------------------------------
# the quantised network
# --------------------------------------------------------------------------------------------------


class _Subsampled1x1(nn.Module):
    """A 1x1 convolution with stride s as a stride-1 convolution of every s-th pixel (the same function).
    oneDNN 1.13's quantised strided 1x1 convolution fails on the second input shape it sees ("could not
    create a primitive descriptor for a reorder primitive": its packed weights cannot be re-laid out
    for the new shape); ResNet's downsample convolutions are of this kind."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.step = int(conv.stride[0])
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, 1, 1, 0, bias=conv.bias is not None)
        self.conv.weight = conv.weight
        if conv.bias is not None:
            self.conv.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x[:, :, :: self.step, :: self.step])


def replace_strided_1x1(module: nn.Module) -> int:
    """In place: every 1x1, unpadded, stride > 1 Conv2d becomes a _Subsampled1x1."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if (
                isinstance(child, nn.Conv2d)
                and child.kernel_size == (1, 1)
                and child.padding == (0, 0)
                and child.stride[0] == child.stride[1] > 1
                and child.groups == 1
                and child.dilation == (1, 1)
            ):
                setattr(parent, name, _Subsampled1x1(child))
                replaced += 1
    return replaced


class _Features(nn.Module):
    """Trunk, FPN, SSH and the head convolutions: the part that is quantised. Returns the nine raw head
    maps (NCHW): box, class, landmark heads for strides 8, 16, 32."""

    def __init__(self, model) -> None:
        super().__init__()
        self.body, self.fpn = model.body, model.fpn
        self.ssh1, self.ssh2, self.ssh3 = model.ssh1, model.ssh2, model.ssh3
        self.BboxHead, self.ClassHead, self.LandmarkHead = model.BboxHead, model.ClassHead, model.LandmarkHead

    def forward(self, x):
        c3, c4, c5 = self.body(x)
        p3, p4, p5 = self.fpn(c3, c4, c5)
        f3, f4, f5 = self.ssh1(p3), self.ssh2(p4), self.ssh3(p5)
        return (
            self.BboxHead[0].conv1x1(f3),
            self.BboxHead[1].conv1x1(f4),
            self.BboxHead[2].conv1x1(f5),
            self.ClassHead[0].conv1x1(f3),
            self.ClassHead[1].conv1x1(f4),
            self.ClassHead[2].conv1x1(f5),
            self.LandmarkHead[0].conv1x1(f3),
            self.LandmarkHead[1].conv1x1(f4),
            self.LandmarkHead[2].conv1x1(f5),
        )


def _flatten(t: torch.Tensor, values: int) -> torch.Tensor:
    t = t.permute(0, 2, 3, 1).contiguous()
    return t.reshape(t.size(0), -1, values)


class Int8RetinaFace(nn.Module):
    """Same inputs and outputs as RetinaFace: float32 NCHW BGR minus mean in, (loc, conf, landmarks) out."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        b3, b4, b5, c3, c4, c5, l3, l4, l5 = self.features(x)
        loc = torch.cat([_flatten(b3, 4), _flatten(b4, 4), _flatten(b5, 4)], dim=1)
        logits = torch.cat([_flatten(c3, 2), _flatten(c4, 2), _flatten(c5, 2)], dim=1)
        landmarks = torch.cat([_flatten(l3, 10), _flatten(l4, 10), _flatten(l5, 10)], dim=1)
        return loc, F.softmax(logits, dim=-1), landmarks


def _skip_dequantize_for_size(gm) -> int:
    """x.dequantize().size(d) -> x.size(d): FX inserts a full dequantize before the FPN's size() calls."""
    changed = 0
    for node in list(gm.graph.nodes):
        if node.op == 'call_method' and node.target == 'size' and isinstance(node.args[0], torch.fx.Node):
            src = node.args[0]
            if src.op == 'call_method' and src.target == 'dequantize':
                node.args = (src.args[0],) + tuple(node.args[1:])
                changed += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return changed


def select_engine() -> None:
    if ENGINE not in torch.backends.quantized.supported_engines:
        raise Int8Error(
            f'this torch ({torch.__version__}) has no {ENGINE} quantised engine '
            f'(has: {", ".join(torch.backends.quantized.supported_engines)})'
        )
    torch.backends.quantized.engine = ENGINE


def quantize(model, backbone: str, inputs: Sequence[torch.Tensor]) -> Tuple[torch.jit.ScriptModule, dict]:
    """The frozen TorchScript int8 network for `model` (left unchanged), calibrated on `inputs`."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    select_engine()
    work = copy.deepcopy(model).eval()
    for m in work.modules():
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            m.inplace = False  # quantized::leaky_relu has no in-place variant (a warning per call)
    folded = fold_batchnorm(work)
    subsampled = replace_strided_1x1(work)
    pairs = equalize_mobilenet(work, inputs[::EQUALIZE_EVERY]) if backbone == 'mobilenet0.25' else 0
    qconfig_mapping = get_default_qconfig_mapping(ENGINE)
    float_modules = FLOAT_MODULES.get(backbone, ())
    for name in float_modules:
        qconfig_mapping.set_module_name(name, None)
    features = _Features(work).eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        prepared = prepare_fx(features, qconfig_mapping, (inputs[0],))
        with torch.no_grad():
            for x in inputs:
                prepared(x.contiguous(memory_format=torch.channels_last))
        converted = convert_fx(prepared)
        size_fixes = _skip_dequantize_for_size(converted)
        with torch.no_grad():
            scripted = torch.jit.freeze(torch.jit.script(Int8RetinaFace(converted).eval()))
    info = {
        'engine': ENGINE,
        'method': 'static post-training quantisation, FX graph mode (torch.ao.quantization.quantize_fx)',
        'qconfig': 'default oneDNN mapping: HistogramObserver quint8 activations (reduce_range=False), '
        'per-channel symmetric qint8 weights',
        'batchnorm_folded': folded,
        'strided_1x1_as_subsample': subsampled,
        'equalized_pairs': pairs,
        'float_modules': list(float_modules),
        'float_ops': 'output permute/reshape/cat/softmax',
        'memory_format': 'channels_last',
        'dequantize_for_size_removed': size_fixes,
    }
    return scripted, info


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def _errors(got, want) -> Dict[str, Dict[str, float]]:
    out = {}
    for name, g, w in zip(('loc', 'conf', 'landmarks'), got, want):
        d = (g - w).abs()
        out[name] = {'max': float(f'{float(d.max()):.4g}'), 'mean': float(f'{float(d.mean()):.4g}')}
    return out


# Input sizes [N, H, W] run one after the other by shape_sweep(): large and small, square and not,
# multiples of 32 and not. oneDNN caches a primitive for the first shape a quantised convolution sees;
# for some networks (ResNet50) a later shape of another size class then fails.
SWEEP_SHAPES = (
    (1, 64, 64),
    (1, 1088, 800),
    (1, 32, 32),
    (2, 416, 416),
    (1, 100, 140),
    (1, 704, 1024),
    (1, 33, 47),
)


def _run(module, x: torch.Tensor, label: str):
    try:
        return module(x)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        raise Int8Error(
            f'the int8 network fails on the {label} ({reason}); LibTorch {torch.__version__}\'s oneDNN '
            'int8 convolutions cannot re-lay-out their packed weights for every input shape once they '
            'have run one; int8 is not available for this network'
        ) from None


def shape_sweep(module) -> List[List[int]]:
    """Runs SWEEP_SHAPES in order (raises Int8Error on a failure); returns the shapes run."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, h, w in SWEEP_SHAPES:
            _run(module, torch.rand(n, 3, h, w, generator=gen) * 255.0 - 117.0, f'{n}x3x{h}x{w} input')
    return [list(s) for s in SWEEP_SHAPES]


def check(module, model, checks: Sequence[Tuple[str, torch.Tensor]]) -> Dict[str, dict]:
    """Runs the int8 module and the float model on each input; shapes must match and every output must
    be finite. Returns max/mean |int8 - float| per output and input."""
    report: Dict[str, dict] = {}
    with torch.no_grad():
        for label, x in checks:
            want = model(x)
            got = _run(module, x, label)
            for name, g, w in zip(('loc', 'conf', 'landmarks'), got, want):
                if tuple(g.shape) != tuple(w.shape):
                    raise Int8Error(
                        f'int8 output {name} has shape {tuple(g.shape)} on the {label}, '
                        f'float {tuple(w.shape)}'
                    )
                if not bool(torch.isfinite(g).all()):
                    raise Int8Error(f'int8 output {name} is not finite on the {label}')
            report[label] = {'shape': list(x.shape), **_errors(got, want)}
    return report


def export_int8(
    model,
    backbone: str,
    path: str,
    sources: Sequence[Tuple[str, List[str]]],
    sizes: Sequence[int],
    limit: int,
    raw_x: torch.Tensor,
) -> dict:
    """Calibrates, quantises, saves `path` (loaded back and checked) and returns the card's int8 entry."""
    t0 = time.perf_counter()
    inputs, calibration = calibration_inputs(sources, sizes, limit)
    t1 = time.perf_counter()
    scripted, info = quantize(model, backbone, inputs)
    t2 = time.perf_counter()
    tmp = path + '.tmp'
    try:
        torch.jit.save(scripted, tmp)
        loaded = torch.jit.load(tmp, map_location='cpu')
        gen = torch.Generator().manual_seed(3)
        checks = [
            ('reference input', raw_x),
            ('calibration input', inputs[0]),
            ('1x3x100x140 input', torch.rand(1, 3, 100, 140, generator=gen) * 255.0 - 117.0),
            ('2x3x333x417 input', torch.rand(2, 3, 333, 417, generator=gen) * 255.0 - 117.0),
        ]
        errors = check(loaded, model, checks)
        swept = shape_sweep(loaded)
        conf = errors['reference input']['conf']
        if not model_is_silent(model) and conf['mean'] > 0.02:
            raise Int8Error(
                f'int8 scores differ from float by {conf["mean"]:.3g} on average on the reference input '
                '(limit 0.02): quantisation failed'
            )
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)
    t3 = time.perf_counter()
    info['calibration'] = calibration
    info['check_vs_float'] = errors
    info['shapes_checked'] = [list(x.shape) for _, x in checks] + [[n, 3, h, w] for n, h, w in swept]
    info['seconds'] = {
        'calibration_data': round(t1 - t0, 1),
        'quantize': round(t2 - t1, 1),
        'check': round(t3 - t2, 1),
    }
    return info


def model_is_silent(model) -> bool:
    """Synthetic-weight models have zeroed head weights: their outputs are constants."""
    return all(float(h.conv1x1.weight.abs().max()) == 0.0 for h in model.ClassHead)
