/**
 * @module
 * Start-up: from a parsed `Config` to the `Deps` the app runs on — rules, KV, the IP database,
 * caches, clients, signers, metrics — and the handle that stops what start-up began.
 */
import { DeadlineError, DeadlineSweep } from "../support/deadlines.ts";
import { type Config, redactCredentials } from "./config.ts";
import type { Logger } from "../obs/log.ts";
import { EMPTY_RULES, type ParsedRuleSet } from "../rules/schema.ts";
import { loadRulesFile, parseRules, RulesError } from "../rules/compile.ts";
import { RulesStore } from "../rules/store.ts";
import { followRulesInKv } from "../rules/follower.ts";
import type { Deps } from "./deps.ts";
import { cachesFromConfig, heapHeadroomProblem } from "../data/caches.ts";
import { type IpGeoDb, openIpGeoDb } from "../pipeline/ip_geo.ts";
import { EdgeMetrics } from "../obs/metrics.ts";
import { createDecisionLogger, resolveLogHashKey } from "../obs/decision_log.ts";
import { BackgroundTasks } from "../support/background.ts";
import { createStageTracer, type StageTracer } from "../obs/tracing.ts";
import { storeStartupRules } from "../sync/apply.ts";
import { exposuresFromConfig } from "../exposures/recorder.ts";
import { StickySigner } from "../pipeline/sticky.ts";
import { HtmlRewriterLoader } from "../origin/html_rewriter.ts";

/** A start-up failure an operator fixes (rules file, KV): its message is all they need. */
export class StartupError extends Error {}

/** What start-up built, and how to end it. */
export interface Started {
  deps: Deps;
  /** Work handed off with `waitUntil`, drained on shutdown. */
  background: BackgroundTasks;
  /** Stops following rules (it holds a `kv.watch` open) and closes KV. */
  close: () => Promise<void>;
}

/** The longest start-up waits on KV for the rules (storing the start-up set, the first check). */
const STARTUP_KV_WAIT_MS = 2000;

/**
 * Builds every dependency of the app from the configuration.
 *
 * @throws StartupError naming the rules file's field or the KV problem
 */
export async function createDeps(config: Config, log: Logger): Promise<Started> {
  const deadlines = new DeadlineSweep();
  // KV opens on its own thread while the rules file is read and parsed here.
  const opening = openKv(config, deadlines);
  const [initialRules, kv] = await Promise.all([
    loadStartupRules(config).catch((error) => {
      opening.then((kv) => kv.close(), () => {});
      throw error;
    }),
    opening,
  ]);
  const ipGeo = openIpGeo(log);
  const caches = cachesFromConfig(config);
  const backend = await backendFor(config, deadlines);
  const metrics = new EdgeMetrics({ memoryUsage: Deno.memoryUsage });
  const logHashKey = resolveLogHashKey(config.logHashKey, { randomBytes });
  warnAboutDefaults(config, log, logHashKey.generated);
  const background = new BackgroundTasks();
  const rules = new RulesStore(initialRules);
  const shared = {
    fetch: globalThis.fetch,
    now: Date.now,
    mono: () => performance.now(),
    randomId: () => crypto.randomUUID(),
    log,
    metrics,
    deadlines,
    waitUntil: (work: Promise<unknown>) => background.waitUntil(work),
  };
  const deps: Deps = {
    config,
    kv,
    ...shared,
    rules,
    ...caches,
    // Without STICKY_SECRET a random key signs assignments: they hold on this process only.
    stickySigner: new StickySigner(
      config.stickySecrets.length ? config.stickySecrets : [hex(randomBytes(32))],
    ),
    ipGeo,
    backend,
    tracer: config.tracing ? await stageTracer() : undefined,
    htmlRewriter: new HtmlRewriterLoader(),
    exposures: exposuresFromConfig(config, { ...shared, random: Math.random, rules: () => rules.current }),
    logDecision: createDecisionLogger({
      log,
      rate: config.logSampleRate,
      hashKey: logHashKey.key,
      // Without a configured key the generated one salts sampling, so clients cannot pick
      // request ids that force or dodge a decision log.
      salt: config.logHashKey ?? hex(logHashKey.key),
    }),
  };
  wireMetrics(deps);
  if (config.rulesPath) await keepStartupRules(deps, initialRules.source, initialRules.version);
  const stopFollowing = await followRules(deps);
  checkHeapHeadroom(deps);
  return {
    deps,
    background,
    close: async () => {
      await stopFollowing();
      kv.close();
    },
  };
}

// Opened, not read: lookups read only the search-tree blocks they need.
function openIpGeo(log: Logger): IpGeoDb | undefined {
  try {
    return openIpGeoDb(Deno.openSync);
  } catch (error) {
    log.warn("IP geo database not loaded; geo falls back to trusted headers only", {
      error: (error as Error).message,
    });
    return undefined;
  }
}

// The backend client (and its response schema) loads only where a backend is configured.
async function backendFor(config: Config, deadlines: DeadlineSweep): Promise<Deps["backend"]> {
  if (!config.backendUrl || !config.backendToken) return undefined;
  const { backendClientFromConfig } = await import("../data/backend.ts");
  return backendClientFromConfig(config, { fetch: globalThis.fetch, now: Date.now, deadlines });
}

