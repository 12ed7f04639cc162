// The MAT v5 reader (src/eval/mat5.ts) on files written by scipy.io.savemat and by a small big-endian
// writer (test/data/mat5/make_fixtures.py; types.json holds what types.mat must decode to).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { deflateSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  MatFileError,
  type MatValue,
  matCells,
  matRows,
  matString,
  matValues,
  parseMat5,
  readMat5,
} from '../src/eval/mat5';

const DATA = path.join(__dirname, 'data', 'mat5');

interface Expected {
  kind: string;
  dims?: number[];
  data?: number[];
  imag?: number[];
  rows?: string[];
  cells?: Expected[];
  fields?: Record<string, Expected>;
}

function check(actual: MatValue | undefined, expected: Expected, where: string): void {
  assert.ok(actual, `${where}: missing`);
  if (!actual) return;
  assert.is(actual.kind, expected.kind, `${where}: kind`);
  if (expected.dims) assert.equal(actual.dims, expected.dims, `${where}: dims`);
  if (actual.kind === 'numeric') {
    assert.equal(Array.from(actual.data), expected.data, `${where}: data`);
    if (expected.imag) assert.equal(Array.from(actual.imag ?? []), expected.imag, `${where}: imag`);
    else assert.is(actual.imag, undefined, `${where}: not complex`);
  } else if (actual.kind === 'char') {
    assert.equal(actual.rows, expected.rows, `${where}: text`);
  } else if (actual.kind === 'cell') {
    assert.is(actual.cells.length, expected.cells?.length, `${where}: cell count`);
    actual.cells.forEach((c, i) => check(c, expected.cells?.[i] as Expected, `${where}{${i + 1}}`));
  } else {
    assert.equal(actual.fieldNames, Object.keys(expected.fields ?? {}), `${where}: field names`);
    assert.is(actual.elements.length, 1);
    for (const [name, field] of Object.entries(expected.fields ?? {})) {
      check(actual.elements[0]?.[name], field, `${where}.${name}`);
    }
  }
}

const reader = suite('mat5: reading MAT v5 files');

reader('types.mat (scipy, uncompressed): every variable decodes as scipy wrote it', () => {
  const vars = readMat5(path.join(DATA, 'types.mat'));
  const expected = JSON.parse(readFileSync(path.join(DATA, 'types.json'), 'utf8')) as Record<
    string,
    Expected
  >;
  assert.equal([...vars.keys()], Object.keys(expected));
  for (const [name, exp] of Object.entries(expected)) check(vars.get(name), exp, name);
});

reader('classes, logical flags and the accessors', () => {
  const vars = readMat5(path.join(DATA, 'types.mat'));
  const cls = (name: string) => {
    const v = vars.get(name);
    return v?.kind === 'numeric' ? v.class : v?.kind;
  };
  assert.equal(['d', 'f32', 'i8', 'u8', 'i16', 'u16', 'i32', 'u32', 'i64', 'u64', 'flag'].map(cls), [
    'double',
    'single',
    'int8',
    'uint8',
    'int16',
    'uint16',
    'int32',
    'uint32',
    'int64',
    'uint64',
    'uint8',
  ]);
  const flag = vars.get('flag');
  assert.ok(flag?.kind === 'numeric' && flag.logical);
  assert.equal(matRows(vars.get('d'), 'd'), [
    [1.5, -2, 3.25],
    [4, 5, 6],
  ]);
  assert.equal(matRows(vars.get('empty'), 'empty'), []);
  assert.equal(matValues(vars.get('i32'), 'i32'), [-2147483648, 2147483647]);
  assert.is(matString(vars.get('name'), 'name'), 'WIDER face');
  const nested = matCells(vars.get('nested'), 'nested');
  assert.is(matString(matCells(nested[0], 'inner')[0], 'inner{1}'), 'a');
  assert.throws(() => matString(vars.get('rows'), 'rows'), /rows: expected a string, found a 2x3 char array/);
  assert.throws(() => matCells(vars.get('d'), 'd'), /d: expected a cell array, found a 2x3 double array/);
});

reader('compressed elements: the official-layout files', () => {
  const raw = readFileSync(path.join(DATA, 'official', 'wider_face_val.mat'));
  // The variables are miCOMPRESSED (type 15) elements.
  assert.is(raw.readUInt32LE(128), 15);
  const vars = parseMat5(raw);
  assert.equal([...vars.keys()], ['event_list', 'file_list', 'face_bbx_list']);
  const events = matCells(vars.get('event_list'), 'event_list').map((e) => matString(e, 'event'));
  assert.equal(events, ['0--Parade', '11--Meeting']);
  const boxes = matCells(matCells(vars.get('face_bbx_list'), 'face_bbx_list')[0], 'event 1');
  const first = boxes[0];
  assert.ok(first?.kind === 'numeric' && first.class === 'int32');
  assert.equal(matRows(first, 'boxes')[0], [30, 432, 29, 44]);
});

reader('big-endian files (hand-written, with small data elements)', () => {
  const vars = readMat5(path.join(DATA, 'types-be.mat'));
  assert.equal(matRows(vars.get('x'), 'x'), [[1, 2, 3]]);
  const list = matCells(vars.get('list'), 'list');
  assert.is(matString(list[0], 'list{1}'), '0--Parade');
  assert.equal(matValues(list[1], 'list{2}'), [7, 8]);
});

reader('a compressed element built here decodes like the uncompressed one', () => {
  // Re-wrap the first variable of types.mat ("d", a miMATRIX) in a miCOMPRESSED element.
  const raw = readFileSync(path.join(DATA, 'types.mat'));
  const size = raw.readUInt32LE(132);
  const element = raw.subarray(128, 136 + size);
  const z = deflateSync(element);
  const tag = Buffer.alloc(8);
  tag.writeUInt32LE(15, 0);
  tag.writeUInt32LE(z.length, 4);
  const vars = parseMat5(Buffer.concat([raw.subarray(0, 128), tag, z]));
  assert.equal(matRows(vars.get('d'), 'd'), [
    [1.5, -2, 3.25],
    [4, 5, 6],
  ]);
});

reader('bad files fail with clear messages', () => {
  const raw = readFileSync(path.join(DATA, 'types.mat'));
  assert.throws(
    () => parseMat5(Buffer.alloc(10), 'x.mat'),
    (e: unknown) => e instanceof MatFileError,
  );
  assert.throws(() => parseMat5(Buffer.alloc(128), 'x.mat'), /x\.mat: not a level-5 MAT-file/);
  const v73 = Buffer.from(raw.subarray(0, 128));
  v73.writeUInt16LE(0x0200, 124);
  assert.throws(() => parseMat5(v73, 'x.mat'), /MAT 7\.3 \(HDF5\) files are not supported/);
  assert.throws(
    () => parseMat5(raw.subarray(0, 200), 'cut.mat'),
    /cut\.mat: data element of \d+ bytes .* is truncated/,
  );
  const badZ = Buffer.concat([raw.subarray(0, 128), Buffer.from([15, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4])]);
  assert.throws(() => parseMat5(badZ, 'z.mat'), /z\.mat: cannot inflate compressed element/);
});

reader.run();
