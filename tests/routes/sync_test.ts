import assert from "node:assert/strict";
import { readUserContext } from "../../lib/data/readers.ts";
import { SYNC_OPENAPI } from "../../lib/sync/openapi.ts";
import { sign } from "../../lib/sync/verify.ts";
import { createApp } from "../../routes/app.ts";
import { answered, makeDeps, stallingReads } from "../support.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET = "whsec_" + btoa("an-older-secret-still-accepted!!");
const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const NOW_SEC = NOW / 1000;
const ORIGIN = "http://127.0.0.1:9";

function payload(events: unknown[]): string {
  return JSON.stringify({ type: "edge.sync", timestamp: "2026-11-26T12:00:00Z", data: { events } });
}

function view(userId: string, itemId: string, at = "2026-11-26T11:59:58Z") {
  return { kind: "view", userId, itemId, at };
}

async function signedInit(
  body: string,
  options: { id?: string; ts?: number; secret?: string; headers?: Record<string, string> } = {},
): Promise<RequestInit> {
  const id = options.id ?? "msg_1";
  const ts = options.ts ?? NOW_SEC;
  return {
    method: "POST",
    body,
    headers: {
      "content-type": "application/json",
      "webhook-id": id,
      "webhook-timestamp": String(ts),
      "webhook-signature": await sign(options.secret ?? SECRET, { id, timestamp: ts, body }),
      ...options.headers,
    },
  };
}

async function withSync(
  fn: (ctx: { app: ReturnType<typeof createApp>; kv: Deno.Kv }) => Promise<void>,
  env: Record<string, string> = {},
): Promise<void> {
  const deps = await makeDeps(ORIGIN, { env: { SYNC_SECRETS: `${SECRET},${OLD_SECRET}`, ...env } });
  try {
    await fn({ app: createApp(deps), kv: deps.kv });
  } finally {
    deps.kv.close();
  }
}

async function kvIsEmpty(kv: Deno.Kv): Promise<boolean> {
  for await (const _ of kv.list({ prefix: [] })) return false;
  return true;
}

Deno.test("sync does not exist without SYNC_SECRETS, but its OpenAPI document is served", async () => {
  const deps = await makeDeps(ORIGIN);
  try {
    const app = createApp(deps);
    const res = await app.request("/_edge/sync", await signedInit(payload([])));
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.code, "not_found");
    const doc = await app.request("/_edge/openapi.json");
    assert.equal(doc.status, 200);
    assert.deepEqual(await doc.json(), JSON.parse(JSON.stringify(SYNC_OPENAPI)));
  } finally {
    deps.kv.close();
  }
});

Deno.test("docs/sync_openapi.json is identical to the served document", async () => {
  const file = JSON.parse(await Deno.readTextFile(new URL("../../docs/sync_openapi.json", import.meta.url)));
  assert.deepEqual(file, JSON.parse(JSON.stringify(SYNC_OPENAPI)));
});

Deno.test("sync applies a signed batch and answers applied and stale counts", async () => {
  await withSync(async ({ app, kv }) => {
    const body = payload([view("u1", "p42"), view("u1", "p42"), {
      kind: "cart",
      userId: "u1",
      version: 7,
      at: "2026-11-26T11:59:58Z",
      items: [{ itemId: "p42", qty: 1 }],
    }]);
    const res = await app.request("/_edge/sync", await signedInit(body));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { applied: 2, stale: 1 });
    const context = await readUserContext(kv, "u1", NOW);
    assert.deepEqual(context.recentViews.map((v) => v.itemId), ["p42"]);
    assert.equal(context.cart?.version, 7);
  });
});

Deno.test("sync answers a batch with rule control events with the rules now active and the canary", async () => {
  await withSync(async ({ app }) => {
    const rules = (version: number) => ({ version, defaultRegion: "GLOBAL" });
    const push = async (id: string, events: unknown[]) => {
      const res = await app.request("/_edge/sync", await signedInit(payload(events), { id }));
      assert.equal(res.status, 200);
      return await res.json();
    };
    assert.deepEqual(await push("msg_r1", [{ kind: "rules", version: 3, rules: rules(3) }]), {
      applied: 1,
      stale: 0,
      rules: { active: 3, canary: null },
    });
    assert.deepEqual(
      await push("msg_r2", [{
        kind: "rules",
        version: 4,
        rules: rules(4),
        canary: 0.1,
        at: "2026-11-26T11:59:00Z",
      }]),
      { applied: 1, stale: 0, rules: { active: 3, canary: { version: 4, share: 0.1 } } },
    );
    // A rollback to a version the edge does not keep changes nothing: stale, and still 3 active.
    assert.deepEqual(
      await push("msg_r3", [{ kind: "rules_rollback", version: 1, at: "2026-11-26T11:59:30Z" }]),
      { applied: 0, stale: 1, rules: { active: 3, canary: { version: 4, share: 0.1 } } },
    );
    // A batch without rule events says nothing about rules.
    assert.deepEqual(await push("msg_v", [view("u1", "p1")]), { applied: 1, stale: 0 });
  });
});

