import assert from "node:assert/strict";
import {
  DEFAULT_RECENT_VIEWS_MAX,
  keys,
  parseViewEntry,
  VIEWS_COMPACT_SLACK,
} from "../../../lib/data/store.ts";
import { readUserContext } from "../../../lib/data/readers.ts";
import { applyEvents } from "../../../lib/sync/apply.ts";
import type { ApplyOptions } from "../../../lib/sync/apply/unit.ts";
import type { SyncEvent } from "../../../lib/sync/schema.ts";
import { compactViews } from "../../../lib/sync/views.ts";
import { applyOptions, withKv } from "./fixtures.ts";

const T0 = Date.UTC(2026, 10, 26, 0, 0, 0);
const NOW = T0 + 3_600_000;
const DAY = 86_400_000;
const MAX = DEFAULT_RECENT_VIEWS_MAX;

function options(overrides: Partial<ApplyOptions> = {}): ApplyOptions {
  return applyOptions({ now: NOW, recentViewsMax: MAX }, overrides);
}

function view(userId: string, itemId: string, at: number): SyncEvent {
  return { kind: "view", userId, itemId, at };
}

/**
 * Writes `count` views of distinct items (item-0 oldest) for one user in batches of `MAX`,
 * each batch written in full (a batch keeps at most `MAX` items).
 */
async function writeDistinctViews(kv: Deno.Kv, userId: string, count: number): Promise<void> {
  const events = Array.from({ length: count }, (_, i) => view(userId, `item-${i}`, T0 + i * 1000));
  for (let i = 0; i < count; i += MAX) await applyEvents(kv, events.slice(i, i + MAX), options());
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

/** What a read of the user reports: the `erasedAt` it asks to compact with, or `undefined`. */
async function readReport(kv: Deno.Kv, userId: string): Promise<number | undefined> {
  const reports: number[] = [];
  await readUserContext(kv, userId, NOW, {
    recentViewsMax: MAX,
    onCompactable: (erasedAt) => reports.push(erasedAt),
  });
  assert.ok(reports.length <= 1, "reported at most once");
  return reports[0];
}

Deno.test("compaction keeps only the newest RECENT_VIEWS_MAX items of 200 distinct views and changes no read", async () => {
  await withKv(async (kv) => {
    await writeDistinctViews(kv, "u1", 200);
    // Re-views of kept and of dropped items, older than their newest: dominated either way.
    await applyEvents(
      kv,
      [view("u1", "item-199", T0 + 5), view("u1", "item-3", T0 + 2_000)],
      options(),
    );
    await writeDistinctViews(kv, "u2", 30);
    assert.equal((await storedViews(kv, "u1")).length, 202);
    const before = await readViews(kv, "u1");
    assert.equal(before.length, MAX);
    assert.equal(await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: MAX }), 202 - MAX);
    assert.deepEqual(await storedViews(kv, "u1"), before, "exactly what a read returns is left");
    assert.deepEqual(await readViews(kv, "u1"), before);
    assert.equal((await storedViews(kv, "u2")).length, 30, "other users are not touched");
  });
});

