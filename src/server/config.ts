// SPDX-License-Identifier: MIT
// Server configuration: one table of settings, each with a default, a FACEDET_* environment variable
// and a CLI flag. Flags win over the environment, the environment over the defaults.
import type { ParseArgsConfig } from 'node:util';
import type { Precision } from '../native';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface ServerConfig {
  port: number;
  host: string;
  model: string | undefined;
  device: string;
  backend: 'torch' | 'onnxruntime' | 'tensorrt' | undefined;
  precision: Precision;
  threads: number | undefined;
  maxSize: number;
  maxSizeLimit: number;
  maxBatchSize: number | undefined;
  maxQueueDelayMs: number | undefined;
  maxQueueSize: number;
  maxConcurrentBatches: number | undefined;
  colourTables: number | undefined;
  maxBodyBytes: number;
  maxImagesPerRequest: number;
  maxPixels: number;
  maxImageBytes: number;
  maxBase64Length: number;
  maxDownloadBytes: number;
  downloadTimeoutMs: number;
  maxRedirects: number;
  rateLimit: number;
  rateLimitBurst: number;
  trustProxy: boolean;
  allowPrivateSources: boolean;
  logLevel: LogLevel;
  shutdownTimeoutMs: number;
}

type Kind = 'int' | 'number' | 'string' | 'boolean' | 'level';

interface Setting {
  key: keyof ServerConfig;
  env: string;
  flag: string;
  kind: Kind;
  default: number | string | boolean | undefined;
  min?: number;
  max?: number;
  description: string;
  /** For strings: the values allowed. */
  choices?: readonly string[];
}

const MiB = 1024 * 1024;

