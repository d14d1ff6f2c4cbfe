import assert from "node:assert/strict";
import { BackendClient } from "../../../lib/data/backend.ts";
import { type Config, parseConfig } from "../../../lib/app/config.ts";
import {
  gpcRequested,
  loadUserContext,
  type LoadUserContextOptions,
  withoutBehaviouralData,
} from "../../../lib/pipeline/context.ts";
import { ContextCache } from "../../../lib/data/context_cache.ts";
import { keys, VIEWS_COMPACT_SLACK } from "../../../lib/data/store.ts";
import { readRelated, readUserContext } from "../../../lib/data/readers.ts";
import { applyBackendEvents, applyOptionsFromConfig } from "../../../lib/sync/apply.ts";
import { DeadlineError, DeadlineSweep } from "../../../lib/support/deadlines.ts";
import { stallingReads } from "../../support.ts";

const T0 = Date.UTC(2026, 10, 26, 12, 0, 0);
const TOKEN = "backend-token-0123456789";
const iso = (ms: number) => new Date(ms).toISOString();

interface Backend {
  url: string;
  calls: string[];
  answer: (userId: string) => Response | Promise<Response>;
  close(): Promise<void>;
}

/** A real backend on port 0 answering `/edge/users/{id}/context`. */
function startBackend(answer: Backend["answer"]): Backend {
  const backend: Backend = { url: "", calls: [], answer, close: () => server.shutdown() };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, (request) => {
    const match = /^\/edge\/users\/([^/]+)\/context$/.exec(new URL(request.url).pathname);
    if (!match || request.headers.get("authorization") !== `Bearer ${TOKEN}`) {
      return new Response("bad request", { status: 400 });
    }
    const userId = decodeURIComponent(match[1]!);
    backend.calls.push(userId);
    return backend.answer(userId);
  });
  backend.url = `http://127.0.0.1:${server.addr.port}`;
  return backend;
}

interface Setup {
  kv: Deno.Kv;
  config: Config;
  cache: ContextCache;
  clock: { now: number };
  backend?: BackendClient;
  options(extra?: Partial<LoadUserContextOptions>): LoadUserContextOptions;
  push(events: unknown[]): Promise<void>;
}

async function withSetup(backendUrl: string | undefined, fn: (setup: Setup) => Promise<void>): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  const config = parseConfig({
    ORIGIN_URL: "http://127.0.0.1:1",
    CONTEXT_MAX_STALE_MS: "2000",
    CONTEXT_MAX_AGE_MS: "60000",
    ...(backendUrl ? { BACKEND_URL: backendUrl, BACKEND_TOKEN: TOKEN, BACKEND_TIMEOUT_MS: "500" } : {}),
  });
  const clock = { now: T0 };
  const cache = new ContextCache({
    maxEntries: config.contextCacheMaxEntries,
    maxBytes: config.contextCacheMaxBytes,
    maxStaleMs: config.contextMaxStaleMs,
  });
  const backend = backendUrl
    ? new BackendClient({
      baseUrl: new URL(backendUrl),
      token: TOKEN,
      timeoutMs: 500,
      fetch,
      now: () => clock.now,
    })
    : undefined;
  const setup: Setup = {
    kv,
    config,
    cache,
    clock,
    backend,
    options: (extra = {}) => ({ kv, now: clock.now, config, cache, backend, ...extra }),
    // A push through the sync path, with the invalidation main.ts wires for this instance.
    push: async (events) => {
      await applyBackendEvents(
        kv,
        events,
        applyOptionsFromConfig(config, clock.now, { onUsersChanged: (users) => cache.invalidateMany(users) }),
      );
    },
  };
  try {
    await fn(setup);
  } finally {
    kv.close();
  }
}

