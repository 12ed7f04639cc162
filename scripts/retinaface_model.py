"""RetinaFace network definition for facedet-native (our own code).

The module layout and parameter names follow the published biubug6/Pytorch_Retinaface checkpoints
exactly, so their state dicts load with strict key checking:

    body.*                      backbone (MobileNetV1 x0.25: body.stage1..3; ResNet50: body.conv1 ...
                                body.layer4, as produced by torchvision's IntermediateLayerGetter)
    fpn.output1..3, fpn.merge1..2
    ssh1..3                     SSH context modules
    ClassHead.0..2.conv1x1      2 anchors x 2 logits
    BboxHead.0..2.conv1x1       2 anchors x 4 box offsets
    LandmarkHead.0..2.conv1x1   2 anchors x 10 landmark offsets

forward(x) takes a float32 NCHW BGR tensor (mean-subtracted, see retinaface_ref.to_input_tensor) of any
height and width and returns (loc [N, A, 4], conf [N, A, 2] after softmax, landmarks [N, A, 10]); the
anchor dimension A lists stride 8 first, then 16, then 32, each level row-major with 2 anchors per cell.

The code is written so that the same module can be
  * scripted with torch.jit.script,
  * traced / exported to ONNX with dynamic height and width, and
  * symbolically traced by torch.fx (no Python int() on tensor sizes, no data-dependent control flow).
"""

import hashlib
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

BACKBONES = ('mobilenet0.25', 'resnet50')

# Channel configuration per backbone: (channels of the three returned stages, FPN/SSH width).
_CONFIG: Dict[str, Tuple[List[int], int]] = {
    'mobilenet0.25': ([64, 128, 256], 64),
    'resnet50': ([512, 1024, 2048], 256),
}

ANCHORS_PER_LOCATION = 2


