#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// The `facedet` command: export, detect (and the server and benchmark commands registered below).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { FaceDetector, type FaceDetectorOptions } from './detector';
import { FacedetError } from './errors';
import { ConfigError, configFlags, configHelp, loadConfig } from './server/config';
import { defaultGroundTruth, runEvaluation } from './eval/cli';
import { BenchUsageError, benchMain, benchOptions, benchUsage } from './bench/cli';

const packageRoot = path.resolve(__dirname, '..');

export class UsageError extends Error {}

type Values = Record<string, string | boolean | string[] | undefined>;

interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  run(values: Values, positionals: string[]): Promise<number>;
}

/** Parses a CLI number, with the flag's name in the error. */
export function numberFlag(values: Values, name: string, integer = true): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (
    typeof raw !== 'string' ||
    raw.trim() === '' ||
    !Number.isFinite(n) ||
    (integer && !Number.isInteger(n))
  ) {
    throw new UsageError(`--${name} expects ${integer ? 'an integer' : 'a number'}, got '${String(raw)}'`);
  }
  return n;
}

/** The Python interpreter with PyTorch: $FACEDET_PYTHON, else Debian's, else python3 on PATH. */
export function pythonInterpreter(): string {
  if (process.env.FACEDET_PYTHON) return process.env.FACEDET_PYTHON;
  return fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
}

const exportCommand: Command = {
  summary: 'export RetinaFace weights to TorchScript + ONNX + a model card',
  usage:
    'facedet export --backbone mobilenet0.25|resnet50 (--weights FILE | --synthetic-weights) --out DIR\n' +
    '               [--int8 [--calibration-images DIR]... [--calibration-limit N]] [--reference-images DIR]...',
  options: {
    backbone: { type: 'string' },
    weights: { type: 'string' },
    'synthetic-weights': { type: 'boolean' },
    out: { type: 'string' },
    int8: { type: 'boolean' },
    'calibration-images': { type: 'string', multiple: true },
    'calibration-limit': { type: 'string' },
    'reference-images': { type: 'string', multiple: true },
  },
  async run(values) {
    if (!values.backbone || !values.out) throw new UsageError('--backbone and --out are required');
    const args = [
      path.join(packageRoot, 'scripts', 'export_model.py'),
      '--backbone',
      String(values.backbone),
    ];
    if (values.weights) args.push('--weights', String(values.weights));
    if (values['synthetic-weights']) args.push('--synthetic-weights');
    if (values.int8) args.push('--int8');
    for (const dir of (values['calibration-images'] as string[] | undefined) ?? [])
      args.push('--calibration-images', dir);
    if (values['calibration-limit'] !== undefined)
      args.push('--calibration-limit', String(values['calibration-limit']));
    args.push('--out', String(values.out));
    for (const dir of (values['reference-images'] as string[] | undefined) ?? [])
      args.push('--reference-images', dir);
    const python = pythonInterpreter();
    const result = spawnSync(python, args, { stdio: 'inherit' });
    if (result.error) {
      throw new FacedetError(
        'invalid_argument',
        `cannot run ${python}: ${result.error.message}. Export needs Python 3 with PyTorch ` +
          '(Debian: sudo apt-get install python3-torch python3-torchvision python3-onnx), or set FACEDET_PYTHON.',
      );
    }
    return result.status ?? 1;
  },
};

const detectCommand: Command = {
  summary: 'detect faces in image files and print {"result": [...]} as JSON',
  usage:
    'facedet detect [--model DIR] [--max-size N] [--threshold T] [--nms-iou T] [--no-clip]\n' +
    '               [--device cpu|cuda] [--backend torch|onnxruntime|tensorrt] [--precision fp32|fp16|bf16|int8]\n' +
    '               [--threads N] [--pretty] FILE...',
  options: {
    model: { type: 'string' },
    'max-size': { type: 'string' },
    threshold: { type: 'string' },
    'nms-iou': { type: 'string' },
    'no-clip': { type: 'boolean' },
    device: { type: 'string' },
    backend: { type: 'string' },
    precision: { type: 'string' },
    threads: { type: 'string' },
    pretty: { type: 'boolean' },
  },
  async run(values, files) {
    if (files.length === 0) throw new UsageError('give at least one image file');
    const maxSize = numberFlag(values, 'max-size');
    const threads = numberFlag(values, 'threads');
    const detector = await FaceDetector.create({
      ...(values.model ? { model: String(values.model) } : {}),
      ...(values.device ? { device: String(values.device) } : {}),
      ...(values.backend ? { backend: String(values.backend) as FaceDetectorOptions['backend'] } : {}),
      ...(values.precision
        ? { precision: String(values.precision) as FaceDetectorOptions['precision'] }
        : {}),
      ...(threads !== undefined ? { threads } : {}),
      ...(maxSize !== undefined ? { maxSize } : {}),
      warmup: [],
    });
    try {
      const threshold = numberFlag(values, 'threshold', false);
      const nmsIou = numberFlag(values, 'nms-iou', false);
      const result = await detector.detect(files, {
        ...(threshold !== undefined ? { confidenceThreshold: threshold } : {}),
        ...(nmsIou !== undefined ? { nmsIou } : {}),
        clipBoxes: !values['no-clip'],
      });
      process.stdout.write(JSON.stringify({ result }, null, values.pretty ? 2 : undefined) + '\n');
      return result.some((r) => r.error) ? 1 : 0;
    } finally {
      await detector.dispose();
    }
  },
};

