/**
 * @module
 * Sampled decision logs: what the edge decided and why, without raw personal data (ids as a
 * truncated keyed hash, addresses cut to their network, no session ids or paths).
 */
import { createHmac } from "node:crypto";
import ipaddr from "ipaddr.js";
import { parseAddress } from "../http/net.ts";
import type { Logger } from "./log.ts";

/** What the pipeline knows about one decision. */
export interface DecisionLogInputs {
  /** Also decides sampling. */
  requestId: string;
  rulesVersion: number;
  region: string;
  country?: string | undefined;
  device?: string | undefined;
  network?: string | undefined;
  variants?: Readonly<Record<string, string>>;
  flags?: Readonly<Record<string, unknown>>;
  /** Only its keyed hash is logged. */
  userKey?: string | undefined;
  loggedIn?: boolean;
  /** Only its network prefix is logged. */
  clientIp?: string | undefined;
  routeClass?: string | undefined;
  /** The rule glob that matched: never the raw path, which may carry personal data. */
  matchedRoute?: string | undefined;
  action?: string | undefined;
  status?: number | undefined;
  cache?: string | undefined;
  readThrough?: string | undefined;
  /** Milliseconds: `total`, `origin` and the stages. */
  durations?: Readonly<Record<string, number | undefined>>;
  /** QA forced the decision: the variants are not exposures. */
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
  visitor: "user" | "anonymous" | "none";
  visitorHash?: string;
  /** `203.0.113.0/24`, `2001:db8:1::/48`. */
  clientNet?: string;
  routeClass?: string;
  route?: string;
  action?: string;
  status?: number;
  cache?: string;
  readThrough?: string;
  variants: Record<string, string>;
  flags: Record<string, string | number | boolean | null>;
  /** Rounded to 0.01 ms. */
  durMs: Record<string, number>;
  qa?: true;
}

/** Options for {@linkcode decisionLogEntry}. */
export interface DecisionLogOptions {
  /** `LOG_HASH_KEY`, or the per-process one. */
  hashKey: string | Uint8Array;
  /** Default 24; 0 drops the address. */
  ipv4Prefix?: number;
  /** Default 48; 0 drops the address. */
  ipv6Prefix?: number;
}

/** 64 bits: unique enough to follow a visitor. */
export const VISITOR_HASH_LENGTH = 16;
export const MAX_LOGGED_KEYS = 50;
export const MAX_LOGGED_STRING = 64;

/**
 * Builds a decision log entry, reducing personal data on the way: ids to a truncated HMAC under
 * `hashKey`, the address to its network, flag and variant values to capped primitives.
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
 * Whether a request is sampled, decided by a hash of its id so the same id always gets the same answer.
 *
 * @param rate share of requests sampled, `0` … `1`
 * @param options `salt`, so a client choosing its `X-Request-Id` cannot choose to be sampled
 */
export function shouldSample(requestId: string, rate: number, options: { salt?: string } = {}): boolean {
  if (!(rate > 0)) return false;
  if (rate >= 1) return true;
  return unitHash((options.salt ?? "") + requestId) < rate;
}

/** The truncated HMAC-SHA-256 under which a user or anonymous id appears in logs. */
export function hashVisitor(userKey: string, hashKey: string | Uint8Array): string {
  return createHmac("sha256", hashKey).update(userKey).digest("hex").slice(0, VISITOR_HASH_LENGTH);
}

/**
 * An address cut to its network in CIDR notation (`203.0.113.0/24`), or undefined when invalid or dropped.
 *
 * @param options prefix lengths (defaults 24 and 48; 0 drops the address)
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
  randomBytes: (length: number) => Uint8Array;
}

/**
 * `LOG_HASH_KEY`, else 32 random bytes for this process: then a visitor cannot be followed across
 * instances and restarts.
 *
 * @param configured `config.logHashKey`
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
  salt?: string;
}

/**
 * A function that writes a decision log line for sampled requests and returns whether it did.
 *
 * @param options logger, sample rate, hash key, IP prefixes
 */
export function createDecisionLogger(options: DecisionLoggerOptions): (inputs: DecisionLogInputs) => boolean {
  const { log, rate, salt } = options;
  return (inputs) => {
    if (!log.enabled("info") || !shouldSample(inputs.requestId, rate, { salt })) return false;
    log.info("decision", { ...decisionLogEntry(inputs, options) });
    return true;
  };
}

// FNV-1a, then murmur3's finaliser: plain FNV-1a mixes the last characters poorly into the high bits.
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
  // Control characters could forge log structure in line-oriented sinks.
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
