// SPDX-License-Identifier: MIT
// Koa state and context types shared by the server's middleware and routes.
import type { ParameterizedContext } from 'koa';
import type { Logger } from 'pino';

export interface AppState {
  /** From X-Request-Id when the client sent a usable one, else a new UUID; echoed in the response. */
  requestId: string;
  /** The server's logger bound to this request's id. */
  log: Logger;
  /** The route's canonical path (metrics label); unset for unmatched paths. */
  route?: string;
  /** The request validated by `validate(schema)`. */
  input?: unknown;
  /** The code of the error this request was answered with (for the access log). */
  errorCode?: string;
}

export type AppContext = ParameterizedContext<AppState>;
