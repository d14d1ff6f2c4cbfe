import assert from "node:assert/strict";
import { createLogger } from "../../lib/obs/log.ts";
import { followRulesInKv } from "../../lib/rules/follower.ts";
import { sign } from "../../lib/sync/verify.ts";
import { createApp } from "../../routes/app.ts";
import { answered, failingReads, makeDeps, stallingReads } from "../support.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN = "rules-token-0123456789";
const NOW_SEC = Date.UTC(2026, 10, 26, 12, 0, 0) / 1000;
const ORIGIN = "http://127.0.0.1:9";
const log = createLogger("silent", { now: () => 0 });
const at = (minute: number) => new Date(Date.UTC(2026, 10, 26, 11, minute)).toISOString();

async function syncRequest(id: string, events: unknown[]): Promise<Request> {
  const body = JSON.stringify({ type: "edge.sync", timestamp: "2026-11-26T12:00:00Z", data: { events } });
  return new Request("http://edge/_edge/sync", {
    method: "POST",
    body,
    headers: {
      "content-type": "application/json",
      "webhook-id": id,
      "webhook-timestamp": String(NOW_SEC),
      "webhook-signature": await sign(SECRET, { id, timestamp: NOW_SEC, body }),
    },
  });
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

Deno.test("GET /_edge/rules does not exist without RULES_TOKEN", async () => {
  const deps = await makeDeps(ORIGIN, { env: { METRICS_TOKEN: TOKEN } });
  try {
    const res = await createApp(deps).request("/_edge/rules", bearer(TOKEN));
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.code, "not_found");
  } finally {
    deps.kv.close();
  }
});

Deno.test("GET /_edge/rules answers 401 with the house error body without the right bearer token", async () => {
  const deps = await makeDeps(ORIGIN, { env: { RULES_TOKEN: TOKEN } });
  try {
    const app = createApp(deps);
    for (const init of [{}, bearer("rules-token-0123456788"), { headers: { authorization: TOKEN } }]) {
      const res = await app.request("/_edge/rules", init);
      assert.equal(res.status, 401);
      assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer /);
      assert.deepEqual(await res.json(), {
        error: { code: "unauthorized", message: "A valid rules token is required" },
      });
    }
    const ok = await app.request("/_edge/rules", bearer(TOKEN));
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("cache-control"), "no-store");
    assert.deepEqual(await ok.json(), {
      active: null,
      canary: null,
      kept: [],
      instance: { active: 0, canary: null, startUp: 0 },
    });
  } finally {
    deps.kv.close();
  }
});

Deno.test("GET /_edge/rules answers 503 store_unavailable when KV reads fail, not an unhandled 500", async () => {
  const logLines: string[] = [];
  const deps = await makeDeps(ORIGIN, { env: { RULES_TOKEN: TOKEN }, logLines });
  const kv = deps.kv;
  deps.kv = failingReads(kv, () => true, new Error("kv down: connection lost"));
  try {
    const res = await createApp(deps).request("/_edge/rules", bearer(TOKEN));
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("cache-control"), "no-store");
    assert.deepEqual(await res.json(), {
      error: { code: "store_unavailable", message: "The edge store is unavailable; retry later" },
    });
    assert.ok(!logLines.some((line) => line.includes("unhandled error")), logLines.join("\n"));
    const failed = logLines.find((line) => line.includes("request failed"));
    assert.match(failed ?? "", /store_unavailable/);
    assert.match(failed ?? "", /kv down: connection lost/, "the cause is logged for the operator");
  } finally {
    kv.close();
  }
});

Deno.test("GET /_edge/rules answers 503 store_unavailable after KV_TIMEOUT_MS when KV hangs, and times the read", async () => {
  const logLines: string[] = [];
  const deps = await makeDeps(ORIGIN, { env: { RULES_TOKEN: TOKEN, KV_TIMEOUT_MS: "50" }, logLines });
  const kv = deps.kv;
  let stalled = true;
  deps.kv = stallingReads(kv, () => stalled);
  try {
    const app = createApp(deps);
    const res = await answered(app.request("/_edge/rules", bearer(TOKEN)), 5000);
    assert.equal(res.status, 503);
    assert.deepEqual(await res.json(), {
      error: { code: "store_unavailable", message: "The edge store is unavailable; retry later" },
    });
    assert.match(logLines.find((line) => line.includes("request failed")) ?? "", /KV read took longer/);
    stalled = false;
    const ok = await app.request("/_edge/rules", bearer(TOKEN));
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    const text = await deps.metrics.render();
    assert.match(text, /^edge_kv_read_duration_seconds_count\{read="rules"\} 2$/m);
  } finally {
    kv.close();
  }
});

