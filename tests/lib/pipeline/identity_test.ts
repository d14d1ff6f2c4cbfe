import assert from "node:assert/strict";
import { resolveIdentity } from "../../../lib/pipeline/identity.ts";
import { formatSticky, parseSticky } from "../../../lib/pipeline/sticky.ts";
import { hashSessionId, keys } from "../../../lib/data/store.ts";
import { parseCookies } from "../../../lib/http/cookies.ts";
import { DeadlineError, DeadlineSweep } from "../../../lib/support/deadlines.ts";
import { stallingReads, stickyCookie, TEST_STICKY_SECRET } from "../../support.ts";
import { StickySigner } from "../../../lib/pipeline/sticky.ts";

const NOW = Date.UTC(2026, 10, 26, 12);

async function withKv(fn: (kv: Deno.Kv) => Promise<void>) {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(kv);
  } finally {
    kv.close();
  }
}

async function storeSession(kv: Deno.Kv, sessionId: string, userId: string, expiresAt = NOW + 60_000) {
  await kv.set(keys.session(await hashSessionId(sessionId)), {
    ended: false,
    userId,
    at: NOW - 1000,
    expiresAt,
  });
}

const options = (kv: Deno.Kv, userIdHeader?: string) => ({
  kv,
  now: NOW,
  sessionCookie: "sid",
  userIdHeader,
  randomId: () => "11111111-2222-3333-4444-555555555555",
});

Deno.test("identity prefers the session user, looked up by the session id's hash", async () => {
  await withKv(async (kv) => {
    await storeSession(kv, "raw-session-token", "u1");
    const headers = new Headers({
      cookie: "sid=raw-session-token; ep_uid=anon_abcdefghijklmnop",
      "x-user-id": "u2",
    });
    const identity = await resolveIdentity(headers, options(kv, "x-user-id"));
    assert.equal(identity.userId, "u1");
    assert.equal(identity.key, "u1");
    assert.equal(identity.source, "session");
    assert.equal(identity.anonymousId, "anon_abcdefghijklmnop");
    assert.equal(identity.newAnonymousId, false);
    // The raw token is never a key.
    for await (const entry of kv.list({ prefix: [] })) {
      assert.ok(!JSON.stringify(entry.key).includes("raw-session-token"));
    }
  });
});

Deno.test("identity ignores expired or unknown sessions", async () => {
  await withKv(async (kv) => {
    await storeSession(kv, "old", "u1", NOW - 1);
    const identity = await resolveIdentity(new Headers({ cookie: "sid=old" }), options(kv));
    assert.equal(identity.source, "anonymous");
    assert.equal(identity.userId, undefined);
  });
});

Deno.test("identity reads a user id header only when told which one (a peer in USER_ID_PROXIES)", async () => {
  await withKv(async (kv) => {
    const headers = new Headers({ "x-user-id": "u9", "x-auth-request-user": "alice" });
    // Without USER_ID_HEADER for this peer, no header names anybody.
    const anonymous = await resolveIdentity(headers, options(kv));
    assert.equal(anonymous.userId, undefined);
    assert.equal(anonymous.source, "anonymous");
    const named = await resolveIdentity(headers, options(kv, "x-auth-request-user"));
    assert.equal(named.userId, "alice");
    assert.equal(named.source, "header");
    // x-user-id is just another header when USER_ID_HEADER names a different one.
    const other = await resolveIdentity(
      new Headers({ "x-user-id": "u9" }),
      options(kv, "x-auth-request-user"),
    );
    assert.equal(other.userId, undefined);
    // A value that is not a valid user id names nobody.
    const bad = await resolveIdentity(new Headers({ "x-user-id": "u 9" }), options(kv, "x-user-id"));
    assert.equal(bad.userId, undefined);
  });
});

