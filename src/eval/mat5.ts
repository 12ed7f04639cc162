// SPDX-License-Identifier: MIT
// A small reader for MATLAB level-5 MAT-files (the format of the official WIDER FACE ground truth,
// wider_face_val.mat and wider_{easy,medium,hard}_val.mat): numeric, logical, char, cell and struct
// arrays, optionally inside zlib-compressed (miCOMPRESSED) elements, little- or big-endian.
// Not supported: MAT 7.3 (HDF5) files, sparse arrays, objects, function handles.
import { readFileSync } from 'node:fs';
import { inflateSync } from 'node:zlib';

/** MATLAB array classes this reader returns. */
export type MatNumericClass =
  'double' | 'single' | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64';

export interface MatNumeric {
  kind: 'numeric';
  class: MatNumericClass;
  /** MATLAB dimensions, e.g. [rows, cols]. */
  dims: number[];
  /** Real part, column-major (MATLAB order), converted to double. */
  data: Float64Array;
  /** Imaginary part when the array is complex. */
  imag?: Float64Array;
  /** True for MATLAB logical arrays (stored as uint8). */
  logical: boolean;
}

export interface MatChar {
  kind: 'char';
  dims: number[];
  /** One string per row (a 1xN char array is one string). */
  rows: string[];
}

export interface MatCell {
  kind: 'cell';
  dims: number[];
  /** Elements, column-major. */
  cells: MatValue[];
}

export interface MatStruct {
  kind: 'struct';
  dims: number[];
  fieldNames: string[];
  /** One record per struct element, column-major. */
  elements: Record<string, MatValue>[];
}

export type MatValue = MatNumeric | MatChar | MatCell | MatStruct;

export class MatFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MatFileError';
  }
}

// Data types (the "mi" types of the element tags).
const miINT8 = 1;
const miUINT8 = 2;
const miINT16 = 3;
const miUINT16 = 4;
const miINT32 = 5;
const miUINT32 = 6;
const miSINGLE = 7;
const miDOUBLE = 9;
const miINT64 = 12;
const miUINT64 = 13;
const miMATRIX = 14;
const miCOMPRESSED = 15;
const miUTF8 = 16;
const miUTF16 = 17;
const miUTF32 = 18;

// Array classes (the "mx" classes of the array flags).
const mxCELL = 1;
const mxSTRUCT = 2;
const mxCHAR = 4;
const NUMERIC_CLASSES: Record<number, MatNumericClass> = {
  6: 'double',
  7: 'single',
  8: 'int8',
  9: 'uint8',
  10: 'int16',
  11: 'uint16',
  12: 'int32',
  13: 'uint32',
  14: 'int64',
  15: 'uint64',
};
const CLASS_NAMES: Record<number, string> = {
  1: 'cell',
  2: 'struct',
  3: 'object',
  4: 'char',
  5: 'sparse',
  16: 'function handle',
  17: 'opaque',
};

const FLAG_COMPLEX = 0x0800;
const FLAG_LOGICAL = 0x0200;

const ELEMENT_SIZES: Record<number, number> = {
  [miINT8]: 1,
  [miUINT8]: 1,
  [miINT16]: 2,
  [miUINT16]: 2,
  [miINT32]: 4,
  [miUINT32]: 4,
  [miSINGLE]: 4,
  [miDOUBLE]: 8,
  [miINT64]: 8,
  [miUINT64]: 8,
  [miUTF8]: 1,
  [miUTF16]: 2,
  [miUTF32]: 4,
};

interface Element {
  type: number;
  /** Bytes of the element's data (a view into the file or an inflated buffer). */
  data: Uint8Array;
}

/** Sequential reader of data elements in one byte range. */
class ElementReader {
  private pos = 0;
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly le: boolean,
    private readonly where: string,
    /** Top-level elements are not padded; elements inside an array are padded to 8 bytes. */
    private readonly padded: boolean,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Bytes left to read. */
  get remaining(): number {
    return this.bytes.byteLength - this.pos;
  }

  get done(): boolean {
    return this.remaining <= 0;
  }

  next(): Element {
    if (this.pos + 8 > this.bytes.byteLength) {
      throw new MatFileError(`${this.where}: truncated data element tag at byte ${this.pos}`);
    }
    const first = this.view.getUint32(this.pos, this.le);
    // Small data element format: the upper 16 bits hold the byte count, the data sits in the tag.
    const small = first >>> 16;
    if (small !== 0) {
      const type = first & 0xffff;
      if (small > 4) throw new MatFileError(`${this.where}: bad small data element at byte ${this.pos}`);
      const data = this.bytes.subarray(this.pos + 4, this.pos + 4 + small);
      this.pos += 8;
      return { type, data };
    }
    const type = first;
    const size = this.view.getUint32(this.pos + 4, this.le);
    const start = this.pos + 8;
    if (start + size > this.bytes.byteLength) {
      throw new MatFileError(`${this.where}: data element of ${size} bytes at byte ${this.pos} is truncated`);
    }
    this.pos = start + size;
    if (this.padded) this.pos += (8 - (size % 8)) % 8;
    return { type, data: this.bytes.subarray(start, start + size) };
  }
}

