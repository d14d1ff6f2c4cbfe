import assert from "node:assert/strict";
import { exceedsJsonDepth, keyPaths, MAX_JSON_DEPTH } from "../../../lib/support/json_limits.ts";
import { parseRules, RulesError } from "../../../lib/rules/compile.ts";
import { parseSyncEvent } from "../../../lib/sync/schema.ts";

function nested(depth: number): unknown {
  let value: unknown = {};
  for (let i = 1; i < depth; i++) value = { a: value };
  return value;
}

Deno.test("exceedsJsonDepth counts levels of objects and arrays, iteratively", () => {
  assert.equal(exceedsJsonDepth(1, 0), false);
  assert.equal(exceedsJsonDepth({ a: [1] }, 2), false);
  assert.equal(exceedsJsonDepth({ a: [[1]] }, 2), true);
  assert.equal(exceedsJsonDepth(nested(MAX_JSON_DEPTH)), false);
  assert.equal(exceedsJsonDepth(nested(MAX_JSON_DEPTH + 1)), true);
  // Far deeper than any recursive walk survives.
  assert.equal(exceedsJsonDepth(nested(200_000)), true);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.equal(exceedsJsonDepth(cyclic), true);
});

Deno.test("a JSON flag value nested 5 000 levels deep is a RulesError, not a stack overflow", () => {
  // Found by tests/fuzz/corpus_test.ts: z.json() recursed until RangeError (sync answered 500).
  const rules = {
    version: 1,
    defaultRegion: "GLOBAL",
    regions: {},
    routes: [],
    flags: [{ key: "f", type: "object", default: nested(5000) }],
  };
  assert.throws(() => parseRules(rules), RulesError);
  const result = parseSyncEvent({ kind: "rules", version: 1, rules });
  assert.ok("problems" in result);
  const profile = parseSyncEvent({
    kind: "profile",
    userId: "u1",
    version: 1,
    at: "2026-11-26T11:59:58Z",
    segments: [],
    attributes: { deep: nested(5000) },
  });
  assert.ok("problems" in profile);
  assert.match(profile.problems[0]!.message, /nested more than 64 levels/);
});

Deno.test("keyPaths finds a key at any depth, in arrays too, as JSON.parse keeps it", () => {
  const names = new Set(["__proto__"]);
  const value = JSON.parse('{"a":[{"b":1},{"__proto__":{"__proto__":2}}],"__proto__":3,"c":"__proto__"}');
  assert.deepEqual(keyPaths(value, names), [["__proto__"], ["a", 1, "__proto__"], [
    "a",
    1,
    "__proto__",
    "__proto__",
  ]]);
  assert.deepEqual(keyPaths({ a: 1 }, names), []);
  assert.deepEqual(keyPaths(nested(MAX_JSON_DEPTH), new Set(["a"])).length, MAX_JSON_DEPTH - 1);
});