function listFlag(values: Values, name: string): number[] | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  return String(raw)
    .split(',')
    .map((part) => numberFlag({ [name]: part.trim() }, name)!);
}

const evalCommand: Command = {
  summary: 'WIDER FACE AP of the pipeline beside the PyTorch reference (npm run eval)',
  usage:
    'facedet eval [--model DIR] [--gt FILE|DIR]... [--max-size N] [--sizes 0,1080,640] [--no-reference]\n' +
    '             [--weights FILE] [--threads N] [--precision fp32|bf16|int8] [--out DIR] [--dump DIR]\n' +
    '             [--tolerance T] [--readme FILE]',
  options: {
    model: { type: 'string' },
    gt: { type: 'string', multiple: true },
    'max-size': { type: 'string' },
    sizes: { type: 'string' },
    'no-reference': { type: 'boolean' },
    weights: { type: 'string' },
    threads: { type: 'string' },
    precision: { type: 'string' },
    out: { type: 'string' },
    dump: { type: 'string' },
    tolerance: { type: 'string' },
    readme: { type: 'string' },
  },
  async run(values) {
    const tolerance = numberFlag(values, 'tolerance', false);
    await runEvaluation({
      ...(values.model ? { model: String(values.model) } : {}),
      gt: (values.gt as string[] | undefined) ?? defaultGroundTruth(),
      maxSize: numberFlag(values, 'max-size') ?? 0,
      sizes: listFlag(values, 'sizes') ?? [0, 1080, 640],
      reference: !values['no-reference'],
      ...(values.weights ? { weights: String(values.weights) } : {}),
      threads: numberFlag(values, 'threads') ?? 2,
      ...(values.precision !== undefined
        ? { precision: String(values.precision) as 'fp32' | 'bf16' | 'int8' }
        : {}),
      outDir: String(values.out ?? path.join(packageRoot, 'eval-results')),
      ...(values.dump ? { dump: String(values.dump) } : {}),
      ...(tolerance !== undefined ? { tolerance } : {}),
      ...(values.readme ? { readme: String(values.readme) } : {}),
      python: pythonInterpreter(),
      log: (line) => process.stdout.write(line + '\n'),
    });
    return 0;
  },
};

const serveCommand: Command = {
  summary: 'run the REST server (settings: flags or FACEDET_* variables)',
  usage: `facedet serve [options]   (flags win over FACEDET_* variables)\n${configHelp()}`,
  options: configFlags(),
  async run(values) {
    let config;
    try {
      config = loadConfig(process.env, values);
    } catch (error) {
      if (error instanceof ConfigError) throw new UsageError(error.message);
      throw error;
    }
    // Loaded here so that the other commands do not load Koa.
    const { startServer } = await import('./server/server.js');
    const { tuneHeapGrowth } = await import('./server/heap.js');
    const heapGrowingPercent = tuneHeapGrowth();
    const running = await startServer({ config });
    running.logger.info({ heapGrowingPercent: heapGrowingPercent ?? null }, 'v8 heap growth');
    return new Promise<number>((resolve) => {
      let code = 0;
      const stop = (reason: string) => {
        process.off('SIGTERM', onTerm);
        process.off('SIGINT', onInt);
        running.shutdown(reason).then(
          () => resolve(code),
          (error: unknown) => {
            running.logger.error({ err: error }, 'shutdown failed');
            resolve(1);
          },
        );
      };
      const onTerm = () => stop('SIGTERM');
      const onInt = () => stop('SIGINT');
      process.once('SIGTERM', onTerm);
      process.once('SIGINT', onInt);
      running.ready.catch(() => {
        code = 1;
        stop('the model failed to load');
      });
    });
  },
};

const benchCommand: Command = {
  summary: 'CPU benchmark: engine and whole path per image vs PyTorch and onnxruntime-node (npm run bench)',
  usage: benchUsage,
  options: benchOptions,
  async run(values) {
    try {
      return await benchMain(values, pythonInterpreter());
    } catch (error) {
      if (error instanceof BenchUsageError) throw new UsageError(error.message);
      throw error;
    }
  },
};

export const commands: Record<string, Command> = {
  export: exportCommand,
  detect: detectCommand,
  eval: evalCommand,
  serve: serveCommand,
  bench: benchCommand,
};

function help(): string {
  const lines = ['Usage: facedet <command> [options]', '', 'Commands:'];
  for (const [name, command] of Object.entries(commands))
    lines.push(`  ${name.padEnd(8)} ${command.summary}`);
  lines.push('', 'Run `facedet <command> --help` for its options.');
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`facedet: unknown command '${name}'\n\n${help()}\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`Usage: ${command.usage}\n`);
    return 0;
  }
  try {
    const { values, positionals } = parseArgs({
      args: rest,
      options: command.options,
      allowPositionals: true,
    });
    return await command.run(values as Values, positionals);
  } catch (error) {
    const usage =
      error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`facedet ${name}: ${(error as Error).message}\n`);
    if (usage) process.stderr.write(`Usage: ${command.usage}\n`);
    return usage ? 2 : 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`facedet: ${(error as Error).stack ?? String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