const view = (userId: string, itemId: string, at: number) => ({ kind: "view", userId, itemId, at: iso(at) });
const cart = (userId: string, version: number, at: number, itemIds: string[]) => ({
  kind: "cart",
  userId,
  version,
  at: iso(at),
  items: itemIds.map((itemId) => ({ itemId, qty: 1 })),
});
const profile = (userId: string, version: number, at: number, segments: string[]) => ({
  kind: "profile",
  userId,
  version,
  at: iso(at),
  segments,
  attributes: { locale: "de-DE" },
});

Deno.test("context: an anonymous visitor gets an empty context without any read", async () => {
  await withSetup(undefined, async ({ options, cache }) => {
    const context = await loadUserContext(undefined, options());
    assert.equal(context.source, "none");
    assert.equal(context.outcome.reason, "anonymous");
    assert.deepEqual(cache.stats().misses, 0);
  });
});

Deno.test("context: with GPC no behavioural data is loaded or returned", async () => {
  await withSetup(undefined, async ({ options, push, cache }) => {
    await push([view("u1", "p1", T0 - 1000), profile("u1", 1, T0 - 1000, ["vip"])]);
    const context = await loadUserContext("u1", options({ gpc: true }));
    assert.deepEqual(
      [context.recentViews, context.cartItemIds, context.segments, context.source, context.outcome.reason],
      [[], [], [], "none", "gpc"],
    );
    assert.equal(cache.stats().entries, 0);
    const full = await loadUserContext("u1", options());
    assert.equal(full.segments.length, 1);
    const stripped = withoutBehaviouralData(full);
    assert.deepEqual([stripped.recentViews, stripped.segments, stripped.attributes], [[], [], {}]);
    assert.equal(gpcRequested(new Headers({ "sec-gpc": "1" })), true);
    assert.equal(gpcRequested(new Headers({ "sec-gpc": "0" })), false);
    assert.equal(gpcRequested(new Headers()), false);
  });
});

Deno.test("context: KV data is read once, then served from the cache until it is stale", async () => {
  await withSetup(undefined, async ({ options, push, clock, cache }) => {
    await push([
      view("u1", "p1", T0 - 2000),
      view("u1", "p2", T0 - 1000),
      cart("u1", 1, T0 - 1000, ["p9"]),
      profile("u1", 1, T0 - 1000, ["vip"]),
    ]);
    const first = await loadUserContext("u1", options());
    assert.equal(first.source, "kv");
    assert.deepEqual(first.recentViews.map((v) => v.itemId), ["p2", "p1"]);
    assert.deepEqual(first.cartItemIds, ["p9"]);
    assert.deepEqual(first.segments, ["vip"]);
    assert.deepEqual(first.attributes, { locale: "de-DE" });
    assert.deepEqual(first.outcome, { cache: "miss", kv: "ok", backend: "skipped", stale: false });

    clock.now += 1999;
    const second = await loadUserContext("u1", options());
    assert.equal(second.source, "cache");
    assert.equal(second.outcome.cache, "hit");

    // Written behind the cache's back (another instance's sync): visible once the entry is stale.
    await applyBackendEvents(
      options().kv,
      [view("u1", "p3", T0)],
      applyOptionsFromConfig(options().config, T0),
    );
    assert.equal((await loadUserContext("u1", options())).recentViews.length, 2);
    clock.now += 1;
    const third = await loadUserContext("u1", options());
    assert.equal(third.source, "kv");
    assert.deepEqual(third.recentViews.map((v) => v.itemId), ["p3", "p2", "p1"]);
    assert.equal(cache.stats().hits, 2);
  });
});

