/**
 * @module
 * Geography: the visitor's country from trusted CDN headers, and country → region through the
 * rules. Headers are only read when the hop is trusted; otherwise they are ignored.
 */
import type { CompiledRules } from "../rules/compile.ts";

/** CDN headers that carry an ISO country code, in the order they are consulted. */
export const DEFAULT_COUNTRY_HEADERS: readonly string[] = [
  "cf-ipcountry",
  "cloudfront-viewer-country",
  "x-vercel-ip-country",
  "x-appengine-country",
  "x-geo-country",
];

/**
 * Codes CDNs send for "no country" (Cloudflare `XX` and `T1` for Tor, App Engine `ZZ`, MaxMind's
 * legacy `A1`/`A2`/`O1`): treated as no country.
 */
const UNKNOWN_COUNTRIES: ReadonlySet<string> = new Set(["XX", "ZZ", "T1", "A1", "A2", "O1"]);

/** Header through which a trusted CDN can name the region directly. */
export const REGION_HEADER = "x-geo-region";

/** Receives which geo header decided the country, when an explanation is wanted. */
export interface GeoTrace {
  /** @param name the (lower-case) header that decided, whatever it held */
  countryHeader(name: string): void;
}

/**
 * Reads the country from the first of the trusted geo headers that is present. That header
 * decides even when it says "no country" (`XX`, `T1`, …) or holds garbage: the later names are
 * not consulted then, since a CDN sets its own header but passes the client's others on, and a
 * client must not name its country whenever the CDN does not know it.
 *
 * @param headers the request headers
 * @param names the header names to consult, in order
 * @param trace told which header decided
 * @returns an upper-case ISO 3166-1 alpha-2 code, or undefined (unknown codes such as `XX`, `ZZ` too)
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

/**
 * Where a visitor's region comes from: `hint` (a trusted region header naming a region of the
 * rules), `country` (the country is listed in `regions`) or `default` (`defaultRegion`).
 */
export type RegionSource = "hint" | "country" | "default";

/**
 * Tells where {@linkcode resolveRegion} takes the region from (it decides by this).
 *
 * @param rules the compiled rules
 * @param country the country code, if known
 * @param regionHint a region named by a trusted header, if any
 * @returns the source
 * @throws never
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
 * Resolves the region: a directly given region that the rules know, else the country's
 * region, else the rules' default.
 *
 * @param rules the compiled rules
 * @param country the country code, if known
 * @param regionHint a region named by a trusted header, if any
 * @returns the region name
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
