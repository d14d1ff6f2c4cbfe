/**
 * @module
 * Composition root: environment → Config, open KV, load rules, build `Deps`, `createApp`, and
 * serve. Runs with `deno run main.ts` (listens itself, graceful shutdown on SIGINT/SIGTERM)
 * and with `deno serve --parallel main.ts` (through the default export).
 */
import { DeadlineError, DeadlineSweep } from "./lib/support/deadlines.ts";
import { type Config, ConfigError, parseConfig, redactCredentials } from "./lib/app/config.ts";
import { createLogger } from "./lib/obs/log.ts";
import { EMPTY_RULES, loadRulesFile, parseRules, RulesError } from "./lib/rules/rules.ts";
import { followRulesInKv, RulesStore } from "./lib/rules/store.ts";
import type { Deps } from "./lib/app/deps.ts";
import { createApp } from "./routes/app.ts";
import { cachesFromConfig, heapHeadroomProblem } from "./lib/data/caches.ts";
import { type IpGeoDb, openIpGeoDb } from "./lib/pipeline/ip_geo.ts";
import { backendClientFromConfig, DEFAULT_BACKEND_MAX_BYTES } from "./lib/data/backend.ts";
import { EdgeMetrics } from "./lib/obs/metrics.ts";
import { createDecisionLogger, resolveLogHashKey } from "./lib/obs/decision_log.ts";
import { BackgroundTasks } from "./lib/support/background.ts";
import { createStageTracer, type StageTracer } from "./lib/obs/tracing.ts";
import { storeStartupRules } from "./lib/sync/apply.ts";
import { exposuresFromConfig } from "./lib/exposures/recorder.ts";
import { StickySigner } from "./lib/pipeline/sticky.ts";

function fail(message: string): never {
  console.error(message);
  Deno.exit(1);
}

let config: Config;
try {
  config = parseConfig(Deno.env.toObject());
} catch (error) {
  if (error instanceof ConfigError) fail(error.message);
  throw error;
}

const log = createLogger(config.logLevel, { now: Date.now });

let initialRules;
try {
  initialRules = config.rulesPath
    ? await loadRulesFile(config.rulesPath, Deno.readTextFile)
    : parseRules(EMPTY_RULES);
} catch (error) {
  if (error instanceof RulesError) fail(error.message);
  throw error;
}

const deadlines = new DeadlineSweep();
/** The longest start-up waits on KV for the rules (storing the start-up set, the first check). */
const STARTUP_KV_WAIT_MS = 2000;

// Bounded: a KV Connect server that accepts connections but never answers would otherwise hold
// start-up forever, without a word.
let kv: Deno.Kv;
try {
  kv = await deadlines.within(Deno.openKv(config.kvPath), config.kvOpenTimeoutMs, "Opening KV");
} catch (error) {
  const reason = error instanceof DeadlineError
    ? `no answer within ${config.kvOpenTimeoutMs} ms (KV_OPEN_TIMEOUT_MS)`
    : (error as Error).message;
  // KV_PATH may be a KV Connect URL with credentials, which the error's own message may repeat.
  const kvPath = config.kvPath === undefined ? "(default)" : redactCredentials(config.kvPath);
  fail(`Cannot open KV at KV_PATH "${kvPath}": ${redactCredentials(reason)}`);
}

// Opened, not read: lookups read the search-tree blocks they need, so the first request is
// answered exactly without start-up paying for reading and paging in the whole 7.8 MB file.
let ipGeo: IpGeoDb | undefined;
try {
  ipGeo = openIpGeoDb(Deno.openSync);
} catch (error) {
  log.warn("IP geo database not loaded; geo falls back to trusted headers only", {
    error: (error as Error).message,
  });
}

const caches = cachesFromConfig(config);
const { contextCache } = caches;
const backend = backendClientFromConfig(config, { fetch: globalThis.fetch, now: Date.now });
const metrics = new EdgeMetrics({ memoryUsage: Deno.memoryUsage });
const logHashKey = resolveLogHashKey(config.logHashKey, {
  randomBytes: (n) => crypto.getRandomValues(new Uint8Array(n)),
});
if (logHashKey.generated) {
  log.warn("LOG_HASH_KEY not set: visitor hashes in decision logs are per process and do not correlate", {});
}

if (config.publicHosts.length === 0) {
  log.warn(
    "PUBLIC_HOSTS not set: the origin gets X-Forwarded-Host as the client's Host, so links it builds from that header can point to any host a client chooses",
  );
}
// Without STICKY_SECRET a random key signs assignments: they hold on this process only, so a
// restart or another instance buckets visitors afresh (the same variation unless weights changed).
const stickySigner = new StickySigner(
  config.stickySecrets.length ? config.stickySecrets : [hex(crypto.getRandomValues(new Uint8Array(32)))],
);
if (!config.stickySecrets.length) {
  log.warn(
    "STICKY_SECRET not set: experiment assignments are signed with a per-process key and do not survive restarts or carry across instances",
    {},
  );
}

const background = new BackgroundTasks();

