// SPDX-License-Identifier: MIT
// A dynamic batcher: items from concurrent callers are queued and run together, up to
// `maxBatchSize` per batch, waiting at most `maxQueueDelayMs` for a batch to fill. One failed batch
// rejects only its own items.

export interface BatcherOptions {
  /** Items per batch, at most. */
  maxBatchSize: number;
  /** How long the first queued item may wait for others before its batch runs (0 = next tick). */
  maxQueueDelayMs: number;
  /** Batches running at once: a number, or a function asked each time a batch could start. */
  maxConcurrentBatches: number | (() => number);
}

interface Pending<T, R> {
  item: T;
  enqueued: number;
  resolve: (value: R) => void;
  reject: (reason: unknown) => void;
}

export class Batcher<T, R> {
  private queue: Pending<T, R>[] = [];
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private scheduled = false;
  /** Batches dispatched so far. */
  batches = 0;

  constructor(
    /** Runs one batch; `queueMs` is how long each item waited. */
    private readonly run: (items: T[], queueMs: number[]) => Promise<R[]>,
    private readonly options: BatcherOptions,
  ) {}

  /** Items waiting for a batch. */
  get queued(): number {
    return this.queue.length;
  }

  /** Batches running now. */
  get active(): number {
    return this.running;
  }

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, enqueued: performance.now(), resolve, reject });
      this.schedule();
    });
  }

  private limit(): number {
    const { maxConcurrentBatches } = this.options;
    return typeof maxConcurrentBatches === 'function' ? maxConcurrentBatches() : maxConcurrentBatches;
  }

  private schedule(): void {
    if (this.running >= this.limit() || this.queue.length === 0) return;
    if (this.queue.length >= this.options.maxBatchSize) {
      this.dispatch();
      return;
    }
    if (this.timer || this.scheduled) return;
    const waited = performance.now() - this.queue[0]!.enqueued;
    const delay = this.options.maxQueueDelayMs - waited;
    if (delay <= 0) {
      // Let callers of the same tick (one request's images, concurrent requests) join first.
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.dispatch();
      });
    } else {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.dispatch();
      }, delay);
    }
  }

  private dispatch(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.running >= this.limit() || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.options.maxBatchSize);
    this.running++;
    this.batches++;
    const now = performance.now();
    let results: Promise<R[]>;
    try {
      results = this.run(
        batch.map((p) => p.item),
        batch.map((p) => now - p.enqueued),
      );
    } catch (error) {
      results = Promise.reject(error);
    }
    results
      .then(
        (values) => {
          if (values.length !== batch.length)
            throw new Error(`batch returned ${values.length} results for ${batch.length} items`);
          batch.forEach((p, i) => p.resolve(values[i]!));
        },
        (error: unknown) => {
          for (const p of batch) p.reject(error);
        },
      )
      .catch((error: unknown) => {
        for (const p of batch) p.reject(error);
      })
      .finally(() => {
        this.running--;
        this.schedule();
      });
    this.schedule();
  }
}
