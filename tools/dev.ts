/**
 * @module
 * `deno task dev`: runs the demo origin and the service on embedded defaults (a local KV file
 * under `.data/`, the demo rules, loopback trusted so curl can play a CDN), and prints URLs and
 * curl commands that show the personalization working. Any variable already set in the
 * environment wins over these defaults, except `HOSTNAME` (shells and containers export their
 * own): the service binds loopback unless `DEV_HOSTNAME` says otherwise.
 */
import { z } from "zod";
import { demoOriginHandler } from "./demo_origin.ts";
import { parseNdjson, publish, rebaseInstants } from "../lib/publisher.ts";
import { EMPTY_RULES, loadRulesFile } from "../lib/rules.ts";

const DEV_SYNC_SECRET = "whsec_ZGV2LW9ubHktc3luYy1zZWNyZXQtMDAwMDAwMA==";
/** Where the dev KV lives unless `KV_PATH` says otherwise; `rm -rf .data` starts over. */
const DEV_KV_PATH = ".data/dev.kv";
/** The form of `deno` that works on a machine with only Node, at the version running now. */
const NPX_DENO = `npx -y deno@${Deno.version.deno}`;
/** The part of the `/_edge/ready` answer the banner reports. */
const ReadyBody = z.object({ rulesVersion: z.number().nullable() });

const originPortText = Deno.env.get("DEMO_ORIGIN_PORT") || "8080";
const originPort = Number(originPortText);
if (!Number.isInteger(originPort) || originPort < 0 || originPort > 65535) {
  fail(`DEMO_ORIGIN_PORT must be a port number (got "${originPortText}")`);
}
let origin: Deno.HttpServer<Deno.NetAddr>;
try {
  origin = Deno.serve({ port: originPort, hostname: "127.0.0.1", onListen: () => {} }, demoOriginHandler);
} catch (error) {
  if (!(error instanceof Deno.errors.AddrInUse)) throw error;
  fail(
    `Cannot start the demo origin on "127.0.0.1:${originPort}": the address is already in use; ` +
      "set DEMO_ORIGIN_PORT to a free port",
  );
}

await Deno.mkdir(".data", { recursive: true });
const defaults: Record<string, string> = {
  ORIGIN_URL: `http://127.0.0.1:${origin.addr.port}`,
  KV_PATH: DEV_KV_PATH,
  RULES_PATH: "tools/demo_rules.json",
  TRUSTED_PROXIES: "127.0.0.1/32,::1/128",
  // A fixed secret for local play only; never reuse it anywhere else.
  SYNC_SECRETS: DEV_SYNC_SECRET,
  // Also public and for local play only: without a key the service warns on every start.
  LOG_HASH_KEY: "dev-only-log-hash-key-not-secret",
  // Also public: fixed so that a restart keeps every visitor's experiment assignments.
  STICKY_SECRET: "dev-only-sticky-secret-not-secret",
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
// Read as the service reads it, but only to find the service: an invalid PORT is the service's
// own start-up error to report.
const port = env.PORT === undefined || env.PORT === "" ? 8000 : Number(env.PORT);
const portValid = Number.isInteger(port) && port >= 0 && port <= 65535;

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
const health = portValid ? await waitForHealth(`${base}/_edge/health`) : "exited";
if (health !== "healthy") {
  // A service that exited has said why (a config error, a busy port); only a hang needs words.
  if (health === "timeout") {
    console.error(`The service did not become healthy at ${base} (see its log above).`);
  }
  const status = health === "timeout" ? await stopChild() : await child.status;
  await origin.shutdown();
  Deno.exit(status.code || 1);
}
const seeded = await seedDemoActivity(base, syncSecret);
const rules = await rulesServed(base);
console.log(`
Edge Personalizer (dev)
  service      ${base}/            → demo origin ${env.ORIGIN_URL}
  health       ${base}/_edge/health
  readiness    ${base}/_edge/ready
  rules        ${rules}

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

Push the demo activity again (or \`deno task push …\` where deno is installed):
  EDGE_SYNC_SECRET=${syncSecret} ${NPX_DENO} task push --rebase-now --to ${base} tools/demo_events.ndjson
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

function fail(message: string): never {
  console.error(message);
  Deno.exit(1);
}

/** Waits up to 10 s for the service to answer healthy, unless it exits first. */
async function waitForHealth(url: string): Promise<"healthy" | "exited" | "timeout"> {
  let exited = false;
  child.status.then(() => exited = true);
  for (let i = 0; i < 200 && !exited; i++) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      if (res.ok) return "healthy";
    } catch {
      // Not up yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return exited ? "exited" : "timeout";
}

async function stopChild(): Promise<Deno.CommandStatus> {
  try {
    child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
  return await child.status;
}

/**
 * Which rules the service runs, for the banner: the version `/_edge/ready` reports, and
 * whether it is the start-up file's. A version pushed through sync earlier stays in the KV file
 * across restarts and overrides the file, and then the curl examples may not hold.
 */
async function rulesServed(base: string): Promise<string> {
  const kvAt = `KV at ${env.KV_PATH}`;
  let served: number | null;
  try {
    const res = await fetch(`${base}/_edge/ready`, { signal: AbortSignal.timeout(2000) });
    const body = ReadyBody.safeParse(await res.json());
    if (!body.success) return `(version unknown: unexpected /_edge/ready answer), ${kvAt}`;
    served = body.data.rulesVersion;
  } catch (error) {
    return `(version unknown: ${(error as Error).message}), ${kvAt}`;
  }
  const startup = env.RULES_PATH || "the empty rule set (no RULES_PATH)";
  let startupVersion: number | undefined = EMPTY_RULES.version;
  if (env.RULES_PATH) {
    try {
      startupVersion = (await loadRulesFile(env.RULES_PATH, Deno.readTextFile)).version;
    } catch {
      // The service loaded it at start; a file broken since then is simply not compared.
      startupVersion = undefined;
    }
  }
  if (served !== null && served === startupVersion) return `version ${served} from ${startup}, ${kvAt}`;
  const reset = env.KV_PATH === DEV_KV_PATH ? "stop and rm -rf .data" : `stop and delete ${env.KV_PATH}`;
  return `version ${served ?? "none"} from ${kvAt} (pushed through sync earlier), not ${startup}` +
    `${startupVersion === undefined ? "" : ` (version ${startupVersion})`}\n` +
    `               the examples below assume the demo rules; to start over, ${reset}`;
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