Deno.test("sync accepts a signature made with a rotated-out secret that is still configured", async () => {
  await withSync(async ({ app }) => {
    const res = await app.request(
      "/_edge/sync",
      await signedInit(payload([view("u1", "p1")]), { secret: OLD_SECRET }),
    );
    assert.equal(res.status, 200);
  });
});

Deno.test("sync answers 401 with only a code for bad signatures, timestamps and missing headers", async () => {
  await withSync(async ({ app, kv }) => {
    const body = payload([view("u1", "p1")]);
    const cases: [RequestInit, string][] = [
      [
        await signedInit(body, { secret: "whsec_" + btoa("not-the-configured-secret-at-all") }),
        "invalid_signature",
      ],
      [{ ...(await signedInit(body)), body: body.replace("p1", "p2") }, "invalid_signature"],
      [await signedInit(body, { ts: NOW_SEC - 301 }), "invalid_timestamp"],
      [await signedInit(body, { ts: NOW_SEC + 301 }), "invalid_timestamp"],
      [{ method: "POST", body }, "missing_signature_headers"],
    ];
    for (const [init, code] of cases) {
      const res = await app.request("/_edge/sync", init);
      assert.equal(res.status, 401);
      const json = await res.json();
      assert.deepEqual(Object.keys(json.error).sort(), ["code", "message"]);
      assert.equal(json.error.code, code);
    }
    assert.ok(await kvIsEmpty(kv));
  });
});

