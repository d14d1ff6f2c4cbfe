/**
 * @module
 * The hand-written peer of `bench:load`: the edge function a user would write in an afternoon
 * for the same scenario — Hono, GrowthBook's JS SDK (the scenario's 2 experiments and 5 flags),
 * the country from the client's `X-Forwarded-For` in the same IP database, one eventual KV read
 * of the visitor's recent views, the request headers copied with `x-edge-*` added, and `fetch`.
 * No header hygiene, no sticky cookie, no caching policy: what the service adds is measured
 * against it.
 *
 * `deno run -A bench/peer.ts --origin URL --port N --kv PATH`
 */
import { Buffer } from "node:buffer";
import { parseArgs } from "node:util";
import { Hono } from "hono";
import { GrowthBook } from "@growthbook/growthbook";
import { type CountryResponse, Reader } from "mmdb-lib";
import { ipGeoDbPath } from "../lib/pipeline/ip_geo.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { origin: { type: "string" }, port: { type: "string" }, kv: { type: "string" } },
});
if (!values.origin || !values.port || !values.kv) {
  console.error("Usage: peer.ts --origin URL --port N --kv PATH");
  Deno.exit(2);
}
const origin = new URL(values.origin).origin;

const REGIONS: Record<string, string> = {
  DE: "EU",
  FR: "EU",
  GB: "EU",
  ES: "EU",
  IT: "EU",
  NL: "EU",
  SE: "EU",
};
const REWRITES: Record<string, Record<string, string>> = {
  "/api/products/promotions": {
    EU: "/api/products/promotions/europe",
    "*": "/api/products/promotions/global",
  },
};

/** The scenario's rules (bench/scenario_rules.json) as GrowthBook features. */
const FEATURES = {
  hero: {
    defaultValue: "control",
    rules: [{ key: "hero", variations: ["control", "a", "b"], weights: [0.5, 0.25, 0.25], coverage: 1 }],
  },
  checkout: {
    defaultValue: "control",
    rules: [{ key: "checkout", variations: ["control", "one-page"], weights: [0.5, 0.5], coverage: 0.8 }],
  },
  "new-search": {
    defaultValue: false,
    rules: [{ condition: { region: "EU" }, force: true }, { force: true, coverage: 0.2 }],
  },
  "free-shipping-banner": { defaultValue: false, rules: [{ condition: { region: "US" }, force: true }] },
  "recommendations-carousel": { defaultValue: false, rules: [{ force: true, coverage: 0.5 }] },
  "dark-mode": {
    defaultValue: false,
    rules: [{ condition: { region: { $in: ["EU", "APAC"] } }, force: true, coverage: 0.3 }],
  },
  "checkout-button-text": {
    defaultValue: "Buy now",
    rules: [{ condition: { region: "EU" }, force: "Jetzt kaufen" }],
  },
};
const FLAGS = Object.keys(FEATURES).slice(2);

// The bundled database's records are `{ country_code }`, not MaxMind's shape.
const geo = new Reader<CountryResponse & { country_code?: string }>(
  Buffer.from(await Deno.readFile(ipGeoDbPath())),
);
const kv = await Deno.openKv(values.kv);

const app = new Hono();
app.all("*", async (c) => {
  const request = c.req.raw;
  const ip = c.req.header("x-forwarded-for")?.split(",")[0]?.trim() ?? "0.0.0.0";
  const country = geo.get(ip)?.country_code ?? "";
  const region = REGIONS[country] ?? "GLOBAL";
  const session = /(?:^|;\s*)sid=([^;]+)/.exec(c.req.header("cookie") ?? "")?.[1];
  const visitor = session
    ? (await kv.get<{ userId: string; recentViews: string[] }>(["peer", "session", session], {
      consistency: "eventual",
    })).value
    : null;
  const gb = new GrowthBook({ attributes: { id: visitor?.userId ?? session ?? ip, country, region } });
  gb.initSync({ payload: { features: FEATURES } });
  const variants = ["hero", "checkout"].map((key) => `${key}=${gb.getFeatureValue(key, "control")}`);
  const flags = FLAGS.map((key) => `${key}=${encodeURIComponent(String(gb.getFeatureValue(key, false)))}`);
  gb.destroy();

  const headers = new Headers(request.headers);
  headers.delete("host");
  headers.set("x-edge-region", region);
  headers.set("x-edge-country", country);
  headers.set("x-edge-variants", variants.join(","));
  headers.set("x-edge-flags", flags.join(","));
  if (visitor) {
    headers.set("x-edge-user", visitor.userId);
    headers.set("x-edge-recent-views", visitor.recentViews.join(","));
  }
  const rewrite = REWRITES[c.req.path];
  const path = rewrite ? rewrite[region] ?? rewrite["*"]! : c.req.path;
  const query = request.url.indexOf("?");
  const upstream = await fetch(origin + path + (query < 0 ? "" : request.url.slice(query)), {
    method: request.method,
    headers,
    body: request.body,
    redirect: "manual",
  });
  return new Response(upstream.body, upstream);
});

/** The scenario visitor's session and views, as the bench seeds them into the service. */
await kv.set(["peer", "session", "bench-session-0123456789abcdef"], {
  userId: "bench-user-1",
  recentViews: ["p1", "p2", "p3", "p42", "p7", "p13", "p8", "p9"],
});

Deno.serve({ port: Number(values.port), hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