function numbers(el: Element, le: boolean, where: string): Float64Array {
  const size = ELEMENT_SIZES[el.type];
  if (size === undefined)
    throw new MatFileError(`${where}: unexpected data type ${el.type} for numeric data`);
  const n = Math.floor(el.data.byteLength / size);
  const out = new Float64Array(n);
  const v = new DataView(el.data.buffer, el.data.byteOffset, el.data.byteLength);
  for (let i = 0; i < n; i++) {
    const o = i * size;
    switch (el.type) {
      case miINT8:
        out[i] = v.getInt8(o);
        break;
      case miUINT8:
      case miUTF8:
        out[i] = v.getUint8(o);
        break;
      case miINT16:
        out[i] = v.getInt16(o, le);
        break;
      case miUINT16:
      case miUTF16:
        out[i] = v.getUint16(o, le);
        break;
      case miINT32:
        out[i] = v.getInt32(o, le);
        break;
      case miUINT32:
      case miUTF32:
        out[i] = v.getUint32(o, le);
        break;
      case miSINGLE:
        out[i] = v.getFloat32(o, le);
        break;
      case miDOUBLE:
        out[i] = v.getFloat64(o, le);
        break;
      case miINT64:
        out[i] = Number(v.getBigInt64(o, le));
        break;
      case miUINT64:
        out[i] = Number(v.getBigUint64(o, le));
        break;
    }
  }
  return out;
}

function text(el: Element, le: boolean, where: string): string {
  if (el.type === miUTF8) return Buffer.from(el.data).toString('utf8');
  if (el.type === miINT8 || el.type === miUINT8) return Buffer.from(el.data).toString('latin1');
  const codes = numbers(el, le, where);
  let s = '';
  for (const c of codes) s += String.fromCodePoint(c);
  return s;
}

