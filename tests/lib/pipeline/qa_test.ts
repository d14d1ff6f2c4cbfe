/**
 * @module
 * QA forcing headers: honoured only with the configured token, checked against the rules, and
 * in the decision never written into the sticky assignments.
 */
import assert from "node:assert/strict";
import { QaOverrideError, qaOverrides } from "../../../lib/pipeline/qa.ts";
import { parseRules } from "../../../lib/rules/compile.ts";
import { decide } from "../../../lib/rules/decide.ts";
import { makeFacts, makeVisitor } from "../rules/rules_fixtures.ts";

const TOKEN = "qa-token-0123456789abcdef";
const rules = parseRules({
  version: 1,
  experiments: [
    { key: "hero", variations: ["control", "a", "b"], weights: [1, 0, 0] },
    { key: "pricing", variations: ["control", "annual"], enabled: false, match: "/pricing" },
  ],
  flags: [
    { key: "new-search", type: "boolean", default: false },
    { key: "banner", type: "string", default: "" },
    { key: "limit", type: "number", default: 10 },
    { key: "layout", type: "object", default: { columns: 2 } },
  ],
});

function qa(headers: Record<string, string>, token: string | null = TOKEN) {
  return qaOverrides(new Headers(headers), { token: token ?? undefined, rules });
}

Deno.test("qa: variations and flag values are forced only with the configured token", () => {
  const headers = {
    "x-edge-qa": TOKEN,
    "x-edge-qa-variants": "hero=b, pricing=annual",
    "x-edge-qa-flags": "new-search=true,banner=Hello%2C%20world,limit=3,layout=%7B%22columns%22%3A3%7D",
  };
  const forced = qa(headers);
  assert.deepEqual([...forced!.variants], [["hero", "b"], ["pricing", "annual"]]);
  assert.deepEqual([...forced!.flags], [
    ["new-search", true],
    ["banner", "Hello, world"],
    ["limit", 3],
    ["layout", { columns: 3 }],
  ]);
  assert.equal(qa(headers, null), undefined, "no QA_TOKEN configured");
  assert.equal(qa({ ...headers, "x-edge-qa": "wrong-token-0123456789ab" }), undefined);
  assert.equal(qa({ ...headers, "x-edge-qa": `${TOKEN}x` }), undefined);
  const { "x-edge-qa": _, ...withoutToken } = headers;
  assert.equal(qa(withoutToken), undefined);
  assert.equal(qa({ "x-edge-qa": TOKEN }), undefined, "the token alone forces nothing");
});

Deno.test("qa: with the token, an entry the rules cannot serve is a 400 naming it", () => {
  const cases: [Record<string, string>, RegExp][] = [
    [
      { "x-edge-qa-variants": "hero=z" },
      /"x-edge-qa-variants" entry "hero=z": "z" is not a variation of experiment "hero"/,
    ],
    [{ "x-edge-qa-variants": "nope=b" }, /the rules have no experiment "nope"/],
    [{ "x-edge-qa-variants": "hero" }, /"hero" is not of the form key=value/],
    [{ "x-edge-qa-flags": "new-search=maybe" }, /flag "new-search" takes a boolean \(true or false\)/],
    [{ "x-edge-qa-flags": "limit=ten" }, /flag "limit" takes a number/],
    [{ "x-edge-qa-flags": "layout=%5B1%5D" }, /flag "layout" takes an object \(percent-encoded JSON\)$/],
    [{ "x-edge-qa-flags": "banner=%zz" }, /flag "banner" takes a percent-encoded string/],
    [{ "x-edge-qa-flags": "ghost=1" }, /the rules have no flag "ghost"/],
    [{ "x-edge-qa-flags": Array.from({ length: 101 }, () => "limit=1").join(",") }, /more than 100 entries/],
  ];
  for (const [headers, message] of cases) {
    assert.throws(() => qa({ "x-edge-qa": TOKEN, ...headers }), (error: unknown) => {
      assert.ok(error instanceof QaOverrideError);
      assert.equal(error.status, 400);
      assert.equal(error.code, "invalid_qa_override");
      assert.match(error.message, message);
      return true;
    });
    // Without the right token the same headers are not even read.
    assert.equal(qa({ "x-edge-qa": "wrong-token-0123456789ab", ...headers }), undefined);
  }
});

Deno.test("qa: a forced variation is served but never becomes a sticky assignment", () => {
  const forced = qa({ "x-edge-qa": TOKEN, "x-edge-qa-variants": "hero=b,pricing=annual" })!;
  const visitor = makeVisitor("v-1", { sticky: new Map([["hero", "a"]]) });
  const decision = decide({ facts: makeFacts({ path: "/pricing" }), visitor, forced }, rules);
  // Forced even though pricing is disabled; hero's remembered "a" stays what the cookie holds.
  assert.deepEqual(decision.variants, { hero: "b", pricing: "annual" });
  assert.deepEqual(decision.stickyAssignments, { hero: "a" });
  assert.equal(decision.forced, true);
  // Not on a path the experiment's match does not cover.
  const elsewhere = decide({ facts: makeFacts({ path: "/" }), visitor, forced }, rules);
  assert.deepEqual(elsewhere.variants, { hero: "b" });
  // A new visitor forced into b gets no sticky entry for it; unforced, it is bucketed as usual.
  const fresh = decide({ facts: makeFacts(), visitor: makeVisitor("v-2"), forced }, rules);
  assert.deepEqual(fresh.stickyAssignments, {});
  const plain = decide({ facts: makeFacts(), visitor: makeVisitor("v-2") }, rules);
  assert.deepEqual([plain.variants, plain.stickyAssignments, plain.forced], [
    { hero: "control" },
    { hero: "control" },
    undefined,
  ]);
  // Bots too: QA may check what a crawler is served.
  const bot = decide({
    facts: makeFacts({ device: { device: "bot", isBot: true } }),
    visitor: makeVisitor("v-3"),
    forced,
  }, rules);
  assert.equal(bot.variants.hero, "b");
});

Deno.test("qa: forced flag values replace the evaluated ones", () => {
  const forced = qa({ "x-edge-qa": TOKEN, "x-edge-qa-flags": "new-search=true,limit=3" })!;
  const decision = decide({ facts: makeFacts(), visitor: makeVisitor("v-1"), forced }, rules);
  assert.deepEqual(decision.flags, { "new-search": true, banner: "", limit: 3, layout: { columns: 2 } });
});
