/**
 * @module
 * Composition root: environment → Config, open KV, load rules, build `Deps`, `createApp`, and
 * serve. Runs with `deno run main.ts` (listens itself, graceful shutdown on SIGINT/SIGTERM)
 * and with `deno serve --parallel main.ts` (through the default export).
 */
import { ConfigError, parseConfig } from "./lib/config.ts";
import { createLogger } from "./lib/log.ts";
import { EMPTY_RULES, loadRulesFile, parseRules, RulesError } from "./lib/rules.ts";
import { RulesStore } from "./lib/rules_store.ts";
import type { Deps } from "./lib/deps.ts";
import { createApp } from "./routes/app.ts";

function fail(message: string): never {
  console.error(message);
  Deno.exit(1);
}

let config;
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

let kv: Deno.Kv;
try {
  kv = await Deno.openKv(config.kvPath);
} catch (error) {
  fail(`Cannot open KV at "${config.kvPath ?? "(default)"}": ${(error as Error).message}`);
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
};

const app = createApp(deps);

/** The request handler, for `deno serve` and Deno Deploy. */
export default { fetch: app.fetch } satisfies Deno.ServeDefaultExport;

if (import.meta.main && !startedByDenoServe()) {
  const shutdown = new AbortController();
  const server = Deno.serve({
    port: config.port,
    hostname: config.hostname,
    signal: shutdown.signal,
    onListen: ({ hostname, port }) => {
      log.info("listening", { url: `http://${hostname}:${port}/`, origin: config.originUrl.origin });
    },
  }, app.fetch);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { signal });
    // Stops accepting, then waits for in-flight requests to finish.
    shutdown.abort();
    await server.finished;
    kv.close();
    log.info("stopped", {});
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}

/**
 * `import.meta.main` is also true under `deno serve`, which listens by itself; Deno has no API
 * that tells the two apart (denoland/deno#25179), so the command line is read where the OS
 * exposes it. Deno Deploy serves the default export and sets `DENO_DEPLOYMENT_ID`.
 */
function startedByDenoServe(): boolean {
  if (Deno.env.get("DENO_DEPLOYMENT_ID")) return true;
  try {
    const argv = Deno.readTextFileSync("/proc/self/cmdline").split("\0");
    return argv[1] === "serve";
  } catch {
    return false;
  }
}
