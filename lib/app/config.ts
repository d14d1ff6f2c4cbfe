/**
 * @module
 * Service configuration, parsed once at start-up so that a wrong value stops the process with a
 * message naming the variable (the variables themselves are in `config_schema.ts`).
 */
import type { z } from "zod";
import { CidrList } from "../http/net.ts";
import { DEFAULT_COUNTRY_HEADERS } from "../pipeline/geo.ts";
import { isEdgeManagedHeader } from "../origin/upstream.ts";
import { EnvSchema, type LogLevel, MIN_SECRET_LENGTH, SECRET_TOO_SHORT } from "./config_schema.ts";

/** The parsed, validated configuration of one edge process (each field's variable: docs/configuration.md). */
export interface Config {
  port: number;
  hostname: string;
  /** Base URL every proxied request is sent to; its origin is never left. */
  originUrl: URL;
  /** `http` when the service listens itself; undefined on Deploy, whose request URL has the client's. */
  listenerScheme: "http" | undefined;
  kvPath: string | undefined;
  rulesPath: string | undefined;
  trustedProxies: CidrList;
  /** Lower case; believed only from a peer in `userIdProxies`. */
  userIdHeader: string | undefined;
  userIdProxies: CidrList;
  cdnSecret: string | undefined;
  originTimeoutMs: number;
  htmlRewriteMaxBytes: number;
  htmlRewriteMaxMs: number;
  logLevel: LogLevel;
  /** Newest first; empty → `POST /_edge/sync` does not exist. */
  syncSecrets: readonly string[];
  sessionCookie: string;
  /** Empty → every `Host` is forwarded as sent. */
  publicHosts: readonly string[];
  countryHeaders: readonly string[];
  rulesPollMs: number;
  rulesKeep: number;
  /** Undefined → `GET /_edge/rules` does not exist. */
  rulesToken: string | undefined;
  /** Empty → no key needed. */
  ofrepApiKeys: readonly string[];
  syncToleranceSec: number;
  syncMaxBytes: number;
  syncMaxConcurrent: number;
  syncBodyTimeoutMs: number;
  syncMaxBytesInFlight: number;
  /** `0` turns the check off. */
  syncMinBodyBytesPerSec: number;
  syncStoreTimeoutMs: number;
  recentViewsMax: number;
  viewTtlDays: number;
  cartTtlDays: number;
  profileTtlDays: number;
  /** Also the session-end markers' lifetime; at least the longest data TTL. */
  tombstoneTtlDays: number;
  /** Undefined → loopback and trusted proxies only, unless public. */
  metricsToken: string | undefined;
  metricsPublic: boolean;
  logSampleRate: number;
  /** Undefined → one per process (then not correlatable). */
  logHashKey: string | undefined;
  /** Signing one first; empty → one per process. */
  stickySecrets: readonly string[];
  /** Undefined → nothing a client sends forces variations or flags. */
  qaToken: string | undefined;
  backendUrl: URL | undefined;
  backendToken: string | undefined;
  backendTimeoutMs: number;
  kvTimeoutMs: number;
  /** Guards start-up against a KV Connect server that accepts but never answers. */
  kvOpenTimeoutMs: number;
  warmup: "wait" | "passthrough";
  warmupMaxWaitMs: number;
  /** Deno Deploy serves the default export; nothing listens itself. */
  onDeploy: boolean;
  tracing: boolean;
  shutdownTimeoutMs: number;
  backendMaxConcurrent: number;
  breakerFailureThreshold: number;
  breakerCooldownMs: number;
  contextMaxStaleMs: number;
  contextMaxAgeMs: number;
  /** Undefined → exposure events are neither queued nor sent. */
  exposuresUrl: URL | undefined;
  exposuresSecret: string | undefined;
  exposuresBatchMax: number;
  exposuresFlushMs: number;
  exposuresBufferMax: number;
  contextCacheMaxEntries: number;
  contextCacheMaxBytes: number;
}

/** Thrown when the environment does not describe a valid configuration. */
export class ConfigError extends Error {
  readonly problems: string[];