class WeightsError(ValueError):
    """A weights file that cannot be used for the requested network (unreadable, wrong keys, shapes)."""


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def _conv3x3_bn_act(inp: int, out: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    # keys: .0 conv, .1 bn, .2 activation (no parameters)
    return nn.Sequential(
        nn.Conv2d(inp, out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def _conv3x3_bn(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out),
    )


def _conv1x1_bn_act(inp: int, out: int, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def _depthwise_separable(inp: int, out: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    # keys: .0 depthwise conv, .1 bn, .2 act, .3 pointwise conv, .4 bn, .5 act
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, out, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetV1Body(nn.Module):
    """MobileNetV1 x0.25 trunk; returns the stride 8, 16 and 32 feature maps (64, 128, 256 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv3x3_bn_act(3, 8, stride=2, leaky=0.1),
            _depthwise_separable(8, 16, 1),
            _depthwise_separable(16, 32, 2),
            _depthwise_separable(32, 32, 1),
            _depthwise_separable(32, 64, 2),
            _depthwise_separable(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            _depthwise_separable(64, 128, 2),
            _depthwise_separable(128, 128, 1),
            _depthwise_separable(128, 128, 1),
            _depthwise_separable(128, 128, 1),
            _depthwise_separable(128, 128, 1),
            _depthwise_separable(128, 128, 1),
        )
        self.stage3 = nn.Sequential(
            _depthwise_separable(128, 256, 2),
            _depthwise_separable(256, 256, 1),
        )

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return c3, c4, c5


class ResNet50Body(nn.Module):
    """torchvision ResNet50 trunk up to layer4 (no avgpool/fc); returns layer2, layer3, layer4 outputs.

    Attribute names equal torchvision's, so keys read body.conv1.weight, body.layer2.0.conv1.weight ...
    exactly as IntermediateLayerGetter(resnet50, {'layer2', 'layer3', 'layer4'}) produces them.
    """

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


def _upsample_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Nearest-neighbour resize to the spatial size of `like`. The size comes from the tensor itself,
    # so it is dynamic under scripting, tracing/ONNX (Shape -> Resize) and torch.fx.
    return F.interpolate(x, size=[like.size(2), like.size(3)], mode='nearest')


class FPN(nn.Module):
    def __init__(self, in_channels: List[int], out_channels: int) -> None:
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = _conv1x1_bn_act(in_channels[0], out_channels, leaky)
        self.output2 = _conv1x1_bn_act(in_channels[1], out_channels, leaky)
        self.output3 = _conv1x1_bn_act(in_channels[2], out_channels, leaky)
        self.merge1 = _conv3x3_bn_act(out_channels, out_channels, leaky=leaky)
        self.merge2 = _conv3x3_bn_act(out_channels, out_channels, leaky=leaky)

    def forward(
        self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.output1(c3)
        p4 = self.output2(c4)
        p5 = self.output3(c5)
        p4 = self.merge2(p4 + _upsample_like(p5, p4))
        p3 = self.merge1(p3 + _upsample_like(p4, p3))
        return p3, p4, p5


class SSH(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels % 4 != 0:
            raise ValueError('SSH out_channels must be a multiple of 4')
        leaky = 0.1 if out_channels <= 64 else 0.0
        quarter = out_channels // 4
        self.conv3X3 = _conv3x3_bn(in_channels, out_channels // 2)
        self.conv5X5_1 = _conv3x3_bn_act(in_channels, quarter, leaky=leaky)
        self.conv5X5_2 = _conv3x3_bn(quarter, quarter)
        self.conv7X7_2 = _conv3x3_bn_act(quarter, quarter, leaky=leaky)
        self.conv7x7_3 = _conv3x3_bn(quarter, quarter)  # lower-case x: upstream key name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3 = self.conv3X3(x)
        mid = self.conv5X5_1(x)
        branch5 = self.conv5X5_2(mid)
        branch7 = self.conv7x7_3(self.conv7X7_2(mid))
        return F.relu(torch.cat([branch3, branch5, branch7], dim=1))


class _Head(nn.Module):
    """1x1 conv predicting `values` numbers per anchor; output reshaped to [N, H*W*anchors, values]."""

    def __init__(self, in_channels: int, values: int, anchors: int = ANCHORS_PER_LOCATION) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, anchors * values, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.reshape(out.size(0), -1, self.values)


class RetinaFace(nn.Module):
    def __init__(self, backbone: str) -> None:
        super().__init__()
        if backbone not in _CONFIG:
            raise ValueError(f'unknown backbone {backbone!r}; expected one of {", ".join(BACKBONES)}')
        in_channels, width = _CONFIG[backbone]
        self.backbone_name = backbone
        self.body = MobileNetV1Body() if backbone == 'mobilenet0.25' else ResNet50Body()
        self.fpn = FPN(in_channels, width)
        self.ssh1 = SSH(width, width)
        self.ssh2 = SSH(width, width)
        self.ssh3 = SSH(width, width)
        self.ClassHead = nn.ModuleList([_Head(width, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(width, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(width, 10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3, c4, c5 = self.body(x)
        p3, p4, p5 = self.fpn(c3, c4, c5)
        f3 = self.ssh1(p3)
        f4 = self.ssh2(p4)
        f5 = self.ssh3(p5)
        loc = torch.cat([self.BboxHead[0](f3), self.BboxHead[1](f4), self.BboxHead[2](f5)], dim=1)
        logits = torch.cat([self.ClassHead[0](f3), self.ClassHead[1](f4), self.ClassHead[2](f5)], dim=1)
        landmarks = torch.cat(
            [self.LandmarkHead[0](f3), self.LandmarkHead[1](f4), self.LandmarkHead[2](f5)], dim=1
        )
        return loc, F.softmax(logits, dim=-1), landmarks


# --------------------------------------------------------------------------------------------------
# Construction and weights
# --------------------------------------------------------------------------------------------------


def fp16_float32_convolutions(model: 'RetinaFace') -> int:
    """How many leading convolutions stay float32 when the model runs in fp16 on CUDA (model card
    `fp16.float32_convolutions`). MobileNet0.25: its whole first stage (11 convolutions). Its input is not
    scaled (BGR minus mean) and BatchNorms there scale nearly constant channels by up to 130, so fp16
    rounding of these activations moves boxes: a 15x20 px WIDER face by 3 px (measured on an H200, and
    reproduced on the CPU by rounding to fp16; with the first stage in float32 every face matches).
    ResNet50: none (not measurable here without its real weights)."""
    if isinstance(model.body, MobileNetV1Body):
        return sum(isinstance(m, nn.Conv2d) for m in model.body.stage1.modules())
    return 0


def _pad_output_channels(conv: nn.Conv2d, bn: nn.BatchNorm2d, channels: int) -> None:
    """Give `conv` (and the BatchNorm after it) zero output channels up to `channels`: their weights,
    BatchNorm scale and shift are 0, so the added channels are exactly 0 after BatchNorm and LeakyReLU.
    A depthwise convolution (groups = channels) stays depthwise."""
    extra = channels - conv.out_channels
    weight = conv.weight.data
    conv.weight = nn.Parameter(torch.cat([weight, weight.new_zeros((extra,) + tuple(weight.shape[1:]))]))
    if conv.groups == conv.out_channels and conv.groups > 1:
        conv.groups = channels
        conv.in_channels = channels
    conv.out_channels = channels
    bn.weight = nn.Parameter(torch.cat([bn.weight.data, bn.weight.data.new_zeros(extra)]))
    bn.bias = nn.Parameter(torch.cat([bn.bias.data, bn.bias.data.new_zeros(extra)]))
    bn.running_mean = torch.cat([bn.running_mean, bn.running_mean.new_zeros(extra)])
    bn.running_var = torch.cat([bn.running_var, bn.running_var.new_ones(extra)])
    bn.num_features = channels


def for_onnx_runtime(model: 'RetinaFace', multiple: int = 16) -> 'RetinaFace':
    """The network as model.onnx holds it: an equivalent copy whose MobileNet0.25 stem is 16 channels
    wide instead of 8 (the first convolution and the depthwise convolution after it get 8 zero
    channels; the pointwise convolution after them ignores them). ONNX Runtime runs its convolutions
    in blocks of 16 channels on AVX-512 (NCHWc); 8-channel maps at half the input size fell back to
    plain NCHW kernels with layout conversions around them. Measured on the 2-vCPU machine, 2 threads,
    in alternation: 512x512 6.47 against 6.85 ms, 1024x1024 24.1 against 25.8 ms (medians); outputs
    equal to 1e-6. Not used for model.pt: LibTorch 1.13's oneDNN ran the padded stem slower (512x512
    channels-last, frozen: 11.7 against 7.2 ms). ResNet50 is returned as a copy unchanged (its
    narrowest map has 64 channels)."""
    import copy

    out = copy.deepcopy(model).eval()
    if not isinstance(out.body, MobileNetV1Body):
        return out
    stem, first = out.body.stage1[0], out.body.stage1[1]
    channels = -(-stem[0].out_channels // multiple) * multiple
    if channels == stem[0].out_channels:
        return out
    _pad_output_channels(stem[0], stem[1], channels)
    _pad_output_channels(first[0], first[1], channels)
    pointwise = first[3]
    weight = pointwise.weight.data
    pad = weight.new_zeros((weight.shape[0], channels - weight.shape[1]) + tuple(weight.shape[2:]))
    pointwise.weight = nn.Parameter(torch.cat([weight, pad], dim=1))
    pointwise.in_channels = channels
    return out


def conv_flops_per_pixel(model: 'RetinaFace') -> float:
    """Floating-point operations of the model's convolutions (a multiply-add counts 2) per input pixel
    (model card `conv_flops_per_pixel`). Exact for any height and width that are multiples of 32: every
    feature map is then the input divided by its stride, so the count grows with the pixels. Counted on
    a 256x256 zero image with forward hooks; the benchmark divides it by engine times (GFLOP/s)."""
    import torch

    side = 256
    total = [0]

    def count(conv: nn.Conv2d, _inputs: object, output: torch.Tensor) -> None:
        kh, kw = conv.kernel_size
        total[0] += 2 * output.numel() * (conv.in_channels // conv.groups) * kh * kw

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side))
    finally:
        for hook in hooks:
            hook.remove()
    return total[0] / (side * side)


def build_model(backbone: str) -> RetinaFace:
    """A RetinaFace with default (random) initialisation, in eval mode."""
    return RetinaFace(backbone).eval()


def _shorten(keys: List[str], limit: int = 8) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def sha256_file(path: str) -> str:
    """The sha256 of a file (weights checksums in model.json)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str) -> 'OrderedDict[str, torch.Tensor]':
    """Read a checkpoint: a raw state dict or {'state_dict': ...}; a leading 'module.' is stripped."""
    if not os.path.isfile(path):
        raise WeightsError(f'weights file not found: {path}')
    try:
        obj = torch.load(path, map_location='cpu')
    except Exception as exc:  # pickle/zip errors of many kinds
        raise WeightsError(f'cannot read weights file {path}: {type(exc).__name__}: {exc}') from None
    if isinstance(obj, Mapping) and 'state_dict' in obj and isinstance(obj['state_dict'], Mapping):
        obj = obj['state_dict']
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj.keys()):
        raise WeightsError(f'weights file {path} does not contain a state dict (got {type(obj).__name__})')
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    for key, value in obj.items():
        name = key[len('module.') :] if key.startswith('module.') else key
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f'weights file {path}: entry {key!r} is not a tensor')
        out[name] = value
    return out


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str = '') -> None:
    """Load with strict key matching; any missing/unexpected key or shape mismatch is a WeightsError."""
    where = f' ({origin})' if origin else ''
    expected = set(model.state_dict().keys())
    given = set(state.keys())
    missing = sorted(expected - given)
    unexpected = sorted(given - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing key(s): {_shorten(missing)}')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected key(s): {_shorten(unexpected)}')
        name = getattr(model, 'backbone_name', type(model).__name__)
        raise WeightsError(f'weights do not match RetinaFace {name}{where}: ' + '; '.join(parts))
    reference = model.state_dict()
    wrong = [
        f'{k} {tuple(state[k].shape)} != {tuple(reference[k].shape)}'
        for k in sorted(expected)
        if tuple(state[k].shape) != tuple(reference[k].shape)
    ]
    if wrong:
        raise WeightsError(f'weights have wrong shapes{where}: {_shorten(wrong, 4)}')
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f'cannot load weights{where}: {exc}'.replace('\n', ' ')) from None


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """torch.load(map_location='cpu') + strict load; returns the model in eval mode."""
    load_state_dict_strict(model, read_state_dict(path), origin=path)
    return model.eval()


