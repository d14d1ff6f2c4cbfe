/**
 * @module
 * The parts of an explanation that come from the stages before the decision: the facts (and the
 * trace of where the country, device and network classes came from), the identity, the context
 * and which rules version decides.
 */
import type { DeviceReason, NetworkReason } from "../pipeline/device.ts";
import type { RegionSource } from "../pipeline/geo.ts";
import type { EdgeUserContext } from "../pipeline/context.ts";
import { ANON_COOKIE } from "../pipeline/identity.ts";
import { STICKY_COOKIE } from "../pipeline/sticky.ts";

/** The header earlier versions believed from any trusted proxy; now only `USER_ID_HEADER` from a user proxy names a user. */
const LEGACY_USER_HEADER = "x-user-id";
import { parseCookies } from "../http/cookies.ts";
import { canaryHash } from "./store.ts";
import type { CompiledRules } from "./compile.ts";
import type { ExplainInputs, Explanation, FactsExplanation } from "./explanation.ts";

/** What the facts stage and the region step reported to the trace. */
export interface FactsTraceRecord {
  /** The geo header that decided, if one was present. */
  countryHeader: string | undefined;
  deviceReason: DeviceReason | null;
  networkReason: NetworkReason | null;
  region: { value: string; source: RegionSource } | undefined;
  /** The deciding rules' `defaultRegion`. */
  defaultRegion: string;
}

/**
 * Explains the facts: each derived value and where it came from.
 *
 * @param inputs the explanation's inputs
 * @param trace what the facts stage reported
 * @returns the facts part of the explanation
 */
export function explainFacts(
  inputs: ExplainInputs,
  trace: FactsTraceRecord,
): FactsExplanation {
  const { facts, request } = inputs;
  const region = trace.region ?? { value: "", source: "default" as const };
  const header = facts.geoTrusted ? trace.countryHeader : undefined;
  const countryWhy = countryWhyOf(inputs, header);
  const regionWhy = region.source === "hint"
    ? `Trusted region header names "${region.value}"`
    : region.source === "country"
    ? `Country ${facts.country} is in regions.${region.value}`
    : facts.country
    ? `Country ${facts.country} is in no region: defaultRegion "${trace.defaultRegion}"`
    : `No country: defaultRegion "${trace.defaultRegion}"`;
  return {
    clientIp: facts.clientIp,
    peerIp: facts.peerIp,
    peerTrusted: facts.peerTrusted,
    geoTrusted: facts.geoTrusted,
    country: {
      value: facts.country ?? null,
      source: facts.countrySource ?? null,
      ...(header ? { header } : {}),
      why: countryWhy,
    },
    region: { ...region, why: regionWhy },
    device: {
      value: facts.device.device,
      reason: trace.deviceReason,
      why: deviceWhy(trace.deviceReason, request),
    },
    network: {
      value: facts.device.network,
      reason: trace.networkReason,
      why: networkWhy(trace.networkReason, request),
    },
    platform: facts.device.platform ?? null,
    viewportWidth: facts.device.viewportWidth ?? null,
    dpr: facts.device.dpr ?? null,
    gpc: facts.gpc,
    bot: facts.device.isBot,
  };
}

function countryWhyOf(inputs: ExplainInputs, header: string | undefined): string {
  const { facts, request } = inputs;
  const ipPart = inputs.ipGeoLoaded
    ? `the IP database has no country for ${facts.clientIp}`
    : "the IP database is not loaded";
  if (facts.countrySource === "header") return `Trusted geo header "${header}"`;
  if (facts.countrySource === "ip") {
    return `The IP database maps ${facts.clientIp} to ${facts.country}` +
      (header
        ? ` (the trusted geo header "${header}" names no country)`
        : facts.geoTrusted
        ? " (no geo header)"
        : " (geo headers are not trusted from this hop)");
  }
  if (header) {
    return `Unknown: the trusted geo header "${header}" says ` +
      `${JSON.stringify(request.headers.get(header) ?? "")}, which names no country, and ${ipPart}`;
  }
  return `Unknown: ${
    facts.geoTrusted ? "no geo header was sent" : "geo headers are not trusted from this hop"
  }, and ${ipPart}`;
}

/**
 * Explains who the visitor is and where that came from (never the session cookie's value).
 *
 * @param inputs the explanation's inputs
 * @returns the identity part of the explanation
 */
