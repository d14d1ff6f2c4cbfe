/**
 * @module
 * The sync router under `/_edge`: `POST /sync` (signed pushes from the backend; absent when no
 * `SYNC_SECRETS` are configured) and `GET /openapi.json` (its OpenAPI document).
 *
 * Neither is on the path of a visitor's request, so their modules (ingest, apply, verification,
 * the OpenAPI document) are imported on first use rather than at start-up.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/app/deps.ts";
import { BusyError, EdgeError } from "../lib/http/errors.ts";
import { DeadlineError } from "../lib/support/deadlines.ts";
import type { WebhookVerifier } from "../lib/sync/verify.ts";
import type { readLimitedBody as ReadLimitedBody } from "../lib/sync/ingest.ts";
import { peerOf } from "./observe.ts";
import type { AppEnv } from "./env.ts";

/** Options for {@linkcode syncRoutes}. */
export interface SyncRoutesOptions {
  /** Called with the users whose stored data a batch changed (for cache invalidation). */
  onApplied?: (userIds: string[]) => void;
}

/**
 * The sync router.
 *
 * @param deps the service's dependencies
 * @param options hooks
 * @returns routes to be mounted under `/_edge`
 */
export function syncRoutes(deps: Deps, options: SyncRoutesOptions = {}): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const { config } = deps;
  app.get("/openapi.json", async (c) => c.json((await import("../lib/sync/openapi.ts")).SYNC_OPENAPI));
  if (config.syncSecrets.length === 0) return app;
  // Built on the first push, then shared. Secrets were validated with the configuration; a
  // failure here surfaces on that request (and the next one tries again).
  let verifier: Promise<WebhookVerifier> | undefined;
  const getVerifier = () =>
    verifier ??= import("../lib/sync/verify.ts").then(({ createWebhookVerifier }) =>
      createWebhookVerifier(config.syncSecrets, { toleranceSec: config.syncToleranceSec, now: deps.now })
    ).catch((error) => {
      verifier = undefined;
      throw error;
    });
  // Verified pushes being applied: each holds its body, the parsed JSON and the validated events
  // in the heap (several times SYNC_MAX_BYTES), so their number is bounded.
  let ingesting = 0;
  // Body bytes reserved by pushes still being read (declared length, or SYNC_MAX_BYTES when
  // undeclared): bounded apart from the apply slots, as these senders are not yet authenticated.
  let bytesInFlight = 0;
  const readBody = async (request: Request, read: typeof ReadLimitedBody): Promise<Uint8Array> => {
    const contentLength = request.headers.get("content-length");
    const declared = contentLength ? Number(contentLength) : NaN;
    const reserved = Number.isFinite(declared) && declared >= 0 ? declared : config.syncMaxBytes;
    if (bytesInFlight + reserved > config.syncMaxBytesInFlight) {
      await request.body?.cancel().catch(() => {});
      throw new BusyError(
        `At most ${config.syncMaxBytesInFlight} body bytes of pushes are read at once; retry after 1 s`,
        1,
      );
    }
    bytesInFlight += reserved;
    const stopReading = new AbortController();
    let received = 0;
    const started = deps.mono();
    const minRate = config.syncMinBodyBytesPerSec;
    // After a grace second, a body must have kept up the minimum rate since it began.
    const rateCheck = minRate > 0
      ? setInterval(() => {
        const elapsedSec = (deps.mono() - started) / 1000;
        if (elapsedSec >= 1 && received < minRate * elapsedSec) {
          stopReading.abort(
            new EdgeError(408, "body_too_slow", `The body arrived slower than ${minRate} bytes/s`),
          );
        }
      }, 250)
      : undefined;
    const reading = read(request.body, {
      maxBytes: config.syncMaxBytes,
      contentLength,
      signal: stopReading.signal,
      onRead: (total) => received = total,
    });
    try {
      return await deps.deadlines.within(reading, config.syncBodyTimeoutMs, "sync body");
    } catch (error) {
      if (!(error instanceof DeadlineError)) throw error;
      // Stop the read (its stream is locked to the reader, so only the reader can cancel it),
      // and keep the reservation until it has stopped: nothing more of the body is read or held.
      stopReading.abort(error);
      await reading.catch(() => {});
      throw new EdgeError(
        408,
        "body_timeout",
        `The body did not arrive within ${config.syncBodyTimeoutMs} ms`,
      );
    } finally {
      clearInterval(rateCheck);
      bytesInFlight -= reserved;
    }
  };
  // Pushes answered 503 whose KV work, cut off by SYNC_STORE_TIMEOUT_MS, still runs and holds its
  // batch: bounded the same way, so a slow store cannot make retries pile batches up in the heap.
  // One counts until its work settles, or at most ABANDONED_FOR_TIMEOUTS store timeouts (a store
  // that never answers must not stop sync for good once it recovers).
  let abandoned = 0;
  const ABANDONED_FOR_TIMEOUTS = 6;
  app.post("/sync", async (c) => {
    c.header("cache-control", "no-store");
    const now = deps.now();
    let result;
    let admitted = false;
    const storeWork: Promise<unknown>[] = [];
    let storeSettled = 0;
    // Whether the batch held rule control events: then the answer says which rules are now active.
    let rulesEvents = false;
    try {
      const [{ applyOptionsFromConfig }, { ingestSync, PayloadTooLargeError, readLimitedBody }, {
        checkWebhookHeaders,
      }] = await Promise.all([
        import("../lib/sync/apply.ts"),
        import("../lib/sync/ingest.ts"),
        import("../lib/sync/verify.ts"),
      ]);
      // Admission order: a declared oversize is refused at once (413); then an unsigned or stale
      // push before its body is read (401); then the body is read under the bytes-in-flight cap
      // (429), the size limit (413), the body deadline and the minimum rate (408); then the
      // signature is checked (401). Only a verified push takes an apply slot, so senders
      // without the secret cannot hold the slots that signed pushes need.
      const declared = Number(c.req.header("content-length"));
      if (Number.isFinite(declared) && declared > config.syncMaxBytes) {
        await c.req.raw.body?.cancel().catch(() => {});
        throw new PayloadTooLargeError(config.syncMaxBytes);
      }
      checkWebhookHeaders(c.req.raw.headers, { toleranceSec: config.syncToleranceSec, now: deps.now });
      const body = await readBody(c.req.raw, readLimitedBody);
      const verifying = await getVerifier();
      const verified = await verifying.verify(body, c.req.raw.headers);
      if (ingesting >= config.syncMaxConcurrent || abandoned >= config.syncMaxConcurrent) {
        // Publishers retry; a Standard Webhooks sender honours Retry-After.
        throw new BusyError(
          `At most ${config.syncMaxConcurrent} pushes are applied at once; retry after 1 s`,
          1,
        );
      }
      ingesting++;
      admitted = true;
      // The push's KV work holds the slot too, so it is bounded in all: the first store step
      // starts a budget of SYNC_STORE_TIMEOUT_MS that every later step gets the rest of. One
      // budget for the whole push rather than one per KV call: an apply is many commits (in
      // waves, retried on conflicts) that this route cannot see one by one. Its default, 2.5 s,
      // is generous for a healthy store (a 1000-event batch applies in ~15–120 ms on a local
      // one) and well inside a publisher's per-attempt timeout (30 s), so the 503 reaches it.
      let storeDeadline: number | undefined;
      const storeWithin = <T>(work: Promise<T>): Promise<T> => {
        storeWork.push(work);
        work.then(() => storeSettled++, () => storeSettled++);
        storeDeadline ??= deps.mono() + config.syncStoreTimeoutMs;
        const left = Math.max(0, storeDeadline - deps.mono());
        return deps.deadlines.within(work, left, "Sync store work");
      };
      result = await ingestSync(deps.kv, { body, headers: c.req.raw.headers }, {
        verifier: verifying,
        verified,
        toleranceSec: config.syncToleranceSec,
        storeWithin,
        apply: applyOptionsFromConfig(config, now, {
          onApplied: (userIds) => {
            // This instance's cache must not serve what the batch just replaced.
            deps.contextCache.invalidateMany(userIds);
            deps.sessionCache.invalidateUsers(userIds);
            options.onApplied?.(userIds);
          },
        }),
        onApplied: (events) => {
          rulesEvents = events.some((event) =>
            event.kind === "rules" || event.kind === "rules_promote" || event.kind === "rules_rollback"
          );
          const lagsMs: number[] = [];
          for (const event of events) {
            if ("at" in event && typeof event.at === "number") lagsMs.push(now - event.at);
          }
          deps.metrics.observeSync({ lagsMs });
        },
      });
      if (rulesEvents && !("duplicate" in result)) {
        result = { ...result, rules: await rulesNow(storeWithin) };
      }
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
      // A busy answer refuses nothing: the publisher retries the same push.
      // Refused (4xx: the publisher must fix something) apart from failed here (5xx: retried as is).
      deps.metrics.observeSync(
        error instanceof BusyError
          ? { busy: 1 }
          : error instanceof EdgeError && error.status < 500
          ? { rejected: 1 }
          : { failed: 1 },
      );
      throw error;
    } finally {
      if (admitted) ingesting--;
      // KV work still running after the answer: cut off by the deadline.
      if (storeSettled < storeWork.length) {
        abandoned++;
        let counted = true;
        const release = () => {
          if (counted) abandoned--;
          counted = false;
        };
        Promise.allSettled(storeWork).then(release);
        Deno.unrefTimer(setTimeout(release, ABANDONED_FOR_TIMEOUTS * config.syncStoreTimeoutMs));
      }
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

  // The rules KV names after the batch, for the publisher to show; `null` when that read fails,
  // as the batch itself has been applied and recorded (a 503 would only make its retry a duplicate).
  const rulesNow = async (storeWithin: <T>(work: Promise<T>) => Promise<T>) => {
    try {
      const { readStoredRulesStatus } = await import("../lib/rules/control.ts");
      const { active, canary } = await storeWithin(readStoredRulesStatus(deps.kv));
      return { active, canary };
    } catch (error) {
      deps.log.warn("sync: rules state not read after apply", { error: String(error) });
      return null;
    }
  };
  return app;
}