Deno.test("sync rejects a replayed webhook-id across two instances sharing one KV", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/shared.kv`;
  const a = await makeDeps(ORIGIN, { env: { SYNC_SECRETS: SECRET } });
  const b = await makeDeps(ORIGIN, { env: { SYNC_SECRETS: SECRET } });
  a.kv.close();
  b.kv.close();
  a.kv = await Deno.openKv(path);
  b.kv = await Deno.openKv(path);
  try {
    const body = payload([view("u1", "p1")]);
    const first = await createApp(a).request("/_edge/sync", await signedInit(body, { id: "msg_dup" }));
    assert.deepEqual(await first.json(), { applied: 1, stale: 0 });
    const again = await createApp(b).request("/_edge/sync", await signedInit(body, { id: "msg_dup" }));
    assert.equal(again.status, 200);
    assert.deepEqual(await again.json(), { duplicate: true });
    // Another id is a new delivery: views are written without reading, so the same view is
    // written again (idempotently) and counted applied.
    const other = await createApp(b).request("/_edge/sync", await signedInit(body, { id: "msg_other" }));
    assert.deepEqual(await other.json(), { applied: 1, stale: 0 });
    assert.deepEqual((await readUserContext(b.kv, "u1", NOW)).recentViews.map((v) => v.itemId), ["p1"]);
  } finally {
    a.kv.close();
    b.kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sync answers 409 while another instance holds the webhook-id", async () => {
  await withSync(async ({ app, kv }) => {
    await kv.set(["webhook", "msg_busy"], { status: "pending", expiresAt: NOW + 60_000 });
    const res = await app.request(
      "/_edge/sync",
      await signedInit(payload([view("u1", "p1")]), { id: "msg_busy" }),
    );
    assert.equal(res.status, 409);
    assert.equal((await res.json()).error.code, "in_progress");
  });
});

function streamOf(totalBytes: number, pulled: { bytes: number }): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(16 * 1024).fill(32);
  return new ReadableStream({
    pull(controller) {
      if (pulled.bytes >= totalBytes) return controller.close();
      pulled.bytes += chunk.byteLength;
      controller.enqueue(chunk);
    },
  });
}

Deno.test("sync answers 413 for a declared oversized body without reading it", async () => {
  await withSync(async ({ app }) => {
    const pulled = { bytes: 0 };
    const res = await app.request("/_edge/sync", {
      method: "POST",
      body: streamOf(10 * 1024 * 1024, pulled),
      headers: { "content-length": String(10 * 1024 * 1024) },
    });
    assert.equal(res.status, 413);
    assert.equal((await res.json()).error.code, "payload_too_large");
    assert.ok(pulled.bytes <= 64 * 1024, `read ${pulled.bytes} bytes`);
  }, { SYNC_MAX_BYTES: "65536" });
});

Deno.test("sync answers 413 for a streamed body with an absent or lying content-length, reading no further", async () => {
  await withSync(async ({ app }) => {
    // Signature-shaped headers (the signature itself is checked only once the body is read).
    const signed = {
      "webhook-id": "msg_big",
      "webhook-timestamp": String(NOW_SEC),
      "webhook-signature": "v1,AAAA",
    };
    for (const extra of [{}, { "content-length": "100" }] as Record<string, string>[]) {
      const pulled = { bytes: 0 };
      const res = await app.request("/_edge/sync", {
        method: "POST",
        body: streamOf(10 * 1024 * 1024, pulled),
        headers: { ...signed, ...extra },
      });
      assert.equal(res.status, 413);
      assert.ok(pulled.bytes < 200 * 1024, `read ${pulled.bytes} bytes`);
    }
  }, { SYNC_MAX_BYTES: "65536" });
});

Deno.test("an unsigned or stale push is refused before its body is read", async () => {
  await withSync(async ({ app }) => {
    const stale = {
      "webhook-id": "m",
      "webhook-timestamp": String(NOW_SEC - 3600),
      "webhook-signature": "v1,AAAA",
    };
    for (const headers of [{}, stale] as Record<string, string>[]) {
      const pulled = { bytes: 0 };
      const res = await app.request("/_edge/sync", {
        method: "POST",
        body: streamOf(1024 * 1024, pulled),
        headers,
      });
      assert.equal(res.status, 401);
      assert.ok(pulled.bytes <= 64 * 1024, `read ${pulled.bytes} bytes`);
    }
  });
});

Deno.test("sync answers 413 for a batch of 1001 events and applies none", async () => {
  await withSync(async ({ app, kv }) => {
    const events = Array.from({ length: 1001 }, (_, i) => view(`u${i}`, "p1"));
    const res = await app.request("/_edge/sync", await signedInit(payload(events)));
    assert.equal(res.status, 413);
    assert.equal((await res.json()).error.code, "too_many_events");
    assert.ok(await kvIsEmpty(kv));
    const ok = await app.request(
      "/_edge/sync",
      await signedInit(payload(events.slice(0, 1000)), { id: "msg_1000" }),
    );
    assert.deepEqual(await ok.json(), { applied: 1000, stale: 0 });
  });
});

Deno.test("sync answers 400 listing every invalid event and applies nothing of the batch", async () => {
  await withSync(async ({ app, kv }) => {
    const body = payload([
      view("u1", "p1"),
      { kind: "view", userId: "u1", at: "yesterday" },
      { kind: "cart", userId: "u1", version: -1, at: "2026-11-26T11:59:58Z", items: [] },
      { kind: "teleport" },
      { kind: "rules", version: 3, rules: { version: 4 } },
    ]);
    const res = await app.request("/_edge/sync", await signedInit(body));
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_events");
    const pairs = error.events.map((p: { index: number; field: string }) => `${p.index}:${p.field}`).sort();
    assert.deepEqual(pairs, ["1:at", "1:itemId", "2:version", "3:kind", "4:rules.version"]);
    assert.ok(await kvIsEmpty(kv));
  });
});

Deno.test("a pushed rules event with a reserved key is refused naming the field, top level included", async () => {
  await withSync(async ({ app, kv }) => {
    // Written as text: an object literal's "__proto__" would set the prototype, not a key.
    const events =
      '[{"kind":"rules","version":3,"rules":{"__proto__":{"x":1},"regions":{"__proto__":["DE"]}}},' +
      '{"kind":"rules","version":4,"rules":{"regions":{"constructor":["DE"]}}}]';
    const body = `{"type":"edge.sync","timestamp":"2026-11-26T12:00:00Z","data":{"events":${events}}}`;
    const res = await app.request("/_edge/sync", await signedInit(body));
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_events");
    const reserved = 'is a reserved name ("__proto__", "constructor" and "prototype" cannot name anything)';
    assert.deepEqual(error.events, [
      { index: 0, field: "rules.__proto__", message: reserved },
      { index: 0, field: "rules.regions.__proto__", message: reserved },
      { index: 1, field: "rules.regions.constructor", message: reserved },
    ]);
    assert.ok(await kvIsEmpty(kv));
  });
});

Deno.test("a pushed rules event with a misspelt top-level key is refused naming it; nothing is stored", async () => {
  await withSync(async ({ app, kv }) => {
    const res = await app.request(
      "/_edge/sync",
      await signedInit(payload([{
        kind: "rules",
        version: 5,
        at: "2026-11-26T11:59:58Z",
        canary: 0.1,
        rules: { slotz: [{ name: "promo", html: "<b>x</b>" }] },
      }])),
    );
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.deepEqual(error.events, [{ index: 0, field: "rules", message: 'Unrecognized key: "slotz"' }]);
    assert.ok(await kvIsEmpty(kv));
  });
});

Deno.test("sync answers 400 for a body that is not JSON or not an edge.sync envelope", async () => {
  await withSync(async ({ app }) => {
    const bad = await app.request("/_edge/sync", await signedInit("{not json"));
    assert.equal((await bad.json()).error.code, "invalid_json");
    const envelope = await app.request(
      "/_edge/sync",
      await signedInit(JSON.stringify({ type: "other" }), { id: "m2" }),
    );
    assert.equal(envelope.status, 400);
    assert.equal((await envelope.json()).error.code, "invalid_payload");
  });
});

Deno.test("sync works over a real connection", async () => {
  await withSync(async ({ app, kv }) => {
    const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
    try {
      const res = await fetch(
        `http://127.0.0.1:${server.addr.port}/_edge/sync`,
        await signedInit(payload([view("u9", "p1")])),
      );
      assert.deepEqual(await res.json(), { applied: 1, stale: 0 });
      assert.equal((await readUserContext(kv, "u9", NOW)).recentViews.length, 1);
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("sync: a captured push stays a duplicate for as long as its timestamp is accepted", async () => {
  let clock = NOW;
  const deps = await makeDeps(ORIGIN, { env: { SYNC_SECRETS: SECRET }, now: () => clock });
  try {
    const app = createApp(deps);
    const tolerance = deps.config.syncToleranceSec;
    // Stamped as far ahead as the tolerance allows (a publisher whose clock runs ahead).
    const init = await signedInit(payload([view("u1", "p1")]), { id: "msg_replay", ts: NOW_SEC + tolerance });
    assert.equal((await app.request("/_edge/sync", init)).status, 200);
    // The last moments its timestamp is accepted (whole seconds, inclusive), and just after.
    for (const later of [2 * tolerance * 1000, 2 * tolerance * 1000 + 999]) {
      clock = NOW + later;
      const replay = await app.request(
        "/_edge/sync",
        await signedInit(payload([view("u1", "p1")]), {
          id: "msg_replay",
          ts: NOW_SEC + tolerance,
        }),
      );
      assert.deepEqual([replay.status, await replay.json()], [200, { duplicate: true }], `at +${later} ms`);
    }
    clock = NOW + 2 * tolerance * 1000 + 1000;
    const late = await app.request("/_edge/sync", init);
    assert.equal(late.status, 401);
    await late.body?.cancel();
  } finally {
    deps.kv.close();
  }
});

