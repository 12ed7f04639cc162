import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Batcher } from '../src/batcher';
import { rejects } from './helpers/assert';

const batching = suite('Batcher');

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function recorder(delayMs = 5) {
  const batches: number[][] = [];
  const run = async (items: number[]) => {
    batches.push(items);
    await sleep(delayMs);
    return items.map((x) => x * 10);
  };
  return { batches, run };
}

batching('items submitted in the same tick run as one batch, results go back in order', async () => {
  const { batches, run } = recorder();
  const batcher = new Batcher(run, { maxBatchSize: 8, maxQueueDelayMs: 0, maxConcurrentBatches: 1 });
  const results = await Promise.all([1, 2, 3].map((x) => batcher.submit(x)));
  assert.equal(results, [10, 20, 30]);
  assert.equal(batches, [[1, 2, 3]]);
  assert.is(batcher.batches, 1);
});

batching('batches never exceed maxBatchSize; items arriving during a batch form the next one', async () => {
  const { batches, run } = recorder(20);
  const batcher = new Batcher(run, { maxBatchSize: 2, maxQueueDelayMs: 0, maxConcurrentBatches: 1 });
  const first = [1, 2, 3].map((x) => batcher.submit(x));
  await sleep(5); // batch [1, 2] is running
  const later = [4, 5].map((x) => batcher.submit(x));
  await Promise.all([...first, ...later]);
  assert.equal(batches, [[1, 2], [3, 4], [5]]);
});

batching('maxQueueDelayMs waits for a batch to fill', async () => {
  const { batches, run } = recorder();
  const batcher = new Batcher(run, { maxBatchSize: 4, maxQueueDelayMs: 30, maxConcurrentBatches: 1 });
  const a = batcher.submit(1);
  await sleep(10);
  const b = batcher.submit(2);
  await Promise.all([a, b]);
  assert.equal(batches, [[1, 2]]);
});

batching('a full batch runs at once, without waiting for the delay', async () => {
  const { batches, run } = recorder();
  const batcher = new Batcher(run, { maxBatchSize: 2, maxQueueDelayMs: 10_000, maxConcurrentBatches: 1 });
  const started = performance.now();
  await Promise.all([batcher.submit(1), batcher.submit(2)]);
  assert.ok(performance.now() - started < 1000);
  assert.equal(batches, [[1, 2]]);
});

batching('a failed batch rejects only its own items', async () => {
  let calls = 0;
  const batcher = new Batcher(
    async (items: number[]) => {
      calls++;
      await sleep(5);
      if (items.includes(13)) throw new Error('unlucky batch');
      return items;
    },
    { maxBatchSize: 2, maxQueueDelayMs: 0, maxConcurrentBatches: 1 },
  );
  const results = await Promise.allSettled([12, 13, 14, 15].map((x) => batcher.submit(x)));
  assert.equal(
    results.map((r) => r.status),
    ['rejected', 'rejected', 'fulfilled', 'fulfilled'],
  );
  assert.match(String((results[0] as PromiseRejectedResult).reason), /unlucky batch/);
  assert.is(calls, 2);
});

batching('a run that throws synchronously or returns the wrong count rejects its batch', async () => {
  const throwing = new Batcher<number, number>(
    () => {
      throw new Error('sync failure');
    },
    { maxBatchSize: 4, maxQueueDelayMs: 0, maxConcurrentBatches: 1 },
  );
  await rejects(throwing.submit(1), /sync failure/);
  const short = new Batcher(async () => [1], {
    maxBatchSize: 4,
    maxQueueDelayMs: 0,
    maxConcurrentBatches: 1,
  });
  const settled = await Promise.allSettled([short.submit(1), short.submit(2)]);
  assert.ok(settled.every((r) => r.status === 'rejected'));
});

batching('maxConcurrentBatches bounds the batches running at once', async () => {
  let running = 0;
  let peak = 0;
  const batcher = new Batcher(
    async (items: number[]) => {
      running++;
      peak = Math.max(peak, running);
      await sleep(10);
      running--;
      return items;
    },
    { maxBatchSize: 1, maxQueueDelayMs: 0, maxConcurrentBatches: 2 },
  );
  await Promise.all([1, 2, 3, 4, 5].map((x) => batcher.submit(x)));
  assert.is(peak, 2);
});

batching('a maxConcurrentBatches function is asked each time a batch could start', async () => {
  let running = 0;
  const peaks: number[] = [];
  let limit = 1;
  const batcher = new Batcher(
    async (items: number[]) => {
      running++;
      peaks.push(running);
      await sleep(10);
      running--;
      return items;
    },
    { maxBatchSize: 1, maxQueueDelayMs: 0, maxConcurrentBatches: () => limit },
  );
  await Promise.all([1, 2, 3].map((x) => batcher.submit(x)));
  assert.equal(peaks, [1, 1, 1]);
  limit = 3;
  peaks.length = 0;
  await Promise.all([1, 2, 3].map((x) => batcher.submit(x)));
  assert.equal(peaks, [1, 2, 3]);
});

batching.run();
