import assert from "node:assert/strict";
import fc from "fast-check";
import { compareRulesEvents, readActiveRules, readStoredRulesStatus } from "../../../lib/rules/control.ts";
import {
  hashSessionId,
  keys,
  parseStored,
  parseViewEntry,
  TombstoneValue,
  type UserContext,
} from "../../../lib/data/store.ts";
import {
  listViewWindow,
  readRelated,
  readRuleSets,
  readSession,
  readUserContext,
} from "../../../lib/data/readers.ts";
import { applyBackendEvents, applyEvents, storeStartupRules } from "../../../lib/sync/apply.ts";
import type { ApplyOptions } from "../../../lib/sync/apply/unit.ts";
import { ApplyConflictError } from "../../../lib/sync/apply/commit.ts";
import {
  MAX_EVENT_BYTES,
  parseSyncEvents,
  storedBytes,
  type SyncEvent,
  SyncPayloadError,
} from "../../../lib/sync/schema.ts";
import { compactViews } from "../../../lib/sync/views.ts";
import { parseRules } from "../../../lib/rules/compile.ts";
import { applyOptions, withKv } from "./fixtures.ts";

const T0 = Date.UTC(2026, 10, 26, 0, 0, 0);
const NOW = T0 + 3_600_000;
const DAY = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString();
const minute = (n: number) => iso(T0 + n * 60_000);

function options(overrides: Partial<ApplyOptions> = {}): ApplyOptions {
  return applyOptions({ now: NOW, recentViewsMax: 3 }, overrides);
}

function apply(kv: Deno.Kv, wire: unknown[], overrides: Partial<ApplyOptions> = {}) {
  return applyEvents(kv, parseSyncEvents(wire), options(overrides));
}

/** What the context stage reads for a user, with the `recentViewsMax` of {@linkcode options}. */
function readContext(kv: Deno.Kv, userId: string, now = NOW): Promise<UserContext> {
  return readUserContext(kv, userId, now, { recentViewsMax: options().recentViewsMax });
}

/** A user's stored views (layout 2), newest first. */
async function storedViews(kv: Deno.Kv, userId: string): Promise<{ itemId: string; at: number }[]> {
  const out: { itemId: string; at: number }[] = [];
  for await (const entry of kv.list({ prefix: keys.viewsPrefix(userId) })) {
    const view = parseViewEntry(entry);
    assert.ok(view, `malformed view entry ${JSON.stringify(entry.key)}`);
    out.push({ itemId: view.itemId, at: view.at });
  }
  return out;
}

async function dump(kv: Deno.Kv): Promise<[Deno.KvKey, unknown][]> {
  const out: [Deno.KvKey, unknown][] = [];
  for await (const entry of kv.list({ prefix: [] })) out.push([entry.key, entry.value]);
  return out;
}

Deno.test("views keep the newest per item and only the newest RECENT_VIEWS_MAX items", async () => {
  await withKv(async (kv) => {
    const result = await apply(kv, [
      { kind: "view", userId: "u1", itemId: "p1", at: minute(1) },
      { kind: "view", userId: "u1", itemId: "p2", at: minute(2) },
      { kind: "view", userId: "u1", itemId: "p1", at: minute(5) },
      { kind: "view", userId: "u1", itemId: "p3", at: minute(3) },
      { kind: "view", userId: "u1", itemId: "p4", at: minute(4) },
      { kind: "view", userId: "u1", itemId: "p4", at: minute(4) },
    ]);
    assert.deepEqual(result, { applied: 3, stale: 3 }, "p2 is beyond the batch's own newest three");
    const context = await readContext(kv, "u1", NOW);
    assert.deepEqual(context.recentViews.map((view) => view.itemId), ["p1", "p4", "p3"]);
    assert.equal(context.recentViews[0]!.at, T0 + 5 * 60_000);
    // Written blind (nothing is read), so it counts as applied, yet reads do not return it.
    assert.deepEqual(await apply(kv, [{ kind: "view", userId: "u1", itemId: "p2", at: minute(2) }]), {
      applied: 1,
      stale: 0,
    });
    assert.deepEqual((await readContext(kv, "u1")).recentViews, context.recentViews);
    assert.deepEqual((await readUserContext(kv, "u1", NOW, { recentViewsMax: 1 })).recentViews, [
      { itemId: "p1", at: T0 + 5 * 60_000 },
    ]);
  });
});

Deno.test("views are one key each, written without reading; compaction deletes every view a read cannot return", async () => {
  await withKv(async (kv) => {
    // Fails the test if the apply path read anything for views.
    const reads: string[] = [];
    const counting = new Proxy(kv, {
      get(target, prop) {
        if (prop === "get" || prop === "getMany" || prop === "list") reads.push(prop);
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    await applyEvents(
      counting,
      parseSyncEvents([
        { kind: "view", userId: "u1", itemId: "p1", at: minute(1) },
        { kind: "view", userId: "u1", itemId: "p2", at: minute(2) },
      ]),
      options(),
    );
    assert.deepEqual(reads, [], "views are written blind");
    for (const [i, itemId] of ["p9", "p3", "p1", "p2", "p1", "p2", "p1"].entries()) {
      await apply(kv, [{ kind: "view", userId: "u1", itemId, at: minute(i + 3) }]);
    }
    assert.equal((await storedViews(kv, "u1")).length, 9, "older views of an item stay until compacted");
    const before = await readContext(kv, "u1");
    assert.deepEqual(before.recentViews, [
      { itemId: "p1", at: T0 + 9 * 60_000 },
      { itemId: "p2", at: T0 + 8 * 60_000 },
      { itemId: "p3", at: T0 + 4 * 60_000 },
    ]);
    // The re-views at 7, 6 and 5, and everything beyond the newest three items, go.
    assert.equal(await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: 3 }), 6);
    assert.deepEqual(
      (await storedViews(kv, "u1")).map((view) => `${view.itemId}@${(view.at - T0) / 60_000}`),
      ["p1@9", "p2@8", "p3@4"],
    );
    assert.deepEqual(await readContext(kv, "u1"), before);
    // Later writes are blind again, until the next compaction.
    await apply(kv, [{ kind: "view", userId: "u1", itemId: "p2", at: minute(10) }]);
    assert.equal((await storedViews(kv, "u1")).length, 4);
    assert.equal(await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: 3 }), 1);
    assert.deepEqual((await storedViews(kv, "u1")).map((view) => view.itemId), ["p2", "p1", "p3"]);
  });
});

