/**
 * Fault injection end to end: `main.ts` runs as a real process on loopback in front of a fault
 * origin and a fault backend (tests/e2e/fault_servers.ts). For every fault the documented outcome
 * must hold — a clear 502/504 JSON error, the origin's own answer, or a non-personalized default —
 * the process must keep serving, write no "Uncaught" to its output, and keep its memory and open
 * file descriptors bounded. A failing KV is injected in-process (a `Deno.Kv`-shaped adapter).
 *
 * Time bounds are liveness checks, not measurements: each client request carries a deadline many
 * times the configured timeout, and a request that hits it fails the test as "held forever".
 */
import assert from "node:assert/strict";
import { sign } from "../../lib/sync/verify.ts";
import { createApp } from "../../routes/app.ts";
import { makeDeps, SEED_RULES, startOrigin } from "../support.ts";
import { startFaultBackend, startFaultOrigin } from "./fault_servers.ts";
import { type ServiceProcess, startService } from "./service.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BACKEND_TOKEN = "fault-backend-token-0123456789";
const ORIGIN_TIMEOUT_MS = 300;
const BACKEND_TIMEOUT_MS = 100;
/** A request not settled by then is "held forever" (≫ every configured timeout). */
const LIVENESS_MS = 5000;
const MB = 1024 * 1024;
/**
 * No pooled idle connections: every request opens and closes its own, so open descriptors in
 * the service after a scenario are what the service itself holds.
 */
const CLIENT = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

/** One request with a liveness deadline; the whole body is read. */
async function get(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, { client: CLIENT, ...init, signal: AbortSignal.timeout(LIVENESS_MS) });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

/** Asserts the house error body with the given code and no internal detail. */
function assertErrorBody(answer: Answer, status: number, code: string): void {
  assert.equal(answer.status, status, answer.body);
  assert.match(answer.headers.get("content-type") ?? "", /application\/json/);
  const body = JSON.parse(answer.body);
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, "string");
  assert.doesNotMatch(answer.body, /stack|Error:|ECONN|os error|hyper|127\.0\.0\.1/i);
}

