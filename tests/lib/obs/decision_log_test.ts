import assert from "node:assert/strict";
import {
  createDecisionLogger,
  decisionLogEntry,
  type DecisionLogInputs,
  hashVisitor,
  resolveLogHashKey,
  shouldSample,
  truncateIp,
} from "../../../lib/obs/decision_log.ts";
import { createLogger } from "../../../lib/obs/log.ts";

const KEY = "decision-log-test-key-0123456789";

function ids(n: number): string[] {
  // Deterministic, UUID-shaped ids (the service's own are random UUIDs).
  return Array.from({ length: n }, (_, i) => {
    const hex = (i * 2654435761 >>> 0).toString(16).padStart(8, "0");
    return `${hex}-${(i & 0xffff).toString(16).padStart(4, "0")}-4000-8000-${
      i.toString(16).padStart(12, "0")
    }`;
  });
}

Deno.test("sampling rate is within tolerance over 10,000 request ids", () => {
  const all = ids(10_000);
  for (const rate of [0.01, 0.1, 0.5]) {
    const sampled = all.filter((id) => shouldSample(id, rate)).length;
    const expected = rate * all.length;
    // Four standard deviations of a binomial: fails by chance far less than once in 10,000 runs.
    const tolerance = 4 * Math.sqrt(all.length * rate * (1 - rate));
    assert.ok(Math.abs(sampled - expected) <= tolerance, `rate ${rate}: ${sampled} of ${all.length}`);
  }
  assert.equal(all.filter((id) => shouldSample(id, 0)).length, 0);
  assert.equal(all.filter((id) => shouldSample(id, 1)).length, all.length);
  assert.equal(all.filter((id) => shouldSample(id, Number.NaN)).length, 0);
});

Deno.test("sampling is deterministic per request id and nested across rates", () => {
  for (const id of ids(2000)) {
    const at1 = shouldSample(id, 0.01);
    assert.equal(shouldSample(id, 0.01), at1);
    // An id sampled at 1% is also sampled at 10%: raising the rate only adds lines.
    if (at1) assert.ok(shouldSample(id, 0.1));
  }
});

Deno.test("a salt changes which ids are sampled but not how many", () => {
  const all = ids(10_000);
  const plain = new Set(all.filter((id) => shouldSample(id, 0.1)));
  const salted = all.filter((id) => shouldSample(id, 0.1, { salt: "secret" }));
  const overlap = salted.filter((id) => plain.has(id)).length;
  assert.ok(Math.abs(salted.length - 1000) <= 120, `${salted.length}`);
  // Independent choices overlap in about 10% of the sampled ids, not all of them.
  assert.ok(overlap < 200, `overlap ${overlap}`);
});

const INPUTS: DecisionLogInputs = {
  requestId: "req-1",
  rulesVersion: 12,
  region: "EU",
  country: "DE",
  device: "mobile",
  network: "slow",
  variants: { "checkout-button": "green" },
  flags: { "new-nav": true, "banner-text": "Summer sale", limits: { max: 3 }, list: [1, 2], n: 4 },
  userKey: "user-8812-alice@example.com",
  loggedIn: true,
  clientIp: "203.0.113.77",
  routeClass: "proxy",
  matchedRoute: "/api/products/*",
  action: "proxy",
  status: 200,
  cache: "hit",
  readThrough: "skipped",
  durations: { total: 4.5678, facts: 0.0123, decide: 0.004, origin: 3.2 },
};

Deno.test("a decision log entry carries the decision and no raw personal data", () => {
  const entry = decisionLogEntry(INPUTS, { hashKey: KEY });
  assert.deepEqual(entry, {
    kind: "decision",
    requestId: "req-1",
    rulesVersion: 12,
    region: "EU",
    country: "DE",
    device: "mobile",
    network: "slow",
    visitor: "user",
    visitorHash: hashVisitor("user-8812-alice@example.com", KEY),
    clientNet: "203.0.113.0/24",
    routeClass: "proxy",
    route: "/api/products/*",
    action: "proxy",
    status: 200,
    cache: "hit",
    readThrough: "skipped",
    variants: { "checkout-button": "green" },
    flags: { "new-nav": true, "banner-text": "Summer sale", limits: "[object]", list: "[array]", n: 4 },
    durMs: { total: 4.57, facts: 0.01, decide: 0, origin: 3.2 },
  });
  assert.match(entry.visitorHash!, /^[0-9a-f]{16}$/);
  const text = JSON.stringify(entry);
  for (const secret of ["user-8812", "alice", "example.com", "203.0.113.77", KEY]) {
    assert.ok(!text.includes(secret), `entry leaks ${secret}`);
  }
});

