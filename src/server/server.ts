// SPDX-License-Identifier: MIT
// startServer(): listens at once, loads and warms up the model in the background (`/ready/` is 503
// until then) and shuts down gracefully: stop accepting, finish in-flight requests, dispose the
// detector.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import { FaceDetector, type FaceDetectorOptions } from '../detector';
import { DetectorSlot, type FacedetApp, createApp } from './app';
import type { ServerConfig } from './config';
import type { FetchImageOptions } from './fetch-image';
import { Metrics } from './metrics';

export interface StartOptions {
  config: ServerConfig;
  /** Default: pino JSON lines on stdout at config.logLevel. */
  logger?: Logger;
  /** Loads the detector (default: FaceDetector.create with the config); call it with these options. */
  load?: (options: FaceDetectorOptions) => Promise<FaceDetector>;
  fetchOptions?: Partial<FetchImageOptions>;
}

export interface RunningServer extends FacedetApp {
  server: http.Server;
  logger: Logger;
  /** http://host:port of the listening socket. */
  url: string;
  /** Resolves when the model is loaded and warmed up; rejects when loading fails. */
  ready: Promise<FaceDetector>;
  /** Stops accepting, finishes in-flight requests, disposes the detector. Idempotent. */
  shutdown(reason?: string): Promise<void>;
}

export function createLogger(config: Pick<ServerConfig, 'logLevel'>): Logger {
  return pino({ name: 'facedet', level: config.logLevel });
}

/** The detector options that follow from the server configuration. */
export function detectorOptions(config: ServerConfig, metrics: Metrics): FaceDetectorOptions {
  const optional = {
    model: config.model,
    backend: config.backend,
    threads: config.threads,
    maxBatchSize: config.maxBatchSize,
    maxQueueDelayMs: config.maxQueueDelayMs,
    maxConcurrentBatches: config.maxConcurrentBatches,
    colourTables: config.colourTables,
  };
  return {
    ...Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)),
    device: config.device,
    precision: config.precision,
    maxSize: config.maxSize,
    maxPixels: config.maxPixels,
    maxQueueSize: config.maxQueueSize,
    onBatch: metrics.observeBatch,
  };
}

export async function startServer(options: StartOptions): Promise<RunningServer> {
  const { config } = options;
  const logger = options.logger ?? createLogger(config);
  logger.info({ config }, 'configuration');
  const metrics = new Metrics();
  const slot = new DetectorSlot();
  const facedet = createApp({
    config,
    logger,
    detector: slot,
    metrics,
    ...(options.fetchOptions ? { fetchOptions: options.fetchOptions } : {}),
  });

  // Requests in flight: on shutdown they finish, with `Connection: close`.
  const inFlight = new Set<http.ServerResponse>();
  let stopping = false;
  const server = http.createServer(facedet.app.callback());
  server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    inFlight.add(res);
    if (stopping && !res.headersSent) res.setHeader('Connection', 'close');
    res.on('close', () => {
      inFlight.delete(res);
      if (stopping) server.closeIdleConnections();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  logger.info({ url }, 'listening');

  const load = options.load ?? ((o: FaceDetectorOptions) => FaceDetector.create(o));
  const started = performance.now();
  const ready = load(detectorOptions(config, metrics)).then(
    (detector) => {
      slot.set(detector);
      metrics.ready.set(1);
      const info = detector.info();
      logger.info(
        {
          model: info.model.name,
          modelDir: info.modelDir,
          engine: info.engine,
          jpegDecoder: info.jpegDecoder,
          options: info.options,
          ms: Math.round(performance.now() - started),
        },
        'model ready',
      );
      return detector;
    },
    (error: unknown) => {
      const message = (error as Error)?.message ?? String(error);
      slot.fail(message);
      logger.fatal({ err: error }, 'the model failed to load');
      throw error;
    },
  );
  ready.catch(() => {}); // the caller decides; an unobserved failure must not crash the process

  let shutting: Promise<void> | undefined;
  const shutdown = (reason = 'shutdown') => {
    shutting ??= (async () => {
      stopping = true;
      slot.stop();
      metrics.ready.set(0);
      logger.info({ reason, inFlight: inFlight.size }, 'shutting down: finishing in-flight requests');
      for (const res of inFlight) if (!res.headersSent) res.setHeader('Connection', 'close');
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => {
        logger.warn({ inFlight: inFlight.size }, 'shutdown timeout: closing the remaining connections');
        server.closeAllConnections();
      }, config.shutdownTimeoutMs);
      await closed;
      clearTimeout(timer);
      const detector = await ready.catch(() => undefined);
      await detector?.dispose();
      logger.info('stopped');
    })();
    return shutting;
  };

  return { ...facedet, server, logger, url, ready, shutdown };
}