// Deno's built-in OpenTelemetry: stage spans only when it is on (otherwise not even no-op spans,
// nor the API package loaded).
let tracer: StageTracer | undefined;
if (Deno.env.get("OTEL_DENO") === "true") {
  const { trace } = await import("@opentelemetry/api");
  tracer = createStageTracer(trace.getTracer("edge-personalizer"), { timeOrigin: performance.timeOrigin });
}

const deps: Deps = {
  config,
  kv,
  fetch: globalThis.fetch,
  now: Date.now,
  mono: () => performance.now(),
  randomId: () => crypto.randomUUID(),
  log,
  rules: new RulesStore(initialRules),
  ...caches,
  stickySigner,
  ipGeo,
  backend,
  metrics,
  deadlines,
  tracer,
  waitUntil: (work) => background.waitUntil(work),
  exposures: exposuresFromConfig(config, {
    metrics,
    fetch: globalThis.fetch,
    now: Date.now,
    mono: () => performance.now(),
    randomId: () => crypto.randomUUID(),
    random: Math.random,
    deadlines,
    log,
    waitUntil: (work) => background.waitUntil(work),
    rules: () => deps.rules.current,
  }),
  logDecision: createDecisionLogger({
    log,
    rate: config.logSampleRate,
    hashKey: logHashKey.key,
    // Without a configured key the generated one salts sampling, so clients cannot pick
    // request ids that force or dodge a decision log.
    salt: config.logHashKey ?? hex(logHashKey.key),
  }),
};
metrics.setRules(deps.rules.current);
deps.rules.onChange((rules, state) => {
  metrics.setRules(rules);
  metrics.setRulesVersion(state.canary?.rules.version, { role: "canary" });
});
metrics.addCollectHook(() => {
  if (backend) metrics.setBreakerState(backend.breaker.state);
  const stats = contextCache.stats();
  metrics.setContextCacheSize(stats);
});

// A rollback to the start-up rules (after a canary or a push) must find them in KV like any pushed
// version. Bounded like the first rules check: a slow KV must not block start.
if (config.rulesPath) {
  const version = initialRules.version;
  try {
    const outcome = await deadlines.within(
      storeStartupRules(kv, initialRules.source, { rulesKeep: config.rulesKeep }),
      STARTUP_KV_WAIT_MS,
      "Storing the start-up rules in KV",
    );
    if (outcome === "stored") log.info("start-up rules stored in KV", { version });
    if (outcome === "too-large") {
      log.warn("start-up rules too large for KV: a rollback to them needs them pushed", { version });
    }
  } catch (error) {
    log.warn("start-up rules not stored in KV: a rollback to them needs them pushed", {
      version,
      error: (error as Error).message,
    });
  }
}

const stopFollowingRules = new AbortController();
let firstRulesCheck!: () => void;
const rulesChecked = new Promise<void>((resolve) => firstRulesCheck = resolve);
const followingRules = followRulesInKv(kv, deps.rules, {
  pollMs: config.rulesPollMs,
  log,
  signal: stopFollowingRules.signal,
  onFirstCheck: () => firstRulesCheck(),
});
// A fresh instance must not serve the start-up rules file when KV names a newer version, a
// canary or a rollback: wait for the first look at KV (bounded, so a slow KV cannot block start).
await Promise.race([rulesChecked, new Promise((resolve) => setTimeout(resolve, STARTUP_KV_WAIT_MS))]);

const app = createApp(deps);

// `deno task start` caps V8's heap: warn when the configured bounds would not fit in it, and report
// the cap for the memory alert. Off the start-up path (`node:v8` is only needed for this).
import("node:v8").then(({ default: v8 }) => {
  const heapLimit = v8.getHeapStatistics().heap_size_limit;
  metrics.setHeapLimit(heapLimit);
  const problem = heapHeadroomProblem(config, heapLimit, DEFAULT_BACKEND_MAX_BYTES);
  if (problem) log.warn("cache bounds too large for the V8 heap", { problem });
}).catch(() => {});

/** The request handler, for `deno serve` and Deno Deploy. */
export default { fetch: app.fetch } satisfies Deno.ServeDefaultExport;

// `import.meta.main` is also true under `deno serve`, and Deno has no API that tells the two
// apart (denoland/deno#25179). Under `deno serve` (every `--parallel` worker included) the
// runtime calls `Deno.serve` with the default export right after this module has evaluated,
// before any timer fires; so `Deno.serve` is observed until the first timer, and this
// process listens by itself only when nobody else did. Deno Deploy serves the default export.
if (import.meta.main && !Deno.env.get("DENO_DEPLOYMENT_ID")) {
  const denoServe = Deno.serve;
  const servers: Deno.HttpServer[] = [];
  Deno.serve = ((...args: Parameters<typeof Deno.serve>) => {
    const server = denoServe(...args);
    servers.push(server);
    return server;
  }) as typeof Deno.serve;
  setTimeout(() => {
    Deno.serve = denoServe;
    if (servers.length) stopOnSignals(servers, "serve");
    else listen();
  }, 0);
}

