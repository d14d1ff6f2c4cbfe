/**
 * @module
 * Service configuration: the environment variables the edge reads, parsed once at start-up
 * with zod so that a wrong value stops the process with a message naming the variable.
 */
import { z } from "zod";
import { CidrList } from "../http/net.ts";
import { DEFAULT_COUNTRY_HEADERS } from "../pipeline/geo.ts";
import { isEdgeManagedHeader } from "../origin/upstream.ts";

const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;

/** Log levels, from the most to the least verbose. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Shortest accepted secret, token or API key (`CDN_SECRET`, `METRICS_TOKEN`, `OFREP_API_KEYS`, …). */
const MIN_SECRET_LENGTH = 16;

const emptyToUndefined = (value: unknown) => (value === "" ? undefined : value);

const optionalString = z.preprocess(emptyToUndefined, z.string().optional());

const SECRET_TOO_SHORT = `must be at least ${MIN_SECRET_LENGTH} characters so it cannot be guessed`;

const optionalSecret = z.preprocess(
  emptyToUndefined,
  z.string().min(MIN_SECRET_LENGTH, SECRET_TOO_SHORT).optional(),
);

const intInRange = (min: number, max: number, fallback: number) =>
  z.preprocess(
    emptyToUndefined,
    z.coerce.number({ error: "must be a number" }).int("must be a whole number").min(
      min,
      `must be at least ${min}`,
    )
      .max(max, `must be at most ${max}`).default(fallback),
  );

const httpUrl = z.string().refine((value) => {
  try {
    const url = new URL(value);
    return (url.protocol === "http:" || url.protocol === "https:") && !url.username && !url.password &&
      !url.search && !url.hash;
  } catch {
    return false;
  }
}, "must be an absolute http(s) URL without credentials, query or fragment");

