// SPDX-License-Identifier: MIT
// `npm run bench:load`: starts `facedet serve` on 127.0.0.1 (a free port), loads it with autocannon
// (a dev dependency) at several concurrencies with a 1920x1080 JPEG on POST /detect_faces_from_files/,
// and reports requests/s, p50/p99 latency and the server's per-stage times (from its /metrics, as the
// difference of the histograms' sums and counts before and after each run). The engine alone is timed
// first, on the same image at the same network input size, with the server not yet running.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { replaceReadmeSection } from '../readme';
import { NativeInferenceEngine } from '../engine';
import { nativeJpegDecoder } from '../native';
import { defaultBackend, FaceDetector } from '../detector';
import { OnnxRuntimeEngine } from '../engines/onnxruntime';
import { defaultModelDir, modelFile, readModel } from '../model';
import { decodeImage, nativeResizeMatchesSharp, packBatch } from '../preprocess';
import { benchImage, defaultSourceImage } from './images';
import { type CpuShare, cpuShare, cpuSnapshot, load1, machineFacts } from './machine';
import { fmtMs, fmtMsUnit, summarize } from './stats';

export interface LoadOptions {
  model: string;
  backend: 'torch' | 'onnxruntime';
  /** 'bf16' with backend torch (CPUs with AVX512-BF16 or AMX). */
  precision: 'fp32' | 'bf16';
  threads: number;
  concurrency: number[];
  durationS: number;
  warmupS: number;
  maxSize: number;
  image?: string;
  log: (line: string) => void;
}

/** Stages the server times in facedet_stage_duration_seconds, in request order. */
const STAGES = [
  'body_parse',
  'decode',
  'queue_wait',
  'pack',
  'infer',
  'postprocess',
  'serialize',
  'detect',
] as const;

type Sums = Map<string, { sum: number; count: number }>;

/** Sums and counts of the server's histograms, keyed `metric{labels}`. */
export function parseHistograms(text: string): Sums {
  const out: Sums = new Map();
  const re = /^(facedet_[a-z_]+)_(sum|count)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$/gm;
  for (const m of text.matchAll(re)) {
    const key = `${m[1]}${m[3] ?? ''}`;
    const entry = out.get(key) ?? { sum: 0, count: 0 };
    entry[m[2] as 'sum' | 'count'] = Number(m[4]);
    out.set(key, entry);
  }
  return out;
}

/** Mean milliseconds of a histogram between two scrapes (seconds in the histogram). */
function meanMs(before: Sums, after: Sums, key: string): number | undefined {
  const a = after.get(key);
  if (!a) return undefined;
  const b = before.get(key) ?? { sum: 0, count: 0 };
  const n = a.count - b.count;
  return n > 0 ? ((a.sum - b.sum) / n) * 1000 : undefined;
}

function meanOf(before: Sums, after: Sums, key: string): number | undefined {
  const a = after.get(key);
  if (!a) return undefined;
  const b = before.get(key) ?? { sum: 0, count: 0 };
  const n = a.count - b.count;
  return n > 0 ? (a.sum - b.sum) / n : undefined;
}

