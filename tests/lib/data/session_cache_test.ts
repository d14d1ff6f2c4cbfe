import assert from "node:assert/strict";
import { SessionCache } from "../../../lib/data/session_cache.ts";
import { resolveIdentity } from "../../../lib/pipeline/identity.ts";
import { hashSessionId, keys } from "../../../lib/data/store.ts";

Deno.test("session cache serves fresh lookups, forgets stale or expired ones, and stays bounded", () => {
  const cache = new SessionCache({ maxEntries: 2, maxStaleMs: 1000 });
  cache.set("a", { userId: "u1", expiresAt: 5000 }, 0);
  assert.deepEqual(cache.get("a", 999), { userId: "u1" });
  assert.equal(cache.get("a", 1000), undefined, "stale after maxStaleMs");
  cache.set("b", { userId: "u2", expiresAt: 100 }, 0);
  assert.equal(cache.get("b", 100), undefined, "never past the session's own expiry");
  cache.set("c", undefined, 0);
  assert.deepEqual(cache.get("c", 10), { userId: undefined }, "absent sessions are cached too");
  cache.set("d", { userId: "u4", expiresAt: 5000 }, 0);
  cache.set("e", { userId: "u5", expiresAt: 5000 }, 0);
  assert.equal(cache.size, 2);
  assert.equal(cache.get("c", 10), undefined, "least recently used evicted");
});

Deno.test("identity reads KV once per session while the cache is fresh", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    await kv.set(keys.session(await hashSessionId("tok")), {
      ended: false,
      userId: "u1",
      at: 0,
      expiresAt: 10_000,
    });
    let reads = 0;
    const counting = new Proxy(kv, {
      get(target, prop) {
        if (prop === "get") reads++;
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const sessionCache = new SessionCache({ maxEntries: 10, maxStaleMs: 2000 });
    const options = (now: number) => ({
      kv: counting,
      now,
      sessionCookie: "sid",
      trustedHop: false,
      randomId: () => "0123456789abcdef0123",
      sessionCache,
    });
    for (let i = 0; i < 5; i++) {
      assert.equal(
        (await resolveIdentity(new Headers({ cookie: "sid=tok" }), options(100 + i))).userId,
        "u1",
      );
    }
    // One lookup: the session, then the user's erasure tombstone.
    assert.equal(reads, 2);
    await resolveIdentity(new Headers({ cookie: "sid=tok" }), options(3000));
    assert.equal(reads, 4, "re-read once stale");
  } finally {
    kv.close();
  }
});

Deno.test("a lookup in flight across an invalidation is not cached; invalidation also forgets unknown sessions", () => {
  const cache = new SessionCache({ maxEntries: 10, maxStaleMs: 2000 });
  const before = cache.generation;
  // A sync on this instance ends u1's session while the KV read that found it is in flight.
  cache.invalidateUsers(["u1"]);
  cache.set("tok", { userId: "u1", expiresAt: 10_000 }, 0, before);
  assert.equal(cache.get("tok", 1), undefined, "the stale lookup was not stored");
  cache.set("tok", { userId: "u1", expiresAt: 10_000 }, 0, cache.generation);
  assert.deepEqual(cache.get("tok", 1), { userId: "u1" });
  // A cookie used before its session was pushed: the push (for any user) clears "no such session".
  cache.set("new-tok", undefined, 0);
  cache.invalidateUsers(["u2"]);
  assert.equal(cache.get("new-tok", 1), undefined);
  assert.deepEqual(cache.get("tok", 1), { userId: "u1" }, "other users' sessions stay");
});
