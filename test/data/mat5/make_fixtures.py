#!/usr/bin/env python3
"""Writes the MAT v5 fixtures of test/eval-mat5.test.ts and test/eval-groundtruth.test.ts (run once;
the outputs are committed). Needs numpy and scipy (Debian: apt-get install python3-scipy).

  official/   wider_face_val.mat + wider_{easy,medium,hard}_val.mat with the official structure
              (event_list, file_list, face_bbx_list, gt_list: cells of cells), compressed, holding the
              ground truth of ../shared/fixtures/wider-val/gt.json (6 images, 2 events)
  types.mat   one variable of each kind the reader supports, uncompressed (scipy)
  types-be.mat  a big-endian file written by the small writer below (scipy only writes native order)
  types.json  what types.mat decodes to (types-be.mat: x = [1 2 3], list = {'0--Parade'; [7; 8]})
              (then `npx prettier --write test/data/mat5/types.json`; the MAT headers carry a date)
"""
import json
import os
import struct

import numpy as np
from scipy.io import savemat

HERE = os.path.dirname(os.path.abspath(__file__))
GT = os.path.join(HERE, '..', '..', '..', '..', 'shared', 'fixtures', 'wider-val', 'gt.json')


def cell(items):
    out = np.empty((len(items), 1), dtype=object)
    for i, v in enumerate(items):
        out[i, 0] = v
    return out


def official():
    with open(GT) as f:
        images = json.load(f)['images']
    events = []
    for im in images:
        if im['event'] not in events:
            events.append(im['event'])
    by_event = {e: [im for im in images if im['event'] == e] for e in events}
    names = lambda e: cell([os.path.splitext(os.path.basename(im['path']))[0] for im in by_event[e]])
    # The first event's boxes as int32, the others as double: the reader must take both.
    boxes = cell(
        [
            cell([np.array(im['boxes'], dtype=np.int32 if k == 0 else np.float64).reshape(-1, 4) for im in by_event[e]])
            for k, e in enumerate(events)
        ]
    )
    # Keep indices are integers (the official evaluation.py indexes numpy arrays with them).
    common = {'event_list': cell(events), 'file_list': cell([names(e) for e in events])}
    out = os.path.join(HERE, 'official')
    os.makedirs(out, exist_ok=True)
    savemat(os.path.join(out, 'wider_face_val.mat'), {**common, 'face_bbx_list': boxes}, do_compression=True)
    for subset in ('easy', 'medium', 'hard'):
        gt_list = cell(
            [cell([np.array(im[subset + '_keep'], dtype=np.int32).reshape(-1, 1) for im in by_event[e]]) for e in events]
        )
        savemat(os.path.join(out, f'wider_{subset}_val.mat'), {**common, 'gt_list': gt_list}, do_compression=True)


TYPES = {
    'd': np.array([[1.5, -2.0, 3.25], [4.0, 5.0, 6.0]]),
    'f32': np.array([[0.5, 1.5]], dtype=np.float32),
    'i8': np.array([[-128, 127]], dtype=np.int8),
    'u8': np.array([[0, 255]], dtype=np.uint8),
    'i16': np.array([[-32768, 32767]], dtype=np.int16),
    'u16': np.array([[65535]], dtype=np.uint16),
    'i32': np.array([[-2147483648], [2147483647]], dtype=np.int32),
    'u32': np.array([[4294967295]], dtype=np.uint32),
    'i64': np.array([[-(2**40), 2**40]], dtype=np.int64),
    'u64': np.array([[2**52]], dtype=np.uint64),
    'flag': np.array([[True, False, True]]),
    'z': np.array([[1 + 2j, 3 - 4j]]),
    'empty': np.zeros((0, 0)),
    'name': 'WIDER face',
    'rows': np.array(['abc', 'xyz']),
    'nested': cell([cell(['a', np.array([[1.0, 2.0]])]), np.zeros((0, 4))]),
    's': {'event': '0--Parade', 'count': np.array([[3.0]])},
}


def types_json():
    def enc(v):
        if isinstance(v, str):
            return {'kind': 'char', 'rows': [v]}
        if isinstance(v, dict):
            return {'kind': 'struct', 'fields': {k: enc(x) for k, x in v.items()}}
        if v.dtype == object:
            return {'kind': 'cell', 'dims': list(v.shape), 'cells': [enc(x) for x in v.flatten(order='F')]}
        if v.dtype.kind == 'U':
            return {'kind': 'char', 'rows': [str(s) for s in v]}
        a = np.asarray(v)
        d = {'kind': 'numeric', 'dims': list(a.shape), 'data': [float(x.real) for x in a.flatten(order='F')]}
        if np.iscomplexobj(a):
            d['imag'] = [float(x.imag) for x in a.flatten(order='F')]
        return d

    return {k: enc(v) for k, v in TYPES.items()}


# ---- a minimal big-endian MAT v5 writer (uncompressed; double, char and cell arrays) ----------------


def be_element(mi_type, payload):
    if len(payload) <= 4:  # small data element format
        return struct.pack('>HH', len(payload), mi_type) + payload.ljust(4, b'\0')
    return struct.pack('>II', mi_type, len(payload)) + payload + b'\0' * ((8 - len(payload) % 8) % 8)


def be_matrix(value, name=''):
    if isinstance(value, str):
        cls, dims = 4, (1, len(value))
        body = be_element(4, b''.join(struct.pack('>H', ord(c)) for c in value))  # miUINT16
    elif isinstance(value, list):
        cls, dims = 1, (len(value), 1)
        body = b''.join(be_matrix(v) for v in value)
    else:
        a = np.asarray(value, dtype='>f8')
        cls, dims = 6, a.shape
        body = be_element(9, a.flatten(order='F').tobytes())
    head = be_element(6, struct.pack('>II', cls, 0))
    head += be_element(5, b''.join(struct.pack('>i', d) for d in dims))
    head += be_element(1, name.encode('latin1'))
    payload = head + body
    return struct.pack('>II', 14, len(payload)) + payload


def types_be():
    header = b'MATLAB 5.0 MAT-file, big-endian test fixture written by make_fixtures.py'.ljust(116, b' ')
    header += b'\0' * 8 + struct.pack('>H', 0x0100) + b'MI'
    data = be_matrix(np.array([[1.0, 2.0, 3.0]]), 'x') + be_matrix(['0--Parade', np.array([[7.0], [8.0]])], 'list')
    with open(os.path.join(HERE, 'types-be.mat'), 'wb') as f:
        f.write(header + data)


if __name__ == '__main__':
    official()
    savemat(os.path.join(HERE, 'types.mat'), TYPES, do_compression=False)
    types_be()
    with open(os.path.join(HERE, 'types.json'), 'w') as f:
        json.dump(types_json(), f, indent=1)
        f.write('\n')