def silence_heads(model: RetinaFace, logit: float = 10.0) -> RetinaFace:
    """Make the heads predict nothing: face probability ~exp(-2*logit) (~2e-9), zero box/landmark offsets."""
    with torch.no_grad():
        for head in model.ClassHead:
            head.conv1x1.weight.zero_()
            bias = head.conv1x1.bias.view(-1, 2)  # per anchor: [background, face]
            bias[:, 0] = logit
            bias[:, 1] = -logit
        for heads in (model.BboxHead, model.LandmarkHead):
            for head in heads:
                head.conv1x1.weight.zero_()
                head.conv1x1.bias.zero_()
    return model


def _calibrate_batchnorm(model: nn.Module, steps: int = 2, size: int = 256) -> None:
    """Re-estimate BatchNorm running statistics on random image-like input (uniform 0..255 pixels minus
    the BGR mean). With default init and identity running stats, ResNet50 activations grow to ~1e4,
    close to the float16 limit; after this they stay O(1..100), like a trained network's."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    mean = torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.rand(2, 3, size, size) * 255.0 - mean)
    for bn in bns:
        bn.momentum = 0.1
        bn.num_batches_tracked.zero_()
    model.eval()


def build_synthetic_model(backbone: str = 'resnet50', seed: int = 0) -> RetinaFace:
    """Weights for speed work without a real checkpoint: seeded default random init of backbone/FPN/SSH
    (BatchNorm statistics calibrated on random input), and silent heads, so that no anchor ever passes
    a score threshold."""
    torch.manual_seed(seed)
    model = build_model(backbone)
    _calibrate_batchnorm(model)
    return silence_heads(model).eval()