/**
 * Stops on SIGINT/SIGTERM (once this process listens for them the default "terminate" is gone):
 * stops accepting, lets in-flight requests and background work finish for up to
 * `SHUTDOWN_TIMEOUT_MS`, stops following rules (it holds a `kv.watch` open), closes KV and exits
 * 0 (under `deno serve`, once every worker is done). Connections still open past the deadline
 * (an endless stream, a stalled client) are cut by the exit. A second signal exits at once, with
 * 128 + the signal's number.
 *
 * @param servers the servers to drain: the one `listen` started, or under `deno serve` those the
 * runtime started in this worker
 * @param mode `"serve"` under `deno serve` (logged)
 */
/** Signals this close together are one (a Ctrl-C the process group and `deno task` both pass on). */
const SAME_SIGNAL_MS = 1000;

function stopOnSignals(servers: Deno.HttpServer[], mode?: "serve"): void {
  // Under `deno serve --parallel` every worker drains its own server, and `Deno.exit` in one
  // ends them all: the workers tell each other when they start and finish draining, and the
  // process exits once every worker that started has finished (or at the deadline). A worker
  // told by another starts too, so one that missed the signal does not keep the process up.
  const workers = mode === "serve" ? new BroadcastChannel("edge-personalizer-shutdown") : undefined;
  const workerId = crypto.randomUUID();
  const draining = new Set<string>();
  const drained = new Set<string>();
  let allDrained: (() => void) | undefined;
  const checkDrained = () => {
    if ([...draining].every((id) => drained.has(id))) allDrained?.();
  };
  let stopping = false;
  // One signal reaches every worker, possibly after another worker's message: only a signal
  // after a signal is a second one. And one Ctrl-C can arrive twice (the terminal signals the
  // whole process group, and `deno task` forwards it too): a repeat within a second is the same.
  let signalledAt: number | undefined;
  const stop = async (signal: "SIGINT" | "SIGTERM" | "worker") => {
    if (signal !== "worker") {
      if (signalledAt !== undefined) {
        if (performance.now() - signalledAt < SAME_SIGNAL_MS) return;
        log.warn("second signal: exiting without waiting any longer", { signal });
        Deno.exit(signal === "SIGINT" ? 130 : 143);
      }
      signalledAt = performance.now();
    }
    if (stopping) return;
    stopping = true;
    const timeoutMs = config.shutdownTimeoutMs;
    const startedAt = performance.now();
    log.info("shutting down", { signal, mode, timeoutMs });
    draining.add(workerId);
    workers?.postMessage({ type: "draining", id: workerId });
    // Stops accepting, then waits for in-flight requests to finish. Past the deadline nothing cuts
    // them here (aborting a server's signal once `shutdown()` runs throws): exiting does.
    const drain = (async () => {
      await Promise.all(servers.map((server) => server.shutdown()));
      // Queued exposure events go out now rather than when their batch would have filled.
      deps.exposures.flush();
      await background.drain();
    })();
    let cut = false;
    try {
      await deadlines.within(drain, timeoutMs, "Shutdown");
    } catch (error) {
      if (error instanceof DeadlineError) {
        cut = true;
        log.warn("shutdown deadline passed: cutting the requests still open", {
          timeoutMs,
          backgroundTasks: background.size,
          exposureEventsUndelivered: deps.exposures.queued,
        });
      } else log.error("shutdown drain failed", { error: (error as Error).message });
    }
    stopFollowingRules.abort();
    await followingRules;
    kv.close();
    log.info("stopped", {});
    if (workers && !cut) {
      drained.add(workerId);
      workers.postMessage({ type: "drained", id: workerId });
      // The other workers got the same signal: give their "draining" time to arrive, also from a
      // worker that was busy when the signal came.
      await new Promise((resolve) => setTimeout(resolve, 250));
      const left = Math.max(0, startedAt + timeoutMs - performance.now());
      await deadlines.within(
        new Promise<void>((resolve) => {
          allDrained = resolve;
          checkDrained();
        }),
        left,
        "Shutdown of the other workers",
      ).catch(() => {});
    }
    Deno.exit(0);
  };
  if (workers) {
    workers.onmessage = (event: MessageEvent<{ type: string; id: string }>) => {
      const { type, id } = event.data;
      if (type === "draining") {
        draining.add(id);
        stop("worker");
      } else if (type === "drained") {
        drained.add(id);
        checkDrained();
      }
    };
  }
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}

function listen(): void {
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({
      port: config.port,
      hostname: config.hostname,
      onListen: ({ hostname, port }) => {
        log.info("listening", { url: `http://${hostname}:${port}/`, origin: config.originUrl.origin });
      },
    }, app.fetch);
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      const { hostname } = config;
      const host = hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname;
      fail(
        `Cannot listen on "${host}:${config.port}": the address is already in use; set PORT to a free port`,
      );
    }
    throw error;
  }
  stopOnSignals([server]);
}

function hex(key: string | Uint8Array): string {
  return typeof key === "string"
    ? key
    : Array.from(key, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