export function explainIdentity(inputs: ExplainInputs): Explanation["identity"] {
  const { identity, request, sessionCookie } = inputs;
  const cookies = parseCookies(request.headers.get("cookie"));
  let why: string;
  if (identity.source === "session") {
    why = `Session cookie "${sessionCookie}" names user "${identity.userId}"`;
  } else if (identity.source === "header") {
    why = "A peer in USER_ID_PROXIES names the user with USER_ID_HEADER";
  } else {
    const notes: string[] = [];
    if (cookies.has(sessionCookie)) notes.push(`session cookie "${sessionCookie}" is unknown or expired`);
    if (request.headers.has(LEGACY_USER_HEADER)) {
      notes.push(
        `${LEGACY_USER_HEADER} is ignored from an untrusted hop (only USER_ID_HEADER from a peer in USER_ID_PROXIES names a user)`,
      );
    }
    why = identity.newAnonymousId
      ? `No valid ${ANON_COOKIE} cookie: a fresh anonymous id (a real request would set it; explaining does not)`
      : `Anonymous id from the ${ANON_COOKIE} cookie`;
    if (notes.length) why += `; ${notes.join("; ")}`;
  }
  if (cookies.has(STICKY_COOKIE) && identity.sticky.size === 0) {
    why += `; the ${STICKY_COOKIE} cookie holds nothing valid`;
  }
  return {
    key: identity.key,
    source: identity.source,
    loggedIn: identity.userId !== undefined,
    newAnonymousId: identity.newAnonymousId,
    sticky: Object.fromEntries(identity.sticky),
    why,
  };
}

/**
 * Explains the context the decision used: segments, attribute names, how much behavioural data
 * there is, and where it was loaded from.
 *
 * @param context the context stage's result
 * @returns the context part of the explanation
 */
export function explainContext(context: EdgeUserContext): Explanation["context"] {
  const { outcome } = context;
  let why: string;
  if (outcome.reason === "anonymous") why = "None: the visitor is anonymous";
  else if (outcome.reason === "gpc") why = "None: the visitor sent Sec-GPC: 1 (no behavioural data is used)";
  else if (context.source === "cache") {
    why = outcome.stale
      ? "This instance's cache (stale: the KV read failed)"
      : "This instance's cache (fresh)";
  } else if (context.source === "kv") why = "Deno KV (not in this instance's cache)";
  else if (context.source === "backend") {
    why = "The backend, read through (the edge's data was missing or old)";
  } else {why = outcome.kv === "error"
      ? "None: the KV read failed"
      : "None: the edge knows nothing of this user";}
  return {
    source: context.source,
    cache: outcome.cache,
    kv: outcome.kv,
    readThrough: outcome.backend,
    stale: outcome.stale,
    segments: context.segments,
    attributes: Object.keys(context.attributes),
    recentViews: context.recentViews.length,
    cartItems: context.cartItemIds.length,
    why,
  };
}

/**
 * Explains which rules version decides: the active one, or the canary's for a visitor whose
 * canary hash is below its share.
 *
 * @param inputs the explanation's inputs
 * @param rules the rules the visitor evaluates
 * @returns the rules part of the explanation
 */
export function explainRules(inputs: ExplainInputs, rules: CompiledRules): Explanation["rules"] {
  const canary = inputs.rules.canary;
  const role = canary !== undefined && rules === canary.rules ? "canary" : "active";
  const hashValue = canary ? canaryHash(inputs.identity.key, canary.rules.version) : 0;
  const canaryInfo = canary
    ? { version: canary.rules.version, share: canary.share, hashValue, inCanary: role === "canary" }
    : null;
  const why = !canary
    ? `Active rules version ${rules.version}; no canary runs`
    : role === "canary"
    ? `Canary version ${rules.version}: the visitor's canary hash ${hashValue} is below its share ${canary.share}`
    : `Active version ${rules.version}: the visitor's canary hash ${hashValue} is not below canary ` +
      `version ${canary.rules.version}'s share ${canary.share}`;
  return {
    version: rules.version,
    role,
    activeVersion: inputs.rules.current.version,
    canary: canaryInfo,
    why,
  };
}

function deviceWhy(reason: DeviceReason | null, request: Request): string {
  const ua = JSON.stringify((request.headers.get("user-agent") ?? "").slice(0, 120));
  switch (reason) {
    case "bot-user-agent":
      return `The User-Agent ${ua} is a bot's`;
    case "mobile-hint":
      return "Sec-CH-UA-Mobile: ?1";
    case "mobile-hint-tablet-ua":
      return "Sec-CH-UA-Mobile: ?0 and a tablet User-Agent";
    case "mobile-hint-desktop":
      return "Sec-CH-UA-Mobile: ?0";
    case "user-agent":
      return `From the User-Agent ${ua} (no Sec-CH-UA-Mobile)`;
    default:
      return "Unknown";
  }
}

function networkWhy(reason: NetworkReason | null, request: Request): string {
  const header = (name: string) => `${name}: ${request.headers.get(name.toLowerCase()) ?? ""}`;
  switch (reason) {
    case "save-data":
      return "Save-Data: on";
    case "ect":
      return header("ECT");
    case "downlink":
      return `${header("Downlink")} (below 1.5 Mbps)`;
    case "rtt":
      return `${header("RTT")} (above 300 ms)`;
    case "no-slow-hint":
      return "No Save-Data and no slow ECT, Downlink or RTT hint";
    default:
      return "Unknown";
  }
}
