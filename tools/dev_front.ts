/**
 * @module
 * The dev-only front that `deno task dev` puts before the service on loopback: it plays the
 * CDN or load balancer a real deployment has, so a newcomer can pretend, in the browser, to be
 * another country (an `X-Forwarded-For` from that country, looked up in the IP database), device
 * (a `User-Agent`), network (`ECT`, `Save-Data`) or user (the trusted user id header). The
 * pretence is chosen at `/_dev/pretend` and kept in a cookie that never reaches the edge.
 *
 * It exists only in `tools/`: the service trusts it because dev makes loopback a trusted proxy.
 * Nothing of it is on the production path.
 */
import { USER_ID } from "../lib/pipeline/identity.ts";

/** The path that sets (or, with `reset`, clears) the pretence, then redirects back. */
export const PRETEND_PATH = "/_dev/pretend";
/** The front's own cookie holding the pretence; removed before a request goes on to the edge. */
export const PRETEND_COOKIE = "dev_pretend";

/** One address per country that the bundled IP database places there (a test checks each). */
export const SAMPLE_ADDRESSES: Readonly<Record<string, string>> = {
  DE: "130.149.7.201",
  FR: "62.4.0.1",
  GB: "81.2.69.142",
  JP: "133.242.0.3",
  SG: "165.21.0.1",
  AU: "1.0.0.1",
  US: "8.8.8.8",
  BR: "200.160.0.1",
  ZA: "41.0.0.1",
};

/** A typical `User-Agent` per device class. */
export const SAMPLE_USER_AGENTS: Readonly<Record<string, string>> = {
  desktop: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) " +
    "Chrome/131.0.0.0 Safari/537.36",
  mobile: "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) " +
    "Version/18.1 Mobile/15E148 Safari/604.1",
  tablet: "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) " +
    "Version/18.1 Mobile/15E148 Safari/604.1",
};

/** Network classes that can be pretended, as the hint headers that make them. */
const NETWORK_HEADERS: Readonly<Record<string, [string, string]>> = {
  slow: ["ect", "2g"],
  "save-data": ["save-data", "on"],
};

/** The users of `tools/demo_events.ndjson` one can pretend to be. */
export const SAMPLE_USERS: readonly string[] = ["u1", "u2"];

/** What the visitor pretends; an absent field means "as the browser really is". */
export interface Pretence {
  country?: string;
  device?: string;
  network?: string;
  user?: string;
}

/** Options for {@linkcode createDevFront}. */
export interface DevFrontOptions {
  /** The service's base URL (loopback). */
  edgeUrl: string;
  /** The header the service reads a trusted user id from. */
  userIdHeader: string;
  /** Sent as a bearer token on `/_edge/rules` and `/_edge/explain`, so their links work in a browser. */
  rulesToken?: string;
  fetch: typeof fetch;
}

