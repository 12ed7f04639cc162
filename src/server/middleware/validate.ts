// SPDX-License-Identifier: MIT
// validate(schema): parses the request body with a zod schema into ctx.state.input; the first issue
// becomes a 400 validation_error "<field>: <message>".
import type { Middleware } from 'koa';
import { z } from 'zod';
import { validationError } from '../errors';
import type { AppState } from '../types';

/** `images_url[2]`, `confidence_threshold`, or `body` for the root. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out ? `.${String(key)}` : String(key);
  }
  return out || 'body';
}

export function issueMessage(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'body: invalid';
  return `${fieldPath(issue.path)}: ${issue.message}`;
}

export function validate<S extends z.ZodType>(
  schema: S,
  select: (ctx: Parameters<Middleware<AppState>>[0]) => unknown = (ctx) => ctx.request.body,
): Middleware<AppState> {
  return async (ctx, next) => {
    const parsed = schema.safeParse(select(ctx));
    if (!parsed.success) throw validationError(issueMessage(parsed.error));
    ctx.state.input = parsed.data;
    await next();
  };
}
