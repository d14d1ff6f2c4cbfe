/**
 * @module
 * Read-through client for the central backend: `GET {BACKEND_URL}/edge/users/{userId}/context`
 * answers `{ "events": [ … ] }` in the sync wire format. One request in flight per user
 * (singleflight), a hard timeout, and a circuit breaker. It never throws: every failure is a
 * value, so the request path can fall back to what the edge has.
 */
import { z } from "zod";
import type { Config } from "../app/config.ts";
import { readAtMost } from "../http/body.ts";
import { DeadlineSweep } from "../support/deadlines.ts";
import { MAX_EVENTS_PER_BATCH } from "../sync/schema.ts";

/** Largest backend answer read, in bytes; a longer one is a failure. */
export const DEFAULT_BACKEND_MAX_BYTES = 1024 * 1024;

/** The backend's answer body. */
const ContextAnswer = z.object({ events: z.array(z.unknown()).max(MAX_EVENTS_PER_BATCH) });

/** Why a read-through failed. */
export type BackendFailure =
  | "timeout"
  | "breaker_open"
  | "network"
  | "http_status"
  | "redirect"
  | "too_large"
  | "invalid_body"
  | "invalid_user_id"
  | "busy";

/**
 * What the read-through of one context load did, as the context stage, its cache and the metrics
 * see it: not needed, the backend's answer, an answer whose events did not validate, or a failure.
 */
export type ReadThroughOutcome =
  | "skipped"
  | "ok"
  | "unknown_user"
  | "invalid_events"
  | `failed:${BackendFailure}`;

/** The outcome of one read-through. */
export type BackendResult =
  | {
    status: "ok";
    /** Events of the wire contract, not yet validated one by one (the apply path does that). */
    events: unknown[];
    durationMs: number;
  }
  | { status: "unknown_user"; durationMs: number }
  | { status: "failed"; reason: BackendFailure; httpStatus?: number; durationMs: number };

/** Circuit breaker states. */
export type BreakerState = "closed" | "open" | "half_open";

/** The breaker's state, for metrics and health. */
export interface BreakerSnapshot {
  state: BreakerState;
  /** Failures since the last success. */
  consecutiveFailures: number;
  /** When the breaker last opened, epoch ms. */
  openedAt: number | undefined;
}

/** Counters for metrics. */
export interface BackendStats {
  /** Requests actually sent to the backend. */
  requests: number;
  /** Calls that joined a request already in flight for the same user. */
  coalesced: number;
  /** Calls answered without a request: `breaker_open`, or `busy` (BACKEND_MAX_CONCURRENT in flight). */
  rejected: number;
  ok: number;
  unknownUsers: number;
  failures: number;
  timeouts: number;
}

/** Options for {@linkcode BackendClient}. */
export interface BackendClientOptions {
  /** `BACKEND_URL`: the path `edge/users/{id}/context` is appended to its path. */
  baseUrl: URL;
  /** `BACKEND_TOKEN`, sent as `Authorization: Bearer …`. */
  token: string;
  /** Longest a caller waits, in milliseconds (`BACKEND_TIMEOUT_MS`). */
  timeoutMs: number;
  /** The `fetch` to use (injected; `main.ts` passes the global one). */
  fetch: typeof fetch;
  /** Wall clock, epoch ms, for the breaker's cool-down. */
  now: () => number;
  /** Consecutive failures that open the breaker (`BREAKER_FAILURE_THRESHOLD`, default 5). */
  failureThreshold?: number;
  /** How long the breaker stays open before a half-open probe (`BREAKER_COOLDOWN_MS`, default 5000). */
  cooldownMs?: number;
  /** Largest answer read, in bytes (default {@linkcode DEFAULT_BACKEND_MAX_BYTES}). */
  maxBytes?: number;
  /**
   * Read-throughs in flight at once (`BACKEND_MAX_CONCURRENT`, default 16): each answer is held
   * and parsed in the heap; beyond the bound a user is served what the edge has (`busy`).
   */
  maxConcurrent?: number;
  /** Bounds each request in time (`Deps.deadlines`); without it the client keeps a sweep of its own. */
  deadlines?: DeadlineSweep;
}

/**
 * Builds the read-through URL of a user: the user id is one percent-encoded path segment under
 * the base URL's path, and the result must stay on the base URL's origin.
 * @param baseUrl `BACKEND_URL`
 * @returns the URL, or `undefined` when the id cannot be a single path segment (empty, `.`,
 * `..`, longer than 256 characters)
 * @example
 * ```ts
 * backendContextUrl(new URL("https://api.example/v1/"), "a/b")?.href;
 * // "https://api.example/v1/edge/users/a%2Fb/context"
 * ```
 */