interface Server {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

async function startServer(options: LoadOptions): Promise<Server> {
  const ext = path.extname(__filename);
  const cli = path.join(__dirname, '..', `cli${ext}`);
  const args = [
    ...process.execArgv,
    cli,
    'serve',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--model',
    options.model,
    '--backend',
    options.backend,
    '--precision',
    options.precision,
    '--threads',
    String(options.threads),
    '--max-size',
    String(options.maxSize),
    '--rate-limit',
    '0',
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start: ${stderr}`)), 60_000);
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = /"url":"(http:\/\/[^"]+)"/.exec(line);
      if (match && /listening/.test(line)) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`the server exited (code ${code}): ${stderr}`)));
  });
  const deadline = Date.now() + 120_000;
  for (;;) {
    const res = await fetch(`${url}/ready`).catch(() => undefined);
    if (res?.ok) break;
    if (Date.now() > deadline) throw new Error(`the server did not become ready: ${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return {
    url,
    child,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function scrape(url: string): Promise<Sums> {
  const res = await fetch(`${url}/metrics`);
  return parseHistograms(await res.text());
}

/**
 * 5 untimed runs (first-run work, a graph's optimisation passes), then 30 timed, one at a time; `prepare`
 * makes each run's argument outside the timing.
 */
async function timeRuns<T>(
  run: (input: T) => Promise<unknown>,
  prepare: () => T = () => undefined as T,
): Promise<ReturnType<typeof summarize>> {
  const times: number[] = [];
  for (let i = 0; i < 35; i++) {
    const input = prepare();
    const t0 = performance.now();
    await run(input);
    if (i >= 5) times.push(performance.now() - t0);
  }
  return summarize(times);
}

/**
 * Engine-only time for the request's image, at the server's network input size; with `threads` 2 or
 * more, on one thread too (the network's CPU time: what no thread count can shorten).
 */
async function engineOnly(
  options: LoadOptions,
  jpeg: Buffer,
): Promise<{
  ms: ReturnType<typeof summarize>;
  oneThreadMs?: ReturnType<typeof summarize>;
  shape: number[];
}> {
  const model = readModel(options.model);
  const image = await decodeImage(jpeg, { maxSize: options.maxSize, maxPixels: 2 ** 40 });
  const { tensor, shape } = packBatch([image], {
    mean: model.card.input.mean,
    padMultiple: model.card.input.pad_multiple ?? 32,
  });
  const modelPath = modelFile(model, options.backend, 'cpu', 'fp32');
  const time = async (threads: number) => {
    const engine =
      options.backend === 'onnxruntime'
        ? await OnnxRuntimeEngine.load({ modelPath, threads })
        : await NativeInferenceEngine.load({
            modelPath,
            backend: 'torch',
            device: 'cpu',
            precision: options.precision,
            threads,
          });
    try {
      // A fresh copy of the input each run (transferred), made outside the timing.
      return await timeRuns(
        (input) => engine.infer(input, shape, { transfer: true, exclusive: true }),
        () => tensor.slice(),
      );
    } finally {
      await engine.dispose();
    }
  };
  const ms = await time(options.threads);
  return { ms, ...(options.threads >= 2 ? { oneThreadMs: await time(1) } : {}), shape };
}

/**
 * The library's whole path for the request's image alone: `FaceDetector.detect` on the JPEG's bytes in
 * this process, one call at a time, with the server's settings (what an application calling the library
 * directly would see; the server adds HTTP, the multipart body and JSON).
 */
async function libraryOnly(options: LoadOptions, jpeg: Buffer): Promise<ReturnType<typeof summarize>> {
  const detector = await FaceDetector.create({
    model: options.model,
    backend: options.backend,
    precision: options.precision,
    threads: options.threads,
    maxSize: options.maxSize,
  });
  try {
    return await timeRuns(() => detector.detect(jpeg));
  } finally {
    await detector.dispose();
  }
}

/**
 * Decoding alone, one image at a time, with nothing else running: as the server decodes the request's
 * image (`decodeImage` with the server's JPEG decoder: decode and resize to the max size) under load, on
 * one thread, and as it decodes a lone request's (at concurrency 1) where the fast path may take two
 * threads (`threads` 2 or more: DecodeOptions.jpegThreads), and through
 * sharp at 1/8 of its size, where libjpeg scales in the DCT (shrink-on-load) and skips most of the
 * inverse DCT, upsampling and colour conversion but none of the entropy decoding, which is sequential:
 * what no resize policy can save.
 */
async function decodeOnly(
  jpeg: Buffer,
  size: { width: number; height: number },
  maxSize: number,
  threads: number,
  decoder: ReturnType<typeof nativeJpegDecoder>,
): Promise<{
  decoder: string;
  /** Who resizes ('none': max size 0, images decoded at their own size). */
  resizer: 'addon' | 'sharp' | 'none';
  ms: ReturnType<typeof summarize>;
  twoThreadsMs?: ReturnType<typeof summarize>;
  eighthMs: ReturnType<typeof summarize>;
}> {
  const eighth = { width: Math.ceil(size.width / 8), height: Math.ceil(size.height / 8) };
  return {
    decoder: decoder?.name ?? 'sharp',
    resizer: maxSize === 0 ? 'none' : decoder && nativeResizeMatchesSharp ? 'addon' : 'sharp',
    ms: await timeRuns(() => decodeImage(jpeg, { maxSize, maxPixels: 2 ** 40, jpeg: decoder?.decode })),
    ...(decoder && threads >= 2
      ? {
          twoThreadsMs: await timeRuns(() =>
            decodeImage(jpeg, { maxSize, maxPixels: 2 ** 40, jpeg: decoder.decode, jpegThreads: 2 }),
          ),
        }
      : {}),
    eighthMs: await timeRuns(() =>
      sharp(jpeg).resize(eighth.width, eighth.height, { fit: 'fill' }).raw().toBuffer(),
    ),
  };
}

export interface LoadRow {
  concurrency: number;
  requests: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; mean: number; max: number };
  errors: number;
  non2xx: number;
  /** Mean milliseconds per request (per image) of each server stage; decode is decoding and resizing. */
  stagesMs: Record<string, number | undefined>;
  meanBatchSize: number | undefined;
  load: [number, number];
  /** CPU used by processes other than the server and the load generator (and stolen by the hypervisor). */
  others?: CpuShare;
}

export async function runLoad(options: LoadOptions) {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- a dev dependency, loaded on use
  const autocannon = require('autocannon') as typeof import('autocannon');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facedet-load-'));
  const image = await benchImage(options.image ?? defaultSourceImage(), 1920, 1080);
  const file = path.join(tmp, 'photo-1080p.jpg');
  fs.writeFileSync(file, image.jpeg);
  options.log(`engine alone on the 1920x1080 image (max size ${options.maxSize}) ...`);
  const engine = await engineOnly(options, image.jpeg);
  options.log(
    `engine: ${engine.ms.median.toFixed(1)} ms at ${engine.shape.join('x')}` +
      (engine.oneThreadMs ? ` (one thread ${engine.oneThreadMs.median.toFixed(1)} ms)` : '') +
      '; decoding alone ...',
  );
  // The server's JPEG decoder: the fast path's module where it was built.
  const decoder = nativeJpegDecoder();
  const decode = await decodeOnly(image.jpeg, image, options.maxSize, options.threads, decoder);
  options.log(
    `decode: ${decode.ms.median.toFixed(1)} ms` +
      (decode.twoThreadsMs ? ` (two threads ${decode.twoThreadsMs.median.toFixed(1)} ms)` : '') +
      `, at 1/8 scale ${decode.eighthMs.median.toFixed(1)} ms`,
  );
  options.log('the library alone (FaceDetector.detect on the same bytes) ...');
  const library = await libraryOnly(options, image.jpeg);
  options.log(`library: ${library.median.toFixed(1)} ms; starting the server ...`);
  const server = await startServer(options);
  const rows: LoadRow[] = [];
  try {
    const run = (connections: number, duration: number) =>
      autocannon({
        url: `${server.url}/detect_faces_from_files/`,
        method: 'POST',
        connections,
        duration,
        form: { files: { type: 'file', path: file } },
      });
    options.log(`warm-up ${options.warmupS} s ...`);
    await run(1, options.warmupS);
    for (const c of options.concurrency) {
      options.log(`concurrency ${c}, ${options.durationS} s ...`);
      const load0 = load1();
      const pids = [process.pid, ...(server.child.pid !== undefined ? [server.child.pid] : [])];
      const before = await scrape(server.url);
      const cpuFrom = cpuSnapshot(pids);
      const result = await run(c, options.durationS);
      const cpuTo = cpuSnapshot(pids);
      const after = await scrape(server.url);
      const stage = (name: string) =>
        meanMs(before, after, `facedet_stage_duration_seconds{stage="${name}"}`);
      const stagesMs: Record<string, number | undefined> = {};
      for (const name of STAGES) stagesMs[name] = stage(name);
      rows.push({
        concurrency: c,
        requests: result.requests.total,
        requestsPerSecond: Math.round((result.requests.total / result.duration) * 100) / 100,
        latencyMs: {
          p50: result.latency.p50,
          p90: result.latency.p90,
          p99: result.latency.p99,
          mean: result.latency.mean,
          max: result.latency.max,
        },
        errors: result.errors + result.timeouts,
        non2xx: result.non2xx,
        stagesMs,
        meanBatchSize: meanOf(before, after, 'facedet_batch_size'),
        load: [load0, load1()],
        ...(cpuFrom && cpuTo ? { others: cpuShare(cpuFrom, cpuTo) } : {}),
      });
    }
  } finally {
    await server.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return {
    tool: 'facedet bench:load',
    date: new Date().toISOString(),
    machine: machineFacts({ libtorch: null, onnxruntime: null, python: null }),
    settings: {
      model: options.model,
      backend: options.backend,
      precision: options.precision,
      threads: options.threads,
      maxSize: options.maxSize,
      durationS: options.durationS,
      image: `${image.source}, 1920x1080 JPEG q90, ${image.jpeg.length} bytes, POST /detect_faces_from_files/`,
    },
    engineOnly: engine,
    decodeOnly: decode,
    libraryOnly: library,
    rows,
  };
}

function otherCpu(r: LoadRow): string {
  if (!r.others) return `load ${r.load[0]}→${r.load[1]}`;
  return r.others.steal > 0
    ? `${r.others.others.toFixed(2)} + ${r.others.steal.toFixed(2)} stolen`
    : r.others.others.toFixed(2);
}

/** ", bf16" beside the backend; nothing for fp32 (and for reports older than the setting). */
const precisionNote = (precision: string | undefined) =>
  precision && precision !== 'fp32' ? `, ${precision}` : '';

export type LoadReport = Awaited<ReturnType<typeof runLoad>>;

/** Who decodes the request's JPEG (reports older than the JPEG fast path lack the field: sharp). */
const decodedWith = (decodeOnly: { decoder?: string; resizer?: string } | undefined) => {
  const decoder = decodeOnly?.decoder;
  if (decodeOnly?.resizer === 'none') {
    return !decoder || decoder === 'sharp'
      ? 'decoded by sharp'
      : `decoded by ${decoder} (the addon's JPEG fast path)`;
  }
  if (!decoder || decoder === 'sharp') return 'decoded and resized by sharp';
  return decodeOnly?.resizer === 'addon'
    ? `decoded by ${decoder} and resized as sharp resizes, row by row (the addon's JPEG fast path)`
    : `decoded by ${decoder} (the addon's JPEG fast path) and resized by sharp`;
};

/** The issue's goal for a request alone in the server: p50 at most this times the engine alone. */
export const SERVER_GOAL = 1.15;

interface FloorReport {
  settings: { threads: number };
  engineOnly: { ms: { median: number }; oneThreadMs?: { median: number } };
  decodeOnly?: { ms: { median: number }; twoThreadsMs?: { median: number } };
}

/**
 * The CPU time of a request's work at concurrency 1 (`row`): decoding, the network, and the server's own
 * stages (body parse, pack, postprocess, JSON: one thread each, their times in the row). Decoding's and
 * the network's CPU time is taken as their time on one thread, or their time on several threads × the
 * threads where that is less (splitting work across threads rarely removes any). Undefined for reports
 * without these figures.
 */
function requestCpuMs(report: FloorReport, row: LoadRow) {
  const one = report.engineOnly.oneThreadMs?.median;
  const decodeOne = report.decodeOnly?.ms.median;
  if (one === undefined || decodeOne === undefined) return undefined;
  const network = Math.min(one, report.settings.threads * report.engineOnly.ms.median);
  const two = report.decodeOnly?.twoThreadsMs?.median;
  const decode = Math.min(decodeOne, two === undefined ? Infinity : 2 * two);
  const st = row.stagesMs;
  const server = ['body_parse', 'pack', 'postprocess', 'serialize'].reduce((t, k) => t + (st[k] ?? 0), 0);
  return { network, decode, server };
}

/**
 * The least latency the machine's CPUs allow a request at concurrency 1: on `cpus` CPUs its work
 * (requestCpuMs) takes at least its sum ÷ `cpus` of wall time even if it all overlapped perfectly, which
 * it cannot (the network needs the whole image).
 */
export function cpuFloorMs(report: FloorReport, row: LoadRow, cpus: number): number | undefined {
  const cpu = requestCpuMs(report, row);
  return cpu && (cpu.network + cpu.decode + cpu.server) / cpus;
}

/**
 * The least latency of a request at concurrency 1 whose image is decoded before its network starts (a
 * convolutional network needs the whole image): the decode at its fastest (on two threads where timed),
 * then the network alone and the server's own stages, one after the other.
 */
export function sequentialFloorMs(report: FloorReport, row: LoadRow): number | undefined {
  const cpu = requestCpuMs(report, row);
  const decode = report.decodeOnly && (report.decodeOnly.twoThreadsMs ?? report.decodeOnly.ms).median;
  return cpu && decode !== undefined ? decode + report.engineOnly.ms.median + cpu.server : undefined;
}

/** cpuFloorMs and sequentialFloorMs in words (empty for reports without their figures). */
function cpuFloor(report: FloorReport, row: LoadRow, cpus: number): string {
  const cpu = requestCpuMs(report, row);
  const floor = cpuFloorMs(report, row, cpus);
  const sequential = sequentialFloorMs(report, row);
  if (!cpu || floor === undefined) return '';
  const { network, decode, server } = cpu;
  const ratio = floor / report.engineOnly.ms.median;
  const sequentialRatio = sequential === undefined ? 0 : sequential / report.engineOnly.ms.median;
  return (
    ` The CPU time of the request's work is at least its parts' times on one thread (decoding ` +
    `${fmtMs(decode)}, the network ${fmtMs(network)}, body parse, pack, postprocess and JSON ${fmtMs(server)} ms): ` +
    `on ${cpus} CPUs no schedule finishes it in under ${fmtMsUnit(floor)}, ${ratio.toFixed(2)}× the engine, ` +
    'before the HTTP round trip' +
    (ratio > SERVER_GOAL
      ? ' (the goal is below what these CPUs allow this decoding and this network).'
      : '.') +
    (sequential === undefined
      ? ''
      : ' Decoded first (the network needs the whole image), at its fastest, then the network and those stages: ' +
        `at least ${fmtMsUnit(sequential)}, ${sequentialRatio.toFixed(2)}× the engine` +
        (sequentialRatio > SERVER_GOAL
          ? ' (above the goal: only a network started on part of the image could meet it).'
          : '.'))
  );
}

/**
 * Reports written before decodeOnly was measured lack it, those before the JPEG fast path its decoder,
 * and those before the fast path resized its resizer (sharp did).
 */
export function loadMarkdown(
  report: Omit<LoadReport, 'decodeOnly' | 'libraryOnly'> & {
    libraryOnly?: LoadReport['libraryOnly'];
    decodeOnly?: Omit<LoadReport['decodeOnly'], 'decoder' | 'resizer'> & {
      decoder?: string;
      resizer?: string;
    };
  },
): string {
  const m = report.machine;
  const s = report.settings;
  const lines = [
    `**facedet serve under load, backend ${s.backend}${precisionNote(s.precision)}** — ${report.date.slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `**Machine:** ${m.cpu} (${m.cpus} CPUs), Node ${m.node}. **Server:** ${path.basename(s.model)}${readModel(s.model).card.synthetic ? ' (SYNTHETIC weights: no faces)' : ''}, backend ${s.backend}${precisionNote(s.precision)}, ` +
      `${s.threads} threads, max size ${s.maxSize || '0 (images at their own size)'}, rate limit off, 127.0.0.1. **Image:** ${s.image}. ${s.durationS} s per row.`,
    '',
    `Engine alone on that image (${report.engineOnly.shape.join('×')}): ${fmtMsUnit(report.engineOnly.ms.median)} ` +
      `[${fmtMs(report.engineOnly.ms.min)}–${fmtMs(report.engineOnly.ms.max)}]` +
      (report.engineOnly.oneThreadMs
        ? ` on ${s.threads} threads, ${fmtMsUnit(report.engineOnly.oneThreadMs.median)} ` +
          `[${fmtMs(report.engineOnly.oneThreadMs.min)}–${fmtMs(report.engineOnly.oneThreadMs.max)}] on one`
        : '') +
      ` (median [min–max] of ${report.engineOnly.ms.n} runs back to back, after 5 untimed).`,
    ...(report.decodeOnly
      ? [
          '',
          `Decoding alone, before the server starts (one image at a time, as the server does: ` +
            `${decodedWith(report.decodeOnly)} ${s.maxSize ? `to max size ${s.maxSize}` : 'at its own size'}): ` +
            `${fmtMs(report.decodeOnly.ms.median)} ms ` +
            `[${fmtMs(report.decodeOnly.ms.min)}–${fmtMs(report.decodeOnly.ms.max)}]` +
            (report.decodeOnly.twoThreadsMs
              ? ` on one thread (as under load), ${fmtMs(report.decodeOnly.twoThreadsMs.median)} ms ` +
                `[${fmtMs(report.decodeOnly.twoThreadsMs.min)}–${fmtMs(report.decodeOnly.twoThreadsMs.max)}] on two ` +
                '(as for a request alone in the server: libjpeg-turbo entropy-decodes on the second)'
              : '') +
            "; through sharp at 1/8 of the image's size, " +
            `where libjpeg scales in the DCT and skips most of the inverse DCT and colour conversion but none of ` +
            `the entropy decoding (sequential): ${fmtMs(report.decodeOnly.eighthMs.median)} ms ` +
            `[${fmtMs(report.decodeOnly.eighthMs.min)}–${fmtMs(report.decodeOnly.eighthMs.max)}] (medians [min–max] ` +
            `of ${report.decodeOnly.ms.n} runs each, after 5 untimed).`,
        ]
      : []),
    ...(report.libraryOnly
      ? [
          '',
          `The library alone on that image (\`FaceDetector.detect\` on the JPEG's bytes in one process, one call ` +
            `at a time, with the server's settings): ${fmtMsUnit(report.libraryOnly.median)} ` +
            `[${fmtMs(report.libraryOnly.min)}–${fmtMs(report.libraryOnly.max)}] (median [min–max] of ` +
            `${report.libraryOnly.n} calls, after 5 untimed).`,
        ]
      : []),
    '',
    '| concurrency | req/s | p50 ms | p99 ms | p50 ÷ engine | errors | ' +
      'body parse | decode | queue wait | pack | infer | postprocess | JSON | images/batch | other CPU |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const ms = (v: number | undefined) => (v === undefined ? '–' : fmtMs(v));
  for (const r of report.rows) {
    const st = r.stagesMs;
    lines.push(
      `| ${r.concurrency} | ${r.requestsPerSecond.toFixed(1)} | ${r.latencyMs.p50} | ${r.latencyMs.p99} | ` +
        `${(r.latencyMs.p50 / report.engineOnly.ms.median).toFixed(2)}× | ${r.errors + r.non2xx} | ` +
        `${ms(st.body_parse)} | ${ms(st.decode)} | ${ms(st.queue_wait)} | ${ms(st.pack)} | ${ms(st.infer)} | ` +
        `${ms(st.postprocess)} | ${ms(st.serialize)} | ${r.meanBatchSize?.toFixed(2) ?? '–'} | ${otherCpu(r)} |`,
    );
  }
  lines.push(
    '',
    "Stage columns: mean ms per request (one image each) from the server's facedet_stage_duration_seconds; " +
      `decode (${decodedWith(report.decodeOnly)}) and queue wait per image; pack, infer and postprocess per batch. ` +
      'Other CPU: CPUs used by processes other than the server and the load generator while the row ran ' +
      '(from /proc; "stolen": taken by the hypervisor).',
  );
  const one = report.rows.find((r) => r.concurrency === 1);
  const decode = one?.stagesMs.decode;
  if (one && decode !== undefined) {
    // Where the time outside the network goes at concurrency 1 (the goal: p50 ≤ 1.15× the engine).
    const engine = report.engineOnly.ms.median;
    const st = one.stagesMs;
    const rest = ['body_parse', 'queue_wait', 'postprocess', 'serialize'].reduce(
      (t, k) => t + (st[k] ?? 0),
      0,
    );
    lines.push(
      '',
      `At concurrency 1, p50 ÷ engine is ${(one.latencyMs.p50 / engine).toFixed(2)}× (goal ≤ ${SERVER_GOAL}×): before the ` +
        `network starts, decoding ${s.maxSize ? 'and resizing ' : ''}the JPEG takes ${ms(decode)} ms (${((100 * decode) / engine).toFixed(0)}% ` +
        `of the engine time) and packing the tensor ${ms(st.pack)} ms; body parse, queue wait, postprocess and JSON ` +
        `add ${ms(rest)} ms.` +
        (report.decodeOnly
          ? ` The goal leaves ${fmtMsUnit((SERVER_GOAL - 1) * engine)} for all of it; decoding this JPEG alone takes ` +
            `${ms((report.decodeOnly.twoThreadsMs ?? report.decodeOnly.ms).median)} ms` +
            (report.decodeOnly.twoThreadsMs ? ' on two threads' : '') +
            `, and ${ms(report.decodeOnly.eighthMs.median)} ms through sharp even at 1/8 scale.`
          : '') +
        cpuFloor(report, one, m.cpus) +
        (report.libraryOnly
          ? ` Against the library alone on this image (${fmtMsUnit(report.libraryOnly.median)}), p50 is ` +
            `${(one.latencyMs.p50 / report.libraryOnly.median).toFixed(2)}×` +
            (one.latencyMs.p50 > report.libraryOnly.median
              ? ': the rest is what serving over HTTP adds (the multipart body, JSON, the round trip on loopback).'
              : ' (p50 is whole milliseconds; the two differ within the noise).')
          : ''),
    );
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      backend: { type: 'string' },
      precision: { type: 'string' },
      threads: { type: 'string' },
      concurrency: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      'max-size': { type: 'string' },
      image: { type: 'string' },
      json: { type: 'boolean' },
      out: { type: 'string' },
      readme: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'Usage: npm run bench:load -- [--model DIR] [--threads N] [--concurrency 1,4,8] [--duration S]\n' +
        '                            [--warmup S] [--max-size N] [--image FILE] [--json] [--out FILE]\n' +
        '                            [--backend torch|onnxruntime] [--precision fp32|bf16] [--readme FILE]\n',
    );
    return 0;
  }
  const precision = (values.precision ?? 'fp32') as LoadOptions['precision'];
  if (precision !== 'fp32' && precision !== 'bf16') {
    throw new Error(`--precision: expected fp32 or bf16, got '${precision}'`);
  }
  const model = path.resolve(values.model ?? defaultModelDir());
  // As the server picks it (bf16 runs on LibTorch).
  const backend = (values.backend ??
    defaultBackend(readModel(model), 'cpu', precision)) as LoadOptions['backend'];
  if (backend !== 'torch' && backend !== 'onnxruntime')
    throw new Error(`--backend: unknown backend '${backend}'`);
  if (precision === 'bf16' && backend !== 'torch') throw new Error('--precision bf16 needs --backend torch');
  const options: LoadOptions = {
    model,
    backend,
    precision,
    threads: Number(values.threads ?? os.availableParallelism()),
    concurrency: (values.concurrency ?? '1,4,8').split(',').map(Number),
    durationS: Number(values.duration ?? 15),
    warmupS: Number(values.warmup ?? 3),
    maxSize: Number(values['max-size'] ?? 1080),
    ...(values.image ? { image: values.image } : {}),
    log: (line) => process.stderr.write(`[bench:load] ${line}\n`),
  };
  const report = await runLoad(options);
  const stamp = report.date.replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const file = values.out ?? path.join(process.cwd(), 'bench-results', `load-${stamp}.json`);
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(report, null, 1) + '\n');
  if (values.readme) {
    const { backbone } = readModel(options.model).card;
    const maxSize = options.maxSize === 1080 ? '' : `-max${options.maxSize}`;
    const key = `load-${backbone}-${backend}${precision === 'fp32' ? '' : `-${precision}`}${maxSize}`;
    replaceReadmeSection(values.readme, key, loadMarkdown(report));
  }
  if (values.json) process.stdout.write(JSON.stringify(report, null, 1) + '\n');
  else process.stdout.write(loadMarkdown(report) + `\n\nJSON: ${path.relative(process.cwd(), file)}\n`);
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (error: unknown) => {
      process.stderr.write(`bench:load: ${(error as Error).stack ?? String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
