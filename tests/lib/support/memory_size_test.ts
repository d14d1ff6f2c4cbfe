import assert from "node:assert/strict";
import { estimateStringBytes, estimateValueBytes } from "../../../lib/support/memory_size.ts";

Deno.test("string estimate counts one byte per Latin-1 character and two otherwise", () => {
  assert.equal(estimateStringBytes(""), 24);
  assert.equal(estimateStringBytes("abcd"), 28);
  assert.equal(estimateStringBytes("äbcd"), 28, "Latin-1 is stored one byte per character");
  assert.equal(estimateStringBytes("€bcd"), 32, "one character beyond Latin-1 makes the string two-byte");
  assert.equal(estimateStringBytes("abcde") % 4, 0);
});

Deno.test("value estimate boxes only numbers outside the small-integer range", () => {
  assert.equal(estimateValueBytes(42), 0);
  assert.equal(estimateValueBytes(-(2 ** 30)), 0);
  assert.equal(estimateValueBytes(2 ** 30), 12);
  assert.equal(estimateValueBytes(1.5), 12);
  assert.equal(estimateValueBytes(1_790_000_000_000), 12);
  assert.equal(estimateValueBytes(true), 0);
  assert.equal(estimateValueBytes(null), 0);
  assert.equal(estimateValueBytes(undefined), 0);
});

Deno.test("value estimate grows with every element, property and character", () => {
  const view = { itemId: "p42", at: 1_790_000_000_000 };
  assert.equal(estimateValueBytes(view), 48 + 2 * 8 + estimateStringBytes("p42") + 12);
  const list = [view, view, view];
  assert.equal(estimateValueBytes(list), 40 + 3 * 8 + 3 * estimateValueBytes(view));
  assert.ok(estimateValueBytes({ ...view, itemId: "p42-longer" }) > estimateValueBytes(view));
  assert.ok(estimateValueBytes([...list, view]) > estimateValueBytes(list));
});

Deno.test("value estimate ignores inherited properties and stays finite on deep nesting", () => {
  const proto = { inherited: "x".repeat(1000) };
  const own = Object.assign(Object.create(proto), { a: 1 });
  assert.equal(estimateValueBytes(own), 48 + 8);
  let deep: unknown = "leaf";
  for (let i = 0; i < 10_000; i++) deep = [deep];
  assert.ok(Number.isFinite(estimateValueBytes(deep)));
});

Deno.test("deeply nested data is counted whole: as deep as sync accepts, and beyond from its JSON", () => {
  const nest = (depth: number, leaf: unknown): unknown => {
    let value = leaf;
    for (let i = 0; i < depth; i++) value = { a: value };
    return value;
  };
  const leaf = "x".repeat(40_000);
  // A profile attribute 64 levels deep (the sync limit) inside the cache's own few levels.
  assert.ok(estimateValueBytes({ profile: { attributes: nest(64, leaf) } }) > 40_000);
  assert.ok(estimateValueBytes(nest(200, leaf)) > 40_000, "past the exact walk, never a flat guess");
});