Deno.test("identity honours a valid ep_uid cookie and replaces an invalid one", async () => {
  await withKv(async (kv) => {
    const kept = await resolveIdentity(new Headers({ cookie: "ep_uid=abcdefghijklmnop1234" }), options(kv));
    assert.equal(kept.key, "abcdefghijklmnop1234");
    assert.equal(kept.newAnonymousId, false);
    const replaced = await resolveIdentity(new Headers({ cookie: "ep_uid=<script>" }), options(kv));
    assert.equal(replaced.key, "11111111-2222-3333-4444-555555555555");
    assert.equal(replaced.newAnonymousId, true);
  });
});

Deno.test("identity falls back to anonymous when the session lookup fails", async () => {
  const kv = await Deno.openKv(":memory:");
  kv.close();
  const errors: unknown[] = [];
  const identity = await resolveIdentity(new Headers({ cookie: "sid=abc" }), {
    ...options(kv),
    onLookupError: (error) => errors.push(error),
  });
  assert.equal(identity.source, "anonymous");
  assert.equal(errors.length, 1);
});

Deno.test("sticky cookie round-trips and drops malformed parts", () => {
  assert.deepEqual([...parseSticky("hero:a|checkout:control|bad|x:|:y|e v:1")], [["hero", "a"], [
    "checkout",
    "control",
  ]]);
  assert.equal(formatSticky({ hero: "a", checkout: "control" }), "checkout:control|hero:a");
});

Deno.test("identity believes only a signed sticky cookie, and asks for any other to be replaced", async () => {
  await withKv(async (kv) => {
    const stickySigner = new StickySigner([TEST_STICKY_SECRET, "older-sticky-secret-0123456789"]);
    const resolve = (cookie: string, signer: StickySigner | null = stickySigner) =>
      resolveIdentity(new Headers({ cookie }), { ...options(kv), stickySigner: signer ?? undefined });
    const signed = await resolve(stickyCookie("hero:b"));
    assert.deepEqual([[...signed.sticky], signed.stickyRewrite], [[["hero", "b"]], false]);
    const older = await resolve(stickyCookie("hero:b", "older-sticky-secret-0123456789"));
    assert.deepEqual([[...older.sticky], older.stickyRewrite], [[["hero", "b"]], true]);
    for (const cookie of ["ep_exp=hero%3Ab", stickyCookie("hero:b", "unknown-secret-0123456789")]) {
      const forged = await resolve(cookie);
      assert.deepEqual([forged.sticky.size, forged.stickyRewrite], [0, true], cookie);
    }
    const none = await resolve("ep_uid=abcdefghijklmnop1234");
    assert.deepEqual([none.sticky.size, none.stickyRewrite], [0, false]);
    // Without a signer no sticky cookie is believed at all.
    assert.equal((await resolve(stickyCookie("hero:b"), null)).sticky.size, 0);
  });
});

Deno.test("cookie parsing is total on arbitrary input", () => {
  assert.deepEqual([...parseCookies('a=1; b=%ZZ; =x; c; a=2; d="q"')], [["a", "1"], ["b", "%ZZ"], [
    "d",
    "q",
  ]]);
  for (let i = 0; i < 500; i++) {
    const bytes = crypto.getRandomValues(new Uint8Array(64));
    parseCookies(String.fromCharCode(...bytes));
  }
});

Deno.test("identity falls back to anonymous when the session lookup stalls past KV_TIMEOUT_MS", async () => {
  await withKv(async (kv) => {
    await storeSession(kv, "sess-1", "alice");
    const sweep = new DeadlineSweep(5);
    const errors: unknown[] = [];
    const started = performance.now();
    const identity = await resolveIdentity(new Headers({ cookie: "sid=sess-1" }), {
      ...options(stallingReads(kv)),
      onLookupError: (error) => errors.push(error),
      kvWithin: (read) => sweep.within(read, 30, "KV read"),
    });
    assert.ok(performance.now() - started < 1000);
    assert.equal(identity.source, "anonymous");
    assert.ok(errors[0] instanceof DeadlineError);
  });
});
