"""Static post-training int8 quantisation of RetinaFace for ONNX Runtime (QDQ format).

Used by export_model.py --int8 to write model.int8.onnx and model.int8.u8.onnx (precision 'int8' with
the ONNX Runtime engine). The float network is prepared as for model.int8.pt (scripts/quantize_int8.py:
BatchNorm folded; MobileNet0.25 range-equalised, its stem kept float; here the heads' 1x1 convolutions
stay float too: +0.1 to +0.2 AP points on wider-val-416 for MobileNet0.25, and little time), exported
to ONNX, and run on the calibration inputs by a small ONNX interpreter written with torch ops (ONNX
Runtime has no Python package here); each quantised tensor gets the quint8 range torch's
HistogramObserver picks for it (the observer model.int8.pt uses). QuantizeLinear/DequantizeLinear
pairs then mark those tensors, and per-channel symmetric int8 weights (int32 biases) feed every
quantised convolution, so ONNX Runtime runs QLinearConv, QLinearLeakyRelu, QLinearAdd, QLinearConcat
and uint8 Resize/MaxPool in their place. A Relu after a convolution or concatenation is left to the
uint8 range of its output (zero point 0), as ONNX Runtime's own quantiser does.
"""

from __future__ import annotations

import copy
import os
from typing import Callable, Dict, List, Sequence, Set, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import quantize_int8 as q8

# ONNX node-name prefixes of the modules that stay float (quantize_int8.FLOAT_MODULES, as torch.onnx
# names their nodes).
HEAD_NODE_PREFIXES = ('/ClassHead', '/BboxHead', '/LandmarkHead')
FLOAT_NODE_PREFIXES: Dict[str, Tuple[str, ...]] = {
    'mobilenet0.25': (
        '/body/stage1/stage1.0/',
        '/body/stage1/stage1.1/stage1.1.0/',
        '/body/stage1/stage1.1/stage1.1.2/',
    )
    + HEAD_NODE_PREFIXES,
    'resnet50': HEAD_NODE_PREFIXES,
}
QUANTISED_OPS = ('Conv', 'Relu', 'LeakyRelu', 'Add', 'Concat', 'Resize', 'MaxPool')
# Ops whose output keeps its input's quantisation (data movement).
SAME_RANGE_OPS = ('Resize', 'MaxPool')


class QuantizeOnnxError(Exception):
    """An expected failure of the ONNX int8 export (reported by export_model.py as one line)."""


# --------------------------------------------------------------------------------------------------
# float preparation
# --------------------------------------------------------------------------------------------------


def float_network(model, backbone: str, inputs: Sequence[torch.Tensor]) -> Tuple[nn.Module, dict]:
    """A copy of `model` computing the same function with BatchNorm folded and (MobileNet0.25) ranges
    equalised: the float network the int8 one approximates."""
    work = copy.deepcopy(model).eval()
    for m in work.modules():
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            m.inplace = False
    folded = q8.fold_batchnorm(work)
    pairs = q8.equalize_mobilenet(work, inputs[:: q8.EQUALIZE_EVERY]) if backbone == 'mobilenet0.25' else 0
    return work, {'batchnorm_folded': folded, 'equalized_pairs': pairs}


# --------------------------------------------------------------------------------------------------
# a small ONNX interpreter (the ops torch.onnx writes for RetinaFace), for calibration
# --------------------------------------------------------------------------------------------------


_ONNX_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 11: torch.float64}


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _same_pads(pads: List[int]) -> Tuple[int, int]:
    # [top, left, bottom, right] -> symmetric (h, w) padding (torch.onnx writes symmetric pads)
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise QuantizeOnnxError(f'asymmetric padding {pads} is not supported')
    return pads[0], pads[1]


