// SPDX-License-Identifier: MIT
// Prometheus metrics (prom-client) in the server's own registry.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BatchTimings } from '../detector';
import { nativeCaches } from '../native';

/** Stages of a detection request timed in `facedet_stage_duration_seconds`. */
export type Stage =
  | 'body_parse'
  | 'base64_decode'
  | 'download'
  | 'detect'
  | 'decode'
  | 'queue_wait'
  | 'pack'
  | 'infer'
  | 'postprocess'
  | 'serialize';

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'method' | 'route' | 'status'>;
  readonly requestDuration: Histogram<'method' | 'route' | 'status'>;
  readonly images: Counter<'endpoint' | 'outcome'>;
  readonly faces: Counter<'endpoint'>;
  readonly batches: Counter;
  readonly decoded: Counter<'decoder'>;
  readonly batchSize: Histogram;
  readonly queueDepth: Gauge;
  readonly inferenceDuration: Histogram;
  readonly stageDuration: Histogram<'stage'>;
  readonly ready: Gauge;
  readonly tensorCache: Gauge<'kind'>;
  readonly colourTables: Gauge;
  private pendingImages: () => number = () => 0;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'facedet_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'facedet_http_request_duration_seconds',
      help: 'HTTP request latency by route and status',
      labelNames: ['method', 'route', 'status'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.images = new Counter({
      name: 'facedet_images_total',
      help: 'images received by detection requests, by outcome (ok or the per-image error code)',
      labelNames: ['endpoint', 'outcome'],
      registers,
    });
    this.faces = new Counter({
      name: 'facedet_faces_total',
      help: 'faces returned',
      labelNames: ['endpoint'],
      registers,
    });
    this.batches = new Counter({
      name: 'facedet_batches_total',
      help: 'native inference batches run',
      registers,
    });
    this.decoded = new Counter({
      name: 'facedet_images_decoded_total',
      help: 'images decoded, by decoder: libjpeg-turbo (the JPEG fast path) or sharp',
      labelNames: ['decoder'],
      registers,
    });
    this.batchSize = new Histogram({
      name: 'facedet_batch_size',
      help: 'images per native inference batch',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128],
      registers,
    });
    this.queueDepth = new Gauge({
      name: 'facedet_queue_depth',
      help: 'images admitted by the detector and not finished (decoding, queued or in inference)',
      registers,
      collect: () => this.queueDepth.set(this.pendingImages()),
    });
    this.inferenceDuration = new Histogram({
      name: 'facedet_inference_duration_seconds',
      help: 'time of one native inference batch',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.stageDuration = new Histogram({
      name: 'facedet_stage_duration_seconds',
      help:
        'time per stage: body_parse, base64_decode, download (per request), detect (decode + queue + ' +
        'inference, per request), decode and queue_wait (per image), pack, infer, postprocess (per batch), serialize',
      labelNames: ['stage'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.ready = new Gauge({
      name: 'facedet_ready',
      help: '1 once the model is loaded and warmed up, else 0',
      registers,
    });
    this.tensorCache = new Gauge({
      name: 'facedet_cpu_tensor_cache_bytes',
      help:
        "LibTorch's cache of freed CPU tensors (the addon, on the CPU): cached (kept, free), in_use, " +
        'budget (the most it may keep: 1 GiB or 4x the most in use at once, or FACEDET_CPU_TENSOR_CACHE_MB)',
      labelNames: ['kind'],
      registers,
      collect: () => {
        const cache = nativeCaches().tensorCache;
        if (!cache?.floorBytes) return;
        this.tensorCache.set({ kind: 'cached' }, cache.cachedBytes);
        this.tensorCache.set({ kind: 'in_use' }, cache.inUseBytes);
        this.tensorCache.set({ kind: 'budget' }, cache.budgetBytes);
      },
    });
    this.colourTables = new Gauge({
      name: 'facedet_colour_tables',
      help: "JPEG fast path: ICC profiles holding a table of every colour's conversion (48 MiB each)",
      registers,
      collect: () => this.colourTables.set(nativeCaches().colourTables ?? 0),
    });
    if (options.defaultMetrics !== false)
      collectDefaultMetrics({ register: this.registry, prefix: 'facedet_' });
  }

  /** The queue depth gauge reads this when scraped. */
  watchQueue(pending: () => number): void {
    this.pendingImages = pending;
  }

  /** Pass as the detector's `onBatch`. */
  readonly observeBatch = (stats: BatchTimings): void => {
    this.batches.inc();
    this.batchSize.observe(stats.size);
    this.inferenceDuration.observe(stats.inferMs / 1000);
    this.stageDuration.observe({ stage: 'pack' }, stats.packMs / 1000);
    this.stageDuration.observe({ stage: 'infer' }, stats.inferMs / 1000);
    this.stageDuration.observe({ stage: 'postprocess' }, stats.postprocessMs / 1000);
    for (const ms of stats.queueMs) this.stageDuration.observe({ stage: 'queue_wait' }, ms / 1000);
    for (const ms of stats.decodeMs) this.stageDuration.observe({ stage: 'decode' }, ms / 1000);
    for (const decoder of stats.decoders) this.decoded.inc({ decoder });
  };

  stage(stage: Stage, ms: number): void {
    this.stageDuration.observe({ stage }, ms / 1000);
  }
}
