/**
 * @module
 * The sync router under `/_edge`: `POST /sync` (signed pushes; absent without `SYNC_SECRETS`) and
 * `GET /openapi.json`. Neither is on a visitor's path, so their modules are imported on first use.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/app/deps.ts";
import { BusyError, EdgeError } from "../lib/http/errors.ts";
import type { SyncObservation } from "../lib/obs/metrics.ts";
import type { SyncReceiver } from "../lib/sync/ingest.ts";
import { peerOf } from "../lib/http/net.ts";
import type { AppEnv } from "./env.ts";

/** The sync router, to be mounted under `/_edge`. */
export function syncRoutes(deps: Deps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const { config } = deps;
  app.get("/openapi.json", async (c) => c.json((await import("../lib/sync/openapi.ts")).SYNC_OPENAPI));
  if (config.syncSecrets.length === 0) return app;
  let receiver: Promise<SyncReceiver> | undefined;
  const getReceiver = () =>
    receiver ??= import("../lib/sync/ingest.ts").then(({ SyncReceiver }) => new SyncReceiver(deps));
  app.post("/sync", async (c) => {
    c.header("cache-control", "no-store");
    let result;
    try {
      result = await (await getReceiver()).receive(c.req.raw);
    } catch (error) {
      // One line per refused push, so probing and misconfigured publishers show up; a client that
      // went away (499) is not a refusal, and 5xx are logged with their cause by the error handler.
      if (error instanceof EdgeError && error.status >= 400 && error.status < 499) {
        deps.log.warn("sync push refused", {
          requestId: c.get("requestId"),
          peer: peerOf(c.env),
          webhookId: (c.req.header("webhook-id") ?? "").slice(0, 128),
          status: error.status,
          reason: error.code,
        });
      }
      deps.metrics.observeSync(refusalOf(error));
      throw error;
    }
    if ("duplicate" in result) {
      deps.metrics.observeSync({ duplicate: 1 });
      deps.log.info("sync duplicate", { requestId: c.get("requestId") });
    } else {
      deps.metrics.observeSync({ applied: result.applied, stale: result.stale });
      deps.log.info("sync applied", { requestId: c.get("requestId"), ...result });
    }
    return c.json(result);
  });
  return app;
}

/** A busy answer refuses nothing (the publisher retries it); 4xx are refused, 5xx failed here. */
function refusalOf(error: unknown): SyncObservation {
  if (error instanceof BusyError) return { busy: 1 };
  return error instanceof EdgeError && error.status < 500 ? { rejected: 1 } : { failed: 1 };
}