class OnnxTorchRunner:
    """Evaluates an ONNX graph of RetinaFace's op set with torch ops; `observe(name, tensor)` is called
    for every float tensor produced."""

    def __init__(self, proto) -> None:
        from onnx import numpy_helper

        self.graph = proto.graph
        self.values: Dict[str, torch.Tensor] = {
            t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in self.graph.initializer
        }
        self.attrs = [_attrs(n) for n in self.graph.node]

    def run(self, x: torch.Tensor, observe: Callable[[str, torch.Tensor], None]) -> Dict[str, torch.Tensor]:
        from onnx import numpy_helper

        env = dict(self.values)
        env[self.graph.input[0].name] = x
        for node, a in zip(self.graph.node, self.attrs):
            ins = [env[i] if i else None for i in node.input]
            op = node.op_type
            if op == 'Conv':
                ph, pw = _same_pads(a.get('pads', [0, 0, 0, 0]))
                bias = ins[2] if len(ins) > 2 else None
                strides, dilations = a.get('strides', [1, 1]), a.get('dilations', [1, 1])
                out = F.conv2d(ins[0], ins[1], bias, strides, (ph, pw), dilations, a.get('group', 1))
            elif op == 'Relu':
                out = F.relu(ins[0])
            elif op == 'LeakyRelu':
                out = F.leaky_relu(ins[0], a.get('alpha', 0.01))
            elif op == 'Add':
                out = ins[0] + ins[1]
            elif op == 'Concat':
                out = torch.cat(ins, dim=a['axis'])
            elif op == 'MaxPool':
                ph, pw = _same_pads(a.get('pads', [0, 0, 0, 0]))
                ceil = bool(a.get('ceil_mode', 0))
                out = F.max_pool2d(ins[0], a['kernel_shape'], a.get('strides'), (ph, pw), ceil_mode=ceil)
            elif op == 'Resize':
                if a.get('mode', b'nearest') not in (b'nearest', 'nearest'):
                    raise QuantizeOnnxError('only nearest Resize is supported')
                size = [int(v) for v in ins[3][2:]] if len(ins) > 3 and ins[3] is not None else None
                out = F.interpolate(ins[0], size=size, mode='nearest')
            elif op == 'Constant':
                out = torch.from_numpy(numpy_helper.to_array(a['value']).copy())
            elif op == 'Shape':
                out = torch.tensor(list(ins[0].shape), dtype=torch.int64)
            elif op == 'Gather':
                out = torch.index_select(ins[0], a.get('axis', 0), ins[1].reshape(-1)).reshape(
                    ins[0].shape[: a.get('axis', 0)] + ins[1].shape + ins[0].shape[a.get('axis', 0) + 1 :]
                )
            elif op == 'Unsqueeze':
                out = ins[0]
                for axis in sorted(int(v) for v in ins[1]):
                    out = out.unsqueeze(axis)
            elif op == 'Cast':
                out = ins[0].to(_ONNX_DTYPES[a['to']])
            elif op == 'Slice':
                out = ins[0]
                axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(ins[1])))
                steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(axes)
                for start, end, axis, step in zip(ins[1].tolist(), ins[2].tolist(), axes, steps):
                    index = [slice(None)] * out.dim()
                    index[axis] = slice(start, end, step)
                    out = out[tuple(index)]
            elif op == 'Transpose':
                out = ins[0].permute(*a['perm'])
            elif op == 'Reshape':
                shape = [int(v) for v in ins[1]]
                out = ins[0].reshape([ins[0].shape[i] if v == 0 else v for i, v in enumerate(shape)])
            elif op == 'Softmax':
                out = F.softmax(ins[0], dim=a.get('axis', -1))
            elif op == 'Identity':
                out = ins[0]
            elif op == 'QuantizeLinear':
                lo, hi = (0, 255) if ins[2].dtype == torch.uint8 else (-128, 127)
                q = torch.round(ins[0] / ins[1]) + ins[2].to(torch.int32)
                out = torch.clamp(q, lo, hi).to(ins[2].dtype)
            elif op == 'DequantizeLinear':
                axis = a.get('axis', 1)
                shape = [-1 if d == axis and ins[1].dim() == 1 else 1 for d in range(ins[0].dim())]
                scale, zero = ins[1].reshape(shape), ins[2].to(torch.float64).reshape(shape)
                out = ((ins[0].to(torch.float64) - zero) * scale.to(torch.float64)).to(torch.float32)
            else:
                raise QuantizeOnnxError(f'ONNX op {op} is not supported by the calibration interpreter')
            env[node.output[0]] = out
            if out.is_floating_point():
                observe(node.output[0], out)
        return {o.name: env[o.name] for o in self.graph.output}


# --------------------------------------------------------------------------------------------------
# which tensors are quantised
# --------------------------------------------------------------------------------------------------


def inline_identity_initializers(proto) -> int:
    """In place: an Identity of an initializer (torch.onnx writes one for equal weights, e.g. the silent
    heads of synthetic weights) becomes an initializer of its own. Returns how many."""
    inits = {t.name: t for t in proto.graph.initializer}
    done = 0
    for node in list(proto.graph.node):
        if node.op_type == 'Identity' and node.input[0] in inits:
            copy_ = copy.deepcopy(inits[node.input[0]])
            copy_.name = node.output[0]
            proto.graph.initializer.append(copy_)
            proto.graph.node.remove(node)
            done += 1
    return done


