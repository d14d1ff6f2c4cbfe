/**
 * @module
 * Sampled, structured decision logs: what the edge decided for a request and why (rules version,
 * region, variants, flags, cache and read-through outcome, stage durations), without raw personal
 * data — user ids only as a truncated keyed hash, client addresses cut to their network, no
 * session ids, no paths. Sampling is a deterministic function of the request id.
 */
import { createHmac } from "node:crypto";
import ipaddr from "ipaddr.js";
import { parseAddress } from "../http/net.ts";
import type { Logger } from "./log.ts";

/** What the pipeline knows about one decision; the lead maps the pipeline's values onto it. */
export interface DecisionLogInputs {
  /** The request id (also decides sampling). */
  requestId: string;
  /** The rules version the decision used. */
  rulesVersion: number;
  region: string;
  /** ISO 3166-1 alpha-2 code, if known. */
  country?: string | undefined;
  /** Device class (`mobile`, `tablet`, `desktop`, `bot`). */
  device?: string | undefined;
  /** Network class (`slow`, `fast`, `save-data`). */
  network?: string | undefined;
  /** Experiment key → assigned variation. */
  variants?: Readonly<Record<string, string>>;
  /** Flag key → evaluated value. */
  flags?: Readonly<Record<string, unknown>>;
  /** The bucketing key (user id or anonymous id); only its keyed hash is logged. */
  userKey?: string | undefined;
  /** Whether `userKey` is a logged-in user id. */
  loggedIn?: boolean;
  /** The client address; only its network prefix is logged. */
  clientIp?: string | undefined;
  /** Route class (`proxy`, `edge`, `ofrep`, …). */
  routeClass?: string | undefined;
  /** The rule glob that matched (never the raw path, which may carry personal data). */
  matchedRoute?: string | undefined;
  /** What the edge did: `proxy`, `redirect`, `edge`, … */
  action?: string | undefined;
  /** Status sent to the client. */
  status?: number | undefined;
  /** Context cache outcome (`hit`, `miss`, …). */
  cache?: string | undefined;
  /** Read-through outcome (`ok`, `not_found`, `timeout`, `breaker_open`, `skipped`, …). */
  readThrough?: string | undefined;
  /** Durations in milliseconds: `total`, `origin` and the stages. */
  durations?: Readonly<Record<string, number | undefined>>;
  /** QA forced variations or flags (`QA_TOKEN`): the variants are not exposures. */
  forced?: boolean;
}

/** One decision log entry, ready to be passed as log fields. */
export interface DecisionLogEntry {
  kind: "decision";
  requestId: string;
  rulesVersion: number;
  region: string;
  country?: string;
  device?: string;
  network?: string;
  /** `user`, `anonymous` or `none`. */
  visitor: "user" | "anonymous" | "none";
  /** Truncated keyed hash of the user or anonymous id. */
  visitorHash?: string;
  /** The client's network (`203.0.113.0/24`, `2001:db8:1::/48`). */
  clientNet?: string;
  routeClass?: string;
  route?: string;
  action?: string;
  status?: number;
  cache?: string;
  readThrough?: string;
  variants: Record<string, string>;
  flags: Record<string, string | number | boolean | null>;
  /** Durations in milliseconds, rounded to 0.01 ms. */
  durMs: Record<string, number>;
  /** Present when QA forced the decision. */
  qa?: true;
}

/** Options for {@linkcode decisionLogEntry}. */
export interface DecisionLogOptions {
  /** Key of the keyed hash of user ids (`LOG_HASH_KEY`, or the per-process one). */
  hashKey: string | Uint8Array;
  /** IPv4 prefix length kept (default 24; 0 drops the address). */
  ipv4Prefix?: number;
  /** IPv6 prefix length kept (default 48; 0 drops the address). */
  ipv6Prefix?: number;
}

/** Hex characters of the keyed hash that are logged (64 bits: unique enough to follow a visitor). */
export const VISITOR_HASH_LENGTH = 16;
/** Most variants and flags logged per entry. */
export const MAX_LOGGED_KEYS = 50;
/** Longest string value logged for a flag, variant, route or outcome. */
export const MAX_LOGGED_STRING = 64;

