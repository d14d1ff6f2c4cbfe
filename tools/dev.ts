/**
 * @module
 * `deno task dev`: runs the demo origin, the demo backend (read-through, and the receiver that
 * prints each exposure event) and the service on embedded defaults (a local KV file under
 * `.data/`, the demo rules, loopback trusted so curl can play a CDN and, with `x-user-id`, the
 * login proxy that names the user), and prints URLs and curl commands that show the
 * personalization working. Any variable already set in the
 * environment wins over these defaults, except `HOSTNAME` (shells and containers export their
 * own): the service binds loopback unless `DEV_HOSTNAME` says otherwise. It stops the service
 * when the process that started it goes (a killed `npx`), not only on SIGINT/SIGTERM.
 */
import { z } from "zod";
import { createDemoOrigin } from "./demo_origin.ts";
import { createDevFront, SAMPLE_ADDRESSES } from "./dev_front.ts";
import { demoBackendEvents, demoBackendHandler } from "./demo_backend.ts";
import { publish } from "./publisher.ts";
import { parseNdjson, rebaseInstants } from "./publisher_events.ts";
import { EMPTY_RULES } from "../lib/rules/schema.ts";
import { loadRulesFile } from "../lib/rules/compile.ts";
import { redactCredentials } from "../lib/app/config.ts";

const DEV_SYNC_SECRET = "whsec_ZGV2LW9ubHktc3luYy1zZWNyZXQtMDAwMDAwMA==";
/** Public and for local play only, like the sync secret: it opens `/_edge/rules` in dev. */
const DEV_RULES_TOKEN = "dev-only-rules-token-not-secret";
/** Public, for local play only, like the sync secret: the demo backend checks exposure batches with it. */
const DEV_EXPOSURES_SECRET = "whsec_ZGV2LW9ubHktZXhwb3N1cmVzLXNlY3JldC0wMDA=";
const DEV_BACKEND_TOKEN = "dev-only-backend-token-0000";
/** Where the dev KV lives unless `KV_PATH` says otherwise; `rm -rf .data` starts over. */
const DEV_KV_PATH = ".data/dev.kv";
/** The form of `deno` that works on a machine with only Node, at the version running now. */
const NPX_DENO = `npx -y deno@${Deno.version.deno}`;
/** The part of the `/_edge/ready` answer the banner reports. */
const ReadyBody = z.object({ rulesVersion: z.number().nullable() });

const hostname = Deno.env.get("DEV_HOSTNAME") ?? "127.0.0.1";
// Read as the service reads it, but only to find the service: an invalid PORT is the service's
// own start-up error to report.
const portText = Deno.env.get("PORT");
const port = portText === undefined || portText === "" ? 8000 : Number(portText);
const portValid = Number.isInteger(port) && port >= 0 && port <= 65535;
// Before anything starts: a service already on the port (often an earlier `task dev`) would
// otherwise answer the health check, take the demo events and serve the banner's examples.
if (portValid && port !== 0 && addressInUse(hostname, port)) {
  fail(
    `Cannot start the service on "${hostname}:${port}": the address is already in use ` +
      "(another task dev?); set PORT to a free port",
  );
}

const bare = hostname.replace(/^\[(.*)\]$/, "$1");
const host = bare === "0.0.0.0" || bare === "::" ? "localhost" : bare;
const base = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
const userIdHeader = Deno.env.get("USER_ID_HEADER") || "x-user-id";
const rulesToken = Deno.env.get("RULES_TOKEN") ?? DEV_RULES_TOKEN;