Deno.test("context: KV views come newest first, one per item, at most RECENT_VIEWS_MAX, none erased", async () => {
  await withSetup(undefined, async ({ options, push, config }) => {
    await push([
      view("u1", "p1", T0 - 5000),
      view("u1", "p2", T0 - 4000),
      view("u1", "p3", T0 - 3000),
      view("u1", "p1", T0 - 2000),
      view("u1", "p4", T0 - 1000),
      view("u1", "p0", T0 - 9000),
    ]);
    const read = (recentViewsMax: number) =>
      loadUserContext("u1", options({ cache: undefined, config: { ...config, recentViewsMax } }));
    assert.deepEqual((await read(3)).recentViews, [
      { itemId: "p4", at: T0 - 1000 },
      { itemId: "p1", at: T0 - 2000 },
      { itemId: "p3", at: T0 - 3000 },
    ]);
    assert.deepEqual((await read(20)).recentViews.map((v) => v.itemId), ["p4", "p1", "p3", "p2", "p0"]);
    await push([{ kind: "erase", userId: "u1", at: iso(T0 - 2500) }]);
    assert.deepEqual((await read(3)).recentViews.map((v) => v.itemId), ["p4", "p1"]);
  });
});

Deno.test("context: a sync applied by this instance invalidates the user's entry at once", async () => {
  await withSetup(undefined, async ({ options, push }) => {
    await push([view("u1", "p1", T0 - 1000)]);
    assert.equal((await loadUserContext("u1", options())).recentViews.length, 1);
    await push([view("u1", "p2", T0)]);
    const after = await loadUserContext("u1", options());
    assert.equal(after.source, "kv");
    assert.deepEqual(after.recentViews.map((v) => v.itemId), ["p2", "p1"]);
  });
});

Deno.test("context: without a backend, an unknown user is negatively cached", async () => {
  await withSetup(undefined, async ({ options, cache }) => {
    const first = await loadUserContext("ghost", options());
    assert.equal(first.source, "none");
    const second = await loadUserContext("ghost", options());
    assert.equal(second.outcome.cache, "negative_hit");
    assert.equal(cache.stats().negativeHits, 1);
  });
});

Deno.test("context: read-through fills a user the edge does not know, through the apply path", async () => {
  const backend = startBackend((userId) =>
    Response.json({
      events: [
        view(userId, "p1", T0 - 5000),
        view(userId, "p2", T0 - 4000),
        cart(userId, 3, T0 - 4000, ["p7"]),
        profile(userId, 2, T0 - 4000, ["vip"]),
        { kind: "related", itemId: "p2", version: 1, related: [{ itemId: "p5", score: 0.5 }] },
        // Not this user's: never written by a read-through.
        view("someone-else", "p1", T0 - 5000),
        { kind: "session", sessionId: "session-123456", userId, expiresAt: iso(T0 + 3_600_000), at: iso(T0) },
      ],
    })
  );
  try {
    await withSetup(backend.url, async ({ options, kv }) => {
      const context = await loadUserContext("u1", options());
      assert.equal(context.source, "backend");
      assert.deepEqual(context.recentViews.map((v) => v.itemId), ["p2", "p1"]);
      assert.deepEqual(context.cartItemIds, ["p7"]);
      assert.deepEqual(context.segments, ["vip"]);
      assert.equal(context.outcome.backend, "ok");
      assert.equal(context.outcome.ignoredEvents, 2);
      assert.deepEqual(context.outcome.applied, { applied: 5, stale: 0 });

      const stored = await readUserContext(kv, "u1", T0);
      assert.deepEqual(stored.recentViews.map((v) => v.itemId), ["p2", "p1"]);
      assert.equal(stored.cart?.version, 3);
      assert.equal((await readRelated(kv, ["p2"])).get("p2")?.version, 1);
      assert.equal((await readUserContext(kv, "someone-else", T0)).recentViews.length, 0);

      // Cached: no second backend call.
      assert.equal((await loadUserContext("u1", options())).source, "cache");
      assert.deepEqual(backend.calls, ["u1"]);
    });
  } finally {
    await backend.close();
  }
});

