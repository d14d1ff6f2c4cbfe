/**
 * @module
 * Warm-up: what the entry module answers while the rest of the service loads. It reads only the
 * few variables it needs, without the full config schema, and imports nothing heavier than the
 * origin's header hygiene, so the process listens within a few milliseconds of starting.
 */
import {
  buildUpstreamUrl,
  downstreamResponseHeaders,
  headerValue,
  upstreamRequestHeaders,
} from "../origin/upstream.ts";
import { fetchOrigin } from "../origin/fetch.ts";
import { checkInboundPath } from "../http/paths.ts";
import { EdgeError, errorBody } from "../http/errors.ts";
import { DEFAULT_COUNTRY_HEADERS, REGION_HEADER } from "../pipeline/geo.ts";
import { DeadlineSweep } from "../support/deadlines.ts";

/** `wait`: requests before ready wait for it; `passthrough`: they go to the origin unpersonalized. */
export type WarmupMode = "wait" | "passthrough";

/** The variables the entry reads before the full configuration is parsed. */
export interface EarlyConfig {
  warmup: WarmupMode;
  maxWaitMs: number;
  port: number;
  hostname: string;
  onDeploy: boolean;
  originUrl: URL;
  originTimeoutMs: number;
  shutdownTimeoutMs: number;
  publicHosts: string[];
  /** Request headers never passed on before ready: the user id header and the geo headers. */
  dropped: ReadonlySet<string>;
}

/** Default of `WARMUP_MAX_WAIT_MS`. */
export const DEFAULT_WARMUP_MAX_WAIT_MS = 10_000;

/**
 * Reads the early variables; anything not plainly valid gives `undefined`, and the full parse
 * then names the variable and exits.
 *
 * @param env the environment
 */
export function earlyConfig(env: Record<string, string | undefined>): EarlyConfig | undefined {
  const value = (name: string) => env[name] === "" ? undefined : env[name];
  const warmup = value("WARMUP") ?? "wait";
  if (warmup !== "wait" && warmup !== "passthrough") return undefined;
  const maxWaitMs = intOr(value("WARMUP_MAX_WAIT_MS"), DEFAULT_WARMUP_MAX_WAIT_MS, 0, 600_000);
  const port = intOr(value("PORT"), 8000, 0, 65535);
  const originTimeoutMs = intOr(value("ORIGIN_TIMEOUT_MS"), 10_000, 1, 600_000);
  const shutdownTimeoutMs = intOr(value("SHUTDOWN_TIMEOUT_MS"), 10_000, 0, 3_600_000);
  const originUrl = httpUrl(value("ORIGIN_URL"));
  if (
    maxWaitMs === undefined || port === undefined || originTimeoutMs === undefined ||
    shutdownTimeoutMs === undefined || !originUrl
  ) {
    return undefined;
  }
  const list = (name: string) =>
    (value(name) ?? "").split(",").map((h) => h.trim().toLowerCase()).filter(Boolean);
  const userHeader = value("USER_ID_HEADER")?.trim().toLowerCase();
  return {
    warmup,
    maxWaitMs,
    port,
    hostname: value("HOSTNAME") ?? "0.0.0.0",
    onDeploy: value("DENO_DEPLOYMENT_ID") !== undefined,
    originUrl,
    originTimeoutMs,
    shutdownTimeoutMs,
    publicHosts: list("PUBLIC_HOSTS"),
    dropped: new Set([
      ...(userHeader ? [userHeader] : []),
      REGION_HEADER,
      ...DEFAULT_COUNTRY_HEADERS,
      ...list("GEO_COUNTRY_HEADERS"),
    ]),
  };
}

function intOr(raw: string | undefined, fallback: number, min: number, max: number): number | undefined {
  if (raw === undefined) return fallback;
  if (!/^\d{1,7}$/.test(raw.trim())) return undefined;
  const n = Number(raw.trim());
  return n >= min && n <= max ? n : undefined;
}

function httpUrl(raw: string | undefined): URL | undefined {
  if (raw === undefined || !URL.canParse(raw)) return undefined;
  const url = new URL(raw);
  const ok = (url.protocol === "http:" || url.protocol === "https:") && !url.username && !url.password &&
    !url.search && !url.hash;
  return ok ? url : undefined;
}

/**
 * The entry's request handler: the app's once it is ready; before that, by `WARMUP`, a bounded
 * wait for it or an unpersonalized pass to the origin. The edge's own paths always wait, since
 * only the app can answer them.
 */