// Loopback only, whatever DEV_HOSTNAME says: it sets the headers the service trusts from loopback.
const front = listen(
  "the dev front",
  "DEMO_FRONT_PORT",
  "8001",
  createDevFront({
    edgeUrl: base,
    userIdHeader,
    rulesToken,
    fetch,
  }),
);
const frontUrl = `http://127.0.0.1:${front.addr.port}`;
const origin = listen("the demo origin", "DEMO_ORIGIN_PORT", "8080", createDemoOrigin({ frontUrl }));
// Any free port unless DEMO_BACKEND_PORT says otherwise: only the service needs to find it.
const backendPortText = Deno.env.get("DEMO_BACKEND_PORT") || "0";
const backendPort = Number(backendPortText);
if (!Number.isInteger(backendPort) || backendPort < 0 || backendPort > 65535) {
  fail(`DEMO_BACKEND_PORT must be a port number (got "${backendPortText}")`);
}
const exposuresSecret = Deno.env.get("EXPOSURES_SECRET") || DEV_EXPOSURES_SECRET;
const demoBackend = demoBackendHandler({
  exposuresSecret,
  token: Deno.env.get("BACKEND_TOKEN") || DEV_BACKEND_TOKEN,
  events: await demoBackendEvents(Deno.readTextFile, Date.now()),
  print: (line) => console.log(line),
});
let backend: Deno.HttpServer<Deno.NetAddr>;
try {
  backend = Deno.serve({ port: backendPort, hostname: "127.0.0.1", onListen: () => {} }, demoBackend.handler);
} catch (error) {
  if (!(error instanceof Deno.errors.AddrInUse)) throw error;
  fail(
    `Cannot start the demo backend on "127.0.0.1:${backendPort}": the address is already in use; ` +
      "set DEMO_BACKEND_PORT to a free port",
  );
}
const backendUrl = `http://127.0.0.1:${backend.addr.port}`;

