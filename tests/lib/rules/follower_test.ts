import assert from "node:assert/strict";
import { RulesStore } from "../../../lib/rules/store.ts";
import { followRulesInKv } from "../../../lib/rules/follower.ts";
import { parseRules } from "../../../lib/rules/compile.ts";
import { createLogger } from "../../../lib/obs/log.ts";
import { keys } from "../../../lib/data/store.ts";
import { applyEvents, storeStartupRules } from "../../../lib/sync/apply.ts";
import type { ApplyOptions } from "../../../lib/sync/apply/unit.ts";
import { parseSyncEvents } from "../../../lib/sync/schema.ts";
import { stallingReads } from "../../support.ts";

const log = createLogger("silent", { now: () => 0 });
const T0 = Date.UTC(2026, 10, 26, 12, 0, 0);
const minute = (n: number) => new Date(T0 + n * 60_000).toISOString();
const DAY = 86_400_000;
const APPLY: ApplyOptions = {
  now: T0,
  recentViewsMax: 20,
  viewTtlMs: DAY,
  cartTtlMs: DAY,
  profileTtlMs: DAY,
  tombstoneTtlMs: DAY,
};

function push(kv: Deno.Kv, events: unknown[]) {
  return applyEvents(kv, parseSyncEvents(events), APPLY);
}

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return check();
}

Deno.test("canary, promote and rollback reach a second instance on the same KV within 1 s (watch, no polling)", async () => {
  const dir = await Deno.makeTempDir();
  const kvA = await Deno.openKv(`${dir}/kv`);
  const kvB = await Deno.openKv(`${dir}/kv`);
  const stop = new AbortController();
  const a = new RulesStore(parseRules({ version: 1 }));
  const b = new RulesStore(parseRules({ version: 1 }));
  const state = (store: RulesStore) => `${store.current.version}/${store.canary?.rules.version ?? "-"}`;
  try {
    const following = [
      followRulesInKv(kvA, a, { pollMs: 60_000, log, signal: stop.signal }),
      followRulesInKv(kvB, b, { pollMs: 60_000, log, signal: stop.signal }),
    ];
    await new Promise((resolve) => setTimeout(resolve, 50));
    await push(kvA, [
      { kind: "rules", version: 11, at: minute(1), rules: { defaultRegion: "EU" } },
      { kind: "rules", version: 12, at: minute(2), canary: 0.05, rules: { defaultRegion: "US" } },
    ]);
    assert.ok(await waitFor(() => state(a) === "11/12" && state(b) === "11/12", 1000), state(b));
    assert.equal(b.current.defaultRegion, "EU");
    assert.equal(b.canary?.share, 0.05);

    await push(kvA, [{ kind: "rules_promote", version: 12, at: minute(3) }]);
    assert.ok(await waitFor(() => state(a) === "12/-" && state(b) === "12/-", 1000), state(b));
    assert.equal(b.current.defaultRegion, "US");

    await push(kvA, [{ kind: "rules_rollback", version: 11, at: minute(4) }]);
    assert.ok(await waitFor(() => state(a) === "11/-" && state(b) === "11/-", 1000), state(b));
    assert.equal(b.current.defaultRegion, "EU");
    stop.abort();
    await Promise.all(following);
  } finally {
    kvA.close();
    kvB.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rolling back to the start-up rules makes them active again on two instances sharing one KV", async () => {
  const dir = await Deno.makeTempDir();
  const kvA = await Deno.openKv(`${dir}/kv`);
  const kvB = await Deno.openKv(`${dir}/kv`);
  const stop = new AbortController();
  // Both start from the same RULES_PATH file, as a fleet does.
  const startup = () => parseRules({ version: 5, defaultRegion: "START" });
  const a = new RulesStore(startup());
  const b = new RulesStore(startup());
  const state = (store: RulesStore) =>
    `${store.current.version}:${store.current.defaultRegion}/${store.canary?.rules.version ?? "-"}`;
  try {
    assert.equal(await storeStartupRules(kvA, a.baseline.source), "stored");
    assert.equal(await storeStartupRules(kvB, b.baseline.source), "kept");
    const following = [
      followRulesInKv(kvA, a, { pollMs: 60_000, log, signal: stop.signal }),
      followRulesInKv(kvB, b, { pollMs: 60_000, log, signal: stop.signal }),
    ];
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(state(a), "5:START/-");

    await push(kvA, [{
      kind: "rules",
      version: 6,
      at: minute(1),
      canary: 0.1,
      rules: { defaultRegion: "CAN" },
    }]);
    assert.ok(await waitFor(() => state(a) === "5:START/6" && state(b) === "5:START/6", 1000), state(b));
    const rollback = await push(kvB, [{ kind: "rules_rollback", version: 5, at: minute(2) }]);
    assert.deepEqual(rollback, { applied: 1, stale: 0 });
    assert.ok(await waitFor(() => state(a) === "5:START/-" && state(b) === "5:START/-", 1000), state(a));

    await push(kvA, [{ kind: "rules", version: 7, at: minute(3), rules: { defaultRegion: "NEW" } }]);
    assert.ok(await waitFor(() => state(a) === "7:NEW/-" && state(b) === "7:NEW/-", 1000), state(b));
    assert.deepEqual(await push(kvA, [{ kind: "rules_rollback", version: 5, at: minute(4) }]), {
      applied: 1,
      stale: 0,
    });
    assert.ok(await waitFor(() => state(a) === "5:START/-" && state(b) === "5:START/-", 1000), state(b));
    stop.abort();
    await Promise.all(following);
  } finally {
    kvA.close();
    kvB.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a rule set in KV that does not compile never becomes active or canary", async () => {
  const kv = await Deno.openKv(":memory:");
  const stop = new AbortController();
  const store = new RulesStore(parseRules({ version: 5, defaultRegion: "US" }));
  try {
    const following = followRulesInKv(kv, store, { pollMs: 20, log, signal: stop.signal });
    // Written past sync (which rejects it): schema-valid but a country in two regions.
    const bad = { version: 6, rules: { version: 6, regions: { EU: ["DE"], X: ["DE"] } } };
    const entry = (version: number, extra: Record<string, unknown>) => ({
      version,
      stored: true,
      activated: null,
      rolledBack: null,
      canary: null,
      ...extra,
    });
    await kv.atomic()
      .set(keys.ruleSet(6), bad)
      .set(keys.ruleSet(7), { ...bad, version: 7, rules: { ...bad.rules, version: 7 } })
      .set(keys.rulesControl(), {
        entries: [
          entry(7, { canary: { share: 0.5, key: [T0 + 2, 0, 7] } }),
          entry(6, { activated: [T0 + 1, 1, 6] }),
        ],
      })
      .commit();
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(store.current.version, 5);
    assert.equal(store.canary, undefined);
    stop.abort();
    await following;
  } finally {
    kv.close();
  }
});

Deno.test("a version pushed without at replaces the start-up rules only when newer; a timed one always", async () => {
  const kv = await Deno.openKv(":memory:");
  const stop = new AbortController();
  const store = new RulesStore(parseRules({ version: 5, defaultRegion: "US" }));
  try {
    const following = followRulesInKv(kv, store, { pollMs: 20, log, signal: stop.signal });
    await push(kv, [{ kind: "rules", version: 4, rules: {} }]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(store.current.version, 5);
    assert.equal(store.current.defaultRegion, "US");
    await push(kv, [{ kind: "rules_rollback", version: 4, at: minute(1) }]);
    assert.ok(await waitFor(() => store.current.version === 4, 1000));
    stop.abort();
    await following;
  } finally {
    kv.close();
  }
});

async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settled = await Promise.race([
    work.then(() => true, () => true),
    new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms)),
  ]);
  clearTimeout(timer);
  return settled;
}