export class Warmup {
  #handler: Deno.ServeHandler | undefined;
  #ready: Promise<Deno.ServeHandler | undefined> = Promise.resolve(undefined);
  #early: EarlyConfig | undefined;
  #deadlines = new DeadlineSweep();
  #answered: (() => void) | undefined;
  /** Resolves once a request before ready has had its passthrough answer, or is held. */
  readonly firstAnswer: Promise<void> = new Promise((resolve) => this.#answered = resolve);

  constructor(early: EarlyConfig | undefined) {
    this.#early = early;
  }

  serveWhenReady(ready: Promise<Deno.ServeHandler>): void {
    this.#ready = ready;
    ready.then((handler) => this.#handler = handler, () => {});
  }

  /**
   * Starts the service once it may: at once under `wait`; under `passthrough` once the first
   * request has had its answer (or is held), or after `idleMs` without one. Loading keeps the event loop busy
   * for as long as it takes, so the request that woke an isolate is answered first.
   */
  startWhen(idleMs: number): Promise<void> {
    // Two timer turns: `serve` listens on the first.
    if (this.#early?.warmup !== "passthrough") {
      return new Promise((resolve) => setTimeout(() => setTimeout(resolve, 0), 0));
    }
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, idleMs);
      this.firstAnswer.then(() => {
        clearTimeout(timer);
        // A tick for the runtime to write the answer out.
        setTimeout(resolve, 1);
      });
    });
  }

  get ready(): boolean {
    return this.#handler !== undefined;
  }

  /** Handles one request (bound, for `Deno.serve` and the default export). */
  fetch = (request: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response> => {
    if (this.#handler) return this.#handler(request, info);
    const path = this.#early?.warmup === "passthrough" ? originPath(request.url) : undefined;
    if (path !== undefined) return this.#passthrough(request, info, path, this.#early!);
    return this.#wait(request, info);
  };

  async #wait(request: Request, info: Deno.ServeHandlerInfo): Promise<Response> {
    // A held request needs the service: under passthrough it starts loading now.
    this.#answered?.();
    const waitMs = this.#early?.maxWaitMs ?? DEFAULT_WARMUP_MAX_WAIT_MS;
    let cancel = () => {};
    const timedOut = new Promise<undefined>((resolve) => {
      cancel = this.#deadlines.arm(waitMs, () => resolve(undefined));
    });
    try {
      const handler = await Promise.race([this.#ready.catch(() => undefined), timedOut]);
      if (handler) return await handler(request, info);
    } finally {
      cancel();
    }
    await request.body?.cancel().catch(() => {});
    const retryAfter = Math.max(1, Math.ceil(waitMs / 1000));
    return Response.json(errorBody("starting", "The service is starting; retry shortly"), {
      status: 503,
      headers: { "retry-after": String(retryAfter), "cache-control": "no-store" },
    });
  }

  async #passthrough(
    request: Request,
    info: Deno.ServeHandlerInfo,
    path: string,
    early: EarlyConfig,
  ): Promise<Response> {
    const peer = (info.remoteAddr as Deno.NetAddr | undefined)?.hostname ?? "unknown";
    const url = new URL(request.url);
    const requestId = crypto.randomUUID();
    const host = request.headers.get("host") ?? url.host;
    // Unlike the app, this hop trusts no peer: TRUSTED_PROXIES needs the full configuration.
    const headers = upstreamRequestHeaders(request.headers, {
      clientIp: peer,
      peerIp: peer,
      peerTrusted: false,
      proto: url.protocol === "https:" ? "https" : "http",
      host: early.publicHosts.length === 0 || early.publicHosts.includes(host.toLowerCase())
        ? host
        : early.publicHosts[0]!,
      requestId,
      dropped: early.dropped,
    });
    try {
      const answer = await fetchOrigin(
        buildUpstreamUrl(early.originUrl, path, url.search),
        { method: request.method, headers, body: request.body },
        { fetch, timeoutMs: early.originTimeoutMs, signal: request.signal, deadlines: this.#deadlines },
      );
      const out = downstreamResponseHeaders(answer.headers, headerValue(headers, "accept-encoding"));
      // The default answer must never be cached as if it were anyone's personalized page.
      out.set("cache-control", "private, no-store");
      out.delete("expires");
      out.set("x-request-id", requestId);
      return new Response(answer.body, {
        status: answer.status,
        statusText: answer.statusText,
        headers: out,
      });
    } catch (error) {
      const status = error instanceof EdgeError ? error.status : 502;
      const code = error instanceof EdgeError ? error.code : "origin_unavailable";
      return Response.json(errorBody(code, (error as Error).message), {
        status,
        headers: { "cache-control": "no-store", "x-request-id": requestId },
      });
    } finally {
      this.#answered?.();
    }
  }
}

/** The path to forward before ready, or undefined when only the app may answer it. */
function originPath(requestUrl: string): string | undefined {
  let path: string;
  try {
    path = checkInboundPath(new URL(requestUrl).pathname);
  } catch {
    return undefined;
  }
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return undefined;
  }
  const edgeOwned = decoded === "/_edge" || decoded.startsWith("/_edge/") ||
    decoded === "/.well-known/gpc.json" || decoded === "/ofrep" || decoded.startsWith("/ofrep/");
  return edgeOwned ? undefined : path;
}
