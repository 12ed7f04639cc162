// SPDX-License-Identifier: MIT
// createApp(): the Koa application -- middleware order, routes, docs, metrics. It serves requests
// before the model is loaded (`/ready/` and the detection endpoints answer 503 not_ready until then).
import fs from 'node:fs';
import path from 'node:path';
import Router from '@koa/router';
import Koa from 'koa';
import type { Logger } from 'pino';
import type { FaceDetector } from '../detector';
import type { ServerConfig } from './config';
import { docsRoutes } from './docs';
import { notReadyError } from './errors';
import { type FetchImageOptions, createImageFetcher } from './fetch-image';
import { Metrics } from './metrics';
import { accessLog } from './middleware/access-log';
import { errorHandler } from './middleware/error-handler';
import { RateLimiter, rateLimit } from './middleware/rate-limit';
import { requestId } from './middleware/request-id';
import { buildOpenApi } from './openapi';
import { type FetchSource, detectRoutes, label } from './routes/detect';
import type { AppState } from './types';

/** Holds the detector once it is loaded; answers not_ready before that and while shutting down. */
export class DetectorSlot {
  private current: FaceDetector | undefined;
  private stopping = false;
  private failure: string | undefined;

  constructor(detector?: FaceDetector) {
    this.current = detector;
  }

  set(detector: FaceDetector): void {
    this.current = detector;
  }

  /** The model could not be loaded: not_ready says why. */
  fail(message: string): void {
    this.failure = message;
  }

  /**
   * Shutting down: `/ready/` answers 503 so that load balancers stop sending traffic. Detection goes
   * on: requests already received finish (the listening socket is closed, so no new ones come).
   */
  stop(): void {
    this.stopping = true;
  }

  get ready(): boolean {
    return this.current !== undefined && !this.stopping;
  }

  get detector(): FaceDetector | undefined {
    return this.current;
  }

  /** The detector, or a 503 not_ready error while it loads (or when it failed to load). */
  get(): FaceDetector {
    if (this.failure) throw notReadyError(`the model failed to load: ${this.failure}`);
    if (!this.current) throw notReadyError('the model is loading; retry shortly');
    return this.current;
  }

  /** For `/ready/`: the detector, or 503 not_ready while loading or shutting down. */
  getReady(): FaceDetector {
    if (this.stopping) throw notReadyError('the server is shutting down');
    return this.get();
  }
}

export interface AppOptions {
  config: ServerConfig;
  logger: Logger;
  /** A loaded detector, or a slot that receives one later. */
  detector: FaceDetector | DetectorSlot;
  /** Pass the same Metrics as the detector's onBatch (metrics.observeBatch); one is made if absent. */
  metrics?: Metrics;
  /** Options of the URL fetcher beyond the config (tests inject a `lookup` resolver here). */
  fetchOptions?: Partial<FetchImageOptions>;
  /** Version shown in the OpenAPI document. */
  version?: string;
}

export interface FacedetApp {
  app: Koa<AppState>;
  metrics: Metrics;
  slot: DetectorSlot;
  openapi: Record<string, unknown>;
}

function packageVersion(): string {
  try {
    const file = path.join(__dirname, '..', '..', 'package.json');
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

/** The URL endpoint's fetcher: fetchImage under the configured limits (plus `extra`, e.g. a test resolver). */
export function defaultFetchSource(
  config: ServerConfig,
  extra: Partial<FetchImageOptions> = {},
): FetchSource {
  return createImageFetcher({
    allowPrivate: config.allowPrivateSources,
    maxBytes: config.maxDownloadBytes,
    maxRedirects: config.maxRedirects,
    timeoutMs: config.downloadTimeoutMs,
    ...extra,
  });
}

export function createApp(options: AppOptions): FacedetApp {
  const { config, logger } = options;
  const slot =
    options.detector instanceof DetectorSlot ? options.detector : new DetectorSlot(options.detector);
  const metrics = options.metrics ?? new Metrics();
  metrics.watchQueue(() => slot.detector?.pending ?? 0);
  const openapi = buildOpenApi(config, options.version ?? packageVersion());
  const limiter = new RateLimiter({ rate: config.rateLimit, burst: config.rateLimitBurst });

  const app = new Koa<AppState>({ proxy: config.trustProxy });
  // Errors are answered by errorHandler (and logged there when unexpected); this sees only the
  // rare ones after the response started (a broken socket while streaming).
  app.on('error', (error: unknown) => logger.debug({ err: error }, 'response error'));

  const router = new Router<AppState>();
  router.get('/health', label('/health'), (ctx) => {
    ctx.body = { status: 'ok' };
  });
  router.get('/ready', label('/ready/'), (ctx) => {
    const detector = slot.getReady();
    metrics.ready.set(1);
    const info = detector.info();
    ctx.body = { ready: true, model: info.model.name, device: info.options.device };
  });
  router.get('/metrics', label('/metrics'), async (ctx) => {
    metrics.ready.set(slot.ready ? 1 : 0);
    ctx.type = metrics.registry.contentType;
    ctx.body = await metrics.registry.metrics();
  });
  router.get('/openapi.json', label('/openapi.json'), (ctx) => {
    ctx.body = openapi;
  });
  docsRoutes(router);
  detectRoutes(router, {
    config,
    metrics,
    detector: () => slot.get(),
    fetchSource: defaultFetchSource(config, options.fetchOptions),
    // Rate limit first (cheapest), then 503 not_ready while the model loads, before reading bodies.
    guards: [
      rateLimit(limiter),
      async (_ctx, next) => {
        slot.get();
        await next();
      },
    ],
  });

  app.use(requestId(logger));
  app.use(accessLog(metrics));
  app.use(errorHandler());
  app.use(router.routes());
  app.use(router.allowedMethods());
  return { app, metrics, slot, openapi };
}
