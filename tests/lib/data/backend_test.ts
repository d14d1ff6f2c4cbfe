import assert from "node:assert/strict";
import { BackendClient, backendClientFromConfig, backendContextUrl } from "../../../lib/data/backend.ts";
import { parseConfig } from "../../../lib/app/config.ts";

const TOKEN = "backend-token-0123456789";

/** A real backend on port 0 whose answer each test sets; it records every request. */
interface TestBackend {
  url: string;
  seen: { path: string; authorization: string | null }[];
  respond: (request: Request) => Response | Promise<Response>;
  close(): Promise<void>;
}

function startBackend(respond: TestBackend["respond"]): TestBackend {
  const backend: TestBackend = {
    url: "",
    seen: [],
    respond,
    close: () => server.shutdown(),
  };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    backend.seen.push({ path: url.pathname, authorization: request.headers.get("authorization") });
    return backend.respond(request);
  });
  backend.url = `http://127.0.0.1:${server.addr.port}`;
  return backend;
}

function client(baseUrl: string, overrides: Partial<ConstructorParameters<typeof BackendClient>[0]> = {}) {
  return new BackendClient({
    baseUrl: new URL(baseUrl),
    token: TOKEN,
    timeoutMs: 1000,
    fetch: globalThis.fetch,
    now: () => 0,
    ...overrides,
  });
}

const EVENTS = [{ kind: "view", userId: "u1", itemId: "p1", at: "2026-11-26T11:59:00Z" }];

Deno.test("read-through GETs the user's context with the bearer token and returns the events", async () => {
  const backend = startBackend(() => Response.json({ events: EVENTS }));
  try {
    const result = await client(`${backend.url}/api/`).fetchUserContext("u1");
    assert.equal(result.status, "ok");
    assert.deepEqual(result.status === "ok" ? result.events : undefined, EVENTS);
    assert.deepEqual(backend.seen, [{
      path: "/api/edge/users/u1/context",
      authorization: `Bearer ${TOKEN}`,
    }]);
  } finally {
    await backend.close();
  }
});

Deno.test("read-through encodes the user id as one path segment", async () => {
  const backend = startBackend(() => Response.json({ events: [] }));
  try {
    await client(backend.url).fetchUserContext("a/b c?#%");
    assert.equal(backend.seen[0]?.path, "/edge/users/a%2Fb%20c%3F%23%25/context");
    assert.equal(backendContextUrl(new URL(backend.url), ".."), undefined);
    assert.equal(backendContextUrl(new URL(backend.url), "."), undefined);
    assert.equal(backendContextUrl(new URL(backend.url), ""), undefined);
    const result = await client(backend.url).fetchUserContext("..");
    assert.deepEqual(result, { status: "failed", reason: "invalid_user_id", durationMs: 0 });
    assert.equal(backend.seen.length, 1);
  } finally {
    await backend.close();
  }
});

Deno.test("read-through maps 404 to unknown_user without counting a failure", async () => {
  const backend = startBackend(() => new Response("no such user", { status: 404 }));
  try {
    const backendClient = client(backend.url, { failureThreshold: 1 });
    const result = await backendClient.fetchUserContext("ghost");
    assert.equal(result.status, "unknown_user");
    assert.equal(backendClient.breaker.state, "closed");
    assert.equal(backendClient.breaker.consecutiveFailures, 0);
  } finally {
    await backend.close();
  }
});

Deno.test("read-through reports 5xx, redirects and malformed bodies as failures, never throws", async () => {
  let answer: () => Response = () => new Response("down", { status: 503 });
  const backend = startBackend(() => answer());
  try {
    const backendClient = client(backend.url, { failureThreshold: 100 });
    const reasonOf = async () => {
      const result = await backendClient.fetchUserContext("u1");
      return result.status === "failed" ? [result.reason, result.httpStatus] : [result.status];
    };
    assert.deepEqual(await reasonOf(), ["http_status", 503]);
    answer = () => new Response(null, { status: 302, headers: { location: "http://127.0.0.2/steal" } });
    assert.deepEqual(await reasonOf(), ["redirect", 302]);
    answer = () => new Response("{not json", { headers: { "content-type": "application/json" } });
    assert.deepEqual(await reasonOf(), ["invalid_body", undefined]);
    answer = () => Response.json({ events: "nope" });
    assert.deepEqual(await reasonOf(), ["invalid_body", undefined]);
    answer = () => Response.json({ events: Array.from({ length: 1001 }, () => ({})) });
    assert.deepEqual(await reasonOf(), ["invalid_body", undefined]);
    const small = client(backend.url, { maxBytes: 100 });
    answer = () => Response.json({ events: Array.from({ length: 50 }, () => EVENTS[0]) });
    const tooLarge = await small.fetchUserContext("u1");
    assert.equal(tooLarge.status === "failed" ? tooLarge.reason : tooLarge.status, "too_large");
    assert.equal(backendClient.stats().failures, 5);
  } finally {
    await backend.close();
  }
});