Deno.test("sync writes ordinary views blind and leaves their compaction to reads", async () => {
  await withKv(async (kv) => {
    const reads: string[] = [];
    const counting = new Proxy(kv, {
      get(target, prop) {
        if (prop === "get" || prop === "getMany" || prop === "list") reads.push(prop);
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    await writeDistinctViews(counting, "u1", 400);
    assert.deepEqual(reads, [], "neither a read nor a compaction's listing");
    assert.equal((await storedViews(kv, "u1")).length, 400);
    assert.equal((await readViews(kv, "u1")).length, MAX);
  });
});

Deno.test("a read reports a user holding more than RECENT_VIEWS_MAX + VIEWS_COMPACT_SLACK views", async () => {
  await withKv(async (kv) => {
    await writeDistinctViews(kv, "u1", MAX + VIEWS_COMPACT_SLACK);
    assert.equal(await readReport(kv, "u1"), undefined, "at the bound");
    await applyEvents(kv, [view("u1", "item-0", T0 + 3_600_000)], options());
    assert.equal(await readReport(kv, "u1"), -Infinity, "one older view of an item past the bound");
    const before = await readViews(kv, "u1");
    assert.equal(
      await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: MAX }),
      VIEWS_COMPACT_SLACK + 1,
    );
    assert.equal(await readReport(kv, "u1"), undefined);
    assert.deepEqual(await storedViews(kv, "u1"), before);
    // Re-views of a few items are all in the window a read returns, and count the same.
    const reviews = Array.from({ length: 40 }, (_, i) => [view("u2", "a", T0 + i), view("u2", "b", T0 + i)]);
    for (const batch of reviews) await applyEvents(kv, batch, options());
    assert.equal(await readReport(kv, "u2"), -Infinity);
    assert.equal(await compactViews(kv, new Map([["u2", -Infinity]]), { recentViewsMax: MAX }), 78);
    assert.deepEqual(await readViews(kv, "u2"), ["a@0.039", "b@0.039"]);
    assert.equal(await readReport(kv, "u2"), undefined);
  });
});

Deno.test("a read reports a user holding views at or before the tombstone, with its at", async () => {
  await withKv(async (kv) => {
    // As left by an erasure whose compaction did not run (a crash after the tombstone committed).
    for (let i = 0; i < 5; i++) {
      await kv.set(keys.view("u1", `item-${i}`, T0 + i * 1000), { expiresAt: NOW + DAY });
    }
    await kv.set(keys.erased("u1"), { at: T0 + 2000, expiresAt: NOW + DAY });
    assert.deepEqual(await readViews(kv, "u1"), ["item-4@4", "item-3@3"]);
    assert.equal(await readReport(kv, "u1"), T0 + 2000);
    await compactViews(kv, new Map([["u1", T0 + 2000]]), { recentViewsMax: MAX });
    assert.deepEqual(await storedViews(kv, "u1"), ["item-4@4", "item-3@3"]);
    assert.equal(await readReport(kv, "u1"), undefined);
  });
});

Deno.test("a read that checks for compaction lists at most RECENT_VIEWS_MAX + VIEWS_COMPACT_SLACK + 1 entries", async () => {
  await withKv(async (kv) => {
    const op = kv.atomic();
    for (let j = 0; j < 900; j++) {
      op.set(keys.view("u1", `item-${j % 30}`, T0 + j * 1000), { expiresAt: NOW + DAY });
    }
    assert.ok((await op.commit()).ok);
    let listed = 0;
    const counting = new Proxy(kv, {
      get(target, prop) {
        const value = Reflect.get(target, prop);
        if (prop !== "list") return typeof value === "function" ? value.bind(target) : value;
        return (selector: Deno.KvListSelector, listOptions?: Deno.KvListOptions) => {
          const entries = target.list(selector, listOptions);
          return (async function* () {
            for await (const entry of entries) {
              listed++;
              yield entry;
            }
          })();
        };
      },
    });
    assert.equal(await readReport(counting, "u1"), -Infinity);
    assert.equal(listed, MAX + VIEWS_COMPACT_SLACK + 1);
  });
});

Deno.test("a late view older than the newest RECENT_VIEWS_MAX items is never visible and goes at the next compaction", async () => {
  await withKv(async (kv) => {
    await writeDistinctViews(kv, "u1", 200);
    await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: MAX });
    const before = await readViews(kv, "u1");
    // Older than the oldest kept view (item-180 at 180 s): a new item, and an older re-view of a kept one.
    const late = [view("u1", "late", T0 + 179_500), view("u1", "item-190", T0 + 100_000)];
    assert.deepEqual(await applyEvents(kv, late, options()), {
      applied: 2,
      stale: 0,
    });
    assert.equal((await storedViews(kv, "u1")).length, MAX + 2, "written blind");
    assert.deepEqual(await readViews(kv, "u1"), before);
    assert.equal(await compactViews(kv, new Map([["u1", -Infinity]]), { recentViewsMax: MAX }), 2);
    assert.deepEqual(await storedViews(kv, "u1"), before);
    // A view newer than the oldest kept item displaces it, and that item goes in turn.
    await applyEvents(kv, [view("u1", "late", T0 + 180_500)], options());
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
    await writeDistinctViews(kv, "u1", 100);
    await applyEvents(kv, [{ kind: "erase", userId: "u1", at: T0 + 50_000 }], options());
    // Of the 49 views after the erasure (item-51…item-99), the newest MAX are left.
    assert.deepEqual(await storedViews(kv, "u1"), await readViews(kv, "u1"));
    assert.equal((await storedViews(kv, "u1")).at(-1), `item-${100 - MAX}@${100 - MAX}`);
  });
});
