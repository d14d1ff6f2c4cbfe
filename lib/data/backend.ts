/**
 * @module
 * Read-through client for the central backend: `GET {BACKEND_URL}/edge/users/{userId}/context`
 * answers `{ "events": [ … ] }` in the sync wire format. Singleflight, a hard timeout and a circuit
 * breaker; every failure is a value, so the request path can fall back to what the edge has.
 */
import { z } from "zod";
import type { Config } from "../app/config.ts";
import { readAtMost } from "../http/body.ts";
import { DeadlineSweep } from "../support/deadlines.ts";
import { MAX_EVENTS_PER_BATCH } from "../sync/schema.ts";

/** A longer answer is a failure. */
export const DEFAULT_BACKEND_MAX_BYTES = 1024 * 1024;

const ContextAnswer = z.object({ events: z.array(z.unknown()).max(MAX_EVENTS_PER_BATCH) });

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

/** What the read-through of one context load did: the one vocabulary of stage, cache and metrics. */
export type ReadThroughOutcome =
  | "skipped"
  | "ok"
  | "unknown_user"
  | "invalid_events"
  | `failed:${BackendFailure}`;

export type BackendResult =
  | {
    status: "ok";
    /** Not yet validated one by one: the apply path does that. */
    events: unknown[];
    durationMs: number;
  }
  | { status: "unknown_user"; durationMs: number }
  | { status: "failed"; reason: BackendFailure; httpStatus?: number; durationMs: number };

export type BreakerState = "closed" | "open" | "half_open";

/** The breaker's state, for metrics and health. */
export interface BreakerSnapshot {
  state: BreakerState;
  consecutiveFailures: number;
  openedAt: number | undefined;
}

export interface BackendStats {
  requests: number;
  /** Calls that joined a request already in flight for the same user. */
  coalesced: number;
  /** `breaker_open` or `busy`: answered without a request. */
  rejected: number;
  ok: number;
  unknownUsers: number;
  failures: number;
  timeouts: number;
}

/** Options for {@linkcode BackendClient}. */
export interface BackendClientOptions {
  /** `BACKEND_URL`: `edge/users/{id}/context` is appended to its path. */
  baseUrl: URL;
  /** `BACKEND_TOKEN`. */
  token: string;
  /** `BACKEND_TIMEOUT_MS`. */
  timeoutMs: number;
  fetch: typeof fetch;
  now: () => number;
  /** `BREAKER_FAILURE_THRESHOLD`, default 5. */
  failureThreshold?: number;
  /** `BREAKER_COOLDOWN_MS`, default 5000. */
  cooldownMs?: number;
  maxBytes?: number;
  /** `BACKEND_MAX_CONCURRENT`, default 16: each answer is held in the heap; beyond it, `busy`. */
  maxConcurrent?: number;
  /** Without it the client keeps a sweep of its own. */
  deadlines?: DeadlineSweep;
}

/**
 * A user's read-through URL, the id one encoded path segment on the base's origin; undefined when
 * the id cannot be one segment.
 *
 * @param baseUrl `BACKEND_URL`
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

/** The read-through client: one per isolate, since it holds the breaker and the in-flight requests. */
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
  /** A request remembers the count it was sent in. */
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

  /** What the backend knows about a user; concurrent calls share one request. Never rejects. */
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

  get breaker(): BreakerSnapshot {
    const state = this.#state === "open" && this.#cooledDown() ? "half_open" : this.#state;
    return { state, consecutiveFailures: this.#consecutiveFailures, openedAt: this.#openedAt };
  }

  stats(): BackendStats {
    return { ...this.#stats };
  }

  #cooledDown(): boolean {
    return this.#openedAt !== undefined && this.#now() - this.#openedAt >= this.#cooldownMs;
  }

  #admit(): "closed" | "probe" | undefined {
    if (this.#state === "closed") return "closed";
    if (this.#state === "open") {
      if (!this.#cooledDown()) return undefined;
      this.#state = "half_open";
    }
    if (this.#probing) return undefined;
    this.#probing = true;
    return "probe";
  }

  // A request sent before the breaker last opened is counted but decides nothing: only the probe does.
  #record(result: BackendResult, probe: boolean, sentIn: number): void {
    if (probe) this.#probing = false;
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
      // Only the deadline rejects: it bounds even a fetch that ignores the abort signal.
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
  deadlines?: DeadlineSweep;
}

/**
 * The read-through client, or undefined when `BACKEND_URL` is not set.
 *
 * @param config `BACKEND_URL`, `BACKEND_TOKEN`, `BACKEND_TIMEOUT_MS`, `BREAKER_*`
 * @param options the `fetch` and clock to use
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