/**
 * Follows the rules in KV and waits, bounded, for its first look: a fresh instance must not serve
 * the start-up rules file when KV names a newer version, a canary or a rollback.
 *
 * @returns what stops following (it holds a `kv.watch` open)
 */
async function followRules({ kv, rules, config, log, deadlines }: Deps): Promise<() => Promise<void>> {
  const stopFollowing = new AbortController();
  let firstCheck!: () => void;
  const checked = new Promise<void>((resolve) => firstCheck = resolve);
  const following = followRulesInKv(kv, rules, {
    pollMs: config.rulesPollMs,
    log,
    signal: stopFollowing.signal,
    onFirstCheck: () => firstCheck(),
    deadlines,
  });
  await deadlines.within(checked, STARTUP_KV_WAIT_MS, "First rules check").catch(() => {});
  return async () => {
    stopFollowing.abort();
    await following;
  };
}

async function loadStartupRules(config: Config) {
  try {
    return config.rulesPath
      ? await loadRulesFile(config.rulesPath, Deno.readTextFile)
      : parseRules(EMPTY_RULES);
  } catch (error) {
    if (error instanceof RulesError) throw new StartupError(error.message);
    throw error;
  }
}

// Bounded: a KV Connect server that accepts connections but never answers would otherwise hold
// start-up forever, without a word.
async function openKv(config: Config, deadlines: DeadlineSweep): Promise<Deno.Kv> {
  try {
    return await deadlines.within(Deno.openKv(config.kvPath), config.kvOpenTimeoutMs, "Opening KV");
  } catch (error) {
    const reason = error instanceof DeadlineError
      ? `no answer within ${config.kvOpenTimeoutMs} ms (KV_OPEN_TIMEOUT_MS)`
      : (error as Error).message;
    // KV_PATH may be a KV Connect URL with credentials, which the error's own message may repeat.
    const kvPath = config.kvPath === undefined ? "(default)" : redactCredentials(config.kvPath);
    throw new StartupError(`Cannot open KV at KV_PATH "${kvPath}": ${redactCredentials(reason)}`);
  }
}

function warnAboutDefaults(config: Config, log: Logger, logHashKeyGenerated: boolean): void {
  if (logHashKeyGenerated) {
    log.warn(
      "LOG_HASH_KEY not set: visitor hashes in decision logs are per process and do not correlate",
      {},
    );
  }
  if (config.publicHosts.length === 0) {
    log.warn(
      "PUBLIC_HOSTS not set: the origin gets X-Forwarded-Host as the client's Host, so links it builds from that header can point to any host a client chooses",
    );
  }
  if (!config.stickySecrets.length) {
    log.warn(
      "STICKY_SECRET not set: experiment assignments are signed with a per-process key and do not survive restarts or carry across instances",
      {},
    );
  }
}

// Loaded only when tracing is on: otherwise not even no-op spans, nor the API package.
async function stageTracer(): Promise<StageTracer> {
  const { trace } = await import("@opentelemetry/api");
  return createStageTracer(trace.getTracer("edge-personalizer"), { timeOrigin: performance.timeOrigin });
}

function wireMetrics({ metrics, rules, backend, contextCache }: Deps): void {
  metrics.setRules(rules.current);
  rules.onChange((current, state) => {
    metrics.setRules(current);
    metrics.setRulesVersion(state.canary?.rules.version, { role: "canary" });
  });
  metrics.addCollectHook(() => {
    if (backend) metrics.setBreakerState(backend.breaker.state);
    metrics.setContextCacheSize(contextCache.stats());
  });
}

// A rollback to the start-up rules (after a canary or a push) must find them in KV like any pushed
// version. Bounded like the first rules check: a slow KV must not block start.
async function keepStartupRules(
  { kv, config, deadlines, log }: Deps,
  source: ParsedRuleSet,
  version: number,
) {
  try {
    const outcome = await deadlines.within(
      storeStartupRules(kv, source, { rulesKeep: config.rulesKeep }),
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

// `deno task start` caps V8's heap: warn when the configured bounds would not fit in it, and report
// the cap for the memory alert. Off the start-up path (`node:v8` is only needed for this).
function checkHeapHeadroom({ config, metrics, log }: Deps): void {
  // The backend's body bound counts only with a backend, so only then is its module loaded.
  const backend = config.backendUrl ? import("../data/backend.ts") : undefined;
  Promise.all([import("node:v8"), backend]).then(([{ default: v8 }, backend]) => {
    const heapLimit = v8.getHeapStatistics().heap_size_limit;
    metrics.setHeapLimit(heapLimit);
    const problem = heapHeadroomProblem(config, heapLimit, backend?.DEFAULT_BACKEND_MAX_BYTES ?? 0);
    if (problem) log.warn("cache bounds too large for the V8 heap", { problem });
  }).catch(() => {});
}

function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

function hex(key: string | Uint8Array): string {
  return typeof key === "string"
    ? key
    : Array.from(key, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
