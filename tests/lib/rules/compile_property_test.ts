/**
 * Property tests of rule parsing: `parseRules` answers any JSON — random documents, and valid
 * rule sets with random fields replaced by random JSON — with compiled rules or a `RulesError`;
 * it never throws anything else (a `TypeError` from a half-validated structure, a `SyntaxError`
 * from a glob or pattern, a stack overflow).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseRules, RulesError } from "../../../lib/rules/compile.ts";
import { ISSUE_EXAMPLE_JSON } from "./rules_fixtures.ts";

const VALID: Record<string, unknown> = JSON.parse(ISSUE_EXAMPLE_JSON);

function parsesOrRulesError(input: unknown): void {
  try {
    const rules = parseRules(input);
    assert.equal(typeof rules.version, "number");
  } catch (error) {
    assert.ok(
      error instanceof RulesError,
      `unexpected ${error instanceof Error ? error.stack : String(error)}`,
    );
    assert.ok(error.problems.length > 0 || error.message.length > 0);
  }
}

/** Replaces the value at a random path of a JSON document with another JSON value. */
function mutate(doc: unknown, path: number[], replacement: unknown): unknown {
  if (path.length === 0 || doc === null || typeof doc !== "object") return replacement;
  const [step, ...rest] = path as [number, ...number[]];
  if (Array.isArray(doc)) {
    if (doc.length === 0) return [replacement];
    const copy = [...doc];
    const index = step % doc.length;
    copy[index] = mutate(copy[index], rest, replacement);
    return copy;
  }
  const keys = Object.keys(doc);
  if (keys.length === 0) return { x: replacement };
  const key = keys[step % keys.length]!;
  return { ...doc, [key]: mutate((doc as Record<string, unknown>)[key], rest, replacement) };
}

const hostileStrings = fc.constantFrom(
  "*",
  "**",
  "/*/*/*",
  "(",
  "[",
  "\\",
  "//evil.example/x",
  "/../x",
  "/%2e%2e/x",
  "__proto__",
  "constructor",
  "a".repeat(10_000),
  "\u0000",
  "\ud800",
  "NaN",
);
const jsonish = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  hostileStrings,
  fc.constantFrom(1e308, -1, 0, 0.5, 2, 1.0000001, Number.MAX_SAFE_INTEGER + 2),
);

Deno.test("property: parseRules never throws anything but RulesError on arbitrary JSON", () => {
  fc.assert(
    fc.property(fc.json({ maxDepth: 6 }), (text) => parsesOrRulesError(JSON.parse(text))),
    { numRuns: 1000 },
  );
});

Deno.test("property: parseRules never throws anything but RulesError on a mutated valid rule set", () => {
  parsesOrRulesError(VALID);
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.array(fc.nat(20), { maxLength: 6 }), jsonish), { minLength: 1, maxLength: 4 }),
      (mutations) => {
        let doc: unknown = VALID;
        for (const [path, replacement] of mutations) doc = mutate(doc, path, replacement);
        parsesOrRulesError(doc);
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("parseRules answers a rule set nested 10 000 levels deep with RulesError", () => {
  let deep: unknown = {};
  for (let i = 0; i < 10_000; i++) deep = { routes: [deep] };
  assert.throws(() => parseRules({ ...VALID, regions: deep }), RulesError);
  assert.throws(() => parseRules(deep), RulesError);
});
