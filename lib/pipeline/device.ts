/**
 * @module
 * Device and network classification of a request from Client Hints, `Save-Data` and the
 * network hints, with a User-Agent fallback (`bowser`) and bot detection (`isbot`).
 */
import Bowser from "bowser";
import { isbot } from "isbot";
import { Lru } from "../data/lru.ts";

/** The device classes the rules can target. */
export type DeviceClass = "mobile" | "tablet" | "desktop" | "bot";

/** The network classes the rules can target. */
export type NetworkClass = "slow" | "fast" | "save-data";

/** What the edge knows about the visitor's device and network. */
export interface DeviceInfo {
  /** The device class; `bot` whenever {@linkcode DeviceInfo.isBot} is true. */
  device: DeviceClass;
  /** The User-Agent belongs to a crawler, monitor or other automated client. */
  isBot: boolean;
  /** The network class; `fast` when no network hint was sent. */
  network: NetworkClass;
  /** CSS pixels, from `Sec-CH-Viewport-Width` or `Viewport-Width`. */
  viewportWidth?: number;
  /** Device pixel ratio, from `Sec-CH-DPR` or `DPR`. */
  dpr?: number;
  /** Approximate RAM in GiB, from `Sec-CH-Device-Memory` or `Device-Memory`. */
  deviceMemory?: number;
  /** Operating system, from `Sec-CH-UA-Platform` or else the User-Agent (`Android`, `iOS`, `Windows`…). */
  platform?: string;
}

/** What a User-Agent string alone says; shared between requests through a {@linkcode UaCache}. */
export interface UaInfo {
  /** The User-Agent belongs to a bot (`isbot`, or `bowser`'s bot platform). */
  readonly isBot: boolean;
  /** The device class the User-Agent names; TVs and unknown devices count as desktop. */
  readonly device: "mobile" | "tablet" | "desktop";
  /** The operating system name, when recognised. */
  readonly platform?: string;
}

/**
 * The request headers {@linkcode classifyDevice} reads besides `User-Agent`, in canonical case.
 * `Sec-CH-UA-Mobile`, `Sec-CH-UA-Platform` and `Save-Data` arrive without being asked for; the
 * others only after the site advertised them in `Accept-CH`.
 */
export const CLIENT_HINT_HEADERS: readonly string[] = [
  "Sec-CH-UA-Mobile",
  "Sec-CH-UA-Platform",
  "Sec-CH-Viewport-Width",
  "Viewport-Width",
  "Sec-CH-DPR",
  "DPR",
  "Sec-CH-Device-Memory",
  "Device-Memory",
  "Save-Data",
  "ECT",
  "Downlink",
  "RTT",
];

/** Default size of a {@linkcode UaCache}. */
export const DEFAULT_UA_CACHE_SIZE = 1000;

/** Longer User-Agent strings are cut to this length before parsing and caching. */
export const MAX_UA_LENGTH = 512;

const HINT_BY_LOWER_NAME = new Map(CLIENT_HINT_HEADERS.map((name) => [name.toLowerCase(), name]));
const SLOW_ECT = new Set(["slow-2g", "2g", "3g"]);
const INTEGER = /^\d{1,6}$/;
const DECIMAL = /^\d{1,6}(?:\.\d{1,6})?$/;
const SF_STRING = /^"([\x20\x21\x23-\x5b\x5d-\x7e]{1,32})"$/;
const MAX_VIEWPORT_WIDTH = 16384;
const MAX_DPR = 16;
const MAX_DEVICE_MEMORY_GIB = 1024;

/**
 * A bounded least-recently-used cache of parsed User-Agent strings. Create one per isolate in
 * the composition root and pass it to {@linkcode classifyDevice}; parsing a User-Agent costs tens
 * of microseconds, a hit well under one.
 */
export class UaCache {
  #lru: Lru<string, UaInfo>;

  /**
   * Creates an empty cache.
   * @param maxSize how many distinct User-Agent strings to keep, at least 1
   * @throws {RangeError} when `maxSize` is not a positive integer
   * @example
   * ```ts
   * const uaCache = new UaCache(1000);
   * ```
   */
  constructor(maxSize: number = DEFAULT_UA_CACHE_SIZE) {
    if (!Number.isInteger(maxSize) || maxSize < 1) {
      throw new RangeError(`UA cache size must be a positive integer, got "${maxSize}"`);
    }
    this.#lru = new Lru({ maxEntries: maxSize });
  }