/** Every setting of the server (also the source of the README's table and `facedet serve --help`). */
// prettier-ignore
export const SETTINGS: readonly Setting[] = [
  { key: 'port', env: 'FACEDET_PORT', flag: 'port', kind: 'int', default: 8080, min: 0, max: 65535, description: 'TCP port (0: any free port)' },
  { key: 'host', env: 'FACEDET_HOST', flag: 'host', kind: 'string', default: '0.0.0.0', description: 'address to listen on' },
  { key: 'model', env: 'FACEDET_MODEL', flag: 'model', kind: 'string', default: undefined, description: 'model folder (default: models/retinaface-mobilenet0.25)' },
  { key: 'device', env: 'FACEDET_DEVICE', flag: 'device', kind: 'string', default: 'cpu', description: "'cpu', 'cuda' or 'cuda:N'" },
  { key: 'backend', env: 'FACEDET_BACKEND', flag: 'backend', kind: 'string', default: undefined, choices: ['torch', 'onnxruntime', 'tensorrt'], description: "inference engine: 'torch' (the native LibTorch addon), 'onnxruntime' (CPU) or 'tensorrt' (default on CPU in fp32: torch when the addon runs its convolutions with oneDNN, else onnxruntime when installed; int8: onnxruntime when installed; torch otherwise)" },
  { key: 'precision', env: 'FACEDET_PRECISION', flag: 'precision', kind: 'string', default: 'fp32', choices: ['fp32', 'fp16', 'bf16', 'int8'], description: "'fp32', 'fp16' (CUDA), 'bf16' (CPU with AVX512-BF16 or AMX; backend torch) or 'int8' (CPU, experimental; a model exported with --int8)" },
  { key: 'threads', env: 'FACEDET_THREADS', flag: 'threads', kind: 'int', default: undefined, min: 1, max: 1024, description: 'LibTorch threads (default: the CPUs available)' },
  { key: 'maxSize', env: 'FACEDET_MAX_SIZE', flag: 'max-size', kind: 'int', default: 1080, min: 0, max: 16384, description: 'default longer-side limit images are resized to (0: original size); `max_size` per request' },
  { key: 'maxSizeLimit', env: 'FACEDET_MAX_SIZE_LIMIT', flag: 'max-size-limit', kind: 'int', default: 2048, min: 0, max: 16384, description: 'largest `max_size` a request may ask for; a request\'s `max_size: 0` (original size) means this (0: no limit)' },
  { key: 'maxBatchSize', env: 'FACEDET_MAX_BATCH_SIZE', flag: 'max-batch-size', kind: 'int', default: undefined, min: 1, max: 1024, description: 'images per native batch (default: 1 on CPU, 8 on CUDA)' },
  { key: 'maxQueueDelayMs', env: 'FACEDET_MAX_QUEUE_DELAY_MS', flag: 'max-queue-delay-ms', kind: 'number', default: undefined, min: 0, max: 60000, description: 'how long an image may wait for its batch to fill, ms (default 0: the same tick)' },
  { key: 'maxQueueSize', env: 'FACEDET_MAX_QUEUE_SIZE', flag: 'max-queue-size', kind: 'int', default: 256, min: 1, max: 1000000, description: 'images in progress at once; beyond it requests get 503 overloaded' },
  { key: 'maxConcurrentBatches', env: 'FACEDET_MAX_CONCURRENT_BATCHES', flag: 'max-concurrent-batches', kind: 'int', default: undefined, min: 1, max: 64, description: 'native batches running at once (default 1; 2 with LibTorch on the CPU: a second one-thread batch under load on 2 threads)' },
  { key: 'colourTables', env: 'FACEDET_COLOUR_TABLES', flag: 'colour-tables', kind: 'int', default: undefined, min: 0, max: 8, description: 'JPEGs with an ICC profile: profiles that may keep a 48 MiB table of every colour\'s conversion (default 2; 0: none)' },
  { key: 'maxBodyBytes', env: 'FACEDET_MAX_BODY_BYTES', flag: 'max-body-bytes', kind: 'int', default: 32 * MiB, min: 1024, max: 2 ** 32, description: 'request body size limit, bytes (JSON and multipart)' },
  { key: 'maxImagesPerRequest', env: 'FACEDET_MAX_IMAGES', flag: 'max-images', kind: 'int', default: 32, min: 1, max: 10000, description: 'images per request' },
  { key: 'maxPixels', env: 'FACEDET_MAX_PIXELS', flag: 'max-pixels', kind: 'int', default: 50_000_000, min: 1, max: 2 ** 40, description: 'pixels per image, checked from the header before decoding' },
  { key: 'maxImageBytes', env: 'FACEDET_MAX_IMAGE_BYTES', flag: 'max-image-bytes', kind: 'int', default: 20 * MiB, min: 1, max: 2 ** 32, description: 'size of one uploaded file, bytes' },
  { key: 'maxBase64Length', env: 'FACEDET_MAX_BASE64_LENGTH', flag: 'max-base64-length', kind: 'int', default: 28 * MiB, min: 4, max: 2 ** 32, description: 'characters of one base64 image (data: URL included)' },
  { key: 'maxDownloadBytes', env: 'FACEDET_MAX_DOWNLOAD_BYTES', flag: 'max-download-bytes', kind: 'int', default: 20 * MiB, min: 1, max: 2 ** 32, description: 'size of one downloaded image, bytes' },
  { key: 'downloadTimeoutMs', env: 'FACEDET_DOWNLOAD_TIMEOUT_MS', flag: 'download-timeout-ms', kind: 'int', default: 10000, min: 1, max: 600000, description: 'time for one download, redirects included, ms' },
  { key: 'maxRedirects', env: 'FACEDET_MAX_REDIRECTS', flag: 'max-redirects', kind: 'int', default: 3, min: 0, max: 20, description: 'redirects followed per download' },
  { key: 'rateLimit', env: 'FACEDET_RATE_LIMIT', flag: 'rate-limit', kind: 'number', default: 10, min: 0, max: 1e6, description: 'detection requests per second per client IP (0: no limit)' },
  { key: 'rateLimitBurst', env: 'FACEDET_RATE_LIMIT_BURST', flag: 'rate-limit-burst', kind: 'int', default: 20, min: 1, max: 1e6, description: 'requests a client may send at once before the rate applies' },
  { key: 'trustProxy', env: 'FACEDET_TRUST_PROXY', flag: 'trust-proxy', kind: 'boolean', default: false, description: 'take the client IP from X-Forwarded-For (behind a reverse proxy)' },
  { key: 'allowPrivateSources', env: 'FACEDET_ALLOW_PRIVATE_SOURCES', flag: 'allow-private-sources', kind: 'boolean', default: false, description: 'let the URL endpoint fetch from loopback/private/link-local addresses (trusted deployments only)' },
  { key: 'logLevel', env: 'FACEDET_LOG_LEVEL', flag: 'log-level', kind: 'level', default: 'info', description: `log level: ${LOG_LEVELS.join(', ')}` },
  { key: 'shutdownTimeoutMs', env: 'FACEDET_SHUTDOWN_TIMEOUT_MS', flag: 'shutdown-timeout-ms', kind: 'int', default: 30000, min: 0, max: 3600000, description: 'on SIGTERM/SIGINT, how long in-flight requests may take before connections are cut, ms' },
];