Deno.test("sync: beyond SYNC_MAX_CONCURRENT pushes at once, the next is answered 429 with Retry-After", async () => {
  const deps = await makeDeps(ORIGIN, { env: { SYNC_SECRETS: SECRET, SYNC_MAX_CONCURRENT: "1" } });
  const kv = deps.kv;
  // The first push's KV work waits for the gate: it holds the one slot until released (a slot
  // is taken once the body is in and verified, so a slow body no longer holds one).
  const gate = Promise.withResolvers<void>();
  let gated = true;
  deps.kv = new Proxy(kv, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== "function") return value;
      if (prop === "get") {
        return async (...args: unknown[]) => {
          if (gated) await gate.promise;
          return value.apply(target, args);
        };
      }
      return value.bind(target);
    },
  });
  try {
    const app = createApp(deps);
    const body = payload([view("u1", "p1")]);
    const first = app.request("/_edge/sync", await signedInit(body, { id: "msg_slow" }));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const busy = await app.request("/_edge/sync", await signedInit(body, { id: "msg_busy" }));
    assert.equal(busy.status, 429);
    assert.equal(busy.headers.get("retry-after"), "1");
    assert.equal((await busy.json()).error.code, "busy");
    gated = false;
    gate.resolve();
    assert.equal((await first).status, 200);
    // The slot is free again.
    const retried = await app.request("/_edge/sync", await signedInit(body, { id: "msg_busy" }));
    assert.equal(retried.status, 200);
    await retried.body?.cancel();
    // Counted as busy, not as rejected (which alerts on bad secrets and probing).
    const metrics = await (await app.request("/_edge/metrics", {}, { remoteAddr: { hostname: "127.0.0.1" } }))
      .text();
    assert.match(metrics, /edge_sync_events_total\{result="busy"\} 1/);
    assert.match(metrics, /edge_sync_events_total\{result="rejected"\} 0/);
  } finally {
    kv.close();
  }
});