function product(dims: number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** Splits a column-major char array into its rows. */
function charRows(chars: string, dims: number[]): string[] {
  const codes = Array.from(chars);
  const rows = dims[0] ?? 0;
  const cols = rows === 0 ? 0 : product(dims) / rows;
  const out: string[] = [];
  for (let r = 0; r < rows; r++) {
    let s = '';
    for (let c = 0; c < cols; c++) s += codes[c * rows + r] ?? '';
    out.push(s);
  }
  return out;
}

function emptyDouble(): MatNumeric {
  return { kind: 'numeric', class: 'double', dims: [0, 0], data: new Float64Array(0), logical: false };
}

/** Parses the contents of one miMATRIX element. Returns the array and its name. */
function parseMatrix(bytes: Uint8Array, le: boolean, where: string): { name: string; value: MatValue } {
  if (bytes.byteLength === 0) return { name: '', value: emptyDouble() };
  const r = new ElementReader(bytes, le, where, true);
  const flagsEl = r.next();
  const flags = numbers(flagsEl, le, where);
  const flagWord = flags[0] ?? 0;
  const cls = flagWord & 0xff;
  const dims = Array.from(numbers(r.next(), le, where));
  const name = text(r.next(), le, where);
  const here = name ? `${where} (${name})` : where;
  const count = product(dims);

  if (cls === mxCELL) {
    const cells: MatValue[] = [];
    for (let i = 0; i < count; i++) {
      const el = r.next();
      if (el.type !== miMATRIX) throw new MatFileError(`${here}: cell element ${i} is not a matrix`);
      cells.push(parseMatrix(el.data, le, `${here}{${i + 1}}`).value);
    }
    return { name, value: { kind: 'cell', dims, cells } };
  }
  if (cls === mxSTRUCT) {
    const fieldLength = numbers(r.next(), le, here)[0] ?? 0;
    const namesEl = r.next();
    const fieldNames: string[] = [];
    for (let o = 0; fieldLength > 0 && o + fieldLength <= namesEl.data.byteLength; o += fieldLength) {
      const raw = Buffer.from(namesEl.data.subarray(o, o + fieldLength)).toString('latin1');
      fieldNames.push(raw.replace(/\0.*$/s, ''));
    }
    const elements: Record<string, MatValue>[] = [];
    for (let i = 0; i < count; i++) {
      const record: Record<string, MatValue> = {};
      for (const field of fieldNames) {
        const el = r.next();
        if (el.type !== miMATRIX) throw new MatFileError(`${here}: field ${field} is not a matrix`);
        record[field] = parseMatrix(el.data, le, `${here}.${field}`).value;
      }
      elements.push(record);
    }
    return { name, value: { kind: 'struct', dims, fieldNames, elements } };
  }
  if (cls === mxCHAR) {
    const chars = count === 0 ? '' : text(r.next(), le, here);
    return { name, value: { kind: 'char', dims, rows: charRows(chars, dims) } };
  }
  const numericClass = NUMERIC_CLASSES[cls];
  if (numericClass === undefined) {
    throw new MatFileError(`${here}: unsupported MATLAB class ${CLASS_NAMES[cls] ?? cls}`);
  }
  const data = count === 0 && r.done ? new Float64Array(0) : numbers(r.next(), le, here);
  if (data.length !== count) {
    throw new MatFileError(
      `${here}: expected ${count} values for dims [${dims.join(', ')}], found ${data.length}`,
    );
  }
  const value: MatNumeric = {
    kind: 'numeric',
    class: numericClass,
    dims,
    data,
    logical: (flagWord & FLAG_LOGICAL) !== 0,
  };
  if ((flagWord & FLAG_COMPLEX) !== 0) value.imag = numbers(r.next(), le, here);
  return { name, value };
}

function readVariables(bytes: Uint8Array, le: boolean, where: string, out: Map<string, MatValue>): void {
  const r = new ElementReader(bytes, le, where, false);
  // A file may end with a few bytes of padding; a tag needs 8.
  while (r.remaining >= 8) {
    const el = r.next();
    if (el.type === miCOMPRESSED) {
      let inflated: Buffer;
      try {
        inflated = inflateSync(el.data);
      } catch (err) {
        throw new MatFileError(`${where}: cannot inflate compressed element: ${(err as Error).message}`);
      }
      readVariables(
        new Uint8Array(inflated.buffer, inflated.byteOffset, inflated.byteLength),
        le,
        where,
        out,
      );
    } else if (el.type === miMATRIX) {
      const { name, value } = parseMatrix(el.data, le, where);
      out.set(name, value);
    }
    // Other top-level elements (none are written by MATLAB or scipy) are skipped.
  }
}

/**
 * Parses a level-5 MAT-file. Returns its variables by name, in file order.
 * `where` names the file in error messages.
 */
export function parseMat5(file: Uint8Array, where = 'MAT-file'): Map<string, MatValue> {
  if (file.byteLength < 128) throw new MatFileError(`${where}: too short for a MAT-file header`);
  const header = Buffer.from(file.subarray(0, 116)).toString('latin1');
  const version = String.fromCharCode(file[126] ?? 0, file[127] ?? 0);
  let le: boolean;
  if (version === 'IM') le = true;
  else if (version === 'MI') le = false;
  else throw new MatFileError(`${where}: not a level-5 MAT-file (no endian indicator)`);
  const v = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const ver = v.getUint16(124, le);
  if (ver === 0x0200 || header.includes('MATLAB 7.3')) {
    throw new MatFileError(`${where}: MAT 7.3 (HDF5) files are not supported; save with -v7`);
  }
  if (ver !== 0x0100) throw new MatFileError(`${where}: unsupported MAT-file version 0x${ver.toString(16)}`);
  const out = new Map<string, MatValue>();
  readVariables(file.subarray(128), le, where, out);
  return out;
}

/** Reads and parses a level-5 MAT-file. */
export function readMat5(path: string): Map<string, MatValue> {
  return parseMat5(readFileSync(path), path);
}

// ------------------------------------------------------------------------------------------------
// Accessors for the shapes the WIDER FACE files use
// ------------------------------------------------------------------------------------------------

function describeValue(value: MatValue | undefined): string {
  if (value === undefined) return 'nothing';
  const cls = value.kind === 'numeric' ? value.class : value.kind;
  return `a ${value.dims.join('x')} ${cls} array`;
}

/** The elements of a cell array (column-major). */
export function matCells(value: MatValue | undefined, where: string): MatValue[] {
  if (value?.kind !== 'cell')
    throw new MatFileError(`${where}: expected a cell array, found ${describeValue(value)}`);
  return value.cells;
}

/** The text of a char array with one row (an empty char array gives ''). */
export function matString(value: MatValue | undefined, where: string): string {
  if (value?.kind !== 'char' || value.rows.length > 1) {
    throw new MatFileError(`${where}: expected a string, found ${describeValue(value)}`);
  }
  return value.rows[0] ?? '';
}

/** A 2-D numeric array as rows of numbers (row-major); an empty array gives []. */
export function matRows(value: MatValue | undefined, where: string): number[][] {
  if (value?.kind !== 'numeric' || value.dims.length > 2) {
    throw new MatFileError(`${where}: expected a 2-D numeric array, found ${describeValue(value)}`);
  }
  const rows = value.dims[0] ?? 0;
  const cols = value.dims[1] ?? 0;
  const out: number[][] = [];
  for (let r = 0; r < rows; r++) {
    const row: number[] = [];
    for (let c = 0; c < cols; c++) row.push(value.data[c * rows + r] as number);
    out.push(row);
  }
  return out;
}

/** All values of a numeric array, column-major (a vector of any orientation gives its values). */
export function matValues(value: MatValue | undefined, where: string): number[] {
  if (value?.kind !== 'numeric') {
    throw new MatFileError(`${where}: expected a numeric array, found ${describeValue(value)}`);
  }
  return Array.from(value.data);
}