Deno.test("context: a read-through never regresses newer edge data (version-gated)", async () => {
  const backend = startBackend((userId) => Response.json({ events: [cart(userId, 1, T0 - 9000, ["old"])] }));
  try {
    await withSetup(backend.url, async ({ options, push, kv, clock }) => {
      // The edge holds cart v2 but its newest view is older than CONTEXT_MAX_AGE_MS.
      await push([cart("u1", 2, T0 - 120_000, ["new"]), view("u1", "p1", T0 - 120_000)]);
      clock.now = T0;
      const context = await loadUserContext("u1", options());
      assert.equal(context.source, "backend");
      assert.deepEqual(context.cartItemIds, ["new"]);
      assert.deepEqual(context.outcome.applied, { applied: 0, stale: 1 });
      assert.equal((await readUserContext(kv, "u1", T0)).cart?.version, 2);
    });
  } finally {
    await backend.close();
  }
});

Deno.test("context: a read-through never brings back what an erasure at the edge removed", async () => {
  // A lagging backend still answers with the user's activity from before the erasure.
  const backend = startBackend((userId) =>
    Response.json({
      events: [view(userId, "secret-item", T0 - 600_000), cart(userId, 1, T0 - 600_000, ["c1"])],
    })
  );
  try {
    await withSetup(backend.url, async ({ options, push, kv, clock }) => {
      await push([{ kind: "erase", userId: "u1", at: iso(T0 - 60_000) }]);
      clock.now = T0;
      const context = await loadUserContext("u1", options());
      assert.equal(context.outcome.backend, "ok");
      assert.deepEqual(context.recentViews, []);
      assert.deepEqual(context.cartItemIds, []);
      assert.deepEqual((await readUserContext(kv, "u1", T0)).recentViews, []);
    });
  } finally {
    await backend.close();
  }
});

Deno.test("context: an erasure in a read-through answer keeps edge data written after it", async () => {
  const backend = startBackend((userId) =>
    Response.json({ events: [{ kind: "erase", userId, at: iso(T0 - 300_000) }] })
  );
  try {
    await withSetup(backend.url, async ({ options, push, clock }) => {
      // The edge's cart came after the erasure the backend reports; its views are old enough
      // (beyond CONTEXT_MAX_AGE_MS) for a read-through.
      await push([cart("u1", 3, T0 - 200_000, ["kept"]), view("u1", "p1", T0 - 120_000)]);
      clock.now = T0;
      const context = await loadUserContext("u1", options());
      assert.equal(context.outcome.backend, "ok");
      assert.deepEqual(context.cartItemIds, ["kept"]);
      assert.deepEqual(context.recentViews.map((v) => v.itemId), ["p1"]);
    });
  } finally {
    await backend.close();
  }
});

Deno.test("context: fresh edge data is used without asking the backend", async () => {
  const backend = startBackend(() => Response.json({ events: [] }));
  try {
    await withSetup(backend.url, async ({ options, push }) => {
      await push([view("u1", "p1", T0 - 1000)]);
      const context = await loadUserContext("u1", options());
      assert.equal(context.source, "kv");
      assert.equal(context.outcome.backend, "skipped");
      assert.deepEqual(backend.calls, []);
    });
  } finally {
    await backend.close();
  }
});

Deno.test("context: a 404 is negatively cached and the backend is not asked again within CONTEXT_MAX_AGE_MS", async () => {
  const backend = startBackend(() => new Response("unknown", { status: 404 }));
  try {
    await withSetup(backend.url, async ({ options, clock }) => {
      const first = await loadUserContext("ghost", options());
      assert.equal(first.source, "none");
      assert.equal(first.outcome.backend, "unknown_user");
      assert.equal((await loadUserContext("ghost", options())).outcome.cache, "negative_hit");
      // Stale entry: KV is read again, but the 404 is still trusted.
      clock.now += 5000;
      const again = await loadUserContext("ghost", options());
      assert.deepEqual([again.outcome.cache, again.outcome.kv, again.outcome.backend], [
        "miss",
        "ok",
        "skipped",
      ]);
      assert.deepEqual(backend.calls, ["ghost"]);
      // After CONTEXT_MAX_AGE_MS the backend is asked again.
      clock.now += 60_000;
      await loadUserContext("ghost", options());
      assert.deepEqual(backend.calls, ["ghost", "ghost"]);
    });
  } finally {
    await backend.close();
  }
});

