/**
 * @module
 * The signed sticky-assignment cookie: what the edge signs verifies, anything else — unsigned,
 * forged, changed in any character, signed with an unknown secret — does not; rotation; the
 * memo of verified values; the size budget with the signature.
 */
import assert from "node:assert/strict";
import { serializeCookie } from "../../../lib/http/cookies.ts";
import {
  formatSticky,
  STICKY_COOKIE,
  STICKY_PAYLOAD_MAX,
  STICKY_SIGNATURE_LENGTH,
  STICKY_VALUE_MAX,
  StickySigner,
} from "../../../lib/pipeline/sticky.ts";

const NOW = Date.UTC(2026, 10, 26, 12);
const SECRET = "sticky-secret-one-0123456789";
const OLD_SECRET = "sticky-secret-old-0123456789";

Deno.test("a value the edge signed verifies and gives its assignments", () => {
  const signer = new StickySigner([SECRET]);
  const value = signer.sign("checkout:control|hero:b");
  assert.equal(value.length, "checkout:control|hero:b".length + STICKY_SIGNATURE_LENGTH);
  const verified = signer.verify(value, NOW);
  assert.deepEqual([...verified!.assignments], [["checkout", "control"], ["hero", "b"]]);
  assert.equal(verified!.current, true);
});

Deno.test("an unsigned, forged or differently signed sticky value does not verify", () => {
  const signer = new StickySigner([SECRET]);
  const signed = signer.sign("hero:b");
  const signature = signed.slice(signed.lastIndexOf(".") + 1);
  for (
    const value of [
      undefined,
      "",
      "hero:b",
      "hero:b.",
      `.${signature}`,
      `hero:a.${signature}`,
      `hero:b|pricing:a.${signature}`,
      `${signed}x`,
      signed.slice(0, -1),
      `hero:b.${"A".repeat(43)}`,
      new StickySigner(["some-other-secret-0123456789"]).sign("hero:b"),
      `${"a".repeat(STICKY_VALUE_MAX)}.${signature}`,
    ]
  ) {
    assert.equal(signer.verify(value, NOW), undefined, String(value));
  }
});

Deno.test("the signature binds every character of the value", () => {
  const signer = new StickySigner([SECRET], { memoEntries: 0 });
  const signed = signer.sign("checkout:control|hero:b|pricing:annual");
  for (let i = 0; i < signed.length; i++) {
    const changed = signed.slice(0, i) + (signed[i] === "x" ? "y" : "x") + signed.slice(i + 1);
    assert.equal(signer.verify(changed, NOW), undefined, `character ${i} changed`);
  }
});

Deno.test("rotation: the first secret signs, an older one listed second still verifies", () => {
  const before = new StickySigner([OLD_SECRET]);
  const during = new StickySigner([SECRET, OLD_SECRET]);
  const after = new StickySigner([SECRET]);
  const old = before.sign("hero:b");
  const verified = during.verify(old, NOW);
  assert.deepEqual([...verified!.assignments], [["hero", "b"]]);
  assert.equal(verified!.current, false, "to be signed again with the new secret");
  const resigned = during.sign("hero:b");
  assert.equal(after.verify(resigned, NOW)?.current, true);
  assert.equal(after.verify(old, NOW), undefined, "once the old secret is gone");
});

Deno.test("verified values are remembered; without a memo each is checked again", () => {
  const signer = new StickySigner([SECRET]);
  const value = signer.sign("hero:b");
  assert.equal(signer.verify(value, NOW), signer.verify(value, NOW + 1000), "the same result object");
  const unmemoised = new StickySigner([SECRET], { memoEntries: 0 });
  assert.notEqual(unmemoised.verify(value, NOW), unmemoised.verify(value, NOW));
  assert.deepEqual(unmemoised.verify(value, NOW), signer.verify(value, NOW));
  // Bounded: more distinct values than entries pushes the oldest out, and all still verify.
  const small = new StickySigner([SECRET], { memoEntries: 2 });
  const values = ["a:1", "b:1", "c:1"].map((payload) => small.sign(payload));
  const first = values.map((v) => small.verify(v, NOW));
  assert.notEqual(small.verify(values[0], NOW), first[0], "evicted, verified afresh");
  assert.equal(small.verify(values[2], NOW), first[2]);
});

Deno.test("the longest assignment list fits in the cookie's budget with its signature", () => {
  const assignments: Record<string, string> = {};
  for (let i = 0; i < 100; i++) assignments[`experiment-${String(i).padStart(3, "0")}`] = "v".repeat(40);
  const payload = formatSticky(assignments);
  const value = new StickySigner([SECRET]).sign(payload);
  const nameValue = serializeCookie(STICKY_COOKIE, value, { maxAgeSeconds: 1, secure: true }).split(";")[0]!;
  const sent = nameValue.slice(STICKY_COOKIE.length + 1);
  assert.ok(sent.length <= STICKY_VALUE_MAX, `${sent.length}`);
  // Close to the budget: the list was cut to the payload's share, not far below it.
  assert.ok(sent.length > STICKY_PAYLOAD_MAX - 60 + STICKY_SIGNATURE_LENGTH, `${sent.length}`);
});

Deno.test("a signer needs a secret", () => {
  assert.throws(() => new StickySigner([]), RangeError);
});
