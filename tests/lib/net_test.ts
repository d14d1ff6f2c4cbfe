import assert from "node:assert/strict";
import { canonicalAddress, CidrList, clientAddress } from "../../lib/net.ts";

Deno.test("CIDR lists match IPv4, IPv6 and IPv4-mapped IPv6", () => {
  const list = new CidrList(["10.0.0.0/8", "192.168.1.1", "2001:db8::/32"]);
  assert.ok(list.has("10.255.0.1"));
  assert.ok(list.has("::ffff:10.0.0.1"));
  assert.ok(list.has("192.168.1.1"));
  assert.ok(!list.has("192.168.1.2"));
  assert.ok(list.has("2001:db8::1"));
  assert.ok(list.has("[2001:db8::1]"));
  assert.ok(!list.has("2001:db9::1"));
  assert.ok(!list.has("not an ip"));
  assert.ok(!list.has(undefined));
  assert.throws(() => new CidrList(["10.0.0.0/33"]), /not an IP address or CIDR range/);
});

Deno.test("client address walks a trusted X-Forwarded-For chain from the right", () => {
  const trusted = new CidrList(["10.0.0.0/8"]);
  assert.equal(clientAddress("10.0.0.1", "198.51.100.7, 10.0.0.2", trusted), "198.51.100.7");
  // A client-forged left part is skipped: the right-most untrusted address wins.
  assert.equal(clientAddress("10.0.0.1", "1.1.1.1, 198.51.100.7", trusted), "198.51.100.7");
  // Untrusted peer: the header is ignored.
  assert.equal(clientAddress("203.0.113.1", "198.51.100.7", trusted), "203.0.113.1");
  // A malformed hop ends the trusted part of the chain.
  assert.equal(clientAddress("10.0.0.1", "198.51.100.7, garbage", trusted), "10.0.0.1");
  assert.equal(canonicalAddress("::ffff:192.0.2.1"), "192.0.2.1");
});
