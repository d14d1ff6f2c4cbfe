/**
 * @module
 * Entry point: it listens at once and loads the service behind it (environment → `Config` →
 * `createDeps` → `createApp`); until that is ready, `WARMUP` decides what requests get (see
 * `lib/app/warmup.ts`). Runs with `deno run main.ts` (listens itself, graceful shutdown on
 * SIGINT/SIGTERM), with `deno serve --parallel main.ts` and on Deno Deploy (the default export).
 */
import { earlyConfig, Warmup } from "./lib/app/warmup.ts";
import { serve } from "./lib/app/serve.ts";
import type { Lifecycle } from "./lib/app/serve.ts";

/** Under passthrough, how long the service waits for a first request before it loads anyway. */
const WARMUP_IDLE_START_MS = 500;

const env = Deno.env.toObject();
const early = earlyConfig(env);
const warmup = new Warmup(early);
// Loading blocks the event loop: it starts after `serve` listens (passthrough: after the first answer).
const booting = warmup.startWhen(WARMUP_IDLE_START_MS).then(() => boot(env));
warmup.serveWhenReady(booting.then(({ fetch }) => fetch));

// A configuration or start-up the operator must fix ends the process, also after it began serving.
booting.catch((error) => {
  console.error(error?.operatorMessage ?? error);
  Deno.exit(1);
});

/** The request handler, for `deno serve` and Deno Deploy. */
export default { fetch: warmup.fetch } satisfies Deno.ServeDefaultExport;

if (import.meta.main) serve(warmup.fetch, early, booting.then(({ lifecycle }) => lifecycle));

/**
 * Loads and starts everything behind the entry. The specifiers are computed on purpose: Deno
 * loads every module a literal `import()` names (and resolves their npm packages) before the
 * entry's first statement, most of the start-up; this way that happens once the entry listens.
 */
async function boot(
  env: Record<string, string>,
): Promise<{ fetch: Deno.ServeHandler; lifecycle: Lifecycle }> {
  const configModule = load<typeof import("./lib/app/config.ts")>("./lib/app/config.ts");
  const startModule = load<typeof import("./lib/app/start.ts")>("./lib/app/start.ts");
  const appModule = load<typeof import("./routes/app.ts")>("./routes/app.ts");
  const { ConfigError, parseConfig } = await configModule;
  const { createLogger } = await load<typeof import("./lib/obs/log.ts")>("./lib/obs/log.ts");
  const { createDeps, StartupError } = await startModule;
  let config;
  try {
    config = parseConfig(env);
  } catch (error) {
    throw error instanceof ConfigError ? operatorError(error.message) : error;
  }
  const log = createLogger(config.logLevel, { now: Date.now });
  let started;
  try {
    started = await createDeps(config, log);
  } catch (error) {
    throw error instanceof StartupError ? operatorError(error.message) : error;
  }
  const { deps, background } = started;
  const app = (await appModule).createApp(deps);
  return {
    fetch: app.fetch,
    lifecycle: {
      config,
      log,
      deadlines: deps.deadlines,
      drainBackground: () => background.drain(),
      flush: () => deps.exposures.flush(),
      undone: () => ({ backgroundTasks: background.size, exposureEventsUndelivered: deps.exposures.queued }),
      close: started.close,
    },
  };
}

function load<T>(path: string): Promise<T> {
  return import(new URL(path, import.meta.url).href);
}

function operatorError(message: string): Error & { operatorMessage: string } {
  return Object.assign(new Error(message), { operatorMessage: message });
}