def plan(proto, backbone: str) -> Tuple[Set[str], Dict[str, str], List[str]]:
    """(tensors that get a QuantizeLinear/DequantizeLinear pair, tensor -> the tensor whose range it
    shares, names of the quantised convolutions)."""
    graph = proto.graph
    prefixes = FLOAT_NODE_PREFIXES[backbone]
    for prefix in prefixes:
        if not any(n.name.startswith(prefix) for n in graph.node):
            raise QuantizeOnnxError(f'no ONNX node is named {prefix}*: cannot keep that module float')
    producers = {o: n for n in graph.node for o in n.output}
    consumers: Dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    initializers = {t.name for t in graph.initializer}

    def is_activation(name: str) -> bool:
        if name == graph.input[0].name:
            return True
        node = producers.get(name)
        if node is None or node.op_type not in QUANTISED_OPS:
            return False
        return node.op_type != 'Concat' or all(is_activation(i) for i in node.input)

    def quantised(node) -> bool:
        if any(node.name.startswith(p) for p in prefixes) or node.op_type not in QUANTISED_OPS:
            return False
        return all(is_activation(i) for i in node.input if i and i not in initializers)

    qnodes = [n for n in graph.node if quantised(n)]
    # Outputs read only by a quantised Relu: no pair of their own; the Relu's output range (zero point
    # 0) does the Relu, and ONNX Runtime drops it (Conv -> Relu -> QuantizeLinear becomes QLinearConv).
    before_relu = set()
    for n in qnodes:
        users = consumers.get(n.output[0], [])
        if len(users) == 1 and users[0].op_type == 'Relu' and quantised(users[0]):
            before_relu.add(n.output[0])
    marked: Set[str] = set()
    for n in qnodes:
        for name in list(n.input) + [n.output[0]]:
            if name and name not in initializers and name not in before_relu:
                marked.add(name)
    shared = {}
    for n in qnodes:
        if n.op_type in SAME_RANGE_OPS:
            shared[n.output[0]] = n.input[0]
    return marked, shared, [n.name for n in qnodes if n.op_type == 'Conv']


def calibrate(proto, marked: Set[str], inputs: Sequence[torch.Tensor]) -> Dict[str, Tuple[float, int]]:
    """(scale, zero point) for every marked tensor: torch's HistogramObserver (quint8, full range) over
    the calibration inputs. (Tried instead on MobileNet0.25: a range search minimising the expected
    squared error, a LeakyReLU's negative inputs weighted alpha^2: WIDER AP on wider-val-416's subsets
    -0.9 to +0.4 points against this.)"""
    from torch.ao.quantization.observer import HistogramObserver

    observers = {name: HistogramObserver(dtype=torch.quint8, reduce_range=False) for name in marked}
    runner = OnnxTorchRunner(proto)
    input_name = proto.graph.input[0].name

    def observe(name: str, t: torch.Tensor) -> None:
        if name in observers:
            observers[name](t)

    with torch.no_grad():
        for x in inputs:
            observe(input_name, x)
            runner.run(x, observe)
    out = {}
    for name, obs in observers.items():
        scale, zp = obs.calculate_qparams()
        out[name] = (float(scale), int(zp))
    return out


# --------------------------------------------------------------------------------------------------
# the QDQ graph
# --------------------------------------------------------------------------------------------------


