// SPDX-License-Identifier: MIT
// One structured log line and the request metrics per request, with the final status (this runs
// outside the error middleware).
import type { Middleware } from 'koa';
import type { Metrics } from '../metrics';
import type { AppState } from '../types';

export function accessLog(metrics: Metrics): Middleware<AppState> {
  return async (ctx, next) => {
    const start = performance.now();
    try {
      await next();
    } finally {
      const ms = performance.now() - start;
      const route = ctx.state.route ?? 'unmatched';
      const labels = { method: ctx.method, route, status: String(ctx.status) };
      metrics.requests.inc(labels);
      metrics.requestDuration.observe(labels, ms / 1000);
      const level = ctx.status >= 500 ? 'warn' : 'info';
      ctx.state.log[level](
        {
          method: ctx.method,
          url: ctx.originalUrl,
          route,
          status: ctx.status,
          ms: Math.round(ms * 10) / 10,
          ip: ctx.ip,
          ...(ctx.state.errorCode ? { error: ctx.state.errorCode } : {}),
        },
        'request',
      );
    }
  };
}