await Deno.mkdir(".data", { recursive: true });
const defaults: Record<string, string> = {
  ORIGIN_URL: `http://127.0.0.1:${origin.addr.port}`,
  KV_PATH: DEV_KV_PATH,
  RULES_PATH: "tools/demo_rules.json",
  TRUSTED_PROXIES: "127.0.0.1/32,::1/128",
  // Loopback may name the user with x-user-id, as a login proxy (oauth2-proxy) would in front.
  USER_ID_HEADER: "x-user-id",
  USER_ID_PROXIES: "127.0.0.1/32,::1/128",
  // A fixed secret for local play only; never reuse it anywhere else.
  SYNC_SECRETS: DEV_SYNC_SECRET,
  // Also public and for local play only: without a key the service warns on every start.
  LOG_HASH_KEY: "dev-only-log-hash-key-not-secret",
  RULES_TOKEN: rulesToken,
  // Also public: fixed so that a restart keeps every visitor's experiment assignments.
  STICKY_SECRET: "dev-only-sticky-secret-not-secret",
  LOG_LEVEL: "info",
  // Every request's decision is logged: in dev the point is to see them.
  LOG_SAMPLE_RATE: "1",
  // Only as pairs: a BACKEND_URL or EXPOSURES_URL of your own never gets the dev token or secret.
  ...(Deno.env.get("BACKEND_URL") ? {} : { BACKEND_URL: backendUrl, BACKEND_TOKEN: DEV_BACKEND_TOKEN }),
  ...(Deno.env.get("EXPOSURES_URL")
    ? {}
    : { EXPOSURES_URL: `${backendUrl}/edge/exposures`, EXPOSURES_SECRET: exposuresSecret }),
};
const env: Record<string, string> = {
  ...defaults,
  ...Deno.env.toObject(),
  // Loopback only, whatever HOSTNAME the shell or a container exports: the dev sync secret is
  // public, so nobody else on the network may push. DEV_HOSTNAME opts in to another address.
  HOSTNAME: hostname,
};
if (!["127.0.0.1", "::1", "[::1]", "localhost"].includes(env.HOSTNAME!) && !Deno.env.get("SYNC_SECRETS")) {
  console.warn(
    `warning: DEV_HOSTNAME=${env.HOSTNAME} is not loopback, and the dev sync secret is public: ` +
      "anyone who can reach it can push. Set SYNC_SECRETS too.",
  );
}
// The names curl and the browser use here, so the origin's links point back to this service
// (and the service does not warn that PUBLIC_HOSTS is unset).
if (!env.PUBLIC_HOSTS && portValid) {
  const listening = env.HOSTNAME!.includes(":") && !env.HOSTNAME!.startsWith("[")
    ? `[${env.HOSTNAME}]`
    : env.HOSTNAME!;
  env.PUBLIC_HOSTS = [
    ...new Set([`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, `${listening}:${port}`]),
  ]
    .join(",");
}

const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "--allow-sys", "main.ts"],
  env,
  clearEnv: true,
  stdout: "inherit",
  stderr: "inherit",
}).spawn();

watchLauncher(() => {
  console.error("The process that started task dev is gone: stopping the service.");
  stopChild().then(async (status) => {
    await stopServers();
    Deno.exit(status.code);
  });
});

const syncSecret = (env.SYNC_SECRETS ?? DEV_SYNC_SECRET).split(",")[0]!.trim();
const health = portValid ? await waitForHealth(`${base}/_edge/health`) : "exited";
if (health !== "healthy") {
  // A service that exited has said why (a config error, a busy port); only a hang needs words.
  if (health === "timeout") {
    console.error(`The service did not become healthy at ${base} (see its log above).`);
  }
  const status = health === "timeout" ? await stopChild() : await child.status;
  await stopServers();
  Deno.exit(status.code || 1);
}
const seeded = await seedDemoActivity(base, syncSecret);
const rules = await rulesServed(base);
console.log(`
Edge Personalizer (dev)
  browser      ${frontUrl}/     the demo shop through a dev-only front: its edge panel shows
               what the edge decided, and lets you pretend to be another country, device or user
  service      ${base}/            → demo origin ${env.ORIGIN_URL}
  backend      ${env.BACKEND_URL}  (read-through${
  env.EXPOSURES_URL === `${backendUrl}/edge/exposures` ? "; prints an exposure line per new A/B visitor" : ""
})
  health       ${base}/_edge/health
  readiness    ${base}/_edge/ready
  rules        ${rules}
  rules token  ${rulesToken} (for /_edge/rules, /_edge/explain, /_edge/experiments)

Try:
  curl -s ${base}/api/products/promotions                            # default region → global promotion
  curl -s -H 'x-geo-country: DE' ${base}/api/products/promotions     # trusted geo header → EU promotion
  curl -s -H 'x-geo-country: JP' ${base}/api/products/promotions     # → APAC promotion
  curl -si ${base}/old-sale                                          # 302 to /sale, answered at the edge
  curl -s -H 'x-forwarded-for: ${SAMPLE_ADDRESSES.DE}' ${base}/_edge/context   # a German address → DE from the IP database
  curl -s -H 'x-edge-region: EU' ${base}/echo/anything               # forged x-edge-* never reaches the origin
  curl -s -H 'x-geo-country: DE' ${base}/                           # HTML page: slots filled for the EU
  curl -s -A 'Mozilla/5.0 (X11; Linux x86_64)' ${base}/echo/x        # A/B variant and flags as the origin sees them
                                                                     # (plain curl counts as a bot: always control)
                                                                     # a new visitor's exposure is printed here within a second
  curl -s -H 'x-user-id: u4' ${base}/_edge/context                   # u4 is known only to the backend: read-through

Edge data (demo activity ${seeded ? "pushed" : "NOT pushed — see the log"} through the signed sync endpoint):
  curl -s -b sid=s-demo-u1-0001 ${base}/_edge/context                # user u1: recent views, cart, segments, recommendations
  curl -s -b sid=s-demo-u1-0001 ${base}/_edge/recommendations        # "you might also like", computed at the edge
  curl -s -b sid=s-demo-u1-0001 ${base}/                             # the VIP slot and a greeting for a logged-in user
  curl -s -b sid=s-demo-u1-0001 -X POST -d '{"context":{"country":"DE"}}' ${base}/ofrep/v1/evaluate/flags   # OFREP, for u1
  curl -s -H 'x-user-id: u1' ${base}/_edge/context                   # u1 named by a login proxy in front${userHeaderNote()}

Rules (RULES_TOKEN):
  curl -s -H 'authorization: Bearer ${rulesToken}' ${base}/_edge/rules   # active, canary and kept versions
  curl -s -H 'authorization: Bearer ${rulesToken}' '${base}/_edge/explain?path=/&format=text'   # why this request gets what it gets

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
await stopServers();
Deno.exit(status.code);

/**
 * What the banner says about the user id header: in dev loopback plays the login proxy, which
 * production allows only through USER_ID_HEADER and USER_ID_PROXIES.
 */
function userHeaderNote(): string {
  const indent = `\n${" ".repeat(69)}# `;
  if (env.USER_ID_HEADER !== "x-user-id") {
    return `${indent}(here it names nobody: USER_ID_HEADER is not x-user-id)`;
  }
  return `${indent}(dev: USER_ID_HEADER=x-user-id from USER_ID_PROXIES=${env.USER_ID_PROXIES};` +
    `${indent} unless both are set, no header names a user)`;
}

async function stopServers(): Promise<void> {
  await Promise.all([origin.shutdown(), front.shutdown(), backend.shutdown()]);
}

/** Serves `handler` on loopback at the port `variable` names, or fails naming it. */
function listen(
  what: string,
  variable: string,
  fallback: string,
  handler: (request: Request) => Promise<Response>,
): Deno.HttpServer<Deno.NetAddr> {
  const text = Deno.env.get(variable) || fallback;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    fail(`${variable} must be a port number (got "${text}")`);
  }
  try {
    return Deno.serve({ port, hostname: "127.0.0.1", onListen: () => {} }, handler);
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    fail(
      `Cannot start ${what} on "127.0.0.1:${port}": the address is already in use; set ${variable} to a free port`,
    );
  }
}

function fail(message: string): never {
  console.error(message);
  Deno.exit(1);
}

function addressInUse(hostname: string, port: number): boolean {
  try {
    Deno.listen({ hostname: hostname.replace(/^\[(.*)\]$/, "$1"), port }).close();
    return false;
  } catch (error) {
    // Anything else (an address this host does not have) is the service's to report.
    return error instanceof Deno.errors.AddrInUse;
  }
}

/** The parent and state fields of `/proc/<pid>/stat` (Linux), or undefined when it is gone. */
function procStat(pid: number): { ppid: number; pgrp: number } | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(fields[1]), pgrp: Number(fields[2]) };
  } catch {
    return undefined;
  }
}