Deno.test("sync: a body trickling in cannot keep a slot: 408 after SYNC_BODY_TIMEOUT_MS, and a sender gone mid-body is a client close", async () => {
  const deps = await makeDeps(ORIGIN, {
    env: { SYNC_SECRETS: SECRET, SYNC_MAX_CONCURRENT: "1", SYNC_BODY_TIMEOUT_MS: "150" },
  });
  try {
    const app = createApp(deps);
    const body = payload([view("u1", "p1")]);
    // No secret needed to take the slot: the signature is checked once the body is in.
    let cancelled: unknown;
    const trickle = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(body.slice(0, 5)));
      },
      cancel(reason) {
        cancelled = reason ?? "cancelled";
      },
    });
    const started = performance.now();
    const stalled = await app.request(
      "/_edge/sync",
      {
        ...(await signedInit(body, { id: "msg_forged", secret: OLD_SECRET })),
        body: trickle,
        duplex: "half",
      } as RequestInit,
    );
    assert.equal(stalled.status, 408);
    assert.equal((await stalled.json()).error.code, "body_timeout");
    // The read stopped with the answer: nothing more of that body is read or held.
    assert.ok(cancelled !== undefined, "the stalled body was cancelled");
    assert.ok(performance.now() - started < 2000);
    // The slot is free again for the real publisher.
    const real = await app.request("/_edge/sync", await signedInit(body, { id: "msg_real" }));
    assert.equal(real.status, 200);
    await real.body?.cancel();

    const broken = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(body.slice(0, 5)));
        controller.error(new Error("connection reset"));
      },
    });
    const gone = await app.request(
      "/_edge/sync",
      { ...(await signedInit(body, { id: "msg_gone" })), body: broken, duplex: "half" } as RequestInit,
    );
    assert.equal(gone.status, 499);
    await gone.body?.cancel();
    // Busy and refused pushes are counted apart: a burst of valid pushes is not "rejected".
    const text = await deps.metrics.render();
    assert.match(text, /edge_sync_events_total\{result="busy"\} 0/);
  } finally {
    deps.kv.close();
  }
});

Deno.test("sync: a hung KV cannot keep a slot: 503 store_unavailable after SYNC_STORE_TIMEOUT_MS, then applied once KV is back", async () => {
  const deps = await makeDeps(ORIGIN, {
    env: { SYNC_SECRETS: SECRET, SYNC_MAX_CONCURRENT: "1", SYNC_STORE_TIMEOUT_MS: "150" },
  });
  const kv = deps.kv;
  let stalled = true;
  deps.kv = stallingReads(kv, () => stalled);
  try {
    const app = createApp(deps);
    const body = payload([view("u1", "p1")]);
    // Claiming the webhook-id reads KV, which hangs: the push is answered, and its slot is free.
    const first = await answered(app.request("/_edge/sync", await signedInit(body, { id: "msg_a" })), 5000);
    assert.equal(first.status, 503);
    assert.equal((await first.json()).error.code, "store_unavailable");
    // But its cut-off work still holds its batch: as many such pushes as slots, then busy.
    const second = await answered(app.request("/_edge/sync", await signedInit(body, { id: "msg_b" })), 5000);
    assert.equal(second.status, 429);
    assert.equal((await second.json()).error.code, "busy");
    // Work that never settles counts for 6 store timeouts at most (900 ms here).
    await new Promise((resolve) => setTimeout(resolve, 1000));
    stalled = false;
    for (const id of ["msg_b", "msg_a"]) {
      const res = await answered(app.request("/_edge/sync", await signedInit(body, { id })), 5000);
      assert.equal(res.status, 200, id);
      assert.equal((await res.json()).applied, 1);
    }
    assert.deepEqual((await readUserContext(kv, "u1", NOW)).recentViews.map((v) => v.itemId), ["p1"]);
    // Failed on the edge's side, not refused: the rejection alert stays quiet.
    const metrics = await deps.metrics.render();
    assert.match(metrics, /edge_sync_events_total\{result="failed"\} 1/);
    assert.match(metrics, /edge_sync_events_total\{result="busy"\} 1/);
    assert.match(metrics, /edge_sync_events_total\{result="rejected"\} 0/);
  } finally {
    kv.close();
  }
});