Deno.test("context: when the read-through fails, the stale edge data is used", async () => {
  const backend = startBackend(() => new Response("down", { status: 503 }));
  try {
    await withSetup(backend.url, async ({ options, push }) => {
      await push([view("u1", "p1", T0 - 3_600_000), profile("u1", 1, T0 - 3_600_000, ["vip"])]);
      const context = await loadUserContext("u1", options());
      assert.equal(context.source, "kv");
      assert.equal(context.outcome.backend, "failed:http_status");
      assert.deepEqual(context.recentViews.map((v) => v.itemId), ["p1"]);
      assert.deepEqual(context.segments, ["vip"]);
    });
  } finally {
    await backend.close();
  }
});

Deno.test("context: an answer with an invalid event is not applied and the edge data is used", async () => {
  const backend = startBackend((userId) =>
    Response.json({ events: [view(userId, "p1", T0), { kind: "view", userId, itemId: "", at: "yesterday" }] })
  );
  try {
    await withSetup(backend.url, async ({ options, kv }) => {
      const context = await loadUserContext("u1", options());
      assert.equal(context.outcome.backend, "invalid_events");
      assert.equal(context.source, "none");
      assert.equal((await readUserContext(kv, "u1", T0)).recentViews.length, 0);
    });
  } finally {
    await backend.close();
  }
});

Deno.test("context: a read-through never holds the request longer than the backend timeout", async () => {
  const release = Promise.withResolvers<void>();
  const backend = startBackend(async (userId) => {
    await release.promise;
    return Response.json({ events: [view(userId, "p1", T0)] });
  });
  try {
    await withSetup(backend.url, async ({ options, kv, config, clock }) => {
      const slow = new BackendClient({
        baseUrl: new URL(backend.url),
        token: TOKEN,
        timeoutMs: 50,
        fetch,
        now: () => clock.now,
      });
      const context = await loadUserContext("u1", { ...options(), backend: slow });
      assert.equal(context.outcome.backend, "failed:timeout");
      assert.equal(context.source, "none");
      assert.equal((await readUserContext(kv, "u1", T0)).recentViews.length, 0);
      assert.equal(config.backendTimeoutMs, 500);
    });
  } finally {
    release.resolve();
    await backend.close();
  }
});

Deno.test("context: 100 concurrent requests for a user unknown at the edge make 1 backend call", async () => {
  const release = Promise.withResolvers<void>();
  const backend = startBackend(async (userId) => {
    await release.promise;
    return Response.json({ events: [view(userId, "p1", T0 - 1000)] });
  });
  try {
    await withSetup(backend.url, async ({ options, cache }) => {
      const all = Array.from({ length: 100 }, () => loadUserContext("u1", options()));
      while (backend.calls.length < 1) await new Promise((resolve) => setTimeout(resolve, 5));
      release.resolve();
      const contexts = await Promise.all(all);
      assert.ok(
        contexts.every((context) => context.source === "backend" && context.recentViews.length === 1),
      );
      assert.deepEqual(backend.calls, ["u1"]);
      assert.equal(cache.stats().coalesced, 99);
    });
  } finally {
    release.resolve();
    await backend.close();
  }
});

Deno.test("context: with waitUntil the KV write of a read-through is handed off, not awaited", async () => {
  const backend = startBackend((userId) => Response.json({ events: [view(userId, "p1", T0 - 1000)] }));
  try {
    await withSetup(backend.url, async ({ options, kv }) => {
      const pending: Promise<unknown>[] = [];
      const context = await loadUserContext("u1", options({ waitUntil: (work) => pending.push(work) }));
      assert.equal(context.source, "backend");
      assert.equal(context.outcome.applied, undefined);
      assert.equal(pending.length, 1);
      await Promise.all(pending);
      assert.equal((await readUserContext(kv, "u1", T0)).recentViews.length, 1);
    });
  } finally {
    await backend.close();
  }
});

