/**
 * Counts event-loop turns (setImmediate callbacks) while `work` runs: a call that blocks the loop
 * allows one or two, an asynchronous one allows many. Returns the work's result and the count.
 */
export async function eventLoopTurnsDuring<T>(
  work: () => Promise<T>,
): Promise<{ result: T; turns: number; ms: number }> {
  let turns = 0;
  let done = false;
  const spin = () => {
    if (done) return;
    turns++;
    setImmediate(spin);
  };
  const started = performance.now();
  setImmediate(spin);
  try {
    const result = await work();
    return { result, turns, ms: performance.now() - started };
  } finally {
    done = true;
  }
}
