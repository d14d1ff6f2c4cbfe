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

const env = Deno.env.toObject();
const early = earlyConfig(env);
const booting = boot(env);
const warmup = new Warmup(early, booting.then(({ fetch }) => fetch));

// A configuration or start-up the operator must fix ends the process, also after it began serving.
booting.catch((error) => {
  console.error(error?.operatorMessage ?? error);
  Deno.exit(1);
});

/** The request handler, for `deno serve` and Deno Deploy. */
export default { fetch: warmup.fetch } satisfies Deno.ServeDefaultExport;

if (import.meta.main) serve(warmup.fetch, early, booting.then(({ lifecycle }) => lifecycle));

/**
 * Loads and starts everything behind the entry. The imports start together, so their files load
 * while the configuration is parsed; the app's own modules are needed only at the end.
 */
async function boot(
  env: Record<string, string>,
): Promise<{ fetch: Deno.ServeHandler; lifecycle: Lifecycle }> {
  const configModule = import("./lib/app/config.ts");
  const startModule = import("./lib/app/start.ts");
  const appModule = import("./routes/app.ts");
  const { ConfigError, parseConfig } = await configModule;
  const { createLogger } = await import("./lib/obs/log.ts");
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

function operatorError(message: string): Error & { operatorMessage: string } {
  return Object.assign(new Error(message), { operatorMessage: message });
}