/** How many view entries (layout 2) are stored for a user. */
async function countViewEntries(kv: Deno.Kv, userId: string): Promise<number> {
  let count = 0;
  for await (const _ of kv.list({ prefix: keys.viewsPrefix(userId) })) count++;
  return count;
}

/** Pushes `batches` batches of `RECENT_VIEWS_MAX` distinct items each (all stored), newest last. */
async function pushManyViews(
  push: Setup["push"],
  config: Config,
  userId: string,
  batches: number,
): Promise<void> {
  const max = config.recentViewsMax;
  for (let b = 0; b < batches; b++) {
    await push(
      Array.from(
        { length: max },
        (_, i) => view(userId, `p${(b * max + i) % 50}`, T0 - 60_000 + b * max + i),
      ),
    );
  }
}

Deno.test("context: a read of a user with many stored views compacts them through waitUntil", async () => {
  await withSetup(undefined, async ({ options, push, config, kv }) => {
    await pushManyViews(push, config, "u1", 10);
    await push([view("u2", "p1", T0 - 1000)]);
    assert.equal(await countViewEntries(kv, "u1"), 10 * config.recentViewsMax);
    const expected = (await readUserContext(kv, "u1", T0, { recentViewsMax: config.recentViewsMax }))
      .recentViews;
    const pending: Promise<unknown>[] = [];
    const errors: string[] = [];
    const load = () =>
      loadUserContext(
        "u1",
        options({
          cache: undefined,
          waitUntil: (work) => pending.push(work),
          onError: (stage) => errors.push(stage),
        }),
      );
    const context = await load();
    assert.equal(context.source, "kv");
    assert.deepEqual(context.recentViews, expected);
    assert.equal(pending.length, 1, "one compaction handed off, not awaited");
    await Promise.all(pending);
    assert.ok(await countViewEntries(kv, "u1") <= config.recentViewsMax);
    assert.deepEqual((await load()).recentViews, expected);
    assert.equal(pending.length, 1, "a compacted user is not compacted again");
    // A user within RECENT_VIEWS_MAX + VIEWS_COMPACT_SLACK views is left alone.
    await push(Array.from({ length: VIEWS_COMPACT_SLACK }, (_, i) => view("u1", `q${i}`, T0 - 1000 + i)));
    assert.equal(await countViewEntries(kv, "u1"), config.recentViewsMax + VIEWS_COMPACT_SLACK);
    await load();
    assert.equal(pending.length, 1);
    assert.deepEqual(errors, []);
    assert.equal(
      (await loadUserContext("u2", options({ waitUntil: (work) => pending.push(work) }))).source,
      "kv",
    );
    assert.equal(pending.length, 1);
  });
});

