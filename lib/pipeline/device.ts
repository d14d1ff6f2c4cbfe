/**
 * @module
 * Device and network classification of a request from Client Hints, `Save-Data` and the
 * network hints, with a User-Agent fallback (`bowser`) and bot detection (`isbot`).
 */
import Bowser from "bowser";
import { isbot } from "isbot";
import { Lru } from "../data/lru.ts";

export type DeviceClass = "mobile" | "tablet" | "desktop" | "bot";

export type NetworkClass = "slow" | "fast" | "save-data";

/** What the edge knows about the visitor's device and network. */
export interface DeviceInfo {
  /** `bot` whenever {@linkcode DeviceInfo.isBot} is true. */
  device: DeviceClass;
  isBot: boolean;
  /** `fast` when no network hint was sent. */
  network: NetworkClass;
  /** CSS pixels. */
  viewportWidth?: number;
  dpr?: number;
  /** Approximate RAM in GiB. */
  deviceMemory?: number;
  /** From `Sec-CH-UA-Platform`, else the User-Agent. */
  platform?: string;
}

/** What a User-Agent string alone says; shared between requests through a {@linkcode UaCache}. */
export interface UaInfo {
  readonly isBot: boolean;
  /** TVs and unknown devices count as desktop. */
  readonly device: "mobile" | "tablet" | "desktop";
  readonly platform?: string;
}

/**
 * The headers {@linkcode classifyDevice} reads besides `User-Agent`; all but the first two and
 * `Save-Data` arrive only after the site advertised them in `Accept-CH`.
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

/** A bounded LRU of parsed User-Agents, one per isolate: parsing costs far more than a hit. */
export class UaCache {
  #lru: Lru<string, UaInfo>;

  /**
   * @param maxSize how many distinct User-Agent strings to keep, at least 1
   * @throws {RangeError} when `maxSize` is not a positive integer
   */
  constructor(maxSize: number = DEFAULT_UA_CACHE_SIZE) {
    if (!Number.isInteger(maxSize) || maxSize < 1) {
      throw new RangeError(`UA cache size must be a positive integer, got "${maxSize}"`);
    }
    this.#lru = new Lru({ maxEntries: maxSize });
  }

  get size(): number {
    return this.#lru.size;
  }

  get(ua: string): UaInfo | undefined {
    return this.#lru.get(ua);
  }

  set(ua: string, info: UaInfo): void {
    this.#lru.set(ua, info);
  }
}

/**
 * Parses a User-Agent, cut to {@linkcode MAX_UA_LENGTH} first to bound the regex work an attacker
 * can cause.
 *
 * @param ua the User-Agent header value (may be empty)
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

/** Why a device class was chosen (the `mobile-hint*` ones from `Sec-CH-UA-Mobile`). */
export type DeviceReason =
  | "bot-user-agent"
  | "mobile-hint"
  | "mobile-hint-tablet-ua"
  | "mobile-hint-desktop"
  | "user-agent";

/** Why a network class was chosen. */
export type NetworkReason = "save-data" | "ect" | "downlink" | "rtt" | "no-slow-hint";

/** Receives why {@linkcode classifyDevice} chose its classes, when an explanation is wanted. */
export interface DeviceTrace {
  device(reason: DeviceReason): void;
  network(reason: NetworkReason): void;
}

/** Options for {@linkcode classifyDevice}. */
export interface ClassifyDeviceOptions {
  trace?: DeviceTrace;
  /** Without one every call parses. */
  uaCache?: UaCache;
  /** `Downlink` below this (Mbps) is slow. Default 1.5. */
  slowDownlinkMbps?: number;
  /** `RTT` above this (ms) is slow. Default 300. */
  slowRttMs?: number;
}

/**
 * Classifies a request's device and network. `Sec-CH-UA-Mobile: ?0` with a tablet User-Agent is a
 * tablet (Android tablets send `?0`); malformed or absurd hint values are ignored.
 *
 * @param options the UA cache and thresholds
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
 * The `Accept-CH` value for the hints a site uses: canonical names in {@linkcode CLIENT_HINT_HEADERS}
 * order, unknown ones dropped.
 *
 * @param usedHints header names in any case
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

function platformHint(value: string | null): string | undefined {
  if (value === null) return undefined;
  const match = SF_STRING.exec(value.trim());
  const name = match?.[1];
  return name && name !== "Unknown" ? name : undefined;
}
