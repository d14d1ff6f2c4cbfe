import assert from "node:assert/strict";
import { DEFAULT_RECENT_VIEWS_MAX, keys, parseViewEntry, readUserContext } from "../../../lib/store.ts";
import { applyEvents, type ApplyOptions } from "../../../lib/sync/apply.ts";
import type { SyncEvent } from "../../../lib/sync/schema.ts";
import { compactViews } from "../../../lib/sync/views.ts";

const T0 = Date.UTC(2026, 10, 26, 0, 0, 0);
const NOW = T0 + 3_600_000;
const DAY = 86_400_000;
const MAX = DEFAULT_RECENT_VIEWS_MAX;

function options(overrides: Partial<ApplyOptions> = {}): ApplyOptions {
  return {
    now: NOW,
    recentViewsMax: MAX,
    viewTtlMs: 30 * DAY,
    cartTtlMs: 30 * DAY,
    profileTtlMs: 30 * DAY,
    tombstoneTtlMs: 30 * DAY,
    ...overrides,
  };
}

async function withKv(fn: (kv: Deno.Kv) => Promise<void>): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(kv);
  } finally {
    kv.close();
  }
}

function view(userId: string, itemId: string, at: number): SyncEvent {
  return { kind: "view", userId, itemId, at };
}

/**
 * Writes `count` views of distinct items (item-0 oldest) for one user in batches of `MAX`,
 * each batch written in full (a batch keeps at most `MAX` items); `compactEvery` as given.
 */
async function writeDistinctViews(
  kv: Deno.Kv,
  userId: string,
  count: number,
  compactEvery: number,
): Promise<void> {
  const events = Array.from({ length: count }, (_, i) => view(userId, `item-${i}`, T0 + i * 1000));
  for (let i = 0; i < count; i += MAX) {
    await applyEvents(kv, events.slice(i, i + MAX), options({ viewsCompactEvery: compactEvery }));
  }
}

/** A user's stored views (layout 2) in key order, as `item@seconds after T0`. */
async function storedViews(kv: Deno.Kv, userId: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of kv.list({ prefix: keys.viewsPrefix(userId) })) {
    const stored = parseViewEntry(entry);
    assert.ok(stored, `malformed view entry ${JSON.stringify(entry.key)}`);
    out.push(`${stored.itemId}@${(stored.at - T0) / 1000}`);
  }
  return out;
}

async function readViews(kv: Deno.Kv, userId: string, max = MAX): Promise<string[]> {
  const context = await readUserContext(kv, userId, NOW, { recentViewsMax: max });
  return context.recentViews.map((recent) => `${recent.itemId}@${(recent.at - T0) / 1000}`);
}

Deno.test("compaction keeps only the newest RECENT_VIEWS_MAX items of 200 distinct views and changes no read", async () => {
  await withKv(async (kv) => {
    await writeDistinctViews(kv, "u1", 200, 1000);
    // Re-views of kept and of dropped items, older than their newest: dominated either way.
    await applyEvents(
      kv,
      [view("u1", "item-199", T0 + 5), view("u1", "item-3", T0 + 2_000)],
      options({ viewsCompactEvery: 1000 }),
    );
    await writeDistinctViews(kv, "u2", 30, 1000);
    assert.equal((await storedViews(kv, "u1")).length, 202);
    const before = await readViews(kv, "u1");
    assert.equal(before.length, MAX);
    assert.equal(await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: MAX }), 202 - MAX);
    assert.deepEqual(await storedViews(kv, "u1"), before, "exactly what a read returns is left");
    assert.deepEqual(await readViews(kv, "u1"), before);
    assert.equal((await storedViews(kv, "u2")).length, 30, "other users are not touched");
  });
});

