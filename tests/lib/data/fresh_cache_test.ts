import assert from "node:assert/strict";
import { FreshCache } from "../../../lib/data/fresh_cache.ts";

const sizeOf = (_key: string, value: string) => value.length;

Deno.test("fresh cache evicts the least recently used entries to stay within maxBytes", () => {
  const cache = new FreshCache<string, string>({
    maxEntries: 100,
    maxStaleMs: 1000,
    name: "Test",
    maxBytes: 10,
    sizeOf,
  });
  cache.set("a", "aaaa", 0);
  cache.set("b", "bbbb", 0);
  assert.equal(cache.bytes, 8);
  cache.get("a", 1);
  cache.set("c", "cccc", 1);
  assert.equal(cache.get("b", 2), undefined, "b was the least recently used");
  assert.deepEqual(cache.get("a", 2), { value: "aaaa" });
  assert.deepEqual(cache.get("c", 2), { value: "cccc" });
  assert.equal(cache.bytes, 8);
});

Deno.test("fresh cache refuses an entry larger than maxBytes and drops the one it would replace", () => {
  const cache = new FreshCache<string, string>({
    maxEntries: 100,
    maxStaleMs: 1000,
    name: "Test",
    maxBytes: 10,
    sizeOf,
  });
  assert.equal(cache.set("a", "aaaa", 0), true);
  assert.equal(cache.set("a", "x".repeat(11), 0), false);
  assert.equal(cache.get("a", 0), undefined);
  assert.equal(cache.size, 0);
  assert.equal(cache.bytes, 0);
});

Deno.test("fresh cache keeps its byte count exact through replace, delete, stale reads and deleteWhere", () => {
  const cache = new FreshCache<string, string>({
    maxEntries: 100,
    maxStaleMs: 1000,
    name: "Test",
    maxBytes: 100,
    sizeOf,
  });
  cache.set("a", "aaaaaa", 0);
  cache.set("a", "aa", 0);
  assert.equal(cache.bytes, 2);
  cache.set("b", "bbb", 0);
  cache.delete("b");
  assert.equal(cache.bytes, 2);
  assert.equal(cache.get("a", 1000), undefined, "stale");
  assert.equal(cache.bytes, 0);
  cache.set("c", "cc", 0);
  cache.set("d", "ddd", 0);
  cache.deleteWhere((value) => value.startsWith("d"));
  assert.equal(cache.bytes, 2);
  assert.equal(cache.size, 1);
});

Deno.test("fresh cache without maxBytes is bounded by entries only and counts no bytes", () => {
  const cache = new FreshCache<string, string>({ maxEntries: 2, maxStaleMs: 1000, name: "Test" });
  cache.set("a", "x".repeat(1000), 0);
  cache.set("b", "b", 0);
  cache.set("c", "c", 0);
  assert.equal(cache.size, 2);
  assert.equal(cache.bytes, 0);
});

Deno.test("fresh cache rejects a byte bound that is not a positive integer or comes without sizeOf", () => {
  const base = { maxEntries: 1, maxStaleMs: 0, name: "Test" };
  assert.throws(() => new FreshCache<string, string>({ ...base, maxBytes: 0, sizeOf }), RangeError);
  assert.throws(() => new FreshCache<string, string>({ ...base, maxBytes: 1.5, sizeOf }), RangeError);
  assert.throws(() => new FreshCache<string, string>({ ...base, maxBytes: 10 }), /needs "sizeOf"/);
});
