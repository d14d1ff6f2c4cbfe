/**
 * @module
 * The first pipeline stage: what the edge can say about a request before any lookup. Nothing a
 * client sends is trusted here unless the hop is.
 */
import { checkInboundPath, requestUrlParts } from "../http/paths.ts";
import { type CidrList, clientAddress } from "../http/net.ts";
import { constantTimeEqual } from "../http/secure.ts";
import { countryFromHeaders, type GeoTrace, REGION_HEADER } from "./geo.ts";
import { classifyDevice, type DeviceInfo, type DeviceTrace, type UaCache } from "./device.ts";
import type { IpGeoDb } from "./ip_geo.ts";
import { gpcRequested } from "./context.ts";

/** Facts about one request. */
export interface Facts {
  method: string;
  /** The checked path the rules match on. */
  path: string;
  /** The query string including `?`, or empty. */
  search: string;
  peerIp: string;
  /** The peer, or resolved through a trusted `X-Forwarded-For`. */
  clientIp: string;
  /** The peer is in `TRUSTED_PROXIES`: its forwarding headers are kept. */
  peerTrusted: boolean;
  /** The peer is trusted or presented the CDN secret: its geo headers are believed. */
  geoTrusted: boolean;
  proto: string;
  host: string;
  /** From a trusted geo header, else from the bundled IP database. */
  country: string | undefined;
  countrySource: "header" | "ip" | undefined;
  device: DeviceInfo;
  /** `Sec-GPC: 1`: no behavioural data may be used. */
  gpc: boolean;
  /** A top-level page load. */
  navigation: boolean;
  regionHint: string | undefined;
  requestId: string;
}

/** Options for {@linkcode gatherFacts}. */
export interface GatherFactsOptions {
  trustedProxies: CidrList;
  cdnSecret: string | undefined;
  countryHeaders: readonly string[];
  /** The request id from {@linkcode requestIdFrom}. */
  requestId: string;
  uaCache?: UaCache;
  ipGeo?: IpGeoDb;
  /** Told which geo header decided and why the device and network classes, for an explanation. */
  trace?: GeoTrace & DeviceTrace;
  /**
   * The scheme of the connections this process accepts; undefined → the request URL's (Deno Deploy).
   * Never the target's own: an absolute-form `GET https://…` over plain HTTP does not make the hop https.
   */
  listenerScheme?: "http" | "https";
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Gathers the facts of a request.
 *
 * @param request the inbound request
 * @param peerIp the connection's remote address
 * @param options trust configuration and id generator
 * @throws {BadPathError} when the path cannot be forwarded safely
 */
export function gatherFacts(request: Request, peerIp: string, options: GatherFactsOptions): Facts {
  const url = requestUrlParts(request.url);
  const headers = request.headers;
  const peerTrusted = options.trustedProxies.has(peerIp);
  const secret = headers.get("x-edge-cdn-secret");
  const geoTrusted = peerTrusted ||
    (options.cdnSecret !== undefined && secret !== null && constantTimeEqual(secret, options.cdnSecret));
  const forwardedProto = peerTrusted ? headers.get("x-forwarded-proto")?.toLowerCase() : undefined;
  const regionHint = geoTrusted ? headers.get(REGION_HEADER)?.trim() : undefined;
  const clientIp = clientAddress(peerIp, headers.get("x-forwarded-for"), options.trustedProxies);
  const headerCountry = geoTrusted
    ? countryFromHeaders(headers, options.countryHeaders, options.trace)
    : undefined;
  const ipCountry = headerCountry ? undefined : options.ipGeo?.lookup(clientIp);
  return {
    method: request.method,
    path: checkInboundPath(url.path),
    search: url.search,
    peerIp,
    clientIp,
    peerTrusted,
    geoTrusted,
    proto: forwardedProto === "https" || forwardedProto === "http"
      ? forwardedProto
      : options.listenerScheme ?? url.scheme,
    host: (peerTrusted ? forwardedHost(headers) : undefined) ?? headers.get("host") ?? url.host,
    country: headerCountry ?? ipCountry,
    countrySource: headerCountry ? "header" : ipCountry ? "ip" : undefined,
    device: classifyDevice(headers, { uaCache: options.uaCache, trace: options.trace }),
    gpc: gpcRequested(headers),
    navigation: isNavigation(request.method, headers),
    regionHint: regionHint || undefined,
    requestId: options.requestId,
  };
}

function forwardedHost(headers: Headers): string | undefined {
  const value = headers.get("x-forwarded-host");
  if (value === null) return undefined;
  const comma = value.indexOf(",");
  return (comma < 0 ? value : value.slice(0, comma)).trim() || undefined;
}

/**
 * The client's `X-Request-Id` when well-formed (so traces join across hops), else a fresh one.
 *
 * @param headers the request headers
 * @param randomId generator for a fresh id
 */
export function requestIdFrom(headers: Headers, randomId: () => string): string {
  const inbound = headers.get("x-request-id");
  return inbound && REQUEST_ID.test(inbound) ? inbound : randomId();
}

function isNavigation(method: string, headers: Headers): boolean {
  if (method !== "GET") return false;
  const dest = headers.get("sec-fetch-dest");
  if (dest !== null) return dest === "document" || dest === "iframe";
  return (headers.get("accept") ?? "").includes("text/html");
}