  /** How many entries the cache holds. */
  get size(): number {
    return this.#lru.size;
  }

  /**
   * Looks up a User-Agent and marks it as recently used.
   * @returns the cached information, or undefined
   */
  get(ua: string): UaInfo | undefined {
    return this.#lru.get(ua);
  }

  /** Stores a parsed User-Agent, evicting the least recently used entry when full. */
  set(ua: string, info: UaInfo): void {
    this.#lru.set(ua, info);
  }
}

/**
 * Parses a User-Agent string: bot or not, the device class, and the operating system.
 * Strings longer than {@linkcode MAX_UA_LENGTH} are cut first, to bound the regex work an
 * attacker can cause.
 * @param ua the User-Agent header value (may be empty)
 * @returns a frozen {@linkcode UaInfo}
 * @throws never
 * @example
 * ```ts
 * parseUserAgent("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) …").device; // "tablet"
 * ```
 */
export function parseUserAgent(ua: string): UaInfo {
  const text = ua.length > MAX_UA_LENGTH ? ua.slice(0, MAX_UA_LENGTH) : ua;
  if (!text) return Object.freeze({ isBot: false, device: "desktop" });
  try {
    const parser = Bowser.getParser(text, true);
    const type = parser.getPlatformType(true);
    const os = parser.getOSName();
    return Object.freeze({
      isBot: isbot(text) || type === "bot",
      device: type === "mobile" || type === "tablet" ? type : "desktop",
      ...(os ? { platform: os } : {}),
    });
  } catch {
    // A parser bug must not fail the request; fall back to the bot check alone.
    return Object.freeze({ isBot: isbot(text), device: "desktop" });
  }
}

/**
 * Why a device class was chosen: a bot User-Agent, `Sec-CH-UA-Mobile: ?1`, `?0` with a tablet
 * User-Agent, `?0` otherwise, or the User-Agent alone (no hint).
 */
export type DeviceReason =
  | "bot-user-agent"
  | "mobile-hint"
  | "mobile-hint-tablet-ua"
  | "mobile-hint-desktop"
  | "user-agent";

/**
 * Why a network class was chosen: `Save-Data: on`, a slow `ECT`, a low `Downlink`, a high `RTT`,
 * or none of these (`fast`).
 */
export type NetworkReason = "save-data" | "ect" | "downlink" | "rtt" | "no-slow-hint";

/** Receives why {@linkcode classifyDevice} chose its classes, when an explanation is wanted. */
export interface DeviceTrace {
  /** @param reason why the device class */
  device(reason: DeviceReason): void;
  /** @param reason why the network class */
  network(reason: NetworkReason): void;
}

/** Options for {@linkcode classifyDevice}. */
export interface ClassifyDeviceOptions {
  /** Told why each class was chosen. */
  trace?: DeviceTrace;
  /** Cache of parsed User-Agents; without one every call parses. */
  uaCache?: UaCache;
  /** `Downlink` below this (Mbps) is slow. Default 1.5. */
  slowDownlinkMbps?: number;
  /** `RTT` above this (ms) is slow. Default 300. */
  slowRttMs?: number;
}

/**
 * Classifies a request's device and network.
 *
 * Device: a bot User-Agent wins; else `Sec-CH-UA-Mobile: ?1` means mobile and `?0` means tablet
 * when the User-Agent names a tablet (Android tablets send `?0`), desktop otherwise; without the
 * hint the User-Agent decides. Network: `Save-Data: on` wins; else any of `ECT` slow-2g/2g/3g,
 * a low `Downlink` or a high `RTT` means slow; else fast (also when no hint was sent).
 * Malformed, negative or absurd hint values are ignored.
 * @param options the UA cache and thresholds
 * @throws never
 * @example
 * ```ts
 * const info = classifyDevice(new Headers({ "sec-ch-ua-mobile": "?1", "ect": "3g" }), { uaCache });
 * // { device: "mobile", isBot: false, network: "slow", … }
 * ```
 */