/**
 * Builds a decision log entry. Personal data is reduced on the way: the user or anonymous id
 * becomes a truncated HMAC-SHA-256 under `hashKey`, the client address becomes its /24 (IPv4) or
 * /48 (IPv6) network, and only primitive, length-capped flag and variant values are kept.
 */
export function decisionLogEntry(inputs: DecisionLogInputs, options: DecisionLogOptions): DecisionLogEntry {
  const entry: DecisionLogEntry = {
    kind: "decision",
    requestId: capped(inputs.requestId, 128) ?? "",
    rulesVersion: inputs.rulesVersion,
    region: capped(inputs.region) ?? "",
    visitor: inputs.userKey ? (inputs.loggedIn ? "user" : "anonymous") : "none",
    variants: {},
    flags: {},
    durMs: {},
  };
  if (inputs.country && /^[A-Z]{2}$/.test(inputs.country)) entry.country = inputs.country;
  setIfPresent(entry, "device", capped(inputs.device));
  setIfPresent(entry, "network", capped(inputs.network));
  if (inputs.userKey) entry.visitorHash = hashVisitor(inputs.userKey, options.hashKey);
  if (inputs.clientIp) {
    setIfPresent(entry, "clientNet", truncateIp(inputs.clientIp, options));
  }
  setIfPresent(entry, "routeClass", capped(inputs.routeClass));
  setIfPresent(entry, "route", capped(inputs.matchedRoute, 256));
  setIfPresent(entry, "action", capped(inputs.action));
  if (inputs.status !== undefined && Number.isInteger(inputs.status)) entry.status = inputs.status;
  setIfPresent(entry, "cache", capped(inputs.cache));
  setIfPresent(entry, "readThrough", capped(inputs.readThrough));
  if (inputs.forced) entry.qa = true;
  for (const [key, value] of firstEntries(inputs.variants)) {
    const k = capped(key);
    const v = capped(value);
    if (k !== undefined && v !== undefined) entry.variants[k] = v;
  }
  for (const [key, value] of firstEntries(inputs.flags)) {
    const k = capped(key);
    if (k !== undefined) entry.flags[k] = flagValue(value);
  }
  for (const [key, value] of firstEntries(inputs.durations)) {
    const k = capped(key);
    if (k !== undefined && typeof value === "number" && Number.isFinite(value)) {
      entry.durMs[k] = Math.round(value * 100) / 100;
    }
  }
  return entry;
}

/**
 * Whether a request is sampled: a hash of the request id mapped into `[0, 1)` and compared with
 * the rate, so the same id always gets the same answer (and a request's log lines can be found
 * again from its id).
 * @param rate share of requests sampled, `0` … `1`
 * @param options `salt` mixes a secret into the hash, so a client choosing its `X-Request-Id`
 *   cannot choose to be sampled
 * @returns true when the request gets a decision log entry
 */
export function shouldSample(requestId: string, rate: number, options: { salt?: string } = {}): boolean {
  if (!(rate > 0)) return false;
  if (rate >= 1) return true;
  return unitHash((options.salt ?? "") + requestId) < rate;
}

/**
 * The truncated keyed hash under which a user or anonymous id appears in logs.
 * @returns {@linkcode VISITOR_HASH_LENGTH} hex characters of HMAC-SHA-256
 */
export function hashVisitor(userKey: string, hashKey: string | Uint8Array): string {
  return createHmac("sha256", hashKey).update(userKey).digest("hex").slice(0, VISITOR_HASH_LENGTH);
}

/**
 * Cuts an address down to its network: `203.0.113.9` → `203.0.113.0/24`,
 * `2001:db8:1:2::5` → `2001:db8:1::/48` (IPv4-mapped IPv6 counts as IPv4).
 * @param options prefix lengths (defaults 24 and 48; 0 drops the address)
 * @returns the network in CIDR notation, or undefined when the address is invalid or dropped
 */