def write_qdq(
    proto,
    marked: Set[str],
    shared: Dict[str, str],
    qparams: Dict[str, Tuple[float, int]],
    qconvs: Sequence[str],
):
    """A copy of `proto` with Q/DQ pairs on the marked tensors and int8 weights on `qconvs`."""
    import onnx
    from onnx import helper, numpy_helper

    out = copy.deepcopy(proto)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    params = dict(qparams)
    for name, src in shared.items():
        params[name] = params[src]
    new_inits = []
    nodes = []

    def constant(name: str, values: np.ndarray, scale, zero) -> str:
        """An integer initializer and its DequantizeLinear node (per-channel when scale is a vector);
        returns the name of the float tensor."""
        new_inits.extend(
            numpy_helper.from_array(v, f'{name}{suffix}')
            for v, suffix in ((values, '_q'), (scale, '_scale'), (zero, '_zero_point'))
        )
        args = [f'{name}_q', f'{name}_scale', f'{name}_zero_point']
        nodes.append(helper.make_node('DequantizeLinear', args, [f'{name}_dq'], name=f'{name}_DQ', axis=0))
        return f'{name}_dq'

    def qdq(name: str) -> None:
        scale, zero = params[name]
        new_inits.append(numpy_helper.from_array(np.array(scale, np.float32), f'{name}_scale'))
        new_inits.append(numpy_helper.from_array(np.array(zero, np.uint8), f'{name}_zero_point'))
        args = [f'{name}_scale', f'{name}_zero_point']
        nodes.append(helper.make_node('QuantizeLinear', [name] + args, [f'{name}_q'], name=f'{name}_Q'))
        dequantize = helper.make_node('DequantizeLinear', [f'{name}_q'] + args, [f'{name}_dq'])
        dequantize.name = f'{name}_DQ'
        nodes.append(dequantize)

    qconv_set = set(qconvs)
    if graph.input[0].name in marked:
        qdq(graph.input[0].name)
    for node in graph.node:
        inputs = list(node.input)
        if node.op_type != 'Shape':
            inputs = [f'{i}_dq' if i in marked else i for i in inputs]
        if node.name in qconv_set:
            # int8 weights, symmetric per output channel; int32 bias at scale input_scale * weight_scale
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
            w_scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
            wq = np.clip(np.round(w / w_scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
            inputs[1] = constant(node.input[1], wq, w_scale, np.zeros(w.shape[0], np.int8))
            if len(node.input) > 2 and node.input[2]:
                b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
                b_scale = (w_scale.astype(np.float64) * params[node.input[0]][0]).astype(np.float32)
                bq = np.clip(np.round(b / b_scale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
                inputs[2] = constant(node.input[2], bq, b_scale, np.zeros(w.shape[0], np.int32))
        new = helper.make_node(node.op_type, inputs, list(node.output), name=node.name, domain=node.domain)
        new.attribute.extend(node.attribute)
        nodes.append(new)
        for o in node.output:
            if o in marked:
                qdq(o)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    onnx.checker.check_model(out)
    return out


def quantize(
    model,
    backbone: str,
    inputs: Sequence[torch.Tensor],
    export: Callable[[nn.Module, str], None],
    path: str,
    checks: Sequence[Tuple[str, torch.Tensor]],
) -> dict:
    """Writes the QDQ model to `path` (`export(module, path)` writes a float ONNX file) after checking
    it, emulated with torch ops, against the float model on `checks`; returns the card's entry."""
    import onnx

    net, info = float_network(model, backbone, inputs)
    tmp = path + '.float.tmp'
    try:
        export(net, tmp)
        proto = onnx.load(tmp)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    inline_identity_initializers(proto)
    marked, shared, qconvs = plan(proto, backbone)
    qparams = calibrate(proto, {m for m in marked if m not in shared}, inputs)
    qdq = write_qdq(proto, marked, shared, qparams, qconvs)
    errors = {}
    runner = OnnxTorchRunner(qdq)
    with torch.no_grad():
        for label, x in checks:
            got = runner.run(x, lambda _n, _t: None)
            outputs = [got[k] for k in ('loc', 'conf', 'landmarks')]
            errors[label] = {'shape': list(x.shape), **q8._errors(outputs, model(x))}
    conf = next(iter(errors.values()))['conf']
    if not q8.model_is_silent(model) and conf['mean'] > 0.02:
        raise QuantizeOnnxError(
            f'int8 scores differ from float by {conf["mean"]:.3g} on average on the {checks[0][0]} '
            '(limit 0.02): quantisation failed'
        )
    tmp = path + '.tmp'
    try:
        onnx.save(qdq, tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)
    info.update(
        {
            'format': 'QDQ (QuantizeLinear/DequantizeLinear pairs; ONNX Runtime runs the quantised ops)',
            'activations': 'quint8 per tensor, ranges from HistogramObserver over the calibration inputs',
            'weights': 'int8 per output channel, symmetric [-127, 127]; int32 biases',
            'quantized_convolutions': len(qconvs),
            'quantized_tensors': len(marked),
            'float_node_prefixes': list(FLOAT_NODE_PREFIXES[backbone]),
            'check_vs_float': errors,
            'check_note': 'int8 emulated with torch ops (QuantizeLinear/DequantizeLinear in float64)',
        }
    )
    return info