Deno.test("a view written blind is dropped when an erasure's tombstone lands before its commit", async () => {
  await withKv(async (kv) => {
    let raced = false;
    const racing = new Proxy(kv, {
      get(target, prop) {
        if (prop === "atomic") {
          return () => {
            const op = target.atomic();
            const commit = op.commit.bind(op);
            op.commit = async () => {
              if (!raced) {
                raced = true;
                await target.set(keys.erased("u1"), { at: T0 + 10 * 60_000, expiresAt: NOW + DAY });
              }
              return await commit();
            };
            return op;
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const result = await applyEvents(
      racing,
      parseSyncEvents([
        { kind: "view", userId: "u1", itemId: "p1", at: minute(9) },
        { kind: "view", userId: "u1", itemId: "p2", at: minute(11) },
      ]),
      options(),
    );
    assert.ok(raced);
    assert.deepEqual(result, { applied: 1, stale: 1 });
    assert.deepEqual(await storedViews(kv, "u1"), [{ itemId: "p2", at: T0 + 11 * 60_000 }]);
  });
});

Deno.test("reads skip views at or before a tombstone, and a re-delivered erasure deletes them", async () => {
  await withKv(async (kv) => {
    await apply(kv, [
      { kind: "view", userId: "u1", itemId: "p1", at: minute(1) },
      { kind: "view", userId: "u1", itemId: "p2", at: minute(20) },
    ]);
    // As if the instance died between committing the tombstone and the compaction.
    await kv.set(keys.erased("u1"), { at: T0 + 10 * 60_000, expiresAt: NOW + DAY });
    assert.deepEqual((await readContext(kv, "u1")).recentViews.map((view) => view.itemId), ["p2"]);
    assert.equal((await storedViews(kv, "u1")).length, 2);
    assert.deepEqual(await apply(kv, [{ kind: "erase", userId: "u1", at: minute(10) }]), {
      applied: 0,
      stale: 1,
    });
    assert.deepEqual(await storedViews(kv, "u1"), [{ itemId: "p2", at: T0 + 20 * 60_000 }]);
  });
});

Deno.test("views of the single-value layout 1 are still read, merged with layout 2, and erased", async () => {
  await withKv(async (kv) => {
    await kv.set(keys.legacyViews("u1"), {
      views: [
        { itemId: "p1", at: T0 + 8 * 60_000, expiresAt: NOW + DAY },
        { itemId: "p2", at: T0 + 4 * 60_000, expiresAt: NOW + DAY },
        { itemId: "p3", at: T0 + 2 * 60_000, expiresAt: NOW - 1 },
      ],
      expiresAt: NOW + DAY,
    });
    await apply(kv, [
      { kind: "view", userId: "u1", itemId: "p2", at: minute(6) },
      { kind: "view", userId: "u1", itemId: "p1", at: minute(3) },
    ]);
    assert.deepEqual((await readContext(kv, "u1")).recentViews, [
      { itemId: "p1", at: T0 + 8 * 60_000 },
      { itemId: "p2", at: T0 + 6 * 60_000 },
    ]);
    await apply(kv, [{ kind: "erase", userId: "u1", at: minute(7) }]);
    assert.deepEqual((await readContext(kv, "u1")).recentViews, [{ itemId: "p1", at: T0 + 8 * 60_000 }]);
    assert.deepEqual(await storedViews(kv, "u1"), []);
    assert.deepEqual((await kv.get(keys.legacyViews("u1"))).value, {
      views: [{ itemId: "p1", at: T0 + 8 * 60_000, expiresAt: NOW + DAY }],
      expiresAt: NOW + DAY,
    });
  });
});

Deno.test("cart, profile, related and rules are last writer wins by version; equal is stale", async () => {
  await withKv(async (kv) => {
    const cart = (version: number, qty: number) => ({
      kind: "cart",
      userId: "u1",
      version,
      at: minute(version),
      items: [{ itemId: "p1", qty }],
    });
    assert.deepEqual(await apply(kv, [cart(2, 2), cart(1, 1)]), { applied: 1, stale: 1 });
    assert.deepEqual(await apply(kv, [cart(2, 9)]), { applied: 0, stale: 1 });
    await apply(kv, [{
      kind: "profile",
      userId: "u1",
      version: 3,
      at: minute(3),
      segments: ["vip"],
      attributes: { locale: "de-DE" },
      extra: "ignored",
    }]);
    await apply(kv, [
      { kind: "related", itemId: "p1", version: 2, related: [{ itemId: "p7", score: 0.8 }] },
      { kind: "related", itemId: "p1", version: 1, related: [] },
      { kind: "rules", version: 12, rules: { defaultRegion: "EU" } },
      { kind: "rules", version: 11, rules: { version: 11 } },
    ]);
    const context = await readContext(kv, "u1", NOW);
    assert.deepEqual(context.cart, { items: [{ itemId: "p1", qty: 2 }], version: 2, at: T0 + 2 * 60_000 });
    assert.deepEqual(context.profile, {
      segments: ["vip"],
      attributes: { locale: "de-DE" },
      version: 3,
      at: T0 + 3 * 60_000,
    });
    assert.deepEqual((await readRelated(kv, ["p1", "p9"])).get("p1")?.related, [{
      itemId: "p7",
      score: 0.8,
    }]);
    assert.equal((await readRelated(kv, ["p9"])).size, 0);
    const rules = await readActiveRules(kv);
    assert.equal(rules?.version, 12);
    assert.equal(rules?.rules.defaultRegion, "EU");
  });
});

Deno.test("sessions are stored under a hash, newest at wins, and session_end ends them", async () => {
  await withKv(async (kv) => {
    const sid = "s-raw-session-token";
    await apply(kv, [{
      kind: "session",
      sessionId: sid,
      userId: "u1",
      expiresAt: iso(NOW + DAY),
      at: minute(1),
    }]);
    assert.equal(await readSession(kv, sid, NOW), "u1");
    const stored = await dump(kv);
    assert.ok(!JSON.stringify(stored).includes(sid), "the raw session id is never stored");
    const hash = await hashSessionId(sid);
    assert.match(hash, /^[0-9a-f]{64}$/);
    assert.ok(stored.some(([key]) => key[0] === "session" && key[1] === hash));
    assert.deepEqual(await apply(kv, [{ kind: "session_end", sessionId: sid, at: minute(0) }]), {
      applied: 0,
      stale: 1,
    });
    assert.equal(await readSession(kv, sid, NOW), "u1");
    assert.deepEqual(await apply(kv, [{ kind: "session_end", sessionId: sid, at: minute(2) }]), {
      applied: 1,
      stale: 0,
    });
    assert.equal(await readSession(kv, sid, NOW), undefined);
    assert.deepEqual(
      await apply(kv, [{
        kind: "session",
        sessionId: sid,
        userId: "u1",
        expiresAt: iso(NOW + DAY),
        at: minute(1),
      }]),
      { applied: 0, stale: 1 },
    );
    assert.equal(
      (await kv.get(["user", "u1", "sessions"])).value,
      null,
      "the ended session left the user's index",
    );
  });
});

Deno.test("erase removes the user's data and sessions, and late events at or before it are dropped", async () => {
  await withKv(async (kv) => {
    await apply(kv, [
      { kind: "view", userId: "u1", itemId: "p1", at: minute(1) },
      { kind: "view", userId: "u1", itemId: "p2", at: minute(20) },
      { kind: "cart", userId: "u1", version: 1, at: minute(2), items: [] },
      { kind: "profile", userId: "u1", version: 1, at: minute(2), segments: ["a"], attributes: {} },
      { kind: "session", sessionId: "s-u1-one", userId: "u1", expiresAt: iso(NOW + DAY), at: minute(3) },
      { kind: "view", userId: "u2", itemId: "p1", at: minute(1) },
    ]);
    assert.deepEqual(await apply(kv, [{ kind: "erase", userId: "u1", at: minute(10) }]), {
      applied: 1,
      stale: 0,
    });
    let context = await readContext(kv, "u1", NOW);
    assert.deepEqual(
      context.recentViews.map((view) => view.itemId),
      ["p2"],
      "a view after the erasure stays",
    );
    assert.equal(context.cart, undefined);
    assert.equal(context.profile, undefined);
    assert.equal(await readSession(kv, "s-u1-one", NOW), undefined);
    assert.equal((await readContext(kv, "u2", NOW)).recentViews.length, 1, "other users are untouched");

    const late = await apply(kv, [
      { kind: "view", userId: "u1", itemId: "p3", at: minute(9) },
      { kind: "cart", userId: "u1", version: 2, at: minute(10), items: [] },
      { kind: "session", sessionId: "s-u1-two", userId: "u1", expiresAt: iso(NOW + DAY), at: minute(4) },
      { kind: "erase", userId: "u1", at: minute(5) },
    ]);
    assert.equal(late.applied, 1, "only the late session's end marker changes anything");
    context = await readContext(kv, "u1", NOW);
    assert.deepEqual(context.recentViews.map((view) => view.itemId), ["p2"]);
    assert.equal(context.cart, undefined);
    assert.equal(await readSession(kv, "s-u1-two", NOW), undefined);

    await apply(kv, [{
      kind: "cart",
      userId: "u1",
      version: 3,
      at: minute(11),
      items: [{ itemId: "p9", qty: 1 }],
    }]);
    assert.equal((await readContext(kv, "u1", NOW)).cart?.version, 3, "events after the erasure apply");
  });
});

Deno.test("expired values are treated as absent although KV still holds them", async () => {
  await withKv(async (kv) => {
    await apply(kv, [
      { kind: "view", userId: "u1", itemId: "old", at: iso(T0 - 40 * DAY) },
      { kind: "view", userId: "u1", itemId: "new", at: minute(1) },
      { kind: "cart", userId: "u1", version: 1, at: iso(T0 - 31 * DAY), items: [] },
      { kind: "profile", userId: "u1", version: 1, at: minute(1), segments: [], attributes: {} },
      { kind: "session", sessionId: "s-expired-1", userId: "u1", expiresAt: iso(NOW - 1), at: minute(1) },
    ]);
    assert.ok((await kv.get(["user", "u1", "cart"])).value !== null, "KV expiry is lazy");
    const context = await readContext(kv, "u1", NOW);
    assert.deepEqual(context.recentViews.map((view) => view.itemId), ["new"]);
    assert.equal(context.cart, undefined);
    assert.ok(context.profile);
    assert.equal((await readContext(kv, "u1", NOW + 31 * DAY)).profile, undefined);
    assert.equal(await readSession(kv, "s-expired-1", NOW), undefined);
  });
});

Deno.test("a large batch is split into commits within KV limits", async () => {
  await withKv(async (kv) => {
    const events = Array.from({ length: 1000 }, (_, i) => ({
      kind: "profile",
      userId: `user-${i}`,
      version: 1,
      at: minute(1),
      segments: Array.from({ length: 50 }, (_, s) => `segment-${s}-${"x".repeat(60)}`),
      attributes: {},
    }));
    assert.deepEqual(await apply(kv, events), { applied: 1000, stale: 0 });
    assert.equal((await readContext(kv, "user-999", NOW)).profile?.segments.length, 50);
  });
});

Deno.test("erasing a user with more sessions than one commit may check ends all of them", async () => {
  await withKv(async (kv) => {
    const sessions = Array.from({ length: 170 }, (_, i) => ({
      kind: "session",
      sessionId: `s-many-${i}`,
      userId: "u1",
      expiresAt: iso(NOW + DAY),
      at: minute(i % 2 ? 1 : 30),
    }));
    await apply(kv, sessions);
    await apply(kv, [{ kind: "erase", userId: "u1", at: minute(20) }]);
    for (let i = 0; i < 170; i++) {
      assert.equal(await readSession(kv, `s-many-${i}`, NOW), i % 2 ? undefined : "u1");
    }
    const index = (await kv.get<{ sessions: unknown[] }>(["user", "u1", "sessions"])).value;
    assert.equal(index?.sessions.length, 85);
  });
});

Deno.test("onUsersChanged receives the users whose data changed", async () => {
  await withKv(async (kv) => {
    const seen: string[][] = [];
    await apply(kv, [
      { kind: "view", userId: "u2", itemId: "p1", at: minute(1) },
      { kind: "view", userId: "u1", itemId: "p1", at: minute(1) },
      { kind: "related", itemId: "p1", version: 1, related: [] },
    ], { onUsersChanged: (users) => seen.push(users) });
    await apply(kv, [{ kind: "related", itemId: "p1", version: 1, related: [] }], {
      onUsersChanged: (users) => seen.push(users),
    });
    // Views are written without reading: a re-delivered one counts (a spurious invalidation).
    await apply(kv, [{ kind: "view", userId: "u1", itemId: "p1", at: minute(1) }], {
      onUsersChanged: (users) => seen.push(users),
    });
    assert.deepEqual(seen, [["u1", "u2"], ["u1"]]);
  });
});

Deno.test("a conflict in one commit still reports the users of the commits that did commit", async () => {
  await withKv(async (kv) => {
    // A concurrent writer changes a key the first commit checks, just before it commits: that
    // commit fails; the others commit.
    let atomics = 0;
    const flaky = new Proxy(kv, {
      get(target, prop) {
        if (prop === "atomic") {
          return () => {
            const op = target.atomic();
            if (atomics++ > 0) return op;
            const checked: Deno.KvKey[] = [];
            const check = op.check.bind(op);
            op.check = (...checks) => {
              checked.push(...checks.map((c) => c.key));
              return check(...checks);
            };
            const commit = op.commit.bind(op);
            op.commit = async () => {
              await target.set(checked[0]!, "written concurrently");
              return await commit();
            };
            return op;
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    // Enough users that their units need several commits (at most 100 checks each).
    const users = Array.from({ length: 120 }, (_, i) => `u${String(i).padStart(3, "0")}`);
    const seen: string[][] = [];
    await assert.rejects(
      applyEvents(
        flaky,
        parseSyncEvents(users.map((userId) => ({ kind: "view", userId, itemId: "p1", at: minute(1) }))),
        options({ maxAttempts: 1, onUsersChanged: (changed) => seen.push(changed) }),
      ),
      ApplyConflictError,
    );
    assert.ok(atomics > 1, "the batch needed more than one commit");
    const committed: string[] = [];
    for (const userId of users) {
      if ((await readContext(kv, userId, NOW)).recentViews.length) committed.push(userId);
    }
    assert.ok(committed.length > 0 && committed.length < users.length, "some but not all committed");
    assert.deepEqual(seen, [committed]);
  });
});

Deno.test("applyBackendEvents validates before applying anything", async () => {
  await withKv(async (kv) => {
    await assert.rejects(
      applyBackendEvents(
        kv,
        [{ kind: "view", userId: "u1", itemId: "p1", at: minute(1) }, { kind: "view" }],
        options(),
      ),
      SyncPayloadError,
    );
    assert.deepEqual(await dump(kv), []);
    assert.deepEqual(
      await applyBackendEvents(kv, [{ kind: "view", userId: "u1", itemId: "p1", at: minute(1) }], options()),
      { applied: 1, stale: 0 },
    );
  });
});

Deno.test("concurrent instances applying to one KV never regress a key", async () => {
  await withKv(async (kv) => {
    const carts = Array.from({ length: 30 }, (_, v) =>
      parseSyncEvents([{
        kind: "cart",
        userId: "u1",
        version: v + 1,
        at: minute(v + 1),
        items: [{ itemId: `p${v + 1}`, qty: 1 }],
      }]));
    const views = Array.from(
      { length: 30 },
      (_, v) => parseSyncEvents([{ kind: "view", userId: "u1", itemId: `p${v}`, at: minute(v) }]),
    );
    await Promise.all([...carts, ...views].reverse().map((events) => applyEvents(kv, events, options())));
    const context = await readContext(kv, "u1", NOW);
    assert.equal(context.cart?.version, 30);
    assert.deepEqual(context.recentViews.map((view) => view.itemId), ["p29", "p28", "p27"]);
  });
});

// --- rule canaries, promotion, rollback ----------------------------------------------------

const rulesEvent = (version: number, extra: Record<string, unknown> = {}) => ({
  kind: "rules",
  version,
  at: minute(version),
  rules: { defaultRegion: `R${version}` },
  ...extra,
});

Deno.test("a rules event with canary keeps the active version and runs the new one for its share", async () => {
  await withKv(async (kv) => {
    assert.deepEqual(await apply(kv, [rulesEvent(11), rulesEvent(12, { canary: 0.05 })]), {
      applied: 2,
      stale: 0,
    });
    const status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 11);
    assert.deepEqual(status.canary, { version: 12, share: 0.05 });
    assert.deepEqual(status.kept.map((entry) => entry.version), [12, 11]);
    assert.equal((await readActiveRules(kv))?.rules.defaultRegion, "R11");
    assert.equal(
      (await readSet(kv, 12)).defaultRegion,
      "R12",
      "the canary's rule set is kept under its version",
    );
    // The same canary again is stale; a larger share for the same version widens it.
    assert.deepEqual(await apply(kv, [rulesEvent(12, { canary: 0.05 })]), { applied: 0, stale: 1 });
    await apply(kv, [rulesEvent(12, { canary: 0.2, at: minute(13) })]);
    assert.deepEqual((await readStoredRulesStatus(kv)).canary, { version: 12, share: 0.2 });
  });
});

async function readSet(kv: Deno.Kv, version: number): Promise<{ defaultRegion?: string }> {
  return (await readRuleSets(kv, [version])).get(version)?.rules ?? {};
}

Deno.test("rules_promote makes the canary active; rules_rollback returns to a kept version and ends the canary", async () => {
  await withKv(async (kv) => {
    await apply(kv, [rulesEvent(11), rulesEvent(12, { canary: 0.05 })]);
    assert.deepEqual(await apply(kv, [{ kind: "rules_promote", version: 12, at: minute(20) }]), {
      applied: 1,
      stale: 0,
    });
    let status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 12);
    assert.equal(status.canary, null);
    assert.equal((await readActiveRules(kv))?.rules.defaultRegion, "R12");
    // A new canary, then a rollback to 11: the canary ends with it.
    await apply(kv, [rulesEvent(13, { canary: 0.1, at: minute(21) })]);
    assert.deepEqual((await readStoredRulesStatus(kv)).canary, { version: 13, share: 0.1 });
    await apply(kv, [{ kind: "rules_rollback", version: 11, at: minute(22) }]);
    status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 11);
    assert.equal(status.canary, null);
    // An older rollback or promote delivered late changes nothing.
    assert.deepEqual(await apply(kv, [{ kind: "rules_promote", version: 13, at: minute(21) }]), {
      applied: 1,
      stale: 0,
    });
    assert.equal((await readStoredRulesStatus(kv)).active, 11);
    assert.deepEqual(await apply(kv, [{ kind: "rules_rollback", version: 11, at: minute(22) }]), {
      applied: 0,
      stale: 1,
    });
  });
});

Deno.test("a rules event without canary ends a canary of the same or an older version, not a newer one", async () => {
  await withKv(async (kv) => {
    await apply(kv, [rulesEvent(10), rulesEvent(12, { canary: 0.05 })]);
    await apply(kv, [rulesEvent(11, { at: minute(30) })]);
    let status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 11);
    assert.deepEqual(status.canary, { version: 12, share: 0.05 });
    await apply(kv, [rulesEvent(12, { at: minute(31) })]);
    status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 12);
    assert.equal(status.canary, null);
  });
});

Deno.test("only the RULES_KEEP highest versions are kept; events for older versions are stale", async () => {
  await withKv(async (kv) => {
    await apply(kv, [1, 2, 3, 4].map((version) => rulesEvent(version)), { rulesKeep: 3 });
    let status = await readStoredRulesStatus(kv);
    assert.deepEqual(status.kept.map((entry) => entry.version), [4, 3, 2]);
    assert.equal(status.active, 4);
    assert.equal((await kv.get(["rules", "set", 1])).value, null, "the pushed-out set is deleted");
    assert.deepEqual(
      await apply(kv, [rulesEvent(1), { kind: "rules_rollback", version: 1, at: minute(50) }], {
        rulesKeep: 3,
      }),
      { applied: 0, stale: 2 },
    );
    await apply(kv, [{ kind: "rules_rollback", version: 2, at: minute(51) }], { rulesKeep: 3 });
    status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 2);
    assert.equal((await readActiveRules(kv))?.rules.defaultRegion, "R2");
  });
});

Deno.test("a promote to a version not kept is stale, yet takes effect if its rule set arrives later", async () => {
  await withKv(async (kv) => {
    await apply(kv, [rulesEvent(5)]);
    assert.deepEqual(await apply(kv, [{ kind: "rules_promote", version: 6, at: minute(40) }]), {
      applied: 0,
      stale: 1,
    });
    let status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 5, "no rule set for 6 yet: 5 stays active");
    assert.deepEqual(status.kept.map((entry) => [entry.version, entry.stored]), [[6, false], [5, true]]);
    await apply(kv, [rulesEvent(6, { canary: 0.05 })]);
    status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 6);
    assert.equal(status.canary, null);
  });
});

Deno.test("an untimed rules event sorts before timed ones; among untimed ones the highest version wins", async () => {
  await withKv(async (kv) => {
    await apply(kv, [{ kind: "rules", version: 3, rules: {} }, { kind: "rules", version: 2, rules: {} }]);
    assert.equal((await readStoredRulesStatus(kv)).active, 3);
    await apply(kv, [{ kind: "rules_rollback", version: 2, at: minute(1) }]);
    await apply(kv, [{ kind: "rules", version: 4, rules: {} }]);
    const status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 2, "an untimed push never overrides a rollback");
    assert.equal(status.kept.find((entry) => entry.version === 4)?.activatedAt, "unordered");
  });
});

Deno.test("the start-up rules are stored as an untimed push, only when KV keeps neither their version nor a newer one", async () => {
  const startup = (version: number, region = "START") =>
    parseRules({ version, defaultRegion: region }).source;
  await withKv(async (kv) => {
    assert.equal(await storeStartupRules(kv, startup(5)), "stored");
    let status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 5);
    assert.deepEqual(status.kept.map((entry) => [entry.version, entry.activatedAt]), [[5, "unordered"]]);
    // The version already kept, whatever its content: the first stored stays.
    assert.equal(await storeStartupRules(kv, startup(5, "OTHER")), "kept");
    assert.equal((await readActiveRules(kv))?.rules.defaultRegion, "START");
    // Never above a timed activation: an instance restarting after a rollback keeps it.
    await apply(kv, [{ kind: "rules_rollback", version: 5, at: minute(1) }]);
    assert.equal(await storeStartupRules(kv, startup(6)), "stored");
    status = await readStoredRulesStatus(kv);
    assert.equal(status.active, 5);
    assert.deepEqual(status.kept.map((entry) => entry.version), [6, 5]);
  });
  await withKv(async (kv) => {
    await apply(kv, [{ kind: "rules", version: 9, rules: {} }]);
    assert.equal(await storeStartupRules(kv, startup(5)), "kept", "an older file never joins newer pushes");
    assert.deepEqual((await readStoredRulesStatus(kv)).kept.map((entry) => entry.version), [9]);
    const large = parseRules({
      version: 10,
      routes: Array.from(
        { length: 300 },
        (_, i) => ({ match: `/s${i}/${"x".repeat(200)}`, redirect: { to: "/" } }),
      ),
    }).source;
    assert.equal(await storeStartupRules(kv, large), "too-large");
    assert.equal((await readStoredRulesStatus(kv)).active, 9);
  });
});

