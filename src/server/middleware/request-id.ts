// SPDX-License-Identifier: MIT
// Gives every request an id (the client's X-Request-Id when it is sane, else a UUID), echoes it in the
// response and binds it to the request's logger.
import { randomUUID } from 'node:crypto';
import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import type { AppState } from '../types';

const USABLE_ID = /^[\w.:@/+=-]{1,128}$/;

export function requestId(logger: Logger): Middleware<AppState> {
  return async (ctx, next) => {
    const given = ctx.get('X-Request-Id');
    const id = USABLE_ID.test(given) ? given : randomUUID();
    ctx.state.requestId = id;
    ctx.state.log = logger.child({ reqId: id });
    ctx.set('X-Request-Id', id);
    await next();
  };
}