export function classifyDevice(headers: Headers, options: ClassifyDeviceOptions = {}): DeviceInfo {
  const ua = uaInfoFor(headers.get("user-agent") ?? "", options.uaCache);

  const trace = options.trace;
  let device: DeviceClass;
  if (ua.isBot) {
    device = "bot";
    trace?.device("bot-user-agent");
  } else {
    const mobile = headers.get("sec-ch-ua-mobile")?.trim();
    if (mobile === "?1") {
      device = "mobile";
      trace?.device("mobile-hint");
    } else if (mobile === "?0") {
      device = ua.device === "tablet" ? "tablet" : "desktop";
      trace?.device(device === "tablet" ? "mobile-hint-tablet-ua" : "mobile-hint-desktop");
    } else {
      device = ua.device;
      trace?.device("user-agent");
    }
  }

  const info: DeviceInfo = { device, isBot: ua.isBot, network: networkClass(headers, options) };
  const viewportWidth = integerHint(headers, "sec-ch-viewport-width", "viewport-width", MAX_VIEWPORT_WIDTH);
  if (viewportWidth !== undefined && viewportWidth > 0) info.viewportWidth = viewportWidth;
  const dpr = decimalHint(headers, "sec-ch-dpr", "dpr", MAX_DPR);
  if (dpr !== undefined && dpr > 0) info.dpr = dpr;
  const memory = decimalHint(headers, "sec-ch-device-memory", "device-memory", MAX_DEVICE_MEMORY_GIB);
  if (memory !== undefined && memory > 0) info.deviceMemory = memory;
  const platform = platformHint(headers.get("sec-ch-ua-platform")) ?? ua.platform;
  if (platform) info.platform = platform;
  return info;
}

/**
 * Builds the `Accept-CH` response header value for the hints a site uses. Names are matched
 * case-insensitively against {@linkcode CLIENT_HINT_HEADERS}; unknown names are dropped.
 * @param usedHints header names such as `sec-ch-viewport-width` or `DPR`
 * @returns the canonical names, in {@linkcode CLIENT_HINT_HEADERS} order, joined by `, ` (empty when none)
 * @throws never
 * @example
 * ```ts
 * acceptChValue(["dpr", "Sec-CH-Viewport-Width", "x-nope"]); // "Sec-CH-Viewport-Width, DPR"
 * ```
 */
export function acceptChValue(usedHints: Iterable<string>): string {
  const wanted = new Set<string>();
  for (const hint of usedHints) {
    const name = HINT_BY_LOWER_NAME.get(hint.trim().toLowerCase());
    if (name) wanted.add(name);
  }
  return CLIENT_HINT_HEADERS.filter((name) => wanted.has(name)).join(", ");
}

function uaInfoFor(rawUa: string, cache: UaCache | undefined): UaInfo {
  const ua = rawUa.length > MAX_UA_LENGTH ? rawUa.slice(0, MAX_UA_LENGTH) : rawUa;
  if (!cache) return parseUserAgent(ua);
  let info = cache.get(ua);
  if (info === undefined) {
    info = parseUserAgent(ua);
    cache.set(ua, info);
  }
  return info;
}

function networkClass(headers: Headers, options: ClassifyDeviceOptions): NetworkClass {
  const trace = options.trace;
  if (headers.get("save-data")?.trim().toLowerCase() === "on") {
    trace?.network("save-data");
    return "save-data";
  }
  const ect = headers.get("ect")?.trim().toLowerCase();
  if (ect && SLOW_ECT.has(ect)) {
    trace?.network("ect");
    return "slow";
  }
  const downlink = parseDecimal(headers.get("downlink"), 100_000);
  if (downlink !== undefined && downlink < (options.slowDownlinkMbps ?? 1.5)) {
    trace?.network("downlink");
    return "slow";
  }
  const rtt = parseInteger(headers.get("rtt"), 600_000);
  if (rtt !== undefined && rtt > (options.slowRttMs ?? 300)) {
    trace?.network("rtt");
    return "slow";
  }
  trace?.network("no-slow-hint");
  return "fast";
}

function integerHint(headers: Headers, name: string, legacy: string, max: number): number | undefined {
  return parseInteger(headers.get(name), max) ?? parseInteger(headers.get(legacy), max);
}

function decimalHint(headers: Headers, name: string, legacy: string, max: number): number | undefined {
  return parseDecimal(headers.get(name), max) ?? parseDecimal(headers.get(legacy), max);
}

function parseInteger(value: string | null, max: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (!INTEGER.test(text)) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

function parseDecimal(value: string | null, max: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (!DECIMAL.test(text)) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

// `Sec-CH-UA-Platform` is a structured-field string: `"Android"`. Anything else is ignored.
function platformHint(value: string | null): string | undefined {
  if (value === null) return undefined;
  const match = SF_STRING.exec(value.trim());
  const name = match?.[1];
  return name && name !== "Unknown" ? name : undefined;
}
