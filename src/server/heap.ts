// SPDX-License-Identifier: MIT
// V8's heap growth in the `facedet serve` process. With the server's modules loaded the old generation
// holds ≈ 10-16 MB, and V8 (Node 20) set its next limit only a young generation's capacity above that
// (its smallest growing factor: collections are fast next to the mutator). Promoting anything then
// restarted incremental marking at once: a full mark-compact every 3-4 requests of a 1080p JPEG, whose
// marking threads took the CPUs from decoding and the network (measured in alternation, MobileNet0.25,
// 2 CPUs: 34-35 against 37-39 requests/s at concurrency 1, p99 44-45 against 36-37 ms; 40-42 against
// 46-47 at concurrency 4). A growing factor of 4 leaves room for a few dozen requests between
// collections, for ≈ 50 MB more resident memory.
import v8 from 'node:v8';

/** V8's --heap-growing-percent in the server process: the old generation grows to 4× its live size. */
export const HEAP_GROWING_PERCENT = 300;

/**
 * Sets V8's heap growing factor for this process unless node was started with its own
 * (`node --heap-growing-percent=N`; 0 is V8's own heuristics). Returns the percentage in force, or
 * undefined for V8's heuristics.
 */
export function tuneHeapGrowth(execArgv: readonly string[] = process.execArgv): number | undefined {
  const given = execArgv.find((arg) => /^--heap[-_]growing[-_]percent(=|$)/.test(arg));
  if (given !== undefined) {
    const value = Number(given.split('=')[1]);
    return Number.isInteger(value) && value > 0 ? value : undefined;
  }
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return HEAP_GROWING_PERCENT;
}