Deno.test("sync: an apply cut by SYNC_STORE_TIMEOUT_MS releases its webhook-id, so the publisher's retry is applied", async () => {
  const deps = await makeDeps(ORIGIN, { env: { SYNC_SECRETS: SECRET, SYNC_STORE_TIMEOUT_MS: "150" } });
  const kv = deps.kv;
  // The claim's read goes through; the apply's (a cart is version-gated, so read) hangs.
  let reads = 0;
  let hanging = true;
  deps.kv = stallingReads(kv, () => ++reads > 1 && hanging);
  try {
    const app = createApp(deps);
    const body = payload([{
      kind: "cart",
      userId: "u1",
      version: 3,
      at: "2026-11-26T11:59:58Z",
      items: [{ itemId: "p42", qty: 1 }],
    }]);
    const cut = await answered(app.request("/_edge/sync", await signedInit(body, { id: "msg_cart" })), 5000);
    assert.equal(cut.status, 503);
    assert.equal((await cut.json()).error.code, "store_unavailable");
    hanging = false;
    // Not 409 in_progress for the claim's lease: the retry applies the batch.
    const retried = await app.request("/_edge/sync", await signedInit(body, { id: "msg_cart" }));
    assert.equal(retried.status, 200);
    assert.deepEqual(await retried.json(), { applied: 1, stale: 0 });
    assert.equal((await readUserContext(kv, "u1", NOW)).cart?.version, 3);
  } finally {
    kv.close();
  }
});

/** A real service on port 0, with its log lines kept. */
async function serveSync(env: Record<string, string>) {
  const lines: string[] = [];
  const deps = await makeDeps(ORIGIN, { env: { SYNC_SECRETS: SECRET, ...env }, logLines: lines });
  const app = createApp(deps);
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    (req, info) => app.fetch(req, info),
  );
  const url = `http://127.0.0.1:${server.addr.port}/_edge/sync`;
  const close = async () => {
    await server.shutdown();
    deps.kv.close();
  };
  return { url, port: server.addr.port, lines, close };
}

const FORGED_SIGNATURE = "v1,Zm9yZ2VkLXNpZ25hdHVyZS1ub3QtdGhlLXJlYWwtb25lLWF0LWFsbA==";

/**
 * A sender without the secret: signature headers, a declared length, then one body byte every
 * `everyMs` over a raw connection. `answer` collects what the service sends back.
 */
async function dripSender(port: number, options: { id: string; contentLength: number; everyMs: number }) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const head = [
    "POST /_edge/sync HTTP/1.1",
    `host: 127.0.0.1:${port}`,
    "content-type: application/json",
    `content-length: ${options.contentLength}`,
    `webhook-id: ${options.id}`,
    `webhook-timestamp: ${NOW_SEC}`,
    `webhook-signature: ${FORGED_SIGNATURE}`,
    "",
    "",
  ].join("\r\n");
  await conn.write(new TextEncoder().encode(head));
  let sent = 0;
  const timer = setInterval(() => {
    if (sent >= options.contentLength - 1) return;
    sent++;
    conn.write(new Uint8Array([0x20])).catch(() => clearInterval(timer));
  }, options.everyMs);
  let text = "";
  const answer = (async () => {
    const buffer = new Uint8Array(4096);
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        text += new TextDecoder().decode(buffer.subarray(0, n));
        if (/\r\n\r\n[\s\S]*\}\s*$/.test(text)) break;
      }
    } catch {
      // Closed by the test.
    }
    return text;
  })();
  let closed = false;
  const close = async () => {
    clearInterval(timer);
    if (!closed) conn.close();
    closed = true;
    await answer;
  };
  return { answer, close };
}

