/**
 * @module
 * Geography: the country from trusted CDN headers (read only when the hop is trusted), and
 * country → region through the rules.
 */
import type { CompiledRules } from "../rules/compile.ts";

/** CDN headers that carry an ISO country code, in order. */
export const DEFAULT_COUNTRY_HEADERS: readonly string[] = [
  "cf-ipcountry",
  "cloudfront-viewer-country",
  "x-vercel-ip-country",
  "x-appengine-country",
  "x-geo-country",
];

// What CDNs send for "no country" (Cloudflare, App Engine, MaxMind legacy).
const UNKNOWN_COUNTRIES: ReadonlySet<string> = new Set(["XX", "ZZ", "T1", "A1", "A2", "O1"]);

/** Header through which a trusted CDN can name the region directly. */
export const REGION_HEADER = "x-geo-region";

/** Receives which geo header decided the country, when an explanation is wanted. */
export interface GeoTrace {
  countryHeader(name: string): void;
}

/**
 * The ISO country of the first trusted geo header present, which decides even when it says "no
 * country": a CDN passes the client's other headers on, and those must not name a country for it.
 *
 * @param headers the request headers
 * @param names the header names to consult, in order
 * @param trace told which header decided
 */
export function countryFromHeaders(
  headers: Headers,
  names: readonly string[],
  trace?: GeoTrace,
): string | undefined {
  for (const name of names) {
    const raw = headers.get(name);
    if (raw === null) continue;
    trace?.countryHeader(name);
    const value = raw.trim().toUpperCase();
    return /^[A-Z]{2}$/.test(value) && !UNKNOWN_COUNTRIES.has(value) ? value : undefined;
  }
  return undefined;
}

/** Where a visitor's region comes from: a trusted region header, the country, or `defaultRegion`. */
export type RegionSource = "hint" | "country" | "default";

/**
 * Where {@linkcode resolveRegion} takes the region from.
 *
 * @param rules the compiled rules
 * @param country the country code, if known
 * @param regionHint a region named by a trusted header, if any
 */
export function regionSource(
  rules: CompiledRules,
  country: string | undefined,
  regionHint?: string,
): RegionSource {
  if (regionHint && rules.regionNames.has(regionHint)) return "hint";
  if (country && rules.countryRegion.has(country)) return "country";
  return "default";
}

/**
 * A hinted region the rules know, else the country's region, else the rules' default.
 *
 * @param rules the compiled rules
 * @param country the country code, if known
 * @param regionHint a region named by a trusted header, if any
 */
export function resolveRegion(
  rules: CompiledRules,
  country: string | undefined,
  regionHint?: string,
): string {
  switch (regionSource(rules, country, regionHint)) {
    case "hint":
      return regionHint!;
    case "country":
      return rules.countryRegion.get(country!)!;
    case "default":
      return rules.defaultRegion;
  }
}
