/**
 * @module
 * Geography: the visitor's country from trusted CDN headers, and country → region through the
 * rules. Headers are only read when the hop is trusted; otherwise they are ignored.
 */
import type { CompiledRules } from "./rules.ts";

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

/**
 * Reads the country from the first of the trusted geo headers that is present. That header
 * decides even when it says "no country" (`XX`, `T1`, …) or holds garbage: the later names are
 * not consulted then, since a CDN sets its own header but passes the client's others on, and a
 * client must not name its country whenever the CDN does not know it.
 *
 * @param headers the request headers
 * @param names the header names to consult, in order
 * @returns an upper-case ISO 3166-1 alpha-2 code, or undefined (unknown codes such as `XX`, `ZZ` too)
 */
export function countryFromHeaders(headers: Headers, names: readonly string[]): string | undefined {
  for (const name of names) {
    const raw = headers.get(name);
    if (raw === null) continue;
    const value = raw.trim().toUpperCase();
    return /^[A-Z]{2}$/.test(value) && !UNKNOWN_COUNTRIES.has(value) ? value : undefined;
  }
  return undefined;
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
  if (regionHint && rules.regionNames.has(regionHint)) return regionHint;
  if (country) return rules.countryRegion.get(country) ?? rules.defaultRegion;
  return rules.defaultRegion;
}
