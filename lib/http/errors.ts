/**
 * @module
 * Domain errors. Each carries the HTTP status and stable code it maps to, so the one error
 * handler in the app can answer with the house error body without knowing every error.
 */

/** Base class of every error a client may be told about (status and code, safe message). */
export class EdgeError extends Error {
  /** HTTP status the error maps to. */
  readonly status: number;
  /** Stable, machine-readable code, e.g. `bad_path`. */
  readonly code: string;
  /** Optional extra fields added to the error body (must be safe to show a client). */
  readonly details: Record<string, unknown> | undefined;

  /**
   * @param status HTTP status
   * @param code machine-readable code
   * @param message sentence-case message safe to show a client
   * @param details extra safe fields for the body
   */
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
  /** @param message what is wrong with the path */
  constructor(message: string) {
    super(400, "bad_path", message);
    this.name = "BadPathError";
  }
}

/** The origin did not answer with headers within `ORIGIN_TIMEOUT_MS`. */
export class OriginTimeoutError extends EdgeError {
  /** @param timeoutMs the timeout that elapsed */
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
  /**
   * @param cause what went wrong, for the log only (e.g. an answer no client may be sent)
   */
  constructor(cause?: string) {
    super(502, "origin_unavailable", "The origin could not be reached");
    this.name = "OriginUnavailableError";
    if (cause !== undefined) this.cause = cause;
  }
}

/**
 * The origin stopped sending its body for longer than the idle timeout after the headers had
 * been sent on. The client cannot be told with a status any more: the body stream errors with
 * this and the client connection is closed, so a truncated body never looks complete.
 */
export class OriginBodyTimeoutError extends EdgeError {
  /** @param idleMs the idle time that elapsed */
  constructor(idleMs: number) {
    super(504, "origin_body_timeout", `The origin sent no body data for ${idleMs} ms`);
    this.name = "OriginBodyTimeoutError";
  }
}

/** Too much of one kind of work at once: 429 with `Retry-After`, so a well-behaved sender waits. */
export class BusyError extends EdgeError {
  /** Seconds the client should wait before retrying. */
  readonly retryAfterSec: number;

  /**
   * @param message what is busy, safe to show a client
   * @param retryAfterSec seconds to wait
   */
  constructor(message: string, retryAfterSec: number) {
    super(429, "busy", message);
    this.name = "BusyError";
    this.retryAfterSec = retryAfterSec;
  }
}

/**
 * The edge's store (Deno KV) failed an operation a request cannot do without, such as applying
 * a sync batch. 503, so a publisher retries later; the KV error itself stays in `cause` for logs.
 */
export class StoreUnavailableError extends EdgeError {
  /** @param cause the store's error (never shown to a client) */
  constructor(cause?: unknown) {
    super(503, "store_unavailable", "The edge store is unavailable; retry later");
    this.name = "StoreUnavailableError";
    this.cause = cause;
  }
}

/**
 * Builds the house error body.
 *
 * @param code machine-readable code
 * @param message safe message
 * @param details extra safe fields
 * @returns `{ error: { code, message, ...details } }`
 */
export function errorBody(
  code: string,
  message: string,
  details?: Record<string, unknown>,
): { error: Record<string, unknown> } {
  return { error: { code, message, ...details } };
}
