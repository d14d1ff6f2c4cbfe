/**
 * @module
 * The proxy path's own CPU cost per request, without the network: the whole app (`createApp`)
 * serving the personalized scenario request, with an origin `fetch` that answers at once (it
 * still builds the `Request`, as Deno's `fetch` does), against a bare proxy handler using the
 * same fake origin. The load benchmark's CPU-per-request gap comes from here.
 *
 * `deno bench -A bench/request_path_bench.ts`
 */
import { createApp } from "../routes/app.ts";
import { makeDeps } from "../tests/support.ts";
import { loadIpGeoDb } from "../lib/pipeline/ip_geo.ts";
import {
  newSyncSecret,
  SCENARIO_CLIENT_IP,
  SCENARIO_EU_TARGET,
  SCENARIO_HEADERS,
  SCENARIO_PATH,
  SCENARIO_RULES,
  seedUser,
} from "./harness.ts";

const ORIGIN = "http://127.0.0.1:9";
const BODY = JSON.stringify({ promotion: "EU", items: Array.from({ length: 8 }, (_, i) => `p${i}`) });
const fakeFetch = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
  new Request(input, init);
  return Promise.resolve(
    new Response(BODY, {
      headers: { "content-type": "application/json", "content-length": String(BODY.length), etag: '"v1"' },
    }),
  );
};

const secret = newSyncSecret();
const deps = await makeDeps(ORIGIN, {
  env: { TRUSTED_PROXIES: "127.0.0.1/32", SYNC_SECRETS: secret, LOG_LEVEL: "warn" },
  rules: JSON.parse(await Deno.readTextFile(SCENARIO_RULES)),
  ipGeo: await loadIpGeoDb(Deno.readFile),
  now: Date.now,
});
deps.fetch = fakeFetch as typeof fetch;
const app = createApp(deps);
// Seed the scenario user through the real sync endpoint.
const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
const seeded = await seedUser(`http://127.0.0.1:${server.addr.port}`, secret);
await server.shutdown();
if (seeded) throw new Error(`seeding failed: ${seeded}`);

const info = { remoteAddr: { hostname: "127.0.0.1" } };
const request = () =>
  new Request(`http://127.0.0.1:8000${SCENARIO_PATH}`, {
    headers: { ...SCENARIO_HEADERS, "x-forwarded-for": SCENARIO_CLIENT_IP, host: "127.0.0.1:8000" },
  });
const check = await app.fetch(request(), info);
if (check.status !== 200 || !(await check.text()).includes("EU")) throw new Error("scenario not served");

const bare = async (req: Request): Promise<Response> => {
  const url = new URL(req.url);
  const headers = new Headers(req.headers);
  headers.delete("host");
  const upstream = await fakeFetch(ORIGIN + SCENARIO_EU_TARGET + url.search, {
    method: req.method,
    headers,
    redirect: "manual",
  });
  return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
};

Deno.bench("bare proxy handler", { group: "request", baseline: true }, async () => {
  await (await bare(request())).arrayBuffer();
});
Deno.bench("service (createApp) handler", { group: "request" }, async () => {
  await (await app.fetch(request(), info)).arrayBuffer();
});