/** The defaults of every setting. */
export function defaultConfig(): ServerConfig {
  const config: Record<string, unknown> = {};
  for (const s of SETTINGS) config[s.key] = s.default;
  return config as unknown as ServerConfig;
}

function parseValue(s: Setting, raw: string | boolean, source: string): number | string | boolean {
  if (s.kind === 'boolean') {
    if (typeof raw === 'boolean') return raw;
    const v = raw.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(v)) return true;
    if (['0', 'false', 'no', 'off', ''].includes(v)) return false;
    throw new ConfigError(`${source} expects 1/0, true/false, yes/no or on/off, got '${raw}'`);
  }
  const text = String(raw);
  if (s.kind === 'string') {
    if (text === '') throw new ConfigError(`${source} expects a non-empty string`);
    if (s.choices && !s.choices.includes(text)) {
      throw new ConfigError(`${source} expects one of ${s.choices.join(', ')}, got '${text}'`);
    }
    return text;
  }
  if (s.kind === 'level') {
    if (!(LOG_LEVELS as readonly string[]).includes(text)) {
      throw new ConfigError(`${source} expects one of ${LOG_LEVELS.join(', ')}, got '${text}'`);
    }
    return text;
  }
  const n = Number(text);
  const integer = s.kind === 'int';
  if (
    text.trim() === '' ||
    !Number.isFinite(n) ||
    (integer && !Number.isInteger(n)) ||
    n < (s.min ?? -Infinity) ||
    n > (s.max ?? Infinity)
  ) {
    throw new ConfigError(
      `${source} expects ${integer ? 'an integer' : 'a number'} between ${s.min} and ${s.max}, got '${text}'`,
    );
  }
  return n;
}

/** The options of `facedet serve` for node:util parseArgs. */
export function configFlags(): NonNullable<ParseArgsConfig['options']> {
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const s of SETTINGS) options[s.flag] = { type: s.kind === 'boolean' ? 'boolean' : 'string' };
  return options;
}

/**
 * The configuration from the defaults, then `env` (FACEDET_*), then parsed CLI flags (keyed by flag
 * name, as parseArgs returns them). Throws ConfigError naming the variable or flag on a bad value.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  flags: Record<string, string | boolean | string[] | undefined> = {},
): ServerConfig {
  const config = defaultConfig() as unknown as Record<string, unknown>;
  for (const s of SETTINGS) {
    const fromEnv = env[s.env];
    if (fromEnv !== undefined && !(s.kind !== 'boolean' && fromEnv === '')) {
      config[s.key] = parseValue(s, fromEnv, s.env);
    }
    const fromFlag = flags[s.flag];
    if (fromFlag !== undefined) {
      if (Array.isArray(fromFlag)) throw new ConfigError(`--${s.flag} given more than once`);
      config[s.key] = parseValue(s, fromFlag, `--${s.flag}`);
    }
  }
  return config as unknown as ServerConfig;
}

/** Help text for the settings: `--flag VALUE  description (env, default)`. */
export function configHelp(): string {
  return SETTINGS.map((s) => {
    const flag = s.kind === 'boolean' ? `--${s.flag}` : `--${s.flag} V`;
    const def = s.default === undefined ? '' : `, default ${String(s.default)}`;
    return `  ${flag.padEnd(28)} ${s.description} (${s.env}${def})`;
  }).join('\n');
}
