/**
 * @module
 * The whole decision stage for one request — region, 5 experiments (one sticky, one namespaced,
 * one targeted), routes with region, device and variant rewrites, image adaptation and 20 flags
 * (region rules, rollouts, variant conditions) — for a rotating set of visitors.
 * Run with `deno task bench bench/decision_bench.ts`; the target is well under 20 µs.
 */
import { decide } from "../lib/rules/decide.ts";
import type { VisitorContext } from "../lib/rules/decision.ts";
import type { Facts } from "../lib/pipeline/facts.ts";
import type { RuleSet } from "../lib/rules/schema.ts";
import { parseRules } from "../lib/rules/compile.ts";
import type { Identity } from "../lib/pipeline/identity.ts";
import { setDecisionHeaders } from "../lib/origin/edge_headers.ts";
import { finishResponseHeaders } from "../lib/origin/cache_headers.ts";
import { downstreamResponseHeaders, upstreamRequestHeaders } from "../lib/origin/upstream.ts";
import { ExplainCollector } from "../lib/rules/explain.ts";
import { RulesStore } from "../lib/rules/store.ts";
import type { EdgeUserContext } from "../lib/pipeline/context.ts";
import { StickySigner } from "../lib/pipeline/sticky.ts";

const flags: NonNullable<RuleSet["flags"]> = [];
for (let i = 0; i < 20; i++) {
  const kind = i % 4;
  flags.push(
    kind === 0
      ? {
        key: `flag-${i}`,
        type: "boolean",
        default: false,
        rules: [{ when: { region: ["EU"] }, value: true }, { rollout: 0.2, value: true }],
      }
      : kind === 1
      ? {
        key: `flag-${i}`,
        type: "number",
        default: 10,
        rules: [{ when: { device: ["mobile"] }, rollout: 0.5, value: 20 }],
      }
      : kind === 2
      ? {
        key: `flag-${i}`,
        type: "string",
        default: "Pay",
        rules: [{ when: { variant: { checkout: ["b"] } }, value: "Pay now" }],
      }
      : {
        key: `flag-${i}`,
        type: "object",
        default: { color: "grey" },
        rules: [{ when: { segment: ["vip"] }, value: { color: "gold" } }],
      },
  );
}

const rules = parseRules({
  version: 1,
  defaultRegion: "GLOBAL",
  regions: { EU: ["DE", "FR", "GB", "ES", "IT"], APAC: ["SG", "JP", "AU"], US: ["US"] },
  routes: [
    { match: "/old-sale", redirect: { to: "/sale", status: 302 } },
    { match: "/checkout", experiment: "checkout", rewrite: { b: "/checkout-b" } },
    { match: "/home", rewriteBy: "device", rewrite: { mobile: "/home-m" } },
    {
      match: "/api/products/*",
      rewrite: { EU: "/api/products/promotions/europe", "*": "/api/products/promotions/global" },
    },
  ],
  experiments: [
    {
      key: "hero",
      variations: ["control", "a", "b"],
      weights: [0.5, 0.25, 0.25],
      seed: "hero",
      hashVersion: 2,
    },
    { key: "checkout", variations: ["control", "b"], match: ["/checkout", "/api/*"] },
    { key: "left", variations: ["control", "x"], namespace: ["ns", 0, 0.5] },
    { key: "right", variations: ["control", "y"], namespace: ["ns", 0.5, 1], coverage: 0.8 },
    { key: "mobile-eu", variations: ["control", "m"], when: { region: ["EU"], device: ["mobile"] } },
  ],
  flags,
  images: [{
    match: "/images/*",
    width: { from: "dpr-scaled" },
    quality: { fast: 80, slow: 60, "save-data": 40 },
  }],
});

function facts(path: string, country: string): Facts {
  return {
    method: "GET",
    path,
    search: "",
    peerIp: "10.0.0.5",
    clientIp: "198.51.100.7",
    peerTrusted: true,
    geoTrusted: true,
    proto: "https",
    host: "shop.example",
    country,
    countrySource: "header",
    device: {
      device: "mobile",
      isBot: false,
      network: "fast",
      viewportWidth: 412,
      dpr: 2.625,
      platform: "Android",
    },
    gpc: false,
    navigation: false,
    regionHint: undefined,
    requestId: "req",
  };
}