Deno.test("many rule sets in one batch are committed in chunks within KV's limits", async () => {
  await withKv(async (kv) => {
    // About 40 KiB per rule set: the 25 kept cannot go into one 800 KiB commit.
    const routes = Array.from({ length: 250 }, (_, i) => ({
      match: `/section-${i}/${"x".repeat(90)}/*`,
      redirect: { to: `/moved-${i}` },
    }));
    const events = Array.from({ length: 30 }, (_, i) => ({
      kind: "rules",
      version: i + 1,
      at: minute(i + 1),
      rules: { routes },
    }));
    assert.deepEqual(await apply(kv, events, { rulesKeep: 25 }), { applied: 25, stale: 5 });
    const status = await readStoredRulesStatus(kv);
    assert.equal(status.kept.length, 25);
    assert.equal(status.active, 30);
    assert.equal(status.kept.at(-1)?.version, 6);
  });
});

Deno.test("rules events are validated: canary needs at and a share in (0, 1); promote and rollback need at", () => {
  const problems = (event: unknown) => {
    try {
      parseSyncEvents([event]);
      return [];
    } catch (error) {
      assert.ok(error instanceof SyncPayloadError);
      return (error.details!.events as { field: string }[]).map((problem) => problem.field);
    }
  };
  assert.deepEqual(problems({ kind: "rules", version: 2, rules: {}, canary: 0.05 }), ["at"]);
  assert.deepEqual(problems({ kind: "rules", version: 2, rules: {}, at: minute(1), canary: 1 }), ["canary"]);
  assert.deepEqual(problems({ kind: "rules", version: 2, rules: {}, at: minute(1), canary: 0 }), ["canary"]);
  assert.deepEqual(problems({ kind: "rules_promote", version: 2 }), ["at"]);
  assert.deepEqual(problems({ kind: "rules_rollback", version: -1, at: minute(1) }), ["version"]);
  assert.deepEqual(problems({ kind: "rules", version: 2, rules: {}, at: minute(1), canary: 0.5 }), []);
  // Cross-references are checked like a rules file: a country in two regions.
  assert.deepEqual(problems({ kind: "rules", version: 2, rules: { regions: { EU: ["DE"], X: ["DE"] } } }), [
    "rules",
  ]);
});