  constructor(problems: string[]) {
    super(`Invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/**
 * Parses the environment into a {@linkcode Config}; throws a {@linkcode ConfigError} naming each bad
 * variable. Long because it is one flat table of variable → field, which reads best whole.
 */
export function parseConfig(env: Record<string, string | undefined>): Config {
  // Parsed once, so zod's compiled fast path would cost more to generate than it saves.
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
  const checked = crossCheck(parsed, problems);
  if (problems.length) throw new ConfigError(problems);
  const { trustedProxies, userIdProxies, syncSecrets, ofrepApiKeys, stickySecrets, syncMaxBytesInFlight } =
    checked;
  const kvPath = parsed.KV_PATH;
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

type Env = z.infer<typeof EnvSchema>;

/** The checks that span several variables (or split one into entries); problems are appended. */
function crossCheck(parsed: Env, problems: string[]) {
  const trustedProxies = addressList("TRUSTED_PROXIES", parsed.TRUSTED_PROXIES, problems);
  const userIdProxies = checkUserId(parsed, problems);
  const kvPath = parsed.KV_PATH;
  if (kvPath && /^https?:\/\//i.test(kvPath) && !parsed.DENO_KV_ACCESS_TOKEN) {
    problems.push("DENO_KV_ACCESS_TOKEN is required when KV_PATH is a KV Connect URL");
  }
  const { syncSecrets, ofrepApiKeys, stickySecrets } = checkSecrets(parsed, problems);
  if (parsed.BACKEND_URL && !parsed.BACKEND_TOKEN) {
    problems.push("BACKEND_TOKEN is required when BACKEND_URL is set");
  }
  checkExposures(parsed, problems);
  // A tombstone must outlive whatever it erased, or a late event would count as the user's data again.
  const longestDataTtl = Math.max(parsed.VIEW_TTL_DAYS, parsed.CART_TTL_DAYS, parsed.PROFILE_TTL_DAYS);
  if (parsed.TOMBSTONE_TTL_DAYS < longestDataTtl) {
    problems.push(
      `TOMBSTONE_TTL_DAYS must be at least the longest of VIEW_TTL_DAYS, CART_TTL_DAYS and PROFILE_TTL_DAYS (${longestDataTtl})`,
    );
  }
  const syncMaxBytesInFlight = parsed.SYNC_MAX_BYTES_IN_FLIGHT ?? 4 * parsed.SYNC_MAX_BYTES;
  if (syncMaxBytesInFlight < parsed.SYNC_MAX_BYTES) {
    problems.push(`SYNC_MAX_BYTES_IN_FLIGHT must be at least SYNC_MAX_BYTES (${parsed.SYNC_MAX_BYTES})`);
  }
  return { trustedProxies, userIdProxies, syncSecrets, ofrepApiKeys, stickySecrets, syncMaxBytesInFlight };
}

/**
 * `USER_ID_HEADER` and `USER_ID_PROXIES` come together: naming the user is its own trust, since a
 * CDN trusted for its forwarding headers passes its clients' headers through.
 */
function checkUserId(parsed: Env, problems: string[]): CidrList {
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
  return userIdProxies;
}

/** The comma-separated secret lists, each entry checked; no entry is ever echoed. */
function checkSecrets(parsed: Env, problems: string[]) {
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
  return { syncSecrets, ofrepApiKeys, stickySecrets };
}

function checkExposures(parsed: Env, problems: string[]): void {
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
}

/** A Standard Webhooks secret: `whsec_` and base64 of at least 16 bytes. */
function isWebhookSecret(secret: string): boolean {
  return /^whsec_[A-Za-z0-9+/]{22,}={0,2}$/.test(secret) && (secret.length - 6) % 4 === 0;
}

function addressList(name: string, value: string, problems: string[]): CidrList {
  try {
    return new CidrList(value.split(","));
  } catch (error) {
    problems.push(`${name} has an invalid entry: ${(error as Error).message}`);
    return new CidrList([]);
  }
}

/** Masks URL credentials (`//user:pw@` → `//***@`) so that no message or log line shows them. */
export function redactCredentials(value: string): string {
  return value.replace(/(\/\/)[^/@\s]*@/g, "$1***@");
}

function isSecret(name: string): boolean {
  return /SECRET|TOKEN|KEY/.test(name);
}