const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "host",
];
/** Headers that would contradict a pretended device. */
const DEVICE_HINTS = ["sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "sec-ch-ua-model"];
const NETWORK_HINTS = ["ect", "save-data", "downlink", "rtt"];

/**
 * Reads a pretence from query parameters or the cookie's value, keeping only known values.
 *
 * @param params `country`, `device`, `network`, `user`
 * @returns the pretence (unknown values dropped)
 */
export function parsePretence(params: URLSearchParams): Pretence {
  const pretence: Pretence = {};
  const country = params.get("country")?.toUpperCase();
  if (country && country in SAMPLE_ADDRESSES) pretence.country = country;
  const device = params.get("device");
  if (device && device in SAMPLE_USER_AGENTS) pretence.device = device;
  const network = params.get("network");
  if (network && network in NETWORK_HEADERS) pretence.network = network;
  const user = params.get("user");
  if (user && USER_ID.test(user)) pretence.user = user;
  return pretence;
}

/**
 * The request as the front sends it to the edge: hop-by-hop headers and the front's cookie
 * removed, and the pretence applied in the headers a trusted proxy sets.
 *
 * @param request the browser's request
 * @param pretence what to pretend
 * @param options the edge's user id header and rules token
 * @returns the headers to send to the edge
 */
export function edgeRequestHeaders(
  request: Request,
  pretence: Pretence,
  options: Pick<DevFrontOptions, "userIdHeader" | "rulesToken">,
): Headers {
  const headers = new Headers(request.headers);
  for (const name of HOP_BY_HOP) headers.delete(name);
  const url = new URL(request.url);
  headers.set("x-forwarded-host", url.host);
  headers.set("x-forwarded-proto", url.protocol.replace(":", ""));
  // Identical bytes to what the browser got: Deno's fetch would decode them and keep the header.
  headers.set("accept-encoding", "identity");
  const cookies = (headers.get("cookie") ?? "").split(";").map((part) => part.trim())
    .filter((part) => part !== "" && !part.startsWith(`${PRETEND_COOKIE}=`));
  if (cookies.length) headers.set("cookie", cookies.join("; "));
  else headers.delete("cookie");
  // A real front decides these itself: what the browser sent is never passed on.
  headers.delete("x-forwarded-for");
  headers.delete(options.userIdHeader);
  if (pretence.country) headers.set("x-forwarded-for", SAMPLE_ADDRESSES[pretence.country]!);
  if (pretence.device) {
    for (const name of DEVICE_HINTS) headers.delete(name);
    headers.set("user-agent", SAMPLE_USER_AGENTS[pretence.device]!);
  }
  if (pretence.network) {
    for (const name of NETWORK_HINTS) headers.delete(name);
    const [name, value] = NETWORK_HEADERS[pretence.network]!;
    headers.set(name, value);
  }
  if (pretence.user) headers.set(options.userIdHeader, pretence.user);
  if (options.rulesToken && /^\/_edge\/(rules|explain)(\/|$)/.test(url.pathname)) {
    headers.set("authorization", `Bearer ${options.rulesToken}`);
  }
  return headers;
}

/**
 * The front's request handler: `/_dev/pretend` sets the pretence; everything else goes on to the
 * edge with it applied, and the edge's answer comes back as it is (redirects not followed).
 *
 * @param options where the edge is and what it trusts
 * @returns the handler
 */
export function createDevFront(options: DevFrontOptions): (request: Request) => Promise<Response> {
  return async (request) => {
    const url = new URL(request.url);
    if (url.pathname === PRETEND_PATH) return pretend(url);
    const pretence = parsePretence(new URLSearchParams(cookieValue(request, PRETEND_COOKIE) ?? ""));
    const target = new URL(url.pathname + url.search, options.edgeUrl);
    try {
      const response = await options.fetch(target, {
        method: request.method,
        headers: edgeRequestHeaders(request, pretence, options),
        body: request.body,
        redirect: "manual",
      });
      return new Response(response.body, { status: response.status, headers: response.headers });
    } catch {
      return Response.json({ error: { code: "bad_gateway", message: "The service is not answering" } }, {
        status: 502,
      });
    }
  };
}

function pretend(url: URL): Response {
  const back = url.searchParams.get("back") ?? "/";
  // Only a path of this site: never an open redirect.
  const location = /^\/(?![\/\\])/.test(back) ? back : "/";
  const headers = new Headers({ location, "cache-control": "no-store" });
  if (url.searchParams.has("reset")) {
    headers.set("set-cookie", `${PRETEND_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax`);
  } else {
    const pretence = parsePretence(url.searchParams);
    const value = new URLSearchParams(Object.entries(pretence)).toString();
    headers.set(
      "set-cookie",
      `${PRETEND_COOKIE}=${encodeURIComponent(value)}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax`,
    );
  }
  return new Response(null, { status: 303, headers });
}

function cookieValue(request: Request, name: string): string | undefined {
  for (const part of (request.headers.get("cookie") ?? "").split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) {
      try {
        return decodeURIComponent(rest.join("="));
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}
