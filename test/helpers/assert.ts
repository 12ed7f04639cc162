import * as assert from 'uvu/assert';

/** Awaits a promise that must reject; checks the error's class and message; returns the error. */
export async function rejects<E extends Error = Error>(
  promise: Promise<unknown> | (() => Promise<unknown>),
  message: RegExp | string,
  errorClass: new (...args: never[]) => Error = Error,
): Promise<E> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (error) {
    assert.instance(error, errorClass);
    const text = (error as Error).message;
    if (typeof message === 'string') assert.is(text, message);
    else assert.match(text, message);
    return error as E;
  }
  throw new assert.Assertion({
    message: `expected a rejection matching ${String(message)}`,
    operator: 'rejects',
    expects: message,
    actual: 'no rejection',
  });
}
