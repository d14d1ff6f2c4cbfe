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

/** Codes CDNs send for "unknown" (Cloudflare `XX`, App Engine `ZZ`): treated as no country. */
const UNKNOWN_COUNTRIES: ReadonlySet<string> = new Set(["XX", "ZZ"]);

/** Header through which a trusted CDN can name the region directly. */
export const REGION_HEADER = "x-geo-region";

/**
 * Reads the country from the first trusted geo header that holds a valid code.
 *
 * @param headers the request headers
 * @param names the header names to consult, in order
 * @returns an upper-case ISO 3166-1 alpha-2 code, or undefined (unknown codes such as `XX`, `ZZ` too)
 */
export function countryFromHeaders(headers: Headers, names: readonly string[]): string | undefined {
  for (const name of names) {
    const value = headers.get(name)?.trim().toUpperCase();
    if (value && /^[A-Z]{2}$/.test(value) && !UNKNOWN_COUNTRIES.has(value)) return value;
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