Deno.test("compaction through the apply path bounds a heavy user's stored views", async () => {
  await withKv(async (kv) => {
    // Each batch writes MAX views, and compacts when a batch writes `compactEvery` of a user's.
    await writeDistinctViews(kv, "u1", 200, MAX);
    assert.deepEqual(await storedViews(kv, "u1"), await readViews(kv, "u1"));
    // At the default pace, storage is bounded by MAX plus the views since the last compaction.
    await writeDistinctViews(kv, "u2", 400, 64);
    const stored = await storedViews(kv, "u2");
    assert.ok(stored.length < 400, `${stored.length} views stored of 400`);
    assert.deepEqual(stored.slice(0, MAX), await readViews(kv, "u2"));
  });
});

Deno.test("a late view older than the newest RECENT_VIEWS_MAX items is never visible and goes at the next compaction", async () => {
  await withKv(async (kv) => {
    await writeDistinctViews(kv, "u1", 200, 1000);
    await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: MAX });
    const before = await readViews(kv, "u1");
    // Older than the oldest kept view (item-180 at 180 s): a new item, and an older re-view of a kept one.
    const late = [view("u1", "late", T0 + 179_500), view("u1", "item-190", T0 + 100_000)];
    assert.deepEqual(await applyEvents(kv, late, options({ viewsCompactEvery: 1000 })), {
      applied: 2,
      stale: 0,
    });
    assert.equal((await storedViews(kv, "u1")).length, MAX + 2, "written blind");
    assert.deepEqual(await readViews(kv, "u1"), before);
    assert.equal(await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: MAX }), 2);
    assert.deepEqual(await storedViews(kv, "u1"), before);
    // A view newer than the oldest kept item displaces it, and that item goes in turn.
    await applyEvents(kv, [view("u1", "late", T0 + 180_500)], options({ viewsCompactEvery: 1000 }));
    const after = await readViews(kv, "u1");
    assert.deepEqual(after, [...before.slice(0, -1), "late@180.5"]);
    assert.equal(await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: MAX }), 1);
    assert.deepEqual(await storedViews(kv, "u1"), after);
  });
});

Deno.test("compaction ranks views at one instant as reads do, not in key order", async () => {
  await withKv(async (kv) => {
    // KV orders item ids by UTF-8 bytes (U+FF61 before U+1F600), reads by UTF-16 units (after).
    const halfwidth = "\uff61";
    const emoji = "\u{1f600}";
    await applyEvents(
      kv,
      [view("u1", halfwidth, T0), view("u1", emoji, T0), view("u1", "a", T0 - 1000)],
      options(),
    );
    assert.deepEqual(await storedViews(kv, "u1"), [`${halfwidth}@0`, `${emoji}@0`, "a@-1"]);
    const before = await readViews(kv, "u1", 1);
    assert.deepEqual(before, [`${emoji}@0`]);
    assert.equal(await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: 1 }), 2);
    assert.deepEqual(await storedViews(kv, "u1"), before);
    assert.deepEqual(await readViews(kv, "u1", 1), before);
  });
});

Deno.test("compaction lists and deletes a large backlog in pages and several commits", async () => {
  await withKv(async (kv) => {
    // More entries than one listing page and deletions than one commit holds.
    for (let i = 0; i < 2500; i += 500) {
      const op = kv.atomic();
      for (let j = i; j < i + 500; j++) {
        op.set(keys.view("u1", `item-${j}`, T0 + j * 1000), { expiresAt: T0 + j * 1000 + 30 * DAY });
      }
      assert.ok((await op.commit()).ok);
    }
    const before = await readViews(kv, "u1");
    assert.equal(await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: MAX }), 2500 - MAX);
    assert.deepEqual(await storedViews(kv, "u1"), before);
  });
});

Deno.test("an erasure's compaction deletes the erased views and those beyond the newest items", async () => {
  await withKv(async (kv) => {
    await writeDistinctViews(kv, "u1", 100, 1000);
    await applyEvents(kv, [{ kind: "erase", userId: "u1", at: T0 + 50_000 }], options());
    // Of the 49 views after the erasure (item-51…item-99), the newest MAX are left.
    assert.deepEqual(await storedViews(kv, "u1"), await readViews(kv, "u1"));
    assert.equal((await storedViews(kv, "u1")).at(-1), `item-${100 - MAX}@${100 - MAX}`);
  });
});