Deno.test("context: a failed background compaction of views does not fail the read", async () => {
  await withSetup(undefined, async ({ options, push, config, kv }) => {
    await pushManyViews(push, config, "u1", 5);
    const expected = (await readUserContext(kv, "u1", T0, { recentViewsMax: config.recentViewsMax }))
      .recentViews;
    // Reads work, every commit (the compaction's deletions) fails.
    const failing = new Proxy(kv, {
      get(target, prop) {
        if (prop === "atomic") {
          return () => {
            const op = target.atomic();
            op.commit = () => Promise.reject(new Error("KV commit failed"));
            return op;
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const errors: string[] = [];
    const pending: Promise<unknown>[] = [];
    const context = await loadUserContext(
      "u1",
      options({
        kv: failing,
        waitUntil: (work) => pending.push(work),
        onError: (stage) => errors.push(stage),
      }),
    );
    assert.equal(context.source, "kv");
    assert.deepEqual(context.recentViews, expected);
    assert.equal(pending.length, 1);
    await Promise.all(pending);
    assert.deepEqual(errors, ["compact"]);
    assert.equal(await countViewEntries(kv, "u1"), 5 * config.recentViewsMax, "nothing deleted");
    // Without waitUntil the compaction is awaited, and its failure still only reported.
    const awaited = await loadUserContext(
      "u1",
      options({ kv: failing, cache: undefined, onError: (stage) => errors.push(stage) }),
    );
    assert.deepEqual([awaited.source, awaited.recentViews], ["kv", expected]);
    assert.deepEqual(errors, ["compact", "compact"]);
  });
});

Deno.test("context: when KV fails, the expired cache entry is served", async () => {
  const kv = await Deno.openKv(":memory:");
  let closed = false;
  try {
    const config = parseConfig({ ORIGIN_URL: "http://127.0.0.1:1" });
    const cache = new ContextCache({ maxEntries: 10, maxBytes: 1 << 20, maxStaleMs: 2000 });
    await applyBackendEvents(kv, [view("u1", "p1", T0 - 1000)], applyOptionsFromConfig(config, T0));
    const errors: string[] = [];
    const options = (now: number): LoadUserContextOptions => ({
      kv,
      now,
      config,
      cache,
      onError: (stage) => errors.push(stage),
    });
    assert.equal((await loadUserContext("u1", options(T0))).source, "kv");
    kv.close();
    closed = true;
    const context = await loadUserContext("u1", options(T0 + 10_000));
    assert.equal(context.source, "cache");
    assert.deepEqual([context.outcome.kv, context.outcome.stale], ["error", true]);
    assert.deepEqual(context.recentViews.map((v) => v.itemId), ["p1"]);
    const unknown = await loadUserContext("u2", options(T0 + 10_000));
    assert.deepEqual([unknown.source, unknown.outcome.stale], ["none", false]);
    // Not for ever: an entry older than CONTEXT_MAX_AGE_MS is no longer served.
    const old = await loadUserContext("u1", options(T0 + config.contextMaxAgeMs + 1));
    assert.deepEqual([old.source, old.outcome.stale, old.recentViews], ["none", false, []]);
    assert.deepEqual(errors, ["kv", "kv", "kv"]);
  } finally {
    if (!closed) kv.close();
  }
});

Deno.test("context: a stalled KV read gives up after KV_TIMEOUT_MS and degrades like a failed one", async () => {
  await withSetup(undefined, async ({ options, push, kv, clock }) => {
    await push([view("u1", "p1", T0 - 1000)]);
    let stalled = false;
    const stalling = stallingReads(kv, () => stalled);
    const sweep = new DeadlineSweep(5);
    const errors: unknown[] = [];
    const bounded = () =>
      options({
        kv: stalling,
        now: clock.now,
        onError: (_stage, error) => errors.push(error),
        kvWithin: (read) => sweep.within(read, 30, "KV read"),
      });
    assert.equal((await loadUserContext("u1", bounded())).source, "kv");
    stalled = true;
    clock.now += 5000; // the cached entry is stale: KV is asked again
    const started = performance.now();
    // Requests that join the same load give up together.
    const [first, joined] = await Promise.all([
      loadUserContext("u1", bounded()),
      loadUserContext("u1", bounded()),
    ]);
    assert.ok(performance.now() - started < 1000);
    for (const context of [first, joined]) {
      assert.deepEqual([context.source, context.outcome.kv, context.outcome.stale], ["cache", "error", true]);
      assert.deepEqual(context.recentViews.map((v) => v.itemId), ["p1"]);
    }
    const unknown = await loadUserContext("u2", bounded());
    assert.deepEqual([unknown.source, unknown.outcome.kv], ["none", "error"]);
    assert.ok(errors.length >= 2 && errors.every((error) => error instanceof DeadlineError));
  });
});
