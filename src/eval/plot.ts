// SPDX-License-Identifier: MIT
// Precision/recall curves of a WIDER FACE evaluation as an SVG document (one panel per subset, one
// line per series, legend with AP), and its rendering to PNG with sharp.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { SUBSETS, type Subset } from './widerface';

export interface PlotSeries {
  label: string;
  /** CSS colour; a default palette is used when absent. */
  color?: string;
  /** Dash pattern (SVG stroke-dasharray), e.g. '6 4'. */
  dash?: string;
  subsets: Record<Subset, { ap: number; recall: readonly number[]; precision: readonly number[] }>;
}

export interface PlotOptions {
  title?: string;
  /** Size of one panel in pixels (default 400 x 400). */
  panelWidth?: number;
  panelHeight?: number;
}

const PALETTE = ['#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
const FONT = 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif';

function esc(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );
}

function num(v: number): string {
  return (Math.round(v * 100) / 100).toString();
}

function pct(ap: number): string {
  return Number.isFinite(ap) ? `${(ap * 100).toFixed(2)}%` : 'n/a';
}

/** The polyline points of one curve in panel coordinates; points with a NaN coordinate are left out. */
function points(
  recall: readonly number[],
  precision: readonly number[],
  x0: number,
  y0: number,
  w: number,
  h: number,
): string {
  const out: string[] = [];
  for (let i = 0; i < recall.length; i++) {
    const r = recall[i] as number;
    const p = precision[i] as number;
    if (!Number.isFinite(r) || !Number.isFinite(p)) continue;
    out.push(`${num(x0 + r * w)},${num(y0 + (1 - p) * h)}`);
  }
  return out.join(' ');
}

/** An SVG document with one precision/recall panel per subset. */
export function prCurvesSvg(series: readonly PlotSeries[], options: PlotOptions = {}): string {
  const pw = options.panelWidth ?? 400;
  const ph = options.panelHeight ?? 400;
  const margin = { left: 56, right: 16, top: 40, bottom: 48 };
  const titleHeight = options.title ? 32 : 0;
  const width = SUBSETS.length * pw;
  const height = ph + titleHeight;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
  ];
  if (options.title) {
    parts.push(
      `<text x="${width / 2}" y="22" font-size="16" font-weight="bold" text-anchor="middle" fill="#000">${esc(options.title)}</text>`,
    );
  }
  SUBSETS.forEach((subset, s) => {
    const x0 = s * pw + margin.left;
    const y0 = titleHeight + margin.top;
    const w = pw - margin.left - margin.right;
    const h = ph - margin.top - margin.bottom;
    parts.push(`<g class="panel" data-subset="${subset}">`);
    parts.push(
      `<text x="${num(x0 + w / 2)}" y="${num(y0 - 14)}" font-size="15" font-weight="bold" text-anchor="middle" fill="#000">${subset[0]?.toUpperCase()}${subset.slice(1)}</text>`,
    );
    // Grid and tick labels every 0.1.
    for (let i = 0; i <= 10; i++) {
      const gx = x0 + (i / 10) * w;
      const gy = y0 + (1 - i / 10) * h;
      parts.push(
        `<line x1="${num(gx)}" y1="${num(y0)}" x2="${num(gx)}" y2="${num(y0 + h)}" stroke="#e0e0e0" stroke-width="1"/>`,
      );
      parts.push(
        `<line x1="${num(x0)}" y1="${num(gy)}" x2="${num(x0 + w)}" y2="${num(gy)}" stroke="#e0e0e0" stroke-width="1"/>`,
      );
      if (i % 2 === 0) {
        const label = (i / 10).toFixed(1);
        parts.push(
          `<text x="${num(gx)}" y="${num(y0 + h + 16)}" font-size="11" text-anchor="middle" fill="#333">${label}</text>`,
        );
        parts.push(
          `<text x="${num(x0 - 6)}" y="${num(gy + 4)}" font-size="11" text-anchor="end" fill="#333">${label}</text>`,
        );
      }
    }
    // Axes.
    parts.push(
      `<rect x="${num(x0)}" y="${num(y0)}" width="${num(w)}" height="${num(h)}" fill="none" stroke="#000" stroke-width="1.2"/>`,
    );
    parts.push(
      `<text x="${num(x0 + w / 2)}" y="${num(y0 + h + 36)}" font-size="12" text-anchor="middle" fill="#000">Recall</text>`,
    );
    parts.push(
      `<text x="${num(x0 - 40)}" y="${num(y0 + h / 2)}" font-size="12" text-anchor="middle" fill="#000" transform="rotate(-90 ${num(x0 - 40)} ${num(y0 + h / 2)})">Precision</text>`,
    );
    // Curves.
    series.forEach((ser, k) => {
      const color = ser.color ?? PALETTE[k % PALETTE.length];
      const c = ser.subsets[subset];
      const dash = ser.dash ? ` stroke-dasharray="${esc(ser.dash)}"` : '';
      parts.push(
        `<polyline class="series" data-label="${esc(ser.label)}" fill="none" stroke="${esc(color ?? '#000')}" stroke-width="2"${dash} points="${points(c.recall, c.precision, x0, y0, w, h)}"/>`,
      );
    });
    // Legend, bottom left inside the panel.
    const lineH = 16;
    const lx = x0 + 8;
    const ly = y0 + h - 8 - series.length * lineH;
    const legendW = Math.min(w - 16, 40 + Math.max(0, ...series.map((ser) => ser.label.length + 10)) * 6.5);
    parts.push(
      `<rect x="${num(lx - 4)}" y="${num(ly - 4)}" width="${num(legendW)}" height="${num(series.length * lineH + 6)}" fill="#ffffff" fill-opacity="0.9" stroke="#999" stroke-width="0.8"/>`,
    );
    series.forEach((ser, k) => {
      const color = ser.color ?? PALETTE[k % PALETTE.length];
      const y = ly + k * lineH + 9;
      const dash = ser.dash ? ` stroke-dasharray="${esc(ser.dash)}"` : '';
      parts.push(
        `<line x1="${num(lx)}" y1="${num(y)}" x2="${num(lx + 24)}" y2="${num(y)}" stroke="${esc(color ?? '#000')}" stroke-width="2"${dash}/>`,
      );
      parts.push(
        `<text class="legend" x="${num(lx + 30)}" y="${num(y + 4)}" font-size="11" fill="#000">${esc(ser.label)} (AP ${pct(ser.subsets[subset].ap)})</text>`,
      );
    });
    parts.push('</g>');
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/** Renders an SVG document to a PNG file with sharp (creates the folder). */
export async function renderSvgToPng(svg: string, file: string): Promise<void> {
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  await sharp(Buffer.from(svg)).png().toFile(file);
}
