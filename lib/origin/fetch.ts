/**
 * @module
 * The streamed, time-limited `fetch` to the origin: a deadline on the response headers, and on
 * the body either one bounded read (small bodies) or an idle guard (everything else).
 */
import {
  ClientClosedError,
  OriginBodyTimeoutError,
  OriginTimeoutError,
  OriginUnavailableError,
} from "../http/errors.ts";
import type { DeadlineSweep } from "../support/deadlines.ts";

/** Options for {@linkcode fetchOrigin}. */
export interface FetchOriginOptions {
  fetch: typeof fetch;
  /** How long to wait for the response headers. */
  timeoutMs: number;
  /** Longest origin silence mid-body while the client waits; a small body's whole read (default `timeoutMs`). */
  bodyIdleTimeoutMs?: number;
  /** Aborts the upstream request, e.g. when the client goes away. */
  signal?: AbortSignal;
  /** Told when the body idle timeout cut a response off. */
  onBodyIdle?: () => void;
  deadlines: DeadlineSweep;
}

/** What the origin answered: status, headers, and the body read whole or guarded as a stream. */
export interface OriginResponse {
  status: number;
  statusText: string;
  /** Immutable; see {@linkcode downstreamResponseHeaders}. */
  headers: Headers;
  /** The bytes of a small body, else a stream guarded by the idle timeout; null without a body. */
  body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null;
}

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/**
 * Bodies up to this many bytes (uncompressed `Content-Length`) are read whole before the response
 * starts, so a stall becomes a clean 504 instead of a cut-off body; others stream through the idle guard.
 */
export const BUFFERED_BODY_MAX = 64 * 1024;

/**
 * Sends a request to the origin (body streamed, redirects not followed) with a deadline on the
 * headers and a limit on the body, so a stalled origin never holds both connections forever.
 *
 * @param url the upstream URL from {@linkcode buildUpstreamUrl} or {@linkcode upstreamUrls}
 * @param init method, headers and body of the upstream request
 * @param options fetch, timeouts, client signal
 * @throws {OriginTimeoutError} when no headers (or a small body) arrive in time
 * @throws {OriginUnavailableError} when the connection fails
 * @throws {ClientClosedError} when the client went away first
 */
export async function fetchOrigin(
  url: URL | string,
  init: { method: string; headers: HeadersInit; body: ReadableStream<Uint8Array> | null },
  options: FetchOriginOptions,
): Promise<OriginResponse> {
  const { deadlines } = options;
  if (options.signal?.aborted) throw new ClientClosedError();
  const controller = new AbortController();
  let timedOut = false;
  const expire = () => {
    timedOut = true;
    controller.abort();
  };
  const cancelDeadline = deadlines.arm(options.timeoutMs, expire);
  options.signal?.addEventListener("abort", () => controller.abort(options.signal?.reason), { once: true });
  const hasBody = init.body !== null && init.method !== "GET" && init.method !== "HEAD";
  const failure = () => {
    if (options.signal?.aborted) return new ClientClosedError();
    if (timedOut) return new OriginTimeoutError(options.timeoutMs);
    return new OriginUnavailableError();
  };
  let response: Response;
  try {
    response = await options.fetch(url, {
      method: init.method,
      headers: init.headers,
      body: hasBody ? init.body : undefined,
      redirect: "manual",
      signal: controller.signal,
      ...(hasBody ? { duplex: "half" } : {}),
    } as RequestInit);
  } catch {
    throw failure();
  } finally {
    cancelDeadline();
  }
  // A `Response` refuses a status outside 200–599.
  if (response.status < 200 || response.status > 599) {
    response.body?.cancel().catch(() => {});
    throw new OriginUnavailableError(`the origin answered with status ${response.status}`);
  }
  const answer: OriginResponse = {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
    body: null,
  };
  if (!response.body || NULL_BODY_STATUSES.has(response.status) || init.method === "HEAD") {
    response.body?.cancel().catch(() => {});
    return answer;
  }
  const idleMs = options.bodyIdleTimeoutMs ?? options.timeoutMs;
  if (isSmallBody(response.headers)) {
    const cancel = deadlines.arm(idleMs, expire);
    try {
      answer.body = await response.bytes();
      return answer;
    } catch {
      if (timedOut && !options.signal?.aborted) {
        options.onBodyIdle?.();
        throw new OriginTimeoutError(idleMs);
      }
      throw failure();
    } finally {
      cancel();
    }
  }
  answer.body = guardBodyIdle(response.body, {
    idleMs,
    onIdle: () => {
      controller.abort();
      options.onBodyIdle?.();
    },
  });
  return answer;
}

function isSmallBody(headers: Headers): boolean {
  const length = headers.get("content-length");
  if (length === null || !/^\d{1,6}$/.test(length) || Number(length) > BUFFERED_BODY_MAX) return false;
  const encoding = headers.get("content-encoding");
  return encoding === null || encoding.trim().toLowerCase() === "identity";
}

/** Options for {@linkcode guardBodyIdle}. */
export interface GuardBodyIdleOptions {
  /** Longest wait for the next chunk while the consumer is waiting. */
  idleMs: number;
  /** Called once, before the stream errors. */
  onIdle?: () => void;
}

/**
 * Wraps a body so that it errors with {@linkcode OriginBodyTimeoutError} when the source sends nothing
 * for `idleMs` during a pending read: a slow client (backpressure) never trips it, a silent origin does.
 * Kept whole: its closures share one timer, the reader and the stream's state.
 *
 * @param body the source stream
 * @param options the idle timeout and a hook
 */
export function guardBodyIdle(
  body: ReadableStream<Uint8Array>,
  options: GuardBodyIdleOptions,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const { idleMs } = options;
  // One timer per stream, not per chunk: on firing it re-arms for the rest of a later wait.
  let timer: ReturnType<typeof setTimeout> | undefined;
  let waitingSince = -1;
  let controllerRef: ReadableStreamDefaultController<Uint8Array> | undefined;
  let done = false;
  const check = () => {
    timer = undefined;
    if (done || waitingSince < 0) return;
    const waited = performance.now() - waitingSince;
    if (waited < idleMs) {
      timer = setTimeout(check, idleMs - waited);
      return;
    }
    done = true;
    const error = new OriginBodyTimeoutError(idleMs);
    // `Deno.serve` prints the error that ends a response body to stderr: keep it to one line.
    error.stack = `${error.name}: ${error.message}; the client connection was closed`;
    options.onIdle?.();
    controllerRef?.error(error);
    reader.cancel(error).catch(() => {});
  };
  const finish = () => {
    done = true;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controllerRef = controller;
    },
    async pull(controller) {
      waitingSince = performance.now();
      if (timer === undefined) timer = setTimeout(check, idleMs);
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        if (!done) {
          finish();
          controller.error(error);
        }
        return;
      }
      waitingSince = -1;
      if (done) return;
      if (result.done) {
        finish();
        controller.close();
      } else {
        controller.enqueue(result.value);
      }
    },
    cancel(reason) {
      finish();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