Deno.test("sync cannot be locked out: with SYNC_MAX_CONCURRENT slow unsigned senders, a signed push and a rules_rollback still apply", async () => {
  const service = await serveSync({ SYNC_MAX_CONCURRENT: "4" });
  const senders: Awaited<ReturnType<typeof dripSender>>[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      senders.push(await dripSender(service.port, { id: `msg_slow_${i}`, contentLength: 100, everyMs: 200 }));
    }
    // Let all four be inside the handler, reading their bodies.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const push = await answered(
      fetch(service.url, await signedInit(payload([view("u1", "p1")]), { id: "m1" })),
      1000,
    );
    assert.equal(push.status, 200);
    assert.deepEqual(await push.json(), { applied: 1, stale: 0 });
    const rollback = await answered(
      fetch(
        service.url,
        await signedInit(payload([{ kind: "rules_rollback", version: 1, at: "2026-11-26T11:59:30Z" }]), {
          id: "m2",
        }),
      ),
      1000,
    );
    assert.equal(rollback.status, 200);
    assert.ok("rules" in await rollback.json());
  } finally {
    for (const sender of senders) await sender.close();
    await service.close();
  }
});

Deno.test("sync: a sender slower than SYNC_MIN_BODY_BYTES_PER_S gets 408, logged once with peer, webhook id and reason but no signature", async () => {
  const service = await serveSync({ SYNC_MIN_BODY_BYTES_PER_S: "100" });
  const sender = await dripSender(service.port, { id: "msg_probe", contentLength: 100, everyMs: 200 });
  try {
    const answer = await answered(sender.answer, 5000);
    assert.match(answer, /^HTTP\/1\.1 408/);
    assert.match(answer, /"code":"body_too_slow"/);
    const refused = service.lines.filter((line) => line.includes("sync push refused"));
    assert.equal(refused.length, 1);
    const line = refused[0] ?? "";
    assert.match(line, /127\.0\.0\.1/);
    assert.match(line, /msg_probe/);
    assert.match(line, /body_too_slow/);
    assert.match(line, /warn/i);
    assert.ok(!line.includes(FORGED_SIGNATURE.slice(3, 20)), "no signature in the log");
    // A forged signature on a whole body: 401, one line too, still without the signature.
    const forged = await fetch(service.url, {
      method: "POST",
      body: payload([view("u1", "p1")]),
      headers: {
        "webhook-id": "msg_forged_" + "x".repeat(300),
        "webhook-timestamp": String(NOW_SEC),
        "webhook-signature": FORGED_SIGNATURE,
      },
    });
    assert.equal(forged.status, 401);
    await forged.body?.cancel();
    const lines = service.lines.filter((line) => line.includes("msg_forged_"));
    assert.equal(lines.length, 1);
    const forgedLine = lines[0] ?? "";
    assert.match(forgedLine, /invalid_signature/);
    assert.ok(!forgedLine.includes("x".repeat(130)), "the webhook id is cut");
    assert.ok(!forgedLine.includes(FORGED_SIGNATURE.slice(3, 20)), "no signature in the log");
  } finally {
    await sender.close();
    await service.close();
  }
});

Deno.test("sync: a push past SYNC_MAX_BYTES_IN_FLIGHT of bodies still arriving gets 429 with Retry-After", async () => {
  const service = await serveSync({
    SYNC_MAX_BYTES: "1024",
    SYNC_MAX_BYTES_IN_FLIGHT: "1024",
    SYNC_MIN_BODY_BYTES_PER_S: "0",
  });
  const sender = await dripSender(service.port, { id: "msg_big", contentLength: 1000, everyMs: 200 });
  try {
    await new Promise((resolve) => setTimeout(resolve, 200));
    const res = await answered(
      fetch(service.url, await signedInit(payload([view("u1", "p1")]), { id: "m3" })),
      1000,
    );
    assert.equal(res.status, 429);
    assert.equal(res.headers.get("retry-after"), "1");
    assert.equal((await res.json()).error.code, "busy");
    // Once the slow body is gone, its bytes are free again.
    await sender.close();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const again = await fetch(service.url, await signedInit(payload([view("u1", "p1")]), { id: "m3" }));
    assert.equal(again.status, 200);
    await again.body?.cancel();
  } finally {
    await sender.close();
    await service.close();
  }
});