Deno.test("read-through reports a refused connection as a network failure", async () => {
  const backend = startBackend(() => new Response("unused"));
  const url = backend.url;
  await backend.close();
  const result = await client(url).fetchUserContext("u1");
  assert.equal(result.status === "failed" ? result.reason : result.status, "network");
});

Deno.test("read-through gives up after the timeout while the backend is still working", async () => {
  const release = Promise.withResolvers<void>();
  const backend = startBackend(async () => {
    await release.promise;
    return Response.json({ events: EVENTS });
  });
  try {
    const result = await client(backend.url, { timeoutMs: 50 }).fetchUserContext("u1");
    assert.equal(result.status === "failed" ? result.reason : result.status, "timeout");
    // The backend had not answered yet: the caller was released by the timeout, not the answer.
    assert.equal(backend.seen.length, 1);
  } finally {
    release.resolve();
    await backend.close();
  }
});

Deno.test("read-through timeout holds even when the injected fetch ignores the abort signal", async () => {
  const never = () => new Promise<Response>(() => {});
  const result = await client("http://127.0.0.1:9/", { timeoutMs: 20, fetch: never }).fetchUserContext("u1");
  assert.equal(result.status === "failed" ? result.reason : result.status, "timeout");
});

Deno.test("read-through singleflight: 100 concurrent callers for one user make 1 backend call", async () => {
  const release = Promise.withResolvers<void>();
  const backend = startBackend(async () => {
    await release.promise;
    return Response.json({ events: EVENTS });
  });
  try {
    const backendClient = client(backend.url);
    const calls = Array.from({ length: 100 }, () => backendClient.fetchUserContext("u1"));
    const other = backendClient.fetchUserContext("u2");
    // Let the requests reach the server before it answers.
    while (backend.seen.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    release.resolve();
    const results = await Promise.all(calls);
    await other;
    assert.ok(results.every((result) => result.status === "ok"));
    assert.deepEqual(backend.seen.map((seen) => seen.path).sort(), [
      "/edge/users/u1/context",
      "/edge/users/u2/context",
    ]);
    assert.equal(backendClient.stats().requests, 2);
    assert.equal(backendClient.stats().coalesced, 99);
    // Once settled, the next call asks again.
    await backendClient.fetchUserContext("u1");
    assert.equal(backend.seen.length, 3);
  } finally {
    release.resolve();
    await backend.close();
  }
});

Deno.test("breaker opens after consecutive failures, probes half-open after the cool-down, closes on success", async () => {
  let healthy = false;
  const backend = startBackend(() =>
    healthy ? Response.json({ events: [] }) : new Response("down", { status: 500 })
  );
  let clock = 1_000_000;
  try {
    const backendClient = client(backend.url, { failureThreshold: 3, cooldownMs: 5000, now: () => clock });
    for (let i = 0; i < 3; i++) await backendClient.fetchUserContext(`u${i}`);
    assert.equal(backendClient.breaker.state, "open");
    assert.equal(backendClient.breaker.openedAt, clock);
    assert.equal(backend.seen.length, 3);

    // Open: answered at once, without a request.
    const rejected = await backendClient.fetchUserContext("u9");
    assert.deepEqual(rejected, { status: "failed", reason: "breaker_open", durationMs: 0 });
    assert.equal(backend.seen.length, 3);
    clock += 4999;
    assert.equal((await backendClient.fetchUserContext("u9")).status, "failed");
    assert.equal(backend.seen.length, 3);

    // Cool-down over: one probe; it fails, so the breaker opens again for a full cool-down.
    clock += 1;
    assert.equal(backendClient.breaker.state, "half_open");
    await backendClient.fetchUserContext("u9");
    assert.equal(backend.seen.length, 4);
    assert.equal(backendClient.breaker.state, "open");
    assert.equal(backendClient.breaker.openedAt, clock);

    // Next probe succeeds: closed, and calls flow again.
    clock += 5000;
    healthy = true;
    const probe = backendClient.fetchUserContext("u9");
    // While the probe is in flight, other users are still rejected.
    const during = await backendClient.fetchUserContext("u10");
    assert.equal(during.status === "failed" ? during.reason : during.status, "breaker_open");
    assert.equal((await probe).status, "ok");
    assert.equal(backendClient.breaker.state, "closed");
    assert.equal(backendClient.breaker.consecutiveFailures, 0);
    assert.equal((await backendClient.fetchUserContext("u10")).status, "ok");
    assert.equal(backendClient.stats().rejected, 3);
  } finally {
    await backend.close();
  }
});

Deno.test("breaker: a late result (failure or success) of a request sent before it opened neither ends nor decides the probe", async () => {
  // Requests for `slow-*` users wait until the test answers them; `fail*` users get a 500.
  const pending = new Map<string, PromiseWithResolvers<Response>>();
  const backend = startBackend((request) => {
    const user = new URL(request.url).pathname.split("/")[3]!;
    if (user.startsWith("fail")) return new Response("down", { status: 500 });
    const answer = Promise.withResolvers<Response>();
    pending.set(user, answer);
    return answer.promise;
  });
  let clock = 1_000_000;
  const answer = async (user: string, response: Response) => {
    while (!pending.has(user)) await new Promise((resolve) => setTimeout(resolve, 1));
    pending.get(user)!.resolve(response);
  };
  try {
    const backendClient = client(backend.url, {
      failureThreshold: 2,
      cooldownMs: 100,
      timeoutMs: 10_000,
      now: () => clock,
    });
    const early = backendClient.fetchUserContext("slow-a"); // sent while closed
    const earlyOk = backendClient.fetchUserContext("slow-b"); // sent while closed too
    await backendClient.fetchUserContext("fail1");
    await backendClient.fetchUserContext("fail2");
    assert.equal(backendClient.breaker.state, "open");

    clock += 100;
    const probe = backendClient.fetchUserContext("slow-probe");
    assert.equal(backendClient.breaker.state, "half_open");
    // The early request fails now, while the probe is still out.
    await answer("slow-a", new Response("down", { status: 500 }));
    assert.equal((await early).status, "failed");
    assert.equal(backendClient.breaker.state, "half_open");
    const second = await backendClient.fetchUserContext("slow-e");
    assert.equal(second.status === "failed" ? second.reason : second.status, "breaker_open");
    assert.ok(!backend.seen.some((seen) => seen.path.includes("slow-e")), "no second probe was sent");

    // Nor does a late success close it behind the probe's back.
    await answer("slow-b", Response.json({ events: [] }));
    assert.equal((await earlyOk).status, "ok");
    assert.equal(backendClient.breaker.state, "half_open");
    // The probe's own answer decides.
    await answer("slow-probe", Response.json({ events: [] }));
    assert.equal((await probe).status, "ok");
    assert.equal(backendClient.breaker.state, "closed");
  } finally {
    for (const waiting of pending.values()) waiting.resolve(new Response(null, { status: 404 }));
    await backend.close();
  }
});

Deno.test("read-through: beyond BACKEND_MAX_CONCURRENT users in flight, a call is answered busy at once", async () => {
  const release = Promise.withResolvers<void>();
  const backend = startBackend(async () => {
    await release.promise;
    return Response.json({ events: [] });
  });
  try {
    const backendClient = client(backend.url, { maxConcurrent: 2, failureThreshold: 1 });
    const a = backendClient.fetchUserContext("a");
    const b = backendClient.fetchUserContext("b");
    const joined = backendClient.fetchUserContext("a"); // the same user joins, it is not a new call
    assert.deepEqual(await backendClient.fetchUserContext("c"), {
      status: "failed",
      reason: "busy",
      durationMs: 0,
    });
    assert.equal(backendClient.breaker.state, "closed", "busy is not a backend failure");
    release.resolve();
    for (const result of await Promise.all([a, b, joined])) assert.equal(result.status, "ok");
    assert.equal((await backendClient.fetchUserContext("c")).status, "ok");
    assert.equal(backend.seen.length, 3);
  } finally {
    release.resolve();
    await backend.close();
  }
});

Deno.test("breaker counts timeouts as failures", async () => {
  const release = Promise.withResolvers<void>();
  const backend = startBackend(async () => {
    await release.promise;
    return Response.json({ events: [] });
  });
  try {
    const backendClient = client(backend.url, { failureThreshold: 2, timeoutMs: 30 });
    await backendClient.fetchUserContext("a");
    await backendClient.fetchUserContext("b");
    assert.equal(backendClient.breaker.state, "open");
    assert.equal(backendClient.stats().timeouts, 2);
  } finally {
    release.resolve();
    await backend.close();
  }
});

Deno.test("backendClientFromConfig builds nothing without BACKEND_URL and requires a token with it", () => {
  const base = { ORIGIN_URL: "http://127.0.0.1:8080" };
  const deps = { fetch: globalThis.fetch, now: () => 0 };
  assert.equal(backendClientFromConfig(parseConfig(base), deps), undefined);
  assert.throws(
    () => parseConfig({ ...base, BACKEND_URL: "http://127.0.0.1:9000" }),
    /BACKEND_TOKEN is required/,
  );
  const config = parseConfig({ ...base, BACKEND_URL: "http://127.0.0.1:9000", BACKEND_TOKEN: TOKEN });
  assert.equal(config.backendTimeoutMs, 300);
  assert.equal(config.contextMaxStaleMs, 2000);
  assert.ok(backendClientFromConfig(config, deps) instanceof BackendClient);
  assert.throws(() => parseConfig({ ...base, BACKEND_URL: "ftp://x" }), /BACKEND_URL/);
});