async function openFds(pid: number): Promise<number> {
  const out = await new Deno.Command("ls", { args: [`/proc/${pid}/fd`], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean).length;
}

/** The service is alive, healthy and still proxies. */
async function assertServing(service: ServiceProcess): Promise<void> {
  const health = await get(`${service.url}/_edge/health`);
  assert.equal(health.status, 200);
  const echo = await get(`${service.url}/echo/after`);
  assert.equal(echo.status, 200, echo.body);
  assert.doesNotMatch(service.output(), /Uncaught|panicked/);
}

async function signedPush(serviceUrl: string, id: string, events: unknown[]): Promise<Answer> {
  const body = JSON.stringify({ type: "edge.sync", timestamp: new Date().toISOString(), data: { events } });
  const timestamp = Math.floor(Date.now() / 1000);
  return await get(`${serviceUrl}/_edge/sync`, {
    method: "POST",
    body,
    headers: {
      "content-type": "application/json",
      "webhook-id": id,
      "webhook-timestamp": String(timestamp),
      "webhook-signature": await sign(SECRET, { id, timestamp, body }),
    },
  });
}

function sessionEvent(userId: string) {
  const at = new Date(Date.now() - 1000).toISOString();
  const expiresAt = new Date(Date.now() + 3600_000).toISOString();
  return { kind: "session", sessionId: `s-fault-${userId}-0001`, userId, expiresAt, at };
}

function cookieOf(userId: string): Record<string, string> {
  return { cookie: `sid=s-fault-${userId}-0001` };
}

Deno.test("the service survives origin and backend faults and a sync during load, and keeps serving", async (t) => {
  const dir = await Deno.makeTempDir();
  const rulesPath = `${dir}/rules.json`;
  await Deno.writeTextFile(rulesPath, JSON.stringify(SEED_RULES));
  const origin = startFaultOrigin();
  const backend = startFaultBackend(BACKEND_TOKEN);
  const service = await startService({
    ORIGIN_URL: origin.url,
    KV_PATH: `${dir}/edge.kv`,
    RULES_PATH: rulesPath,
    SYNC_SECRETS: SECRET,
    BACKEND_URL: backend.url,
    BACKEND_TOKEN,
    ORIGIN_TIMEOUT_MS: String(ORIGIN_TIMEOUT_MS),
    BACKEND_TIMEOUT_MS: String(BACKEND_TIMEOUT_MS),
    // Every request reads KV and, for a user the edge knows nothing about, the backend.
    CONTEXT_MAX_STALE_MS: "0",
    BREAKER_FAILURE_THRESHOLD: "50",
    BREAKER_COOLDOWN_MS: "100",
  });
  try {
    await assertServing(service);
    const fdsAtStart = await openFds(service.pid);

    await t.step("origin refusing connections → 502 JSON, then served again once it listens", async () => {
      origin.refuse();
      assertErrorBody(await get(`${service.url}/echo/refused`), 502, "origin_unavailable");
      origin.accept();
      await assertServing(service);
    });

    await t.step("origin hanging before headers → 504 JSON after ORIGIN_TIMEOUT_MS", async () => {
      assertErrorBody(await get(`${service.url}/hang-headers`), 504, "origin_timeout");
      await assertServing(service);
    });

    await t.step("origin stalling inside a small sized body → 504 JSON (read whole first)", async () => {
      assertErrorBody(await get(`${service.url}/hang-small-body`), 504, "origin_timeout");
      await assertServing(service);
    });

    await t.step("origin dribbling its head slower than the timeout → 504 JSON", async () => {
      assertErrorBody(await get(`${service.url}/slow-head`), 504, "origin_timeout");
      await assertServing(service);
    });

    await t.step("origin closing or resetting before headers → 502 JSON", async () => {
      const body = new Uint8Array(256 * 1024).fill(120);
      assertErrorBody(
        await get(`${service.url}/reset-before-head`, { method: "POST", body }),
        502,
        "origin_unavailable",
      );
      await assertServing(service);
    });

    for (
      const path of ["/malformed-header", "/malformed-status", "/status-600", "/control-header", "/huge-head"]
    ) {
      await t.step(`origin answering a malformed head (${path}) → 502 JSON`, async () => {
        assertErrorBody(await get(`${service.url}${path}`), 502, "origin_unavailable");
        await assertServing(service);
      });
    }

    for (const status of [500, 503]) {
      await t.step(`origin answering ${status} → the origin's own ${status} is passed through`, async () => {
        const answer = await get(`${service.url}/status-${status}`);
        assert.equal(answer.status, status);
        assert.equal(answer.body, "origin");
        await assertServing(service);
      });
    }

    await t.step("origin answering byte by byte (each gap short) → the whole body arrives", async () => {
      const answer = await get(`${service.url}/slow-body`);
      assert.equal(answer.status, 200);
      assert.equal(answer.body, "0123456789abcdefghijklmnopqrstuvwxyz");
      await assertServing(service);
    });

    for (const path of ["/hang-body", "/truncate-body", "/reset-body"]) {
      await t.step(
        `origin failing mid-body (${path}) → the client connection is closed, not held`,
        async () => {
          const init: RequestInit = path === "/reset-body"
            ? { method: "POST", body: new Uint8Array(256 * 1024).fill(120) }
            : {};
          const res = await fetch(`${service.url}${path}`, {
            client: CLIENT,
            ...init,
            signal: AbortSignal.timeout(LIVENESS_MS),
          });
          // A reset while the edge is still sending the request body can reach it before the
          // head it follows: then nothing was sent yet and the safe answer is a 502.
          if (path === "/reset-body" && res.status === 502) {
            assert.equal((await res.json()).error.code, "origin_unavailable");
            await assertServing(service);
            return;
          }
          assert.equal(res.status, 200, "headers were already on their way");
          const error = await res.text().then(() => undefined, (e: unknown) => e);
          assert.ok(error, "a truncated body must not look complete");
          assert.notEqual((error as Error).name, "TimeoutError", "the edge held the connection open");
          await assertServing(service);
        },
      );
    }

    const users = ["u-down", "u-slow", "u-garbage", "u-shape", "u-error", "u-ok"];
    await t.step("sessions for the backend scenarios are seeded through a signed push", async () => {
      const answer = await signedPush(service.url, "msg_fault_sessions", users.map(sessionEvent));
      assert.equal(answer.status, 200, answer.body);
      assert.deepEqual(JSON.parse(answer.body), { applied: users.length, stale: 0 });
    });

    const scenarios = [
      ["down", "u-down"],
      ["slow", "u-slow"],
      ["garbage", "u-garbage"],
      ["wrong_shape", "u-shape"],
      ["error", "u-error"],
    ] as const;
    for (const [mode, user] of scenarios) {
      await t.step(`backend ${mode} → the logged-in user gets the non-personalized default`, async () => {
        backend.mode = mode;
        for (let i = 0; i < 2; i++) {
          const answer = await get(`${service.url}/echo/${mode}`, { headers: cookieOf(user) });
          assert.equal(answer.status, 200, answer.body);
          const seen = JSON.parse(answer.body).headers;
          assert.equal(seen["x-edge-user"], user);
          assert.equal(seen["x-edge-segments"], undefined);
        }
        await assertServing(service);
      });
    }

    await t.step("backend back → read-through personalizes again", async () => {
      backend.mode = "ok";
      // Past the breaker's cool-down, should the failures above have opened it.
      await new Promise((resolve) => setTimeout(resolve, 150));
      const answer = await get(`${service.url}/echo/ok`, { headers: cookieOf("u-ok") });
      assert.equal(answer.status, 200);
      assert.equal(JSON.parse(answer.body).headers["x-edge-segments"], "vip");
    });

    await t.step(
      "signed syncs (views, a rules change) during load: every request and push succeeds",
      async () => {
        const statuses = new Map<number, number>();
        let next = 0;
        const total = 300;
        const worker = async () => {
          while (next < total) {
            const i = next++;
            const answer = await get(`${service.url}/echo/load-${i}`, {
              headers: i % 3 === 0 ? cookieOf("u-ok") : { "x-geo-country": "DE" },
            });
            statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
          }
        };
        const pushes = (async () => {
          const results: Answer[] = [];
          for (let p = 0; p < 5; p++) {
            const at = new Date(Date.now() - 500).toISOString();
            results.push(
              await signedPush(service.url, `msg_load_${p}`, [
                { kind: "view", userId: "u-ok", itemId: `p${p}`, at },
                ...(p === 2 ? [{ kind: "rules", version: 2, rules: { ...SEED_RULES, version: 2 } }] : []),
              ]),
            );
          }
          return results;
        })();
        await Promise.all(Array.from({ length: 16 }, worker));
        for (const push of await pushes) assert.equal(push.status, 200, push.body);
        assert.deepEqual([...statuses], [[200, total]]);
        // The rules change reaches the request path (kv.watch, with polling as the fallback).
        let version = "";
        for (let attempt = 0; attempt < 60 && version !== "2"; attempt++) {
          const answer = await get(`${service.url}/echo/rules`);
          version = JSON.parse(answer.body).headers["x-edge-rules-version"];
          if (version !== "2") await new Promise((resolve) => setTimeout(resolve, 50));
        }
        assert.equal(version, "2");
      },
    );

    await t.step("after every fault: no crash, no Uncaught, bounded RSS and open descriptors", async () => {
      await assertServing(service);
      const peak = await service.peakRss();
      assert.ok(peak < 300 * MB, `peak RSS ${Math.round(peak / MB)} MB`);
      // Let closed connections settle, then compare descriptor counts.
      let fds = await openFds(service.pid);
      for (let attempt = 0; attempt < 20 && fds > fdsAtStart + 4; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        fds = await openFds(service.pid);
      }
      assert.ok(fds <= fdsAtStart + 4, `open descriptors grew from ${fdsAtStart} to ${fds}`);
      console.log(`faults: peak RSS ${Math.round(peak / MB)} MB, fds ${fdsAtStart} → ${fds}`);
    });
  } finally {
    const status = await service.stop();
    await backend.close();
    await origin.close();
    await Deno.remove(dir, { recursive: true });
    assert.equal(status.code, 0, service.output());
    assert.doesNotMatch(service.output(), /Uncaught|panicked/);
  }
});

Deno.test("SIGTERM during load: requests in flight finish, later ones are refused, exit 0", async () => {
  const dir = await Deno.makeTempDir();
  const origin = startOrigin(() =>
    new Promise((resolve) => setTimeout(() => resolve(new Response("done")), 300))
  );
  const service = await startService({ ORIGIN_URL: origin.url, KV_PATH: `${dir}/edge.kv` });
  try {
    // Fresh connections, so no request rides an idle pooled one the server is closing.
    using client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    const inflight = Array.from(
      { length: 20 },
      (_, i) =>
        fetch(`${service.url}/inflight/${i}`, { client, signal: AbortSignal.timeout(LIVENESS_MS) })
          .then(async (res) => ({ status: res.status, body: await res.text() })),
    );
    // All 20 have reached the origin (and so are in flight) before the signal.
    for (let attempt = 0; attempt < 100 && origin.seen.length < 20; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(origin.seen.length, 20);
    service.child.kill("SIGTERM");
    const later = await Promise.allSettled(
      Array.from({ length: 10 }, async () => {
        await new Promise((resolve) => setTimeout(resolve, 100));
        const res = await fetch(`${service.url}/late`, { client, signal: AbortSignal.timeout(LIVENESS_MS) });
        return { status: res.status, body: await res.text() };
      }),
    );
    for (const answer of await Promise.all(inflight)) assert.deepEqual(answer, { status: 200, body: "done" });
    for (const outcome of later) {
      // Refused: the listener closed with the signal (a timeout would mean it hung instead).
      assert.equal(outcome.status, "rejected", JSON.stringify(outcome));
      assert.notEqual((outcome.reason as Error).name, "TimeoutError");
    }
    assert.deepEqual(origin.seen.filter((seen) => seen.path === "/late"), [], "no late request was served");
    // The process exits by itself; no second signal (which would exit at once, non-zero).
    const status = await Promise.race([
      service.child.status,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no exit within 15 s")), 15_000)),
    ]);
    assert.equal(status.code, 0, service.output());
    assert.doesNotMatch(service.output(), /Uncaught|panicked/);
  } finally {
    await service.stop();
    await origin.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** A `Deno.Kv`-shaped adapter over a real store whose every operation fails while `failing.on` is set. */
function failingKv(real: Deno.Kv, how: "throw" | "reject"): { kv: Deno.Kv; failing: { on: boolean } } {
  const failing = { on: true };
  const fault = () => new Error("injected KV failure: database is unavailable");
  const failingOp = (op: Deno.AtomicOperation): Deno.AtomicOperation => {
    // An atomic operation builds fine and fails on commit, like a lost connection.
    const proxy: Deno.AtomicOperation = new Proxy(op, {
      get(target, property) {
        if (property === "commit") return () => Promise.reject(fault());
        const value = Reflect.get(target, property, target);
        return typeof value === "function"
          ? (...args: unknown[]) => {
            value.apply(target, args);
            return proxy;
          }
          : value;
      },
    });
    return proxy;
  };
  const failingIterator = () => ({
    next: () => Promise.reject(fault()),
    [Symbol.asyncIterator]() {
      return this;
    },
  });
  const kv = new Proxy(real, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      if (property === "close") return value.bind(target);
      return (...args: unknown[]) => {
        if (!failing.on) return value.apply(target, args);
        if (how === "throw") throw fault();
        if (property === "atomic") return failingOp(value.apply(target, args));
        if (property === "watch") {
          return new ReadableStream({ pull: (controller) => controller.error(fault()) });
        }
        if (property === "list") return failingIterator();
        return Promise.reject(fault());
      };
    },
  });
  return { kv, failing };
}

for (const how of ["throw", "reject"] as const) {
  Deno.test(`a failing KV (${how}s on every call) degrades to defaults and 503s, never a crash or a leak`, async () => {
    const origin = startOrigin((seen) =>
      Response.json({ path: seen.path, user: seen.headers.get("x-edge-user") })
    );
    const deps = await makeDeps(origin.url, {
      rules: SEED_RULES,
      env: { SYNC_SECRETS: SECRET, CONTEXT_MAX_STALE_MS: "0" },
      now: () => Date.now(),
    });
    const real = deps.kv;
    const { kv, failing } = failingKv(real, how);
    const app = createApp({ ...deps, kv });
    const session = sessionEvent("u-kv");
    const request = (path: string, init: RequestInit = {}) => app.request(path, init);
    const push = async (id: string, events: unknown[]) => {
      const body = JSON.stringify({
        type: "edge.sync",
        timestamp: new Date().toISOString(),
        data: { events },
      });
      const timestamp = Math.floor(Date.now() / 1000);
      return await request("/_edge/sync", {
        method: "POST",
        body,
        headers: {
          "webhook-id": id,
          "webhook-timestamp": String(timestamp),
          "webhook-signature": await sign(SECRET, { id, timestamp, body }),
        },
      });
    };
    try {
      failing.on = false;
      assert.equal((await push("msg_kv_session", [session])).status, 200);
      failing.on = true;

      const anonymous = await request("/api/products/x", { headers: { "x-geo-country": "DE" } });
      assert.equal(anonymous.status, 200);
      assert.equal((await anonymous.json()).path, "/api/products/promotions/global");

      const loggedIn = await request("/page", { headers: cookieOf("u-kv") });
      assert.equal(loggedIn.status, 200, "a failing session lookup means anonymous, not an error");
      assert.equal((await loggedIn.json()).user, null);

      const ready = await request("/_edge/ready");
      assert.equal(ready.status, 503);
      assert.equal((await ready.json()).kv, "failing");

      const sync = await push("msg_kv_view", [{
        kind: "view",
        userId: "u-kv",
        itemId: "p1",
        at: session.at,
      }]);
      const syncBody = await sync.text();
      assert.equal(sync.status, 503, syncBody);
      assert.equal(JSON.parse(syncBody).error.code, "store_unavailable");
      assert.doesNotMatch(syncBody, /injected|database/);

      const flags = await request("/ofrep/v1/evaluate/flags", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ context: { targetingKey: "u-kv" } }),
      });
      assert.ok(flags.status < 500, `OFREP answered ${flags.status}`);
      await flags.body?.cancel();

      // KV back: the same app personalizes again and the retried push applies.
      failing.on = false;
      const back = await request("/page", { headers: cookieOf("u-kv") });
      assert.equal((await back.json()).user, "u-kv");
      assert.equal(
        (await push("msg_kv_view", [{ kind: "view", userId: "u-kv", itemId: "p1", at: session.at }])).status,
        200,
      );
      assert.equal((await request("/_edge/ready")).status, 200);
    } finally {
      failing.on = false;
      real.close();
      await origin.close();
    }
  });
}
