import assert from "node:assert/strict";
import { demoBackendEvents, demoBackendHandler } from "../../tools/demo_backend.ts";
import { BackendClient } from "../../lib/data/backend.ts";
import { parseSyncEvents } from "../../lib/sync/schema.ts";
import { ExposureSender } from "../../lib/exposures/sender.ts";
import { DeadlineSweep } from "../../lib/support/deadlines.ts";
import { createLogger } from "../../lib/obs/log.ts";
import { TEST_EXPOSURES_SECRET } from "../exposure_receiver.ts";

const TOKEN = "demo-backend-test-token";
const ROOT = new URL("../../", import.meta.url);

async function withBackend(
  fn: (
    ctx: { url: string; lines: string[]; stats: ReturnType<typeof demoBackendHandler>["stats"] },
  ) => Promise<void>,
) {
  const lines: string[] = [];
  const events = await demoBackendEvents((path) => Deno.readTextFile(new URL(path, ROOT)), Date.now());
  const { handler, stats } = demoBackendHandler({
    exposuresSecret: TEST_EXPOSURES_SECRET,
    token: TOKEN,
    events,
    print: (line) => lines.push(line),
  });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, handler);
  try {
    await fn({ url: `http://127.0.0.1:${server.addr.port}`, lines, stats });
  } finally {
    await server.shutdown();
  }
}

function sender(url: string, secret = TEST_EXPOSURES_SECRET): ExposureSender {
  return new ExposureSender({
    url: new URL(`${url}/edge/exposures`),
    secret,
    fetch,
    now: Date.now,
    randomId: () => crypto.randomUUID(),
    random: Math.random,
    deadlines: new DeadlineSweep(),
    log: createLogger("silent", { now: Date.now }),
  });
}

const exposure = {
  experiment: "hero",
  variation: "a",
  visitor: "visitor-0123456789abcdef",
  userId: "u1",
  rulesVersion: 1,
  at: new Date().toISOString(),
  requestId: "r1",
  region: "EU",
  device: "mobile",
  path: "/",
};

Deno.test("the demo backend verifies exposure batches, prints one line each, and ignores a repeated batch", async () => {
  await withBackend(async ({ url, lines, stats }) => {
    const batch = sender(url).batch([exposure, {
      ...exposure,
      experiment: "checkout",
      variation: "one-page",
    }]);
    assert.equal(await sender(url).deliver(batch), "sent");
    assert.equal(await sender(url).deliver(batch), "sent");
    assert.deepEqual(lines, [
      "exposure: hero=a  user u1  EU/mobile  /  rules v1",
      "exposure: checkout=one-page  user u1  EU/mobile  /  rules v1",
      `exposure batch ${batch.id} received again: ignored`,
    ]);
    assert.equal(stats.exposures, 2);
    assert.equal(stats.duplicates, 1);
  });
});

Deno.test("the demo backend refuses a batch signed with another secret", async () => {
  await withBackend(async ({ url, lines, stats }) => {
    const other = "whsec_" + btoa("some-other-secret-of-32-bytes!!!");
    const wrong = sender(url, other);
    assert.equal(await wrong.deliver(wrong.batch([exposure])), "dropped");
    assert.equal(stats.rejected, 1);
    assert.deepEqual(lines, ["exposure batch rejected: the signature does not verify"]);
  });
});

Deno.test("the demo backend answers the edge's read-through contract", async () => {
  await withBackend(async ({ url, stats }) => {
    const client = new BackendClient({
      baseUrl: new URL(url),
      token: TOKEN,
      timeoutMs: 2000,
      fetch,
      now: Date.now,
    });
    const u4 = await client.fetchUserContext("u4");
    assert.equal(u4.status, "ok");
    const events = parseSyncEvents(u4.status === "ok" ? u4.events : []);
    assert.deepEqual(events.map((e) => e.kind).sort(), ["profile", "view", "view"]);
    assert.equal((await client.fetchUserContext("nobody")).status, "unknown_user");
    const unauthorized = await fetch(`${url}/edge/users/u4/context`);
    assert.equal(unauthorized.status, 401);
    await unauthorized.body?.cancel();
    assert.equal(stats.contextCalls, 2);
  });
});
