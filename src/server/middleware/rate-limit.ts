// SPDX-License-Identifier: MIT
// Per-client rate limiting: a token bucket per IP (`rate` tokens a second, `burst` at most). A request
// without a token is answered 429 rate_limited with Retry-After at once.
import type { Middleware } from 'koa';
import { rateLimitedError } from '../errors';
import type { AppState } from '../types';

interface Bucket {
  tokens: number;
  updated: number;
}

export interface RateLimitOptions {
  /** Requests a second per client; 0 disables the limit. */
  rate: number;
  /** Requests a client may send at once. */
  burst: number;
  /** Clients tracked at most; the idlest are forgotten first (memory bound). */
  maxClients?: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxClients: number;

  constructor(private readonly options: RateLimitOptions) {
    this.maxClients = options.maxClients ?? 100_000;
  }

  /** Takes a token for `key`; returns 0 when allowed, else the seconds until one is available. */
  take(key: string, now = performance.now()): number {
    const { rate, burst } = this.options;
    if (rate <= 0) return 0;
    let bucket = this.buckets.get(key);
    if (bucket) {
      this.buckets.delete(key); // re-inserted below: the Map stays ordered by last use
      bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.updated) / 1000) * rate);
      bucket.updated = now;
    } else {
      bucket = { tokens: burst, updated: now };
      if (this.buckets.size >= this.maxClients) {
        const oldest = this.buckets.keys().next().value;
        if (oldest !== undefined) this.buckets.delete(oldest);
      }
    }
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return (1 - bucket.tokens) / rate;
  }

  get clients(): number {
    return this.buckets.size;
  }
}

export function rateLimit(limiter: RateLimiter): Middleware<AppState> {
  return async (ctx, next) => {
    const wait = limiter.take(ctx.ip);
    if (wait > 0) throw rateLimitedError(Math.max(1, Math.ceil(wait)));
    await next();
  };
}
