/**
 * @module
 * Test support: real origins on port 0, `Deps` with an in-memory KV and a fixed clock, and a
 * raw HTTP/1.1 client for request targets that `fetch` would normalise away.
 */
import { DeadlineSweep } from "../lib/support/deadlines.ts";
import { type Config, parseConfig } from "../lib/app/config.ts";
import type { Deps } from "../lib/app/deps.ts";
import { createLogger } from "../lib/obs/log.ts";
import { EMPTY_RULES, type RuleSet } from "../lib/rules/schema.ts";
import { parseRules } from "../lib/rules/compile.ts";
import { RulesStore } from "../lib/rules/store.ts";
import type { IpGeoDb } from "../lib/pipeline/ip_geo.ts";
import { backendClientFromConfig } from "../lib/data/backend.ts";
import { EdgeMetrics } from "../lib/obs/metrics.ts";
import { cachesFromConfig } from "../lib/data/caches.ts";
import { createDecisionLogger } from "../lib/obs/decision_log.ts";
import { exposuresFromConfig } from "../lib/exposures/recorder.ts";
import { STICKY_COOKIE, StickySigner } from "../lib/pipeline/sticky.ts";
import { HtmlRewriterLoader } from "../lib/origin/html_rewriter.ts";

/** The sticky cookie's signing secret in tests (unless `STICKY_SECRET` is given). */
export const TEST_STICKY_SECRET = "test-sticky-secret-0123456789";

/**
 * A sticky cookie as the edge would have set it, for a `Cookie` header.
 *
 * @param assignments the assignments as the cookie holds them (`hero:b|pricing:a`)
 * @param secret the signing secret (default {@linkcode TEST_STICKY_SECRET})
 * @returns `ep_exp=<signed value, percent-encoded>`
 */
export function stickyCookie(assignments: string, secret: string = TEST_STICKY_SECRET): string {
  return `${STICKY_COOKIE}=${encodeURIComponent(new StickySigner([secret]).sign(assignments))}`;
}

/** A request as a test origin saw it. */
export interface SeenRequest {
  method: string;
  url: string;
  path: string;
  search: string;
  headers: Headers;
  bodyBytes: number;
}

/** A running test origin. */
export interface TestOrigin {
  url: string;
  port: number;
  seen: SeenRequest[];
  close(): Promise<void>;
}

/**
 * Starts a real HTTP origin on 127.0.0.1, port 0, that records each request (body drained)
 * and answers with `respond` (default: 200 JSON echo of method and path).
 *
 * @param respond builds the answer; the body has already been read
 * @returns the running origin
 */
export function startOrigin(
  respond?: (req: SeenRequest, raw: Request) => Response | Promise<Response>,
): TestOrigin {
  const seen: SeenRequest[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
    const url = new URL(request.url);
    let bodyBytes = 0;
    if (request.body && !respond) {
      for await (const chunk of request.body) bodyBytes += chunk.byteLength;
    }
    const record = {
      method: request.method,
      url: request.url,
      path: url.pathname,
      search: url.search,
      headers: request.headers,
      bodyBytes,
    };
    seen.push(record);
    return respond ? respond(record, request) : Response.json({ method: request.method, path: url.pathname });
  });
  const port = server.addr.port;
  return { url: `http://127.0.0.1:${port}`, port, seen, close: () => server.shutdown() };
}

/** Options for {@linkcode makeDeps}. */
export interface MakeDepsOptions {
  env?: Record<string, string>;
  rules?: RuleSet;
  logLines?: string[];
  now?: () => number;
  ipGeo?: IpGeoDb;
  /** Receives background work (default: dropped, the work still runs). */
  waitUntil?: (work: Promise<unknown>) => void;
}

/**
 * Builds `Deps` for a test: configuration from `env` (with `ORIGIN_URL`), an in-memory KV,
 * a fixed clock, deterministic ids, and a logger that collects lines.
 *
 * @param originUrl the origin the app proxies to
 * @param options environment, rules, log collector
 * @returns the dependencies; close `deps.kv` in `finally`
 */
