/**
 * @module
 * `deno task dev`: runs the demo origin and the service on embedded defaults (a local KV file
 * under `.data/`, the demo rules, loopback trusted so curl can play a CDN), and prints URLs and
 * curl commands that show the personalization working. Any variable already set in the
 * environment wins over these defaults, except `HOSTNAME` (shells and containers export their
 * own): the service binds loopback unless `DEV_HOSTNAME` says otherwise.
 */
import { demoOriginHandler } from "./demo_origin.ts";
import { parseNdjson, publish, rebaseInstants } from "../lib/publisher.ts";

const DEV_SYNC_SECRET = "whsec_ZGV2LW9ubHktc3luYy1zZWNyZXQtMDAwMDAwMA==";
const originPort = Number(Deno.env.get("DEMO_ORIGIN_PORT") ?? 8080);
const origin = Deno.serve({ port: originPort, hostname: "127.0.0.1", onListen: () => {} }, demoOriginHandler);

await Deno.mkdir(".data", { recursive: true });
const defaults: Record<string, string> = {
  ORIGIN_URL: `http://127.0.0.1:${originPort}`,
  KV_PATH: ".data/dev.kv",
  RULES_PATH: "tools/demo_rules.json",
  TRUSTED_PROXIES: "127.0.0.1/32,::1/128",
  // A fixed secret for local play only; never reuse it anywhere else.
  SYNC_SECRETS: DEV_SYNC_SECRET,
  LOG_LEVEL: "info",
};
const env: Record<string, string> = {
  ...defaults,
  ...Deno.env.toObject(),
  // Loopback only, whatever HOSTNAME the shell or a container exports: the dev sync secret is
  // public, so nobody else on the network may push. DEV_HOSTNAME opts in to another address.
  HOSTNAME: Deno.env.get("DEV_HOSTNAME") ?? "127.0.0.1",
};
if (!["127.0.0.1", "::1", "[::1]", "localhost"].includes(env.HOSTNAME!) && !Deno.env.get("SYNC_SECRETS")) {
  console.warn(
    `warning: DEV_HOSTNAME=${env.HOSTNAME} is not loopback, and the dev sync secret is public: ` +
      "anyone who can reach it can push. Set SYNC_SECRETS too.",
  );
}
const port = env.PORT ?? "8000";

const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "--allow-sys", "main.ts"],
  env,
  clearEnv: true,
  stdout: "inherit",
  stderr: "inherit",
}).spawn();

const bare = env.HOSTNAME!.replace(/^\[(.*)\]$/, "$1");
const host = bare === "0.0.0.0" || bare === "::" ? "localhost" : bare;
const base = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
const syncSecret = (env.SYNC_SECRETS ?? DEV_SYNC_SECRET).split(",")[0]!.trim();
if (!(await waitForHealth(`${base}/_edge/health`))) {
  console.error(`The service did not become healthy at ${base} (see its log above).`);
  await stopChild();
  await origin.shutdown();
  Deno.exit(1);
}
const seeded = await seedDemoActivity(base, syncSecret);
console.log(`
Edge Personalizer (dev)
  service      ${base}/            → demo origin ${env.ORIGIN_URL}
  health       ${base}/_edge/health
  readiness    ${base}/_edge/ready
  rules        ${env.RULES_PATH}, KV at ${env.KV_PATH}

Try:
  curl -s ${base}/api/products/promotions                            # default region → global promotion
  curl -s -H 'x-geo-country: DE' ${base}/api/products/promotions     # trusted geo header → EU promotion
  curl -s -H 'x-geo-country: JP' ${base}/api/products/promotions     # → APAC promotion
  curl -si ${base}/old-sale                                          # 302 to /sale, answered at the edge
  curl -s -H 'x-edge-region: EU' ${base}/echo/anything               # forged x-edge-* never reaches the origin
  curl -s -H 'x-geo-country: DE' ${base}/                           # HTML page: slots filled for the EU
  curl -s -A 'Mozilla/5.0 (X11; Linux x86_64)' ${base}/echo/x        # A/B variant and flags as the origin sees them
                                                                     # (plain curl counts as a bot: always control)

Edge data (demo activity ${seeded ? "pushed" : "NOT pushed — see the log"} through the signed sync endpoint):
  curl -s -b sid=s-demo-u1-0001 ${base}/_edge/context                # user u1: recent views, cart, segments, recommendations
  curl -s -b sid=s-demo-u1-0001 ${base}/_edge/recommendations        # "you might also like", computed at the edge
  curl -s -b sid=s-demo-u1-0001 ${base}/                             # the VIP slot and a greeting for a logged-in user
  curl -s -b sid=s-demo-u1-0001 -X POST -d '{"context":{"country":"DE"}}' ${base}/ofrep/v1/evaluate/flags   # OFREP, for u1
  EDGE_SYNC_SECRET=${syncSecret} deno task push --rebase-now --to ${base} tools/demo_events.ndjson
`);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
  });
}
const status = await child.status;
await origin.shutdown();
Deno.exit(status.code);

/** Waits up to 10 s for the service to answer healthy; false when it did not (or exited). */
async function waitForHealth(url: string): Promise<boolean> {
  let exited = false;
  child.status.then(() => exited = true);
  for (let i = 0; i < 200 && !exited; i++) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      if (res.ok) return true;
    } catch {
      // Not up yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

async function stopChild(): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
  await child.status;
}

async function seedDemoActivity(base: string, secret: string): Promise<boolean> {
  const events = rebaseInstants(parseNdjson(await Deno.readTextFile("tools/demo_events.ndjson")), Date.now());
  const report = await publish(events, {
    endpoints: [`${base}/_edge/sync`],
    secret,
    fetch,
    now: Date.now,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    random: Math.random,
    randomId: () => crypto.randomUUID(),
    scheduleMs: [0, 200, 1000],
  });
  return report.ok;
}