// --- property: any shuffle with duplication, in any batching, converges to in-order state ----

const USERS = ["u1", "u2", "u3"];
const ITEMS = ["p1", "p2", "p3", "p4", "p5"];
const SESSIONS: [string, string][] = [["s-one-u1", "u1"], ["s-two-u1", "u1"], ["s-three-u2", "u2"], [
  "s-four-u3",
  "u3",
]];
const at = fc.integer({ min: 0, max: 40 }).map(minute);
const user = fc.constantFrom(...USERS);

/** Events as a backend emits them: a version's content and time are fixed, and time grows with version. */
const eventArb: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  {
    arbitrary: fc.record({ kind: fc.constant("view"), userId: user, itemId: fc.constantFrom(...ITEMS), at }),
    weight: 4,
  },
  fc.tuple(user, fc.integer({ min: 1, max: 5 })).map(([userId, version]) => ({
    kind: "cart",
    userId,
    version,
    at: minute(version * 8),
    items: [{ itemId: `p${version}`, qty: version }],
  })),
  fc.tuple(user, fc.integer({ min: 1, max: 5 })).map(([userId, version]) => ({
    kind: "profile",
    userId,
    version,
    at: minute(version * 8 - 3),
    segments: [`seg${version}`],
    attributes: { v: version },
  })),
  {
    arbitrary: fc.tuple(fc.constantFrom(...SESSIONS), at, fc.integer({ min: 1, max: 3 })).map((
      [[sessionId, userId], when, days],
    ) => ({ kind: "session", sessionId, userId, at: when, expiresAt: iso(NOW + days * DAY) })),
    weight: 2,
  },
  fc.tuple(fc.constantFrom(...SESSIONS), at).map(([[sessionId], when]) => ({
    kind: "session_end",
    sessionId,
    at: when,
  })),
  fc.record({ kind: fc.constant("erase"), userId: user, at }),
  fc.tuple(fc.constantFrom(...ITEMS), fc.integer({ min: 1, max: 4 })).map(([itemId, version]) => ({
    kind: "related",
    itemId,
    version,
    related: [{ itemId: "p9", score: version / 10 }],
  })),
  fc.integer({ min: 1, max: 4 }).map((version) => ({
    kind: "rules",
    version,
    rules: { defaultRegion: `R${version}` },
  })),
  // Rule canaries and their promotion or rollback: a version's rule set is fixed, its `at` grows
  // with the version, and it may be pushed as a canary, timed, or untimed.
  {
    arbitrary: fc.tuple(fc.integer({ min: 1, max: 8 }), fc.constantFrom(undefined, 0.05, 0.5)).map((
      [version, canary],
    ) => ({
      kind: "rules",
      version,
      at: minute(version * 4),
      ...(canary === undefined ? {} : { canary }),
      rules: { defaultRegion: `R${version}` },
    })),
    weight: 2,
  },
  {
    arbitrary: fc.tuple(
      fc.constantFrom("rules_promote", "rules_rollback"),
      fc.integer({ min: 1, max: 9 }),
      at,
    )
      .map(([kind, version, when]) => ({ kind, version, at: when })),
    weight: 2,
  },
);

