/**
 * @module
 * Shared fixtures for the rule-engine tests: the issue's example rule set, and builders for
 * request facts and visitors.
 */
import type { Facts } from "../../../lib/pipeline/facts.ts";
import type { VisitorContext } from "../../../lib/rules/decision.ts";
import type { DeviceInfo } from "../../../lib/pipeline/device.ts";
import type { RuleSet } from "../../../lib/rules/schema.ts";

/** The example rule set of the personalization issue, verbatim. */
export const ISSUE_EXAMPLE_JSON = `{
  "version": 1,
  "defaultRegion": "GLOBAL",
  "regions": { "EU": ["DE", "FR", "GB"], "APAC": ["SG", "JP", "AU"], "US": ["US"] },
  "routes": [
    { "match": "/api/products/*", "rewrite": { "EU": "/api/products/promotions/europe", "*": "/api/products/promotions/global" } },
    { "match": "/old-sale", "redirect": { "to": "/sale", "status": 302 } }
  ],
  "experiments": [
    { "key": "hero", "variations": ["control", "a", "b"], "weights": [0.5, 0.25, 0.25], "coverage": 1,
      "seed": "hero", "hashVersion": 2, "match": "/*" }
  ],
  "flags": [
    { "key": "new-search", "type": "boolean", "default": false,
      "rules": [ { "when": { "region": ["EU"] }, "value": true }, { "rollout": 0.2, "value": true } ] }
  ]
}`;

/** Regions used by most tests. */
export const REGIONS: RuleSet["regions"] = { EU: ["DE", "FR", "GB"], APAC: ["SG", "JP", "AU"], US: ["US"] };

/**
 * Request facts for a test: a desktop `GET` with no hints unless overridden.
 *
 * @param overrides fields to replace (`device` merges into the default device)
 * @returns the facts
 */
export function makeFacts(
  overrides: Partial<Omit<Facts, "device">> & { device?: Partial<DeviceInfo> } = {},
): Facts {
  const { device, ...rest } = overrides;
  return {
    method: "GET",
    path: "/",
    search: "",
    peerIp: "203.0.113.9",
    clientIp: "203.0.113.9",
    peerTrusted: false,
    geoTrusted: false,
    proto: "https",
    host: "shop.example",
    country: undefined,
    countrySource: undefined,
    device: { device: "desktop", isBot: false, network: "fast", ...device },
    gpc: false,
    navigation: false,
    regionHint: undefined,
    requestId: "req-1",
    ...rest,
  };
}

/**
 * A visitor for a test: anonymous, no segments, no sticky assignments unless overridden.
 *
 * @param key the bucketing key
 * @param overrides fields to replace
 * @returns the visitor
 */
export function makeVisitor(key: string, overrides: Partial<VisitorContext> = {}): VisitorContext {
  return { key, loggedIn: false, segments: [], attributes: {}, sticky: new Map(), ...overrides };
}
