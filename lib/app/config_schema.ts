/**
 * @module
 * The environment variables the edge reads, as one zod schema: each variable's type, range and
 * default. Cross-variable checks and the `Config` shape live in `config.ts`.
 */
import { z } from "zod";

const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;

/** Log levels, from the most to the least verbose. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Shortest accepted secret, token or API key (`CDN_SECRET`, `METRICS_TOKEN`, `OFREP_API_KEYS`, …). */
export const MIN_SECRET_LENGTH = 16;

const emptyToUndefined = (value: unknown) => (value === "" ? undefined : value);

const optionalString = z.preprocess(emptyToUndefined, z.string().optional());

/** The message for a secret under {@linkcode MIN_SECRET_LENGTH}, shared with the per-entry checks. */
export const SECRET_TOO_SHORT = `must be at least ${MIN_SECRET_LENGTH} characters so it cannot be guessed`;

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

/** Every variable with its type, range and default; `parseConfig` adds the checks across variables. */
export const EnvSchema = z.object({
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