/**
 * Calls `onGone` once the process that started task dev goes. `npx deno task dev` is a chain
 * (npm exec → sh → deno task → this): a killed `npx` leaves `deno task` running, so the parent
 * alone says nothing. Watched are the parent and every ancestor in this process group (the
 * shell's job), each with the parent it had at start; one gone or re-parented ends task dev.
 * Without `/proc` only the direct parent is watched.
 */
function watchLauncher(onGone: () => void): void {
  const own = procStat(Deno.pid);
  const watched: { pid: number; ppid: number }[] = [];
  if (own) {
    for (let pid = own.ppid; pid > 1 && watched.length < 16;) {
      const stat = procStat(pid);
      if (!stat) break;
      watched.push({ pid, ppid: stat.ppid });
      if (stat.pgrp !== own.pgrp) break;
      pid = stat.ppid;
    }
  }
  const parent = Deno.ppid;
  const timer = setInterval(() => {
    const gone = own ? watched.some(({ pid, ppid }) => procStat(pid)?.ppid !== ppid) : Deno.ppid !== parent;
    if (gone) {
      clearInterval(timer);
      onGone();
    }
  }, 500);
  Deno.unrefTimer(timer);
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
  const kvAt = `KV at ${redactCredentials(env.KV_PATH ?? "")}`;
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
  const reset = env.KV_PATH === DEV_KV_PATH
    ? "stop and rm -rf .data"
    : `stop and delete ${redactCredentials(env.KV_PATH ?? "")}`;
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