Deno.test("sync answers 400 for an invalid rule set and stores nothing of it", async () => {
  const deps = await makeDeps(ORIGIN, { env: { SYNC_SECRETS: SECRET, RULES_TOKEN: TOKEN } });
  try {
    const app = createApp(deps);
    const res = await app.request(
      await syncRequest("msg_bad", [
        { kind: "rules", version: 2, at: at(1), rules: {} },
        // A route keyed by an experiment that does not exist.
        {
          kind: "rules",
          version: 3,
          at: at(2),
          canary: 0.05,
          rules: { routes: [{ match: "/a", experiment: "nope", rewrite: { b: "/b" } }] },
        },
      ]),
    );
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_events");
    assert.deepEqual([...new Set(error.events.map((problem: { index: number }) => problem.index))], [1]);
    const status = await (await app.request("/_edge/rules", bearer(TOKEN))).json();
    assert.deepEqual(status.kept, []);
    assert.equal(deps.rules.current.version, 0);
  } finally {
    deps.kv.close();
  }
});

Deno.test("a canary, its promotion and a rollback pushed to one app show on a second app on the same KV within 1 s", async () => {
  const dir = await Deno.makeTempDir();
  const env = { SYNC_SECRETS: SECRET, RULES_TOKEN: TOKEN };
  const a = await makeDeps(ORIGIN, { env });
  const b = await makeDeps(ORIGIN, { env });
  a.kv.close();
  b.kv.close();
  a.kv = await Deno.openKv(`${dir}/kv`);
  b.kv = await Deno.openKv(`${dir}/kv`);
  const stop = new AbortController();
  const following = followRulesInKv(b.kv, b.rules, { pollMs: 60_000, log, signal: stop.signal });
  try {
    const appA = createApp(a);
    const appB = createApp(b);
    const instanceOfB = async () =>
      (await (await appB.request("/_edge/rules", bearer(TOKEN))).json()).instance;
    const waitForB = async (expected: unknown) => {
      const deadline = performance.now() + 1000;
      let seen: unknown;
      while (performance.now() < deadline) {
        seen = await instanceOfB();
        if (JSON.stringify(seen) === JSON.stringify(expected)) return;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.deepEqual(seen, expected);
    };

    let res = await appA.request(
      await syncRequest("msg_1", [
        { kind: "rules", version: 11, at: at(1), rules: { defaultRegion: "EU" } },
        { kind: "rules", version: 12, at: at(2), canary: 0.05, rules: { defaultRegion: "US" } },
      ]),
    );
    assert.deepEqual(await res.json(), {
      applied: 2,
      stale: 0,
      rules: { active: 11, canary: { version: 12, share: 0.05 } },
    });
    await waitForB({ active: 11, canary: { version: 12, share: 0.05 }, startUp: 0 });
    const status = await (await appB.request("/_edge/rules", bearer(TOKEN))).json();
    assert.equal(status.active, 11);
    assert.deepEqual(status.canary, { version: 12, share: 0.05 });
    assert.deepEqual(status.kept, [
      {
        version: 12,
        stored: true,
        activatedAt: null,
        canary: { share: 0.05, at: at(2) },
      },
      { version: 11, stored: true, activatedAt: at(1), canary: null },
    ]);

    res = await appA.request(await syncRequest("msg_2", [{ kind: "rules_promote", version: 12, at: at(3) }]));
    assert.deepEqual(await res.json(), { applied: 1, stale: 0, rules: { active: 12, canary: null } });
    await waitForB({ active: 12, canary: null, startUp: 0 });

    res = await appA.request(
      await syncRequest("msg_3", [{ kind: "rules_rollback", version: 11, at: at(4) }]),
    );
    assert.deepEqual(await res.json(), { applied: 1, stale: 0, rules: { active: 11, canary: null } });
    await waitForB({ active: 11, canary: null, startUp: 0 });

    // A rollback to a version that was never kept changes nothing.
    res = await appA.request(await syncRequest("msg_4", [{ kind: "rules_rollback", version: 3, at: at(5) }]));
    assert.deepEqual(await res.json(), { applied: 0, stale: 1, rules: { active: 11, canary: null } });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(await instanceOfB(), { active: 11, canary: null, startUp: 0 });
  } finally {
    stop.abort();
    await following;
    a.kv.close();
    b.kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