const rulesKeepArb = fc.constantFrom(2, 3, 10);

/**
 * Asserts that nothing of an erased user's that predates the tombstone is stored: no view at or
 * before it (whether reads would return it or not), no cart or profile, no active session.
 */
async function assertErasedDataGone(kv: Deno.Kv): Promise<void> {
  const stored = await dump(kv);
  const erasedAt = new Map<unknown, number>();
  for (const [key, value] of stored) {
    if (key[0] === "erased") erasedAt.set(key[1], (value as { at: number }).at);
  }
  for (const [key, value] of stored) {
    const userId = key[0] === "user"
      ? key[1]
      : key[0] === "session"
      ? (value as { userId?: string }).userId
      : undefined;
    const tombstone = erasedAt.get(userId);
    if (tombstone === undefined) continue;
    const at = key[2] === "viewed" ? -(key[3] as number) : (value as { at?: number }).at;
    if (key[2] === "views") {
      for (const view of (value as { views: { at: number }[] }).views) assert.ok(view.at > tombstone);
    } else if (at !== undefined) {
      assert.ok(at > tombstone, `${JSON.stringify(key)} at ${at} survives the erasure at ${tombstone}`);
    }
  }
}

/**
 * Compacts users' views as the context stage does after a read that reports them: with the
 * tombstone the read saw (eventual).
 */