const EnvSchema = z.object({
  PORT: intInRange(0, 65535, 8000),
  HOSTNAME: z.preprocess(emptyToUndefined, z.string().default("0.0.0.0")),
  ORIGIN_URL: z.preprocess(emptyToUndefined, httpUrl),
  KV_PATH: optionalString,
  DENO_KV_ACCESS_TOKEN: optionalString,
  RULES_PATH: optionalString,
  TRUSTED_PROXIES: z.preprocess(emptyToUndefined, z.string().default("")),
  USER_ID_HEADER: z.preprocess(
    (value) => (typeof value === "string" && value !== "" ? value.trim().toLowerCase() : undefined),
    z.string().regex(/^[!#$%&'*+.^`|~0-9a-z-]{1,64}$/, "must be a header name (without underscores)")
      .optional(),
  ),
  USER_ID_PROXIES: optionalString,
  CDN_SECRET: optionalSecret,
  ORIGIN_TIMEOUT_MS: intInRange(1, 600_000, 10_000),
  HTML_REWRITE_MAX_BYTES: intInRange(1024, 1024 * 1024 * 1024, 4 * 1024 * 1024),
  HTML_REWRITE_MAX_MS: intInRange(1, 600_000, 100),
  SYNC_SECRETS: z.preprocess(emptyToUndefined, z.string().optional()),
  SYNC_TOLERANCE_SEC: intInRange(1, 86_400, 300),
  SYNC_MAX_BYTES: intInRange(1024, 64 * 1024 * 1024, 1024 * 1024),
  SYNC_MAX_CONCURRENT: intInRange(1, 1000, 4),
  SYNC_BODY_TIMEOUT_MS: intInRange(100, 600_000, 10_000),
  SYNC_MAX_BYTES_IN_FLIGHT: z.preprocess(
    emptyToUndefined,
    z.coerce.number({ error: "must be a number" }).int("must be a whole number")
      .min(1024, "must be at least 1024").max(1024 * 1024 * 1024, `must be at most ${1024 * 1024 * 1024}`)
      .optional(),
  ),
  SYNC_MIN_BODY_BYTES_PER_S: intInRange(0, 1024 * 1024 * 1024, 1024),
  SYNC_STORE_TIMEOUT_MS: intInRange(100, 600_000, 2_500),
  RECENT_VIEWS_MAX: intInRange(1, 100, 20),
  VIEW_TTL_DAYS: intInRange(1, 3650, 30),
  CART_TTL_DAYS: intInRange(1, 3650, 30),
  PROFILE_TTL_DAYS: intInRange(1, 3650, 30),
  TOMBSTONE_TTL_DAYS: intInRange(1, 3650, 30),
  SESSION_COOKIE: z.preprocess(
    emptyToUndefined,
    z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/, "must be a valid cookie name").default("sid"),
  ),
  GEO_COUNTRY_HEADERS: optionalString,
  PUBLIC_HOSTS: optionalString,
  RULES_POLL_MS: intInRange(100, 3_600_000, 1000),
  RULES_KEEP: intInRange(1, 100, 10),
  RULES_TOKEN: optionalSecret,
  OFREP_API_KEYS: optionalString,
  BACKEND_URL: z.preprocess(emptyToUndefined, httpUrl.optional()),
  BACKEND_TOKEN: optionalSecret,
  BACKEND_TIMEOUT_MS: intInRange(1, 60_000, 300),
  KV_TIMEOUT_MS: intInRange(1, 60_000, 250),
  KV_OPEN_TIMEOUT_MS: intInRange(100, 600_000, 10_000),
  SHUTDOWN_TIMEOUT_MS: intInRange(0, 3_600_000, 10_000),
  BACKEND_MAX_CONCURRENT: intInRange(1, 10_000, 16),
  BREAKER_FAILURE_THRESHOLD: intInRange(1, 1000, 5),
  BREAKER_COOLDOWN_MS: intInRange(100, 3_600_000, 5000),
  CONTEXT_MAX_STALE_MS: intInRange(0, 3_600_000, 2000),
  CONTEXT_MAX_AGE_MS: intInRange(1000, 30 * 86_400_000, 600_000),
  CONTEXT_CACHE_MAX_ENTRIES: intInRange(1, 10_000_000, 10_000),
  CONTEXT_CACHE_MAX_BYTES: intInRange(1024, 4 * 1024 * 1024 * 1024, 4 * 1024 * 1024),
  METRICS_TOKEN: optionalSecret,
  EXPOSURES_URL: z.preprocess(emptyToUndefined, httpUrl.optional()),
  EXPOSURES_SECRET: optionalString,
  EXPOSURES_BATCH_MAX: intInRange(1, 10_000, 500),
  EXPOSURES_FLUSH_MS: intInRange(1, 600_000, 1000),
  EXPOSURES_BUFFER_MAX: intInRange(1, 1_000_000, 10_000),
  METRICS_PUBLIC: z.preprocess(
    (value) => (typeof value === "string" && value !== "" ? value.trim().toLowerCase() : undefined),
    z.enum(["true", "false"], { error: 'must be "true" or "false"' }).default("false"),
  ),
  LOG_SAMPLE_RATE: z.preprocess(
    emptyToUndefined,
    z.coerce.number({ error: "must be a number" }).min(0, "must be between 0 and 1").max(
      1,
      "must be between 0 and 1",
    ).default(0.01),
  ),
  LOG_HASH_KEY: optionalSecret,
  DENO_DEPLOYMENT_ID: optionalString,
  OTEL_DENO: optionalString,
  STICKY_SECRET: optionalString,
  QA_TOKEN: optionalSecret,
  LOG_LEVEL: z.preprocess(
    (value) => (typeof value === "string" && value !== "" ? value.toLowerCase() : undefined),
    z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(", ")}` }).default("info"),
  ),
  WARMUP: z.preprocess(
    emptyToUndefined,
    z.enum(["wait", "passthrough"], { error: "must be wait or passthrough" }).default("wait"),
  ),
  WARMUP_MAX_WAIT_MS: intInRange(0, 600_000, 10_000),
});

/**
 * Every environment variable `parseConfig` reads, in schema order: the list
 * `docs/configuration.md` is checked against.
 */
export const CONFIG_VARIABLES: readonly string[] = Object.freeze(Object.keys(EnvSchema.shape));

/** The parsed, validated configuration of one edge process. */
export interface Config {
  port: number;
  hostname: string;
  /** Base URL every proxied request is sent to; its origin is never left. */
  originUrl: URL;
  /**
   * The scheme of the connections the service accepts: `http` (main.ts and `deno serve` listen
   * without a certificate), or undefined on Deno Deploy (`DENO_DEPLOYMENT_ID` set), where the
   * platform terminates TLS and the request URL carries the client's scheme.
   */
  listenerScheme: "http" | undefined;
  /** `undefined` → Deno's default store; `:memory:`; a file path; or a KV Connect URL. */
  kvPath: string | undefined;
  rulesPath: string | undefined;
  trustedProxies: CidrList;
  /**
   * `USER_ID_HEADER`: the request header through which a peer in `userIdProxies` names the
   * logged-in user (lower case). Undefined → no header names a user, whoever sends it.
   */
  userIdHeader: string | undefined;
  /** `USER_ID_PROXIES`: the directly connected peers allowed to name the user; set with `userIdHeader`. */
  userIdProxies: CidrList;
  cdnSecret: string | undefined;
  originTimeoutMs: number;
  /**
   * `HTML_REWRITE_MAX_BYTES`: most bytes of (decoded) HTML rewritten per page; the rest passes
   * through unrewritten.
   */
  htmlRewriteMaxBytes: number;
  /** `HTML_REWRITE_MAX_MS`: most time spent rewriting one page; the rest passes through unrewritten. */
  htmlRewriteMaxMs: number;
  logLevel: LogLevel;
  /**
   * Standard Webhooks secrets (`whsec_…`) accepted by `POST /_edge/sync`, newest first; a
   * signature matching any of them is accepted. Empty → the sync endpoint does not exist.
   */
  syncSecrets: readonly string[];
  /** Name of the session cookie whose (hashed) value is looked up in KV. */
  sessionCookie: string;
  /**
   * Host names (with port when not default) the site is served under; a client `Host` outside
   * the list is not passed on as `X-Forwarded-Host` (the first entry is). Empty → passed as sent.
   */
  publicHosts: readonly string[];
  /** Trusted CDN headers that carry the visitor's country, in order. */
  countryHeaders: readonly string[];
  /** How often rules are re-read from KV when `kv.watch` is not delivering. */
  rulesPollMs: number;
  /** How many rule set versions sync keeps in KV (for canaries and rollback); the same everywhere. */
  rulesKeep: number;
  /** Bearer token required by `GET /_edge/rules`; undefined → that endpoint does not exist (404). */
  rulesToken: string | undefined;
  /** API keys accepted by the OFREP endpoints; empty → no key needed. */
  ofrepApiKeys: readonly string[];
  /** How far a `webhook-timestamp` may be from the clock, either way, in seconds. */
  syncToleranceSec: number;
  /** Largest accepted sync request body, in bytes. */
  syncMaxBytes: number;
  /**
   * `SYNC_MAX_CONCURRENT`: signed pushes applied at once; more are answered 429 with
   * `Retry-After` (a parsed push holds several times its size in the heap).
   */
  syncMaxConcurrent: number;
  /** `SYNC_BODY_TIMEOUT_MS`: longest a push's body may take to arrive (408 after). */
  syncBodyTimeoutMs: number;
  /**
   * `SYNC_MAX_BYTES_IN_FLIGHT`: most body bytes of pushes still being read at once, per isolate
   * (their declared `Content-Length`, or `SYNC_MAX_BYTES` when undeclared); a push past it gets 429.
   * Default 4 × `SYNC_MAX_BYTES`.
   */
  syncMaxBytesInFlight: number;
  /**
   * `SYNC_MIN_BODY_BYTES_PER_S`: slowest body rate accepted after a one-second grace (408 below
   * it); `0` turns the check off.
   */
  syncMinBodyBytesPerSec: number;
  /**
   * `SYNC_STORE_TIMEOUT_MS`: longest a push's KV work (claiming its `webhook-id`, applying the
   * batch, recording it) may take in all while it holds a slot; 503 `store_unavailable` after.
   */
  syncStoreTimeoutMs: number;
  /** How many recent views are kept per user. */
  recentViewsMax: number;
  /** How long a recent view is kept after it happened, in days. */
  viewTtlDays: number;
  /** How long a cart is kept after its last write, in days. */
  cartTtlDays: number;
  /** How long a profile is kept after its last write, in days. */
  profileTtlDays: number;
  /** How long an erasure tombstone (and a session-end marker) is kept, in days. */
  tombstoneTtlDays: number;
  /**
   * Bearer token required by `GET /_edge/metrics`; undefined → the endpoint answers only
   * loopback and `TRUSTED_PROXIES` callers, unless `metricsPublic`.
   */
  metricsToken: string | undefined;
  /** `METRICS_PUBLIC=true`: without a token, `/_edge/metrics` answers anyone. */
  metricsPublic: boolean;
  /** Share of requests that get a decision log line, in `[0, 1]`. */
  logSampleRate: number;
  /**
   * Key for the keyed hash of user ids in decision logs. Undefined → `main.ts` generates one per
   * process, and hashes then do not correlate across instances or restarts.
   */
  logHashKey: string | undefined;
  /**
   * `STICKY_SECRET`: keys of the HMAC that signs the sticky-assignment cookie, the signing one
   * first; any of them verifies. Empty → `main.ts` generates one per process (assignments then
   * hold only as long as the process and only on it).
   */
  stickySecrets: readonly string[];
  /**
   * `QA_TOKEN`: the token that lets a request force variations and flags (`x-edge-qa`);
   * undefined → nothing a client sends forces anything.
   */
  qaToken: string | undefined;
  /**
   * Base URL of the central backend for read-through (`GET {backendUrl}/edge/users/{id}/context`);
   * its origin is never left. `undefined` → no read-through.
   */
  backendUrl: URL | undefined;
  /** Bearer token sent to the backend; required when `backendUrl` is set. */
  backendToken: string | undefined;
  /** Longest a request waits for a read-through answer, in milliseconds. */
  backendTimeoutMs: number;
  /**
   * `KV_TIMEOUT_MS`: the longest a request waits for a KV read (session, context, related
   * lists); past it the read counts as failed and the request degrades.
   */
  kvTimeoutMs: number;
  /**
   * `KV_OPEN_TIMEOUT_MS`: the longest start-up waits for KV to open (a KV Connect server that
   * accepts connections but never answers); past it the process exits 1.
   */
  kvOpenTimeoutMs: number;
  /**
   * `SHUTDOWN_TIMEOUT_MS`: after SIGINT/SIGTERM, the longest in-flight requests and background
   * work may take to finish; past it the connections still open are cut and the process exits.
   */
  /** `WARMUP`: what requests get before the service is ready (see `lib/app/warmup.ts`). */
  warmup: "wait" | "passthrough";
  /** `WARMUP_MAX_WAIT_MS`: the longest a request waits for readiness before a 503. */
  warmupMaxWaitMs: number;
  /** `DENO_DEPLOYMENT_ID` is set: Deno Deploy serves the default export, nothing listens itself. */
  onDeploy: boolean;
  /** `OTEL_DENO=true`: Deno's built-in OpenTelemetry is on, so pipeline stages become spans. */
  tracing: boolean;
  shutdownTimeoutMs: number;
  /** `BACKEND_MAX_CONCURRENT`: read-throughs in flight at once; beyond it the edge's data is used. */
  backendMaxConcurrent: number;
  /** Consecutive read-through failures that open the circuit breaker. */
  breakerFailureThreshold: number;
  /** How long an open breaker rejects calls before one half-open probe, in milliseconds. */
  breakerCooldownMs: number;
  /** How long a cached user context is used before KV is read again, in milliseconds (0: always read). */
  contextMaxStaleMs: number;
  /**
   * How old a user's edge data may be before a read-through refreshes it, in milliseconds: the
   * age is measured from the newest recent view or this instance's last read-through of the
   * user, whichever is later (so an answer, a 404 included, is trusted this long).
   */
  contextMaxAgeMs: number;
  /**
   * `EXPOSURES_URL`: where batches of exposure events are posted (signed with
   * `exposuresSecret`); undefined → exposure events are not queued nor sent.
   */
  exposuresUrl: URL | undefined;
  /** `EXPOSURES_SECRET`: the `whsec_…` secret exposure batches are signed with; set with the URL. */
  exposuresSecret: string | undefined;
  /** `EXPOSURES_BATCH_MAX`: most events per batch; a full batch goes out at once. */
  exposuresBatchMax: number;
  /** `EXPOSURES_FLUSH_MS`: the longest a batch waits after its first event before it goes out. */
  exposuresFlushMs: number;
  /**
   * `EXPOSURES_BUFFER_MAX`: most events waiting for delivery (the batch being delivered
   * included); when full, the oldest are dropped.
   */
  exposuresBufferMax: number;
  /** Most user contexts (and session lookups, and related lists) one isolate caches. */
  contextCacheMaxEntries: number;
  /**
   * Most estimated heap bytes of user contexts one isolate caches, and, separately, of related
   * lists (default 4 MiB each).
   */
  contextCacheMaxBytes: number;
}

/** Thrown when the environment does not describe a valid configuration. */
export class ConfigError extends Error {
  /** One line per problem, each naming the variable. */
  readonly problems: string[];

  /**
   * @param problems the problems found, one per variable
   */
  constructor(problems: string[]) {
    super(`Invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/**
 * Parses the environment into a {@linkcode Config}.
 *
 * @param env environment variables, e.g. `Deno.env.toObject()`
 * @returns the validated configuration
 * @throws {ConfigError} naming every variable that is missing or wrong
 * @example
 * ```ts
 * const config = parseConfig({ ORIGIN_URL: "http://127.0.0.1:8080" });
 * config.port; // 8000
 * ```
 */
export function parseConfig(env: Record<string, string | undefined>): Config {
  // Parsed once: zod's compiled fast path would cost more to generate (~3 ms of start-up) than it saves.
  const result = EnvSchema.safeParse(env, { jitless: true });
  if (!result.success) {
    throw new ConfigError(result.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? "environment");
      const message = issue.code === "invalid_type" && env[name] === undefined
        ? "is required but not set"
        : issue.message;
      const shown = env[name] !== undefined && !isSecret(name)
        ? ` (got "${redactCredentials(env[name])}")`
        : "";
      return `${name} ${message}${shown}`;
    }));
  }
  const parsed = result.data;
  const problems: string[] = [];
  const trustedProxies = addressList("TRUSTED_PROXIES", parsed.TRUSTED_PROXIES, problems);
  // Naming the user is its own trust, off by default: a CDN trusted for its forwarding headers
  // passes its clients' headers through, so TRUSTED_PROXIES alone must never make one believed.
  const userIdProxies = addressList("USER_ID_PROXIES", parsed.USER_ID_PROXIES ?? "", problems);
  if (parsed.USER_ID_HEADER !== undefined && userIdProxies.empty) {
    problems.push(
      "USER_ID_PROXIES is required when USER_ID_HEADER is set (the peers allowed to name the user)",
    );
  }
  const userIdHeader = parsed.USER_ID_HEADER;
  if (
    userIdHeader !== undefined &&
    (isEdgeManagedHeader(userIdHeader) || userIdHeader === "cookie" || userIdHeader === "authorization")
  ) {
    problems.push(
      `USER_ID_HEADER must not name a header the edge sets or removes itself, nor cookie or authorization (got "${userIdHeader}")`,
    );
  }
  if (parsed.USER_ID_PROXIES !== undefined && parsed.USER_ID_HEADER === undefined) {
    problems.push("USER_ID_HEADER is required when USER_ID_PROXIES is set (the header that names the user)");
  }
  const kvPath = parsed.KV_PATH;
  if (kvPath && /^https?:\/\//i.test(kvPath) && !parsed.DENO_KV_ACCESS_TOKEN) {
    problems.push("DENO_KV_ACCESS_TOKEN is required when KV_PATH is a KV Connect URL");
  }
  const syncSecrets = (parsed.SYNC_SECRETS ?? "").split(",").map((secret) => secret.trim()).filter(Boolean);
  syncSecrets.forEach((secret, index) => {
    if (!isWebhookSecret(secret)) {
      problems.push(
        `SYNC_SECRETS entry ${index + 1} must be "whsec_" followed by base64 of at least 16 bytes`,
      );
    }
  });
  const ofrepApiKeys = (parsed.OFREP_API_KEYS ?? "").split(",").map((key) => key.trim()).filter(Boolean);
  ofrepApiKeys.forEach((key, index) => {
    // As for METRICS_TOKEN and RULES_TOKEN; the key itself is never echoed.
    if (key.length < MIN_SECRET_LENGTH) {
      problems.push(`OFREP_API_KEYS entry ${index + 1} ${SECRET_TOO_SHORT}`);
    }
  });
  const stickySecrets = (parsed.STICKY_SECRET ?? "").split(",").map((secret) => secret.trim()).filter(
    Boolean,
  );
  stickySecrets.forEach((secret, index) => {
    if (secret.length < MIN_SECRET_LENGTH) {
      problems.push(`STICKY_SECRET entry ${index + 1} ${SECRET_TOO_SHORT}`);
    }
  });
  if (parsed.BACKEND_URL && !parsed.BACKEND_TOKEN) {
    problems.push("BACKEND_TOKEN is required when BACKEND_URL is set");
  }
  if (parsed.EXPOSURES_SECRET !== undefined && !isWebhookSecret(parsed.EXPOSURES_SECRET)) {
    problems.push('EXPOSURES_SECRET must be "whsec_" followed by base64 of at least 16 bytes');
  }
  if (parsed.EXPOSURES_URL && parsed.EXPOSURES_SECRET === undefined) {
    problems.push("EXPOSURES_SECRET is required when EXPOSURES_URL is set (exposure batches are signed)");
  }
  if (!parsed.EXPOSURES_URL && parsed.EXPOSURES_SECRET !== undefined) {
    // Most likely a misspelt or forgotten URL: exposures would silently stay off.
    problems.push("EXPOSURES_URL is required when EXPOSURES_SECRET is set");
  }
  if (parsed.EXPOSURES_BATCH_MAX > parsed.EXPOSURES_BUFFER_MAX) {
    problems.push(
      `EXPOSURES_BATCH_MAX must be at most EXPOSURES_BUFFER_MAX (${parsed.EXPOSURES_BUFFER_MAX})`,
    );
  }
  // A tombstone must outlive whatever it erased: once it expires, a late event (or a view an
  // interrupted compaction left behind) would count as the user's data again.
  const longestDataTtl = Math.max(parsed.VIEW_TTL_DAYS, parsed.CART_TTL_DAYS, parsed.PROFILE_TTL_DAYS);
  if (parsed.TOMBSTONE_TTL_DAYS < longestDataTtl) {
    problems.push(
      `TOMBSTONE_TTL_DAYS must be at least the longest of VIEW_TTL_DAYS, CART_TTL_DAYS and PROFILE_TTL_DAYS (${longestDataTtl})`,
    );
  }
  // Bodies being read must leave room for at least one of the largest push.
  const syncMaxBytesInFlight = parsed.SYNC_MAX_BYTES_IN_FLIGHT ?? 4 * parsed.SYNC_MAX_BYTES;
  if (syncMaxBytesInFlight < parsed.SYNC_MAX_BYTES) {
    problems.push(`SYNC_MAX_BYTES_IN_FLIGHT must be at least SYNC_MAX_BYTES (${parsed.SYNC_MAX_BYTES})`);
  }
  if (problems.length) throw new ConfigError(problems);
  return {
    port: parsed.PORT,
    hostname: parsed.HOSTNAME,
    originUrl: new URL(parsed.ORIGIN_URL),
    listenerScheme: parsed.DENO_DEPLOYMENT_ID === undefined ? "http" : undefined,
    onDeploy: parsed.DENO_DEPLOYMENT_ID !== undefined,
    warmup: parsed.WARMUP,
    warmupMaxWaitMs: parsed.WARMUP_MAX_WAIT_MS,
    tracing: parsed.OTEL_DENO === "true",
    kvPath,
    rulesPath: parsed.RULES_PATH,
    trustedProxies,
    userIdHeader: parsed.USER_ID_HEADER,
    userIdProxies,
    cdnSecret: parsed.CDN_SECRET,
    originTimeoutMs: parsed.ORIGIN_TIMEOUT_MS,
    htmlRewriteMaxBytes: parsed.HTML_REWRITE_MAX_BYTES,
    htmlRewriteMaxMs: parsed.HTML_REWRITE_MAX_MS,
    logLevel: parsed.LOG_LEVEL,
    syncSecrets,
    sessionCookie: parsed.SESSION_COOKIE,
    countryHeaders: parsed.GEO_COUNTRY_HEADERS
      ? parsed.GEO_COUNTRY_HEADERS.split(",").map((h) => h.trim().toLowerCase()).filter(Boolean)
      : DEFAULT_COUNTRY_HEADERS,
    rulesPollMs: parsed.RULES_POLL_MS,
    publicHosts: (parsed.PUBLIC_HOSTS ?? "").split(",").map((h) => h.trim().toLowerCase()).filter(Boolean),
    rulesKeep: parsed.RULES_KEEP,
    rulesToken: parsed.RULES_TOKEN,
    ofrepApiKeys,
    syncToleranceSec: parsed.SYNC_TOLERANCE_SEC,
    syncMaxBytes: parsed.SYNC_MAX_BYTES,
    syncMaxConcurrent: parsed.SYNC_MAX_CONCURRENT,
    syncBodyTimeoutMs: parsed.SYNC_BODY_TIMEOUT_MS,
    syncMaxBytesInFlight,
    syncMinBodyBytesPerSec: parsed.SYNC_MIN_BODY_BYTES_PER_S,
    syncStoreTimeoutMs: parsed.SYNC_STORE_TIMEOUT_MS,
    recentViewsMax: parsed.RECENT_VIEWS_MAX,
    viewTtlDays: parsed.VIEW_TTL_DAYS,
    cartTtlDays: parsed.CART_TTL_DAYS,
    profileTtlDays: parsed.PROFILE_TTL_DAYS,
    tombstoneTtlDays: parsed.TOMBSTONE_TTL_DAYS,
    metricsToken: parsed.METRICS_TOKEN,
    metricsPublic: parsed.METRICS_PUBLIC === "true",
    logSampleRate: parsed.LOG_SAMPLE_RATE,
    logHashKey: parsed.LOG_HASH_KEY,
    stickySecrets,
    qaToken: parsed.QA_TOKEN,
    backendUrl: parsed.BACKEND_URL ? new URL(parsed.BACKEND_URL) : undefined,
    backendToken: parsed.BACKEND_TOKEN,
    backendTimeoutMs: parsed.BACKEND_TIMEOUT_MS,
    kvTimeoutMs: parsed.KV_TIMEOUT_MS,
    kvOpenTimeoutMs: parsed.KV_OPEN_TIMEOUT_MS,
    shutdownTimeoutMs: parsed.SHUTDOWN_TIMEOUT_MS,
    backendMaxConcurrent: parsed.BACKEND_MAX_CONCURRENT,
    breakerFailureThreshold: parsed.BREAKER_FAILURE_THRESHOLD,
    breakerCooldownMs: parsed.BREAKER_COOLDOWN_MS,
    contextMaxStaleMs: parsed.CONTEXT_MAX_STALE_MS,
    contextMaxAgeMs: parsed.CONTEXT_MAX_AGE_MS,
    exposuresUrl: parsed.EXPOSURES_URL ? new URL(parsed.EXPOSURES_URL) : undefined,
    exposuresSecret: parsed.EXPOSURES_SECRET,
    exposuresBatchMax: parsed.EXPOSURES_BATCH_MAX,
    exposuresFlushMs: parsed.EXPOSURES_FLUSH_MS,
    exposuresBufferMax: parsed.EXPOSURES_BUFFER_MAX,
    contextCacheMaxEntries: parsed.CONTEXT_CACHE_MAX_ENTRIES,
    contextCacheMaxBytes: parsed.CONTEXT_CACHE_MAX_BYTES,
  };
}

