import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import { ExposureSender } from "../../../lib/exposures/sender.ts";
import type { ExposureEvent } from "../../../lib/exposures/events.ts";
import { sign } from "../../../lib/sync/verify.ts";
import { DeadlineSweep } from "../../../lib/support/deadlines.ts";
import { createLogger } from "../../../lib/obs/log.ts";
import { TEST_EXPOSURES_SECRET } from "../../exposure_receiver.ts";

const event = (i: number): ExposureEvent => ({
  experiment: "hero",
  variation: i % 2 ? "a" : "control",
  visitor: `visitor-${i}`,
  rulesVersion: 3,
  at: "2026-11-26T12:00:00.000Z",
  requestId: `req-${i}`,
  region: "EU",
  device: "desktop",
  // Non-ASCII text is signed as the UTF-8 bytes that are sent.
  path: i === 0 ? "/pfad/grüße" : "/api/products",
});

Deno.test("every attempt carries the signature sync's sign gives its id, timestamp and the bytes sent", async () => {
  const attempts: { headers: Headers; body: Uint8Array }[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
    attempts.push({ headers: request.headers, body: new Uint8Array(await request.arrayBuffer()) });
    return new Response(null, { status: attempts.length === 1 ? 503 : 204 });
  });
  const deadlines = new DeadlineSweep();
  // Each attempt a few seconds after the one before, so that the retry is signed anew.
  let skew = 0;
  const sender = new ExposureSender({
    url: new URL(`http://127.0.0.1:${server.addr.port}/edge/exposures`),
    secret: TEST_EXPOSURES_SECRET,
    fetch: (input, init) => {
      skew += 3000;
      return fetch(input, init);
    },
    now: () => Date.now() + skew,
    randomId: () => "batch-1",
    random: () => 0.5,
    deadlines,
    log: createLogger("silent", { now: Date.now, sink: () => {} }),
    retryBaseMs: 5,
  });
  try {
    const batch = sender.batch(Array.from({ length: 3 }, (_, i) => event(i)));
    assert.equal(await sender.deliver(batch), "sent");
    assert.equal(attempts.length, 2);
    const timestamps = attempts.map(({ headers }) => headers.get("webhook-timestamp"));
    assert.notEqual(timestamps[0], timestamps[1]);
    const webhook = new Webhook(TEST_EXPOSURES_SECRET);
    for (const { headers, body } of attempts) {
      assert.equal(headers.get("webhook-id"), "msg_batch-1");
      assert.deepEqual(body, batch.body);
      const timestamp = Number(headers.get("webhook-timestamp"));
      const expected = await sign(TEST_EXPOSURES_SECRET, { id: "msg_batch-1", timestamp, body });
      assert.equal(headers.get("webhook-signature"), expected);
      // The library a backend uses accepts it as sent.
      const payload = webhook.verify(new TextDecoder().decode(body), Object.fromEntries(headers)) as {
        data: { exposures: ExposureEvent[] };
      };
      assert.equal(payload.data.exposures[0]!.path, "/pfad/grüße");
    }
  } finally {
    await server.shutdown();
  }
});