const requests = [
  facts("/api/products/list", "DE"),
  facts("/checkout", "US"),
  facts("/home", "FR"),
  facts("/images/hero.jpg", "JP"),
];
const visitors: VisitorContext[] = Array.from({ length: 1024 }, (_, i) => ({
  key: `anon-${i.toString(36)}-${(i * 7919) % 10007}`,
  loggedIn: i % 3 === 0,
  segments: i % 5 === 0 ? ["vip"] : [],
  attributes: {},
  sticky: i % 2 === 0 ? new Map([["hero", "a"]]) : new Map(),
}));
let next = 0;
const explainRequest = new Request("https://shop.example/home");
const explainRules = new RulesStore(rules);
const emptyContext: EdgeUserContext = {
  recentViews: [],
  cartItemIds: [],
  segments: [],
  attributes: {},
  source: "none",
  outcome: { cache: "bypass", kv: "skipped", backend: "skipped", stale: false },
};
const identityOf = (visitor: VisitorContext): Identity => ({
  key: visitor.key,
  userId: undefined,
  source: "anonymous",
  anonymousId: visitor.key,
  newAnonymousId: false,
  sticky: new Map(visitor.sticky),
  stickyRewrite: false,
});

Deno.bench("decide: 5 experiments, 20 flags, routes, images", { group: "decision", baseline: true }, () => {
  const i = next++;
  decide({ facts: requests[i & 3]!, visitor: visitors[i & 1023]! }, rules);
});

// 1000 decisions per iteration: the per-iteration time divided by 1000 is the per-request cost
// with scheduler noise averaged out (useful on a busy machine).
Deno.bench("decide × 1000 (divide by 1000)", { group: "decision" }, () => {
  for (let j = 0; j < 1000; j++) {
    const i = next++;
    decide({ facts: requests[i & 3]!, visitor: visitors[i & 1023]! }, rules);
  }
});

// The same decision explained: what `/_edge/explain` adds (an operator tool, off the request path).
Deno.bench("decide with an explanation trace", { group: "decision" }, () => {
  const i = next++;
  new ExplainCollector().explain({
    request: explainRequest,
    facts: requests[i & 3]!,
    identity: identityOf(visitors[i & 1023]!),
    context: emptyContext,
    rules: explainRules,
    sessionCookie: "sid",
    ipGeoLoaded: false,
  });
});

// Header building for one proxied request: the upstream list (hop-by-hop and forged x-edge-*
// dropped, forwarding headers added), the x-edge-* decision headers, and the response side.
const inbound = new Headers({
  "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
  accept: "application/json",
  "accept-language": "de-DE,de;q=0.9",
  cookie: "sid=bench-session-0123456789abcdef; ep_uid=benchanon0123456789",
  "x-forwarded-for": "85.214.132.117",
  "x-edge-region": "forged",
  connection: "keep-alive",
});
const originHeaders = new Headers({
  "content-type": "application/json",
  "content-length": "240",
  "cache-control": "public, max-age=60",
  etag: '"v1"',
  vary: "Accept-Encoding",
});
const decided = decide({ facts: requests[0]!, visitor: visitors[0]! }, rules);
const identity: Identity = {
  key: "u1",
  userId: "u1",
  anonymousId: "benchanon0123456789",
  newAnonymousId: false,
  sticky: new Map(),
  stickyRewrite: false,
  source: "session",
};
const forwarding = {
  clientIp: "85.214.132.117",
  peerIp: "127.0.0.1",
  peerTrusted: true,
  proto: "https",
  host: "shop.example",
  requestId: "req-1",
};
const userContext = {
  recentViews: ["p1", "p2", "p3", "p42", "p7", "p13", "p8", "p9"],
  cartItemIds: ["p42"],
  segments: ["returning", "outdoor"],
};

Deno.bench("request headers: upstream list + x-edge-* decision headers", { group: "headers" }, () => {
  const list = upstreamRequestHeaders(inbound, forwarding);
  setDecisionHeaders(list, { facts: requests[0]!, identity, decision: decided, context: userContext });
});
Deno.bench("response headers: downstream copy + caching, vary, cookies", { group: "headers" }, () => {
  const headers = downstreamResponseHeaders(originHeaders, "gzip");
  finishResponseHeaders(headers, {
    decision: decided,
    clientHints: [],
    cookies: ["ep_exp=hero%3Aa; Path=/"],
  });
});

const stickySigner = new StickySigner(["bench-sticky-secret-0123456789"]);
const unmemoised = new StickySigner(["bench-sticky-secret-0123456789"], { memoEntries: 0 });
const stickyValue = stickySigner.sign("checkout:control|hero:a|pricing:annual");
Deno.bench("sticky cookie: verify, remembered value", { group: "sticky", baseline: true }, () => {
  stickySigner.verify(stickyValue, 0);
});
Deno.bench("sticky cookie: verify, HMAC (first sight or no memo)", { group: "sticky" }, () => {
  unmemoised.verify(stickyValue, 0);
});
Deno.bench("sticky cookie: sign", { group: "sticky" }, () => {
  stickySigner.sign("checkout:control|hero:a|pricing:annual");
});