/** A Standard Webhooks secret: `whsec_` and base64 of at least 16 bytes. */
function isWebhookSecret(secret: string): boolean {
  return /^whsec_[A-Za-z0-9+/]{22,}={0,2}$/.test(secret) && (secret.length - 6) % 4 === 0;
}

/**
 * Parses a comma-separated address list strictly (see `CidrList`), or notes the problem naming
 * the variable and the entry.
 */
function addressList(name: string, value: string, problems: string[]): CidrList {
  try {
    return new CidrList(value.split(","));
  } catch (error) {
    problems.push(`${name} has an invalid entry: ${(error as Error).message}`);
    return new CidrList([]);
  }
}

/**
 * Masks URL credentials (`//user:password@` → `//***@`) so that no message or log line shows them:
 * for `ORIGIN_URL`, `BACKEND_URL`, `KV_PATH` and any other value that may be a URL.
 *
 * @param value a URL or any text holding URLs
 * @returns the text with every userinfo replaced by `***`
 * @example
 * ```ts
 * redactCredentials("http://u:pw@kv.internal:4512"); // "http://***@kv.internal:4512"
 * ```
 */
export function redactCredentials(value: string): string {
  return value.replace(/(\/\/)[^/@\s]*@/g, "$1***@");
}

function isSecret(name: string): boolean {
  return /SECRET|TOKEN|KEY/.test(name);
}