Deno.test("visitor hashes depend on the key and are stable under it", () => {
  const a = hashVisitor("anon-1", KEY);
  assert.equal(hashVisitor("anon-1", KEY), a);
  assert.notEqual(hashVisitor("anon-2", KEY), a);
  assert.notEqual(hashVisitor("anon-1", "another-key-0123456789"), a);
  const anonymous = decisionLogEntry({ ...INPUTS, loggedIn: false, userKey: "anon-1" }, { hashKey: KEY });
  assert.equal(anonymous.visitor, "anonymous");
  assert.equal(anonymous.visitorHash, a);
  const nobody = decisionLogEntry({ ...INPUTS, userKey: undefined }, { hashKey: KEY });
  assert.equal(nobody.visitor, "none");
  assert.equal(nobody.visitorHash, undefined);
});

Deno.test("client addresses are cut to /24 and /48 by default", () => {
  assert.equal(truncateIp("198.51.100.200"), "198.51.100.0/24");
  assert.equal(truncateIp("::ffff:198.51.100.200"), "198.51.100.0/24");
  assert.equal(truncateIp("2001:db8:abcd:12:3456:789a:bcde:f012"), "2001:db8:abcd::/48");
  assert.equal(truncateIp("[2001:db8::1]"), "2001:db8::/48");
  assert.equal(truncateIp("198.51.100.200", { ipv4Prefix: 16 }), "198.51.0.0/16");
  assert.equal(truncateIp("198.51.100.200", { ipv4Prefix: 20 }), "198.51.96.0/20");
  assert.equal(truncateIp("198.51.100.200", { ipv4Prefix: 0 }), undefined);
  assert.equal(truncateIp("not an address"), undefined);
  const v6 = decisionLogEntry({ ...INPUTS, clientIp: "2001:db8:abcd:12::99" }, { hashKey: KEY });
  assert.equal(v6.clientNet, "2001:db8:abcd::/48");
  assert.ok(!JSON.stringify(v6).includes(":12:"));
  const bogus = decisionLogEntry({ ...INPUTS, clientIp: "evil\nforged" }, { hashKey: KEY });
  assert.equal(bogus.clientNet, undefined);
});

Deno.test("logged strings are length-capped and stripped of control characters", () => {
  const entry = decisionLogEntry({
    ...INPUTS,
    region: 'EU\n{"level":"error"}',
    variants: { exp: "x".repeat(500) },
    flags: Object.fromEntries(Array.from({ length: 80 }, (_, i) => [`f${i}`, i])),
  }, { hashKey: KEY });
  assert.ok(!entry.region.includes("\n"));
  assert.equal(entry.variants.exp!.length, 64);
  assert.equal(Object.keys(entry.flags).length, 50);
});

Deno.test("the decision logger writes sampled requests only, as one JSON line each", () => {
  const lines: string[] = [];
  const log = createLogger("info", { now: () => 0, sink: (line) => lines.push(line) });
  const write = createDecisionLogger({ log, rate: 0.1, hashKey: KEY });
  const all = ids(1000);
  const written = all.filter((requestId) => write({ ...INPUTS, requestId })).length;
  assert.equal(lines.length, written);
  assert.equal(written, all.filter((id) => shouldSample(id, 0.1)).length);
  const parsed = JSON.parse(lines[0]!);
  assert.equal(parsed.msg, "decision");
  assert.equal(parsed.kind, "decision");
  assert.equal(parsed.rulesVersion, 12);
  for (const line of lines) assert.ok(!line.includes("alice") && !line.includes("203.0.113.77"));
});

Deno.test("the log hash key is the configured one, or random per process", () => {
  assert.deepEqual(resolveLogHashKey("configured-key-0123456789", { randomBytes: () => new Uint8Array() }), {
    key: "configured-key-0123456789",
    generated: false,
  });
  const generated = resolveLogHashKey(undefined, { randomBytes: (n) => new Uint8Array(n).fill(7) });
  assert.equal(generated.generated, true);
  assert.deepEqual(generated.key, new Uint8Array(32).fill(7));
  assert.match(hashVisitor("u", generated.key), /^[0-9a-f]{16}$/);
});

Deno.test("a decision QA forced is marked qa, so its variants are not counted as exposures", () => {
  assert.equal(decisionLogEntry({ ...INPUTS, forced: true }, { hashKey: KEY }).qa, true);
  assert.equal("qa" in decisionLogEntry(INPUTS, { hashKey: KEY }), false);
});
