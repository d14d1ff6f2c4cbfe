import assert from "node:assert/strict";
import { followRulesInKv, RulesStore } from "../../lib/rules_store.ts";
import { parseRules } from "../../lib/rules.ts";
import { createLogger } from "../../lib/log.ts";
import { keys } from "../../lib/store.ts";

const log = createLogger("silent", { now: () => 0 });

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return check();
}

Deno.test("a newer rule set written to KV reaches every instance within 1 s (watch, no polling)", async () => {
  const dir = await Deno.makeTempDir();
  const kvA = await Deno.openKv(`${dir}/kv`);
  const kvB = await Deno.openKv(`${dir}/kv`);
  const stop = new AbortController();
  const a = new RulesStore(parseRules({ version: 1 }));
  const b = new RulesStore(parseRules({ version: 1 }));
  try {
    const following = [
      followRulesInKv(kvA, a, { pollMs: 60_000, log, signal: stop.signal }),
      followRulesInKv(kvB, b, { pollMs: 60_000, log, signal: stop.signal }),
    ];
    await new Promise((resolve) => setTimeout(resolve, 50));
    await kvA.set(keys.rules(), { version: 2, rules: { version: 2, defaultRegion: "EU" } });
    assert.ok(await waitFor(() => a.current.version === 2 && b.current.version === 2, 1000));
    assert.equal(b.current.defaultRegion, "EU");
    stop.abort();
    await Promise.all(following);
  } finally {
    kvA.close();
    kvB.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an invalid or older rule set in KV never replaces the active one", async () => {
  const kv = await Deno.openKv(":memory:");
  const stop = new AbortController();
  const store = new RulesStore(parseRules({ version: 5, defaultRegion: "US" }));
  try {
    const following = followRulesInKv(kv, store, { pollMs: 20, log, signal: stop.signal });
    // Schema-valid but semantically invalid: a country in two regions.
    await kv.set(keys.rules(), { version: 6, rules: { version: 6, regions: { EU: ["DE"], X: ["DE"] } } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(store.current.version, 5);
    await kv.set(keys.rules(), { version: 4, rules: { version: 4 } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(store.current.version, 5);
    assert.equal(store.current.defaultRegion, "US");
    stop.abort();
    await following;
  } finally {
    kv.close();
  }
});