async function compactAsRead(kv: Deno.Kv, userIds: readonly string[]): Promise<void> {
  const tombstones = await kv.getMany<unknown[]>(userIds.map(keys.erased), { consistency: "eventual" });
  const users = new Map(
    userIds.map((userId, i) => [userId, parseStored(TombstoneValue, tombstones[i]!.value)?.at ?? -Infinity]),
  );
  await compactViews(kv, users, { recentViewsMax: options().recentViewsMax });
}

/** Stored entries but the views of layout 2, which replicas may hold more or fewer of (compaction). */
function withoutViewEntries(entries: [Deno.KvKey, unknown][]): [Deno.KvKey, unknown][] {
  return entries.filter(([key]) => !(key[0] === "user" && key[2] === "viewed"));
}

Deno.test("random event streams converge under shuffling, duplication, batching and concurrency", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(eventArb, { minLength: 1, maxLength: 30 }).chain((events) =>
        fc.record({
          events: fc.constant(events),
          delivered: fc.array(fc.nat(events.length - 1), { maxLength: 15 }).chain((dups) =>
            fc.shuffledSubarray([...events.keys(), ...dups], { minLength: events.length + dups.length })
          ),
          sizes: fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 10 }),
          lanes: fc.integer({ min: 1, max: 3 }),
          rulesKeep: rulesKeepArb,
          viewTtlMs: fc.constantFrom(30 * DAY, 40 * 60_000),
          readCompactEvery: fc.constantFrom(0, 1, 3),
        })
      ),
      async ({ events, delivered, sizes, lanes, rulesKeep, viewTtlMs, readCompactEvery }) => {
        const parsed: SyncEvent[] = parseSyncEvents(events);
        type RulesSyncEvent = Extract<SyncEvent, { kind: "rules" | "rules_promote" | "rules_rollback" }>;
        const isRules = (event: SyncEvent): event is RulesSyncEvent =>
          event.kind === "rules" || event.kind === "rules_promote" || event.kind === "rules_rollback";
        // Rule control events converge when delivered in time order (a promote or rollback that
        // arrives after a push deleted its version's rule set is stale; see mergeRulesEvents):
        // they come as one time-ordered stream, batched and with re-deliveries, beside the rest.
        const inTime = (list: SyncEvent[]): SyncEvent[] =>
          list.filter(isRules).sort((a, b) => compareRulesEvents(a, b));
        const reference = await Deno.openKv(":memory:");
        const replica = await Deno.openKv(":memory:");
        try {
          for (const event of [...parsed.filter((e) => !isRules(e)), ...inTime(parsed)]) {
            await applyEvents(reference, [event], options({ rulesKeep, viewTtlMs }));
          }
          const replicaOptions = options({ rulesKeep, viewTtlMs });
          const batches: SyncEvent[][] = [];
          const rulesBatches: SyncEvent[][] = [];
          const stream = delivered.map((index) => parsed[index]!);
          const others = stream.filter((event) => !isRules(event));
          const rulesStream = inTime(stream);
          for (const [list, into] of [[others, batches], [rulesStream, rulesBatches]] as const) {
            for (let i = 0, s = 0; i < list.length; s++) {
              const size = sizes[s % sizes.length]!;
              into.push(list.slice(i, i + size));
              i += size;
            }
          }
          await Promise.all([
            ...Array.from({ length: lanes }, async (_, lane) => {
              for (let b = lane; b < batches.length; b += lanes) {
                await applyEvents(replica, batches[b]!, replicaOptions);
                // The replica's views are also compacted as reads do, beside the other lanes'
                // writes (the reference's only when erased): reads must not tell.
                if (readCompactEvery && b % readCompactEvery === 0) await compactAsRead(replica, USERS);
              }
            }),
            (async () => {
              for (const batch of rulesBatches) await applyEvents(replica, batch, replicaOptions);
            })(),
          ]);
          // What the service observes: every user's context as the context stage reads it…
          for (const userId of USERS) {
            assert.deepEqual(await readContext(replica, userId), await readContext(reference, userId));
          }
          // …and everything else exactly as stored.
          assert.deepEqual(
            withoutViewEntries(await dump(replica)),
            withoutViewEntries(await dump(reference)),
          );
          await assertErasedDataGone(replica);
          await assertErasedDataGone(reference);
          // A compaction leaves no older view of an item where reads scan, changes no read, and
          // leaves at most RECENT_VIEWS_MAX views per user: none expired were written and no erased
          // one is left (above), so exactly what a read returns.
          const max = options().recentViewsMax;
          await compactViews(replica, new Map(USERS.map((userId) => [userId, -Infinity])), {
            recentViewsMax: max,
          });
          for (const userId of USERS) {
            const window = await listViewWindow(replica, userId, { max, consistency: "strong" });
            assert.equal(new Set(window.map((view) => view.itemId)).size, window.length);
            const context = await readContext(replica, userId);
            assert.deepEqual(context, await readContext(reference, userId));
            const stored = await storedViews(replica, userId);
            assert.ok(stored.length <= max, `${userId} keeps ${stored.length} views after a compaction`);
            assert.deepEqual(stored, context.recentViews);
          }
          assert.deepEqual(await readStoredRulesStatus(replica), await readStoredRulesStatus(reference));
        } finally {
          reference.close();
          replica.close();
        }
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("a full batch of views with long or multibyte ids fits KV's per-commit key and size limits", async () => {
  // KV allows 80 KiB of keys and 800 KiB in total per commit: 1000 views of UUID users and items
  // (and 600 of 256-character CJK item ids by the longest user ids, 128 characters, under the
  // 1 MiB body limit) must be split to fit.
  const uuid = (prefix: string, n: number) =>
    `${prefix}${String(n).padStart(8, "0")}-aaaa-4bbb-8ccc-0123456789ab`;
  const cjk = (n: number) => `\u8996${String(n)}`.padEnd(256, "\u56fe");
  const longUser = (n: number) => `user-${String(n)}@`.padEnd(128, "x");
  for (
    const events of [
      Array.from({ length: 1000 }, (_, i) => ({
        kind: "view",
        userId: uuid("u", i % 100),
        itemId: uuid("i", i),
        at: minute(i % 50),
      })),
      Array.from(
        { length: 600 },
        (_, i) => ({ kind: "view", userId: longUser(i % 60), itemId: cjk(i), at: minute(i % 50) }),
      ),
    ]
  ) {
    await withKv(async (kv) => {
      const result = await apply(kv, events, { recentViewsMax: 20 });
      assert.equal(result.applied, events.length);
      const user = events[0]!.userId;
      assert.equal((await storedViews(kv, user)).length, events.filter((e) => e.userId === user).length);
      // Compaction deletes with the same key sizes also fit.
      await compactViews(kv, new Map([[user, -Infinity]]), { recentViewsMax: 1 });
      assert.equal((await storedViews(kv, user)).length, 1);
    });
  }
});

Deno.test("an erasure and older events of the same user in one batch: the events are never readable", async () => {
  await withKv(async (kv) => {
    // Read after every commit of the batch, as another request could.
    const seen: string[][] = [];
    const watched = new Proxy(kv, {
      get(target, property) {
        if (property === "atomic") {
          return () => {
            const op = target.atomic();
            const commit = op.commit.bind(op);
            op.commit = async () => {
              const result = await commit();
              seen.push((await readContext(kv, "u1")).recentViews.map((view) => view.itemId));
              return result;
            };
            return op;
          };
        }
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    await applyEvents(
      watched,
      parseSyncEvents([
        { kind: "erase", userId: "u1", at: minute(10) },
        { kind: "view", userId: "u1", itemId: "secret", at: minute(5) },
        { kind: "cart", userId: "u1", version: 1, at: minute(5), items: [{ itemId: "secret", qty: 1 }] },
        { kind: "view", userId: "u1", itemId: "later", at: minute(11) },
      ]),
      options(),
    );
    assert.ok(seen.length > 0);
    for (const items of seen) assert.ok(!items.includes("secret"), JSON.stringify(seen));
    assert.deepEqual((await readContext(kv, "u1")).recentViews.map((view) => view.itemId), ["later"]);
    assert.equal((await readContext(kv, "u1")).cart, undefined);
  });
});

Deno.test("a read stays exact past 1000 stored entries of a user never read (many re-views of one item)", async () => {
  await withKv(async (kv) => {
    await apply(kv, [{ kind: "view", userId: "u1", itemId: "B", at: minute(0) }]);
    for (let i = 1; i <= 1001; i++) {
      await applyEvents(kv, [{ kind: "view", userId: "u1", itemId: "A", at: T0 + 60_000 + i }], options());
    }
    assert.deepEqual((await readContext(kv, "u1")).recentViews.map((view) => view.itemId), ["A", "B"]);
  });
});

Deno.test("an event's size is checked as KV stores it: text beyond Latin-1 costs two bytes a character", () => {
  assert.equal(storedBytes("abc"), 3 + 6);
  assert.equal(storedBytes("é"), 1 + 6, "Latin-1 is one byte a character");
  assert.equal(storedBytes("a€"), 4 + 6, "one character beyond Latin-1 doubles the whole string");
  const cart = (suffix: string) => ({
    kind: "cart",
    userId: "u1",
    version: 1,
    at: minute(1),
    // ~36 KiB of ids: under the limit as UTF-8 JSON either way, over it as KV stores the "€" ones.
    items: Array.from(
      { length: 150 },
      (_, i) => ({ itemId: `${String(i).padStart(3, "0")}${suffix}`, qty: 1 }),
    ),
  });
  assert.equal(parseSyncEvents([cart("-".repeat(240))]).length, 1);
  assert.throws(
    () => parseSyncEvents([cart("\u20ac".repeat(80) + "-".repeat(160))]),
    (error: unknown) =>
      error instanceof SyncPayloadError && error.status === 400 &&
      JSON.stringify(error.details).includes(`must be at most ${MAX_EVENT_BYTES} bytes as stored`),
  );
});

Deno.test("a commit that fails part-way through a batch: the units that did commit are still reported", async () => {
  await withKv(async (kv) => {
    const reported: string[][] = [];
    // Past the schema (which refuses it): a cart too large for one KV value makes its commit
    // throw; 150 small carts need more checks than one commit holds, so others commit first.
    const huge = Array.from({ length: 400 }, (_, i) => ({ itemId: `${i}-`.padEnd(256, "x"), qty: 1 }));
    const events = [
      ...Array.from({ length: 150 }, (_, i) => ({
        kind: "cart" as const,
        userId: `u${i}`,
        version: 1,
        at: NOW - 1000,
        items: [{ itemId: "p1", qty: 1 }],
      })),
      { kind: "cart" as const, userId: "big", version: 1, at: NOW - 1000, items: huge },
    ];
    await assert.rejects(
      applyEvents(kv, events as SyncEvent[], options({ onUsersChanged: (users) => reported.push(users) })),
      TypeError,
    );
    const committed = reported.flat();
    assert.ok(committed.length > 0, "some commits went through before the failing one");
    assert.ok(!committed.includes("big"));
    for (const user of committed) assert.notEqual((await kv.get(keys.cart(user))).value, null, user);
  });
});

Deno.test("an erasure ends every older session of the user, also those past the per-user session index", async () => {
  await withKv(async (kv) => {
    // 501 sessions: the index keeps the 500 that expire last, so the first one is not in it.
    const sessions = Array.from({ length: 501 }, (_, i) => ({
      kind: "session",
      sessionId: `s-user1-${String(i).padStart(4, "0")}`,
      userId: "u1",
      at: iso(NOW - 3_600_000),
      expiresAt: iso(NOW + DAY + i * 60_000),
    }));
    for (let i = 0; i < sessions.length; i += 100) await apply(kv, sessions.slice(i, i + 100));
    assert.equal(await readSession(kv, "s-user1-0000", NOW), "u1");
    await apply(kv, [{ kind: "erase", userId: "u1", at: iso(NOW - 60_000) }]);
    const survivors: string[] = [];
    for (const session of sessions) {
      if (await readSession(kv, session.sessionId, NOW)) survivors.push(session.sessionId);
    }
    assert.deepEqual(survivors, []);
    // A session begun after the erasure is the user's again.
    await apply(kv, [{
      kind: "session",
      sessionId: "s-user1-after",
      userId: "u1",
      at: iso(NOW - 1000),
      expiresAt: iso(NOW + DAY),
    }]);
    assert.equal(await readSession(kv, "s-user1-after", NOW), "u1");
  });
});

Deno.test("an erase takes user ids stored before the user id alphabet; other events refuse them", async () => {
  await withKv(async (kv) => {
    for (const legacy of ["user+1@example.com", "Zm9v/YmFy=", "x".repeat(200)]) {
      // Data stored under the id back when any 1–256 character id was accepted.
      const stored = parseSyncEvents([
        { kind: "view", userId: "placeholder", itemId: "p1", at: minute(1) },
        { kind: "cart", userId: "placeholder", version: 1, at: minute(2), items: [{ itemId: "p1", qty: 1 }] },
        {
          kind: "profile",
          userId: "placeholder",
          version: 1,
          at: minute(2),
          segments: ["a"],
          attributes: {},
        },
      ]).map((event) => ({ ...event, userId: legacy }) as SyncEvent);
      await applyEvents(kv, stored, options());
      const before = await readContext(kv, legacy);
      assert.deepEqual([before.recentViews.length, before.cart !== undefined, before.profile !== undefined], [
        1,
        true,
        true,
      ]);

      assert.deepEqual(await apply(kv, [{ kind: "erase", userId: legacy, at: minute(10) }]), {
        applied: 1,
        stale: 0,
      });
      const after = await readContext(kv, legacy);
      assert.deepEqual(
        [after.recentViews.length, after.cart, after.profile],
        [0, undefined, undefined],
        legacy,
      );

      assert.throws(
        () => parseSyncEvents([{ kind: "view", userId: legacy, itemId: "p1", at: minute(11) }]),
        (error: unknown) => error instanceof SyncPayloadError && error.status === 400,
      );
    }
    // An erasure's id still follows the old rule: 1–256 characters of well-formed Unicode.
    for (const userId of ["", "x".repeat(257), "a\ud800b"]) {
      assert.throws(
        () => parseSyncEvents([{ kind: "erase", userId, at: minute(12) }]),
        (error: unknown) => error instanceof SyncPayloadError && error.status === 400,
        JSON.stringify(userId),
      );
    }
  });
});