export function truncateIp(
  ip: string,
  options: { ipv4Prefix?: number; ipv6Prefix?: number } = {},
): string | undefined {
  const address = parseAddress(ip);
  if (!address) return undefined;
  const v4 = address.kind() === "ipv4";
  const bits = v4 ? 32 : 128;
  const fallback = v4 ? 24 : 48;
  const wanted = (v4 ? options.ipv4Prefix : options.ipv6Prefix) ?? fallback;
  const prefix = Number.isFinite(wanted) ? Math.max(0, Math.min(bits, Math.trunc(wanted))) : fallback;
  if (prefix === 0) return undefined;
  const bytes = address.toByteArray();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    bytes[i] = (bytes[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  return `${ipaddr.fromByteArray(bytes).toString()}/${prefix}`;
}

/** Options for {@linkcode resolveLogHashKey}. */
export interface ResolveLogHashKeyOptions {
  /** Source of random bytes, e.g. `(n) => crypto.getRandomValues(new Uint8Array(n))`. */
  randomBytes: (length: number) => Uint8Array;
}

/**
 * The key for {@linkcode hashVisitor}: `LOG_HASH_KEY` when configured, else 32 random bytes for
 * this process. A generated key makes hashes differ between instances and restarts, so the
 * same visitor cannot be followed across them (set `LOG_HASH_KEY` on every instance when that is
 * wanted).
 * @param configured `config.logHashKey`
 * @returns the key, and whether it was generated
 */
export function resolveLogHashKey(
  configured: string | undefined,
  options: ResolveLogHashKeyOptions,
): { key: string | Uint8Array; generated: boolean } {
  if (configured) return { key: configured, generated: false };
  return { key: options.randomBytes(32), generated: true };
}

/** Options for {@linkcode createDecisionLogger}. */
export interface DecisionLoggerOptions extends DecisionLogOptions {
  log: Logger;
  /** `LOG_SAMPLE_RATE`. */
  rate: number;
  /** Salt for {@linkcode shouldSample}. */
  salt?: string;
}

/**
 * A function that writes a decision log line (`info`, message `decision`) for sampled requests
 * and does nothing — beyond one hash of the request id — for the others.
 * @param options logger, sample rate, hash key, IP prefixes
 * @returns `(inputs) => boolean`, true when a line was written
 */
export function createDecisionLogger(options: DecisionLoggerOptions): (inputs: DecisionLogInputs) => boolean {
  const { log, rate, salt } = options;
  return (inputs) => {
    // The entry (a keyed hash, prefixes, copies) is only built when the line will be written.
    if (!log.enabled("info") || !shouldSample(inputs.requestId, rate, { salt })) return false;
    log.info("decision", { ...decisionLogEntry(inputs, options) });
    return true;
  };
}

// FNV-1a over UTF-16 code units, then murmur3's finaliser so that every input bit reaches the
// high bits the comparison reads (plain FNV-1a mixes the last characters poorly).
function unitHash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}

function capped(value: string | undefined, max = MAX_LOGGED_STRING): string | undefined {
  if (typeof value !== "string" || value === "") return undefined;
  // Control characters would let a value forge log structure in line-oriented sinks.
  // deno-lint-ignore no-control-regex
  const clean = value.replace(/[\u0000-\u001f\u007f]/g, "");
  return clean.length > max ? clean.slice(0, max) : clean;
}

function flagValue(value: unknown): string | number | boolean | null {
  if (value === null || typeof value === "boolean") return value;
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value === "string") return capped(value) ?? "";
  // Objects and arrays are logged by type only: they can be large, and the variant says which one.
  return `[${Array.isArray(value) ? "array" : typeof value}]`;
}

function firstEntries<T>(record: Readonly<Record<string, T>> | undefined): Array<[string, T]> {
  return record ? Object.entries(record).slice(0, MAX_LOGGED_KEYS) : [];
}

function setIfPresent<K extends keyof DecisionLogEntry>(
  entry: DecisionLogEntry,
  key: K,
  value: DecisionLogEntry[K] | undefined,
): void {
  if (value !== undefined) entry[key] = value;
}