export async function makeDeps(originUrl: string, options: MakeDepsOptions = {}): Promise<Deps> {
  const config: Config = parseConfig({ ORIGIN_URL: originUrl, LOG_LEVEL: "debug", ...options.env });
  const now = options.now ?? (() => Date.UTC(2026, 10, 26, 12, 0, 0));
  let next = 0;
  const lines = options.logLines;
  const log = createLogger(config.logLevel, { now, sink: (line) => lines?.push(line) });
  const randomId = () => `id-${String(++next).padStart(16, "0")}`;
  const metrics = new EdgeMetrics();
  const deadlines = new DeadlineSweep();
  const rules = new RulesStore(parseRules(options.rules ?? EMPTY_RULES));
  const waitUntil = options.waitUntil ?? (() => {});
  return {
    config,
    kv: await Deno.openKv(":memory:"),
    fetch: globalThis.fetch,
    now,
    mono: () => performance.now(),
    randomId,
    log,
    rules,
    ...cachesFromConfig(config),
    stickySigner: new StickySigner(config.stickySecrets.length ? config.stickySecrets : [TEST_STICKY_SECRET]),
    ipGeo: options.ipGeo,
    backend: backendClientFromConfig(config, { fetch: globalThis.fetch, now }),
    metrics,
    deadlines,
    tracer: undefined,
    waitUntil,
    htmlRewriter: new HtmlRewriterLoader(),
    exposures: exposuresFromConfig(config, {
      metrics,
      fetch: globalThis.fetch,
      now,
      mono: () => performance.now(),
      randomId,
      random: Math.random,
      deadlines,
      log,
      waitUntil,
      rules: () => rules.current,
    }),
    logDecision: createDecisionLogger({
      log,
      rate: config.logSampleRate,
      hashKey: "test-hash-key-0123456789",
    }),
  };
}

/**
 * The same KV, except that reads (`get`, `getMany`, `list`) never settle from `stalledFrom()` on:
 * a KV that hangs instead of failing.
 *
 * @param kv the real store
 * @param stalled whether reads stall now (checked on each read)
 * @returns the stalling view of `kv`
 */
export function stallingReads(kv: Deno.Kv, stalled: () => boolean = () => true): Deno.Kv {
  const never = new Promise<never>(() => {});
  return new Proxy(kv, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== "function") return value;
      if (prop === "get" || prop === "getMany") {
        return (...args: unknown[]) => stalled() ? never : value.apply(target, args);
      }
      if (prop === "list") {
        return (...args: unknown[]) => {
          if (!stalled()) return value.apply(target, args);
          return {
            next: () => never,
            [Symbol.asyncIterator]() {
              return this;
            },
          };
        };
      }
      return value.bind(target);
    },
  });
}

/**
 * The same KV, except that reads (`get`, `getMany`, `list`) fail with `error` while `failing()`
 * says so: a KV that is down (lost connection, closed store) rather than hanging.
 *
 * @param kv the real store
 * @param failing whether reads fail now (checked on each read)
 * @param error what a failing read rejects with
 * @returns the failing view of `kv`
 */
export function failingReads(
  kv: Deno.Kv,
  failing: () => boolean = () => true,
  error: Error = new Error("kv down"),
): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== "function") return value;
      if (prop === "get" || prop === "getMany") {
        return (...args: unknown[]) => failing() ? Promise.reject(error) : value.apply(target, args);
      }
      if (prop === "list") {
        return (...args: unknown[]) => {
          if (!failing()) return value.apply(target, args);
          return {
            next: () => Promise.reject(error),
            [Symbol.asyncIterator]() {
              return this;
            },
          };
        };
      }
      return value.bind(target);
    },
  });
}

/**
 * Waits for a promise at most `ms`: a test of something that must not hang fails, instead of
 * never ending, when it does.
 *
 * @param work what to wait for (e.g. an `app.request`)
 * @param ms the most to wait, in milliseconds
 * @returns `work`'s result
 * @throws an `Error` naming the bound when `ms` pass first
 */
export async function answered<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`No answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A raw HTTP response. */
export interface RawResponse {
  status: number;
  head: string;
  body: string;
}

/**
 * Sends bytes as an HTTP/1.1 request over a plain TCP connection and reads the whole answer.
 * Used for request targets (`//evil`, `\\`, absolute-form) that `fetch` would rewrite.
 *
 * @param port the server's port on 127.0.0.1
 * @param requestText the full request, `\r\n`-separated, ending with an empty line
 * @returns status, head and body text
 */
export async function rawRequest(port: number, requestText: string): Promise<RawResponse> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(requestText));
    const chunks: Uint8Array[] = [];
    const buffer = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
    const text = new TextDecoder().decode(concat(chunks));
    const split = text.indexOf("\r\n\r\n");
    const head = split === -1 ? text : text.slice(0, split);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
    return { status, head, body: split === -1 ? "" : text.slice(split + 4) };
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed by the peer.
    }
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** The seed's rule set: regions and the regional promotion rewrite, plus a redirect. */
export const SEED_RULES: RuleSet = {
  version: 1,
  defaultRegion: "GLOBAL",
  regions: { EU: ["DE", "FR", "GB"], APAC: ["SG", "JP", "AU"], US: ["US"] },
  routes: [
    {
      match: "/api/products/*",
      rewrite: { EU: "/api/products/promotions/europe", "*": "/api/products/promotions/global" },
    },
    { match: "/old-sale", redirect: { to: "/sale", status: 302 } },
  ],
};
