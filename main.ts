/**
 * @module
 * Entry point: environment → `Config` → `createDeps` → `createApp` → serve. Runs with
 * `deno run main.ts` (listens itself, graceful shutdown on SIGINT/SIGTERM), with
 * `deno serve --parallel main.ts` and on Deno Deploy (through the default export).
 */
import { type Config, ConfigError, parseConfig } from "./lib/app/config.ts";
import { createLogger } from "./lib/obs/log.ts";
import { createDeps, type Started, StartupError } from "./lib/app/start.ts";
import { serve } from "./lib/app/serve.ts";
import { createApp } from "./routes/app.ts";

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

let started: Started;
try {
  started = await createDeps(config, log);
} catch (error) {
  if (error instanceof StartupError) fail(error.message);
  throw error;
}
const { deps, background } = started;
const app = createApp(deps);

/** The request handler, for `deno serve` and Deno Deploy. */
export default { fetch: app.fetch } satisfies Deno.ServeDefaultExport;

if (import.meta.main) {
  serve(app.fetch, {
    config,
    log,
    deadlines: deps.deadlines,
    drainBackground: () => background.drain(),
    flush: () => deps.exposures.flush(),
    undone: () => ({ backgroundTasks: background.size, exposureEventsUndelivered: deps.exposures.queued }),
    close: started.close,
  });
}