Deno.test("a KV read that hangs is given up: rules pushed once KV answers again are followed", async () => {
  const kv = await Deno.openKv(":memory:");
  const lines: string[] = [];
  const collecting = createLogger("warn", { now: () => 0, sink: (line) => lines.push(line) });
  let stalled = true;
  const stop = new AbortController();
  const store = new RulesStore(parseRules({ version: 1 }));
  let firstCheck = false;
  const following = followRulesInKv(stallingReads(kv, () => stalled), store, {
    pollMs: 50,
    checkTimeoutMs: 200,
    log: collecting,
    signal: stop.signal,
    onFirstCheck: () => firstCheck = true,
  });
  try {
    // The first check hangs; it is given up, and so start-up stops waiting for it.
    assert.ok(await waitFor(() => firstCheck, 2000), "the first check ends despite the hung read");
    assert.match(lines.join("\n"), /rules in KV not applied.*DeadlineError/);
    stalled = false;
    await push(kv, [{ kind: "rules", version: 7, at: minute(1), rules: { defaultRegion: "R7" } }]);
    assert.ok(await waitFor(() => store.current.version === 7, 2000), `version ${store.current.version}`);
  } finally {
    stop.abort();
    assert.ok(await settlesWithin(following, 2000), "following stops when asked");
    kv.close();
  }
});

Deno.test("stopping rules following does not wait for a check stuck on a hung KV read", async () => {
  const kv = await Deno.openKv(":memory:");
  const stop = new AbortController();
  const store = new RulesStore(parseRules({ version: 1 }));
  let reads = 0;
  const counting = new Proxy(stallingReads(kv), {
    get(target, prop) {
      if (prop === "get") reads++;
      return Reflect.get(target, prop);
    },
  });
  // Neither the check bound nor the poll interval ends the stuck check before the stop.
  const following = followRulesInKv(counting, store, {
    pollMs: 60_000,
    checkTimeoutMs: 60_000,
    log,
    signal: stop.signal,
  });
  try {
    assert.ok(await waitFor(() => reads > 0, 1000), "a check is under way");
  } finally {
    stop.abort();
    assert.ok(await settlesWithin(following, 2000), "following stops when asked");
    kv.close();
  }
});

Deno.test("a rules check given up that answers late never replaces what a later check applied", async () => {
  const kv = await Deno.openKv(":memory:");
  await push(kv, [{ kind: "rules", version: 5, at: minute(1), rules: { defaultRegion: "R5" } }]);
  // The first read of the control record sees version 5 but answers only when released.
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let held = false;
  const holding = new Proxy(kv, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== "function") return value;
      if (prop === "get" && !held) {
        held = true;
        return async (...args: unknown[]) => {
          const entry = await value.apply(target, args);
          await released;
          return entry;
        };
      }
      return value.bind(target);
    },
  });
  const stop = new AbortController();
  const store = new RulesStore(parseRules({ version: 1 }));
  const versions: number[] = [];
  store.onChange((rules) => versions.push(rules.version));
  const following = followRulesInKv(holding, store, {
    pollMs: 50,
    checkTimeoutMs: 100,
    log,
    signal: stop.signal,
  });
  try {
    await push(kv, [{ kind: "rules", version: 6, at: minute(2), rules: { defaultRegion: "R6" } }]);
    assert.ok(await waitFor(() => store.current.version === 6, 2000), `version ${store.current.version}`);
    release();
    // Several polls after the late answer: version 5 never came back.
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(versions, [6]);
  } finally {
    stop.abort();
    await following;
    kv.close();
  }
});
