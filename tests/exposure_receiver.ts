/**
 * @module
 * Test support: a real exposure receiver on port 0, as a backend would run one — it verifies
 * every attempt with the `standardwebhooks` library, records each attempt's `webhook-id` and
 * answer, and keeps the first copy of each batch (dedupe by `webhook-id`).
 */
import { Webhook } from "standardwebhooks";
import type { ExposureEvent } from "../lib/exposures/events.ts";

/** A dev-only secret for tests. */
export const TEST_EXPOSURES_SECRET = "whsec_" + btoa("exposure-test-secret-32-bytes-ok");

/** One delivery attempt as the receiver saw it. */
export interface ReceivedAttempt {
  id: string;
  status: number;
  /** The signature verified with the `standardwebhooks` library. */
  verified: boolean;
  events: number;
}

/** A running receiver. */
export interface ExposureReceiver {
  url: string;
  attempts: ReceivedAttempt[];
  /** Batches accepted (answered 2xx), first copy per `webhook-id`, in arrival order. */
  batches: { id: string; type: string; exposures: ExposureEvent[] }[];
  /** Every exposure of the accepted batches. */
  exposures(): ExposureEvent[];
  /** Resolves once `done()` holds; rejects after `ms`. */
  until(done: () => boolean, ms?: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts a receiver.
 *
 * @param options the secret (default {@linkcode TEST_EXPOSURES_SECRET}), and the status to
 *   answer each verified attempt with (default 200; numbered from 1 across all batches)
 * @returns the receiver
 */
export function startExposureReceiver(
  options: { secret?: string; status?: (attempt: number, id: string) => number } = {},
): ExposureReceiver {
  const webhook = new Webhook(options.secret ?? TEST_EXPOSURES_SECRET);
  const attempts: ReceivedAttempt[] = [];
  const batches: ExposureReceiver["batches"] = [];
  const seen = new Set<string>();
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
    const body = await request.text();
    const id = request.headers.get("webhook-id") ?? "";
    let payload: { type: string; data: { exposures: ExposureEvent[] } };
    try {
      payload = webhook.verify(body, Object.fromEntries(request.headers)) as typeof payload;
    } catch {
      attempts.push({ id, status: 401, verified: false, events: 0 });
      return new Response("invalid signature", { status: 401 });
    }
    const status = options.status?.(attempts.length + 1, id) ?? 200;
    attempts.push({ id, status, verified: true, events: payload.data.exposures.length });
    if (status >= 200 && status < 300 && !seen.has(id)) {
      seen.add(id);
      batches.push({ id, type: payload.type, exposures: payload.data.exposures });
    }
    return new Response(null, { status });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/edge/exposures`,
    attempts,
    batches,
    exposures: () => batches.flatMap((batch) => batch.exposures),
    async until(done, ms = 5000) {
      const deadline = Date.now() + ms;
      while (!done()) {
        if (Date.now() > deadline) {
          throw new Error(`Receiver condition not met within ${ms} ms: ${JSON.stringify(attempts)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
    close: () => server.shutdown(),
  };
}
