/**
 * @module
 * Domain errors. Each carries the HTTP status and stable code it maps to, so the one error
 * handler in the app can answer with the house error body without knowing every error.
 */

/** Base class of every error a client may be told about (status and code, safe message). */
export class EdgeError extends Error {
  readonly status: number;
  /** Stable, machine-readable, e.g. `bad_path`. */
  readonly code: string;
  /** Extra fields for the error body; must be safe to show a client. */
  readonly details: Record<string, unknown> | undefined;

  constructor(status: number, code: string, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = "EdgeError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The request path cannot be forwarded safely (encoded slashes, dot segments, …). */
export class BadPathError extends EdgeError {
  constructor(message: string) {
    super(400, "bad_path", message);
    this.name = "BadPathError";
  }
}

/** The origin did not answer with headers within `ORIGIN_TIMEOUT_MS`. */
export class OriginTimeoutError extends EdgeError {
  constructor(timeoutMs: number) {
    super(504, "origin_timeout", `The origin did not answer within ${timeoutMs} ms`);
    this.name = "OriginTimeoutError";
  }
}

/** The client went away before the origin answered; nobody reads the answer (status 499). */
export class ClientClosedError extends EdgeError {
  constructor() {
    super(499, "client_closed", "The client closed the request");
    this.name = "ClientClosedError";
  }
}

/** The origin refused, reset or otherwise failed the connection. */
export class OriginUnavailableError extends EdgeError {
  constructor(cause?: string) {
    super(502, "origin_unavailable", "The origin could not be reached");
    this.name = "OriginUnavailableError";
    if (cause !== undefined) this.cause = cause;
  }
}

/**
 * The origin's body stalled after the headers went on: the stream errors and the client connection
 * is closed, so a truncated body never looks complete.
 */
export class OriginBodyTimeoutError extends EdgeError {
  constructor(idleMs: number) {
    super(504, "origin_body_timeout", `The origin sent no body data for ${idleMs} ms`);
    this.name = "OriginBodyTimeoutError";
  }
}

/** Too much of one kind of work at once: 429 with `Retry-After`, so a well-behaved sender waits. */
export class BusyError extends EdgeError {
  readonly retryAfterSec: number;

  constructor(message: string, retryAfterSec: number) {
    super(429, "busy", message);
    this.name = "BusyError";
    this.retryAfterSec = retryAfterSec;
  }
}

/** KV failed work a request cannot do without: 503 so a publisher retries; the cause stays in logs. */
export class StoreUnavailableError extends EdgeError {
  constructor(cause?: unknown) {
    super(503, "store_unavailable", "The edge store is unavailable; retry later");
    this.name = "StoreUnavailableError";
    this.cause = cause;
  }
}

/** The house error body, `{ error: { code, message, ...details } }`. */
export function errorBody(
  code: string,
  message: string,
  details?: Record<string, unknown>,
): { error: Record<string, unknown> } {
  return { error: { code, message, ...details } };
}