export function backendContextUrl(baseUrl: URL, userId: string): URL | undefined {
  // WHATWG URLs resolve "." and ".." segments: such an id would leave the route.
  if (userId === "" || userId.length > 256 || userId === "." || userId === "..") return undefined;
  const base = baseUrl.pathname.replace(/\/+$/, "");
  const url = new URL(baseUrl.href);
  url.pathname = `${base}/edge/users/${encodeURIComponent(userId)}/context`;
  url.search = "";
  url.hash = "";
  if (url.origin !== baseUrl.origin || !url.pathname.endsWith("/context")) return undefined;
  return url;
}

/**
 * The read-through client: one per isolate, created at start-up, since it holds the breaker and
 * the in-flight requests.
 */
export class BackendClient {
  #baseUrl: URL;
  #authorization: string;
  #timeoutMs: number;
  #fetch: typeof fetch;
  #now: () => number;
  #failureThreshold: number;
  #cooldownMs: number;
  #maxBytes: number;
  #maxConcurrent: number;
  #deadlines: DeadlineSweep;
  /** How many times the breaker has opened: a request remembers the count it was sent in. */
  #opened = 0;
  #inflight = new Map<string, Promise<BackendResult>>();
  #state: BreakerState = "closed";
  #consecutiveFailures = 0;
  #openedAt: number | undefined;
  #probing = false;
  #stats: BackendStats = {
    requests: 0,
    coalesced: 0,
    rejected: 0,
    ok: 0,
    unknownUsers: 0,
    failures: 0,
    timeouts: 0,
  };

  /** @throws {RangeError} when the timeout or a breaker setting is not a positive number */
  constructor(options: BackendClientOptions) {
    this.#baseUrl = new URL(options.baseUrl.href);
    this.#authorization = `Bearer ${options.token}`;
    this.#timeoutMs = options.timeoutMs;
    this.#fetch = options.fetch;
    this.#now = options.now;
    this.#failureThreshold = options.failureThreshold ?? 5;
    this.#cooldownMs = options.cooldownMs ?? 5000;
    this.#maxBytes = options.maxBytes ?? DEFAULT_BACKEND_MAX_BYTES;
    this.#maxConcurrent = options.maxConcurrent ?? 16;
    this.#deadlines = options.deadlines ?? new DeadlineSweep();
    for (
      const [name, value] of Object.entries({
        timeoutMs: this.#timeoutMs,
        failureThreshold: this.#failureThreshold,
        cooldownMs: this.#cooldownMs,
        maxBytes: this.#maxBytes,
        maxConcurrent: this.#maxConcurrent,
      })
    ) {
      if (!Number.isFinite(value) || value <= 0) {
        throw new RangeError(`Backend client "${name}" must be a positive number, got "${value}"`);
      }
    }
  }

  /**
   * Fetches what the backend knows about a user. Concurrent calls for the same user share one
   * request; no call waits longer than the timeout; an open breaker answers at once.
   * @returns `ok` with the events, `unknown_user` for a 404, or `failed` with a reason; never rejects
   */
  fetchUserContext(userId: string): Promise<BackendResult> {
    const running = this.#inflight.get(userId);
    if (running) {
      this.#stats.coalesced++;
      return running;
    }
    const url = backendContextUrl(this.#baseUrl, userId);
    if (!url) return Promise.resolve({ status: "failed", reason: "invalid_user_id", durationMs: 0 });
    // Not a backend failure: the breaker does not count it.
    if (this.#inflight.size >= this.#maxConcurrent) {
      this.#stats.rejected++;
      return Promise.resolve({ status: "failed", reason: "busy", durationMs: 0 });
    }
    const admitted = this.#admit();
    if (!admitted) {
      this.#stats.rejected++;
      return Promise.resolve({ status: "failed", reason: "breaker_open", durationMs: 0 });
    }
    const sentIn = this.#opened;
    const promise = this.#request(url).then((result) => {
      this.#record(result, admitted === "probe", sentIn);
      return result;
    }).finally(() => this.#inflight.delete(userId));
    this.#inflight.set(userId, promise);
    return promise;
  }

  /** The breaker's state (an open breaker whose cool-down is over reports `half_open`). */
  get breaker(): BreakerSnapshot {
    const state = this.#state === "open" && this.#cooledDown() ? "half_open" : this.#state;
    return { state, consecutiveFailures: this.#consecutiveFailures, openedAt: this.#openedAt };
  }

  /** Counters since start, for metrics. */
  stats(): BackendStats {
    return { ...this.#stats };
  }

  #cooledDown(): boolean {
    return this.#openedAt !== undefined && this.#now() - this.#openedAt >= this.#cooldownMs;
  }

  /**
   * Whether a request may be sent now, and as what: a request of a closed breaker, or the one
   * probe of a half-open one. Moves an open breaker to half-open after the cool-down.
   */
  #admit(): "closed" | "probe" | undefined {
    if (this.#state === "closed") return "closed";
    if (this.#state === "open") {
      if (!this.#cooledDown()) return undefined;
      this.#state = "half_open";
    }
    // Half-open: exactly one probe at a time.
    if (this.#probing) return undefined;
    this.#probing = true;
    return "probe";
  }

  /**
   * Counts a result. Only the probe's own result ends the probe: a request sent before the breaker
   * opened may finish while a probe is in flight, or during the cool-down, and must neither
   * admit a second probe nor decide for the probe, whether it failed or succeeded.
   */
  #record(result: BackendResult, probe: boolean, sentIn: number): void {
    if (probe) this.#probing = false;
    // Sent before the breaker last opened: counted, but the probe decides, not this.
    const stale = !probe && sentIn !== this.#opened;
    if (result.status === "ok" || result.status === "unknown_user") {
      if (result.status === "ok") this.#stats.ok++;
      else this.#stats.unknownUsers++;
      if (stale) return;
      this.#consecutiveFailures = 0;
      this.#state = "closed";
      this.#openedAt = undefined;
      return;
    }
    this.#stats.failures++;
    if (result.reason === "timeout") this.#stats.timeouts++;
    if (stale) return;
    this.#consecutiveFailures++;
    if (probe || (this.#state === "closed" && this.#consecutiveFailures >= this.#failureThreshold)) {
      this.#state = "open";
      this.#openedAt = this.#now();
      this.#opened++;
    }
  }

  async #request(url: URL): Promise<BackendResult> {
    this.#stats.requests++;
    const started = performance.now();
    const elapsed = () => Math.round((performance.now() - started) * 1000) / 1000;
    const controller = new AbortController();
    const attempt = this.#send(url, controller.signal).then(
      (outcome): BackendResult => ({ ...outcome, durationMs: elapsed() }),
      (): BackendResult => ({
        status: "failed",
        reason: controller.signal.aborted ? "timeout" : "network",
        durationMs: elapsed(),
      }),
    );
    try {
      // `attempt` never rejects: only the deadline does, which bounds even a fetch that ignores
      // the abort signal.
      return await this.#deadlines.within(attempt, this.#timeoutMs, "Backend read-through");
    } catch {
      return { status: "failed", reason: "timeout", durationMs: elapsed() };
    } finally {
      controller.abort();
    }
  }

  async #send(url: URL, signal: AbortSignal): Promise<DistributiveOmit<BackendResult, "durationMs">> {
    const response = await this.#fetch(url, {
      method: "GET",
      headers: { authorization: this.#authorization, accept: "application/json" },
      redirect: "manual",
      signal,
    });
    if (response.status === 404) {
      await response.body?.cancel();
      return { status: "unknown_user" };
    }
    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel();
      return { status: "failed", reason: "redirect", httpStatus: response.status };
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      return { status: "failed", reason: "http_status", httpStatus: response.status };
    }
    const bytes = await readAtMost(response.body, {
      maxBytes: this.#maxBytes,
      contentLength: response.headers.get("content-length"),
    });
    if (bytes === undefined) return { status: "failed", reason: "too_large" };
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return { status: "failed", reason: "invalid_body" };
    }
    const parsed = ContextAnswer.safeParse(json);
    if (!parsed.success) return { status: "failed", reason: "invalid_body" };
    return { status: "ok", events: parsed.data.events };
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** Options for {@linkcode backendClientFromConfig}. */
export interface BackendClientFromConfigOptions {
  fetch: typeof fetch;
  now: () => number;
  /** Bounds each request in time (`Deps.deadlines`). */
  deadlines?: DeadlineSweep;
}

/**
 * Builds the read-through client from the configuration.
 * @param config `BACKEND_URL`, `BACKEND_TOKEN`, `BACKEND_TIMEOUT_MS`, `BREAKER_*`
 * @param options the `fetch` and clock to use
 * @returns the client, or `undefined` when `BACKEND_URL` is not set (no read-through)
 */
export function backendClientFromConfig(
  config: Pick<
    Config,
    | "backendUrl"
    | "backendToken"
    | "backendTimeoutMs"
    | "backendMaxConcurrent"
    | "breakerFailureThreshold"
    | "breakerCooldownMs"
  >,
  options: BackendClientFromConfigOptions,
): BackendClient | undefined {
  if (!config.backendUrl || !config.backendToken) return undefined;
  return new BackendClient({
    baseUrl: config.backendUrl,
    token: config.backendToken,
    timeoutMs: config.backendTimeoutMs,
    failureThreshold: config.breakerFailureThreshold,
    cooldownMs: config.breakerCooldownMs,
    maxConcurrent: config.backendMaxConcurrent,
    fetch: options.fetch,
    now: options.now,
    deadlines: options.deadlines,
  });
}
