import assert from "node:assert/strict";
import {
  canonicalAddress,
  CidrList,
  clientAddress,
  hopAddress,
  isLoopback,
  parseAddress,
} from "../../../lib/http/net.ts";

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
  assert.throws(
    () => new CidrList(["10.0.0.0/33"]),
    /"10.0.0.0\/33" needs a decimal prefix length from 0 to 32/,
  );
});

Deno.test("CIDR lists refuse shorthand, octal and hex IPv4, zones and bad prefixes, naming the entry", () => {
  // Each would be read the inet_aton way (a different network than meant) or is not an address.
  const refused = [
    "10.0.0/8",
    "192.168.1/24",
    "10.1",
    "10",
    "4294967295",
    "010.0.0.1",
    "10.0.0.01",
    "0x0a.0.0.1",
    "10.0.0.0x1",
    "256.0.0.1",
    "1.2.3.4.5",
    "::ffff:010.0.0.1",
    "::ffff:10.1",
    "00001::",
    "fe80::1%eth0",
    "2001:db8::g",
    "not an ip",
  ];
  for (const entry of refused) {
    assert.throws(
      () => new CidrList(["127.0.0.1/32", entry]),
      new RegExp(
        `^Error: "${entry.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}" is not a full IP address or CIDR range`,
      ),
      entry,
    );
  }
  for (
    const entry of [
      "10.0.0.0/33",
      "10.0.0.0/08",
      "10.0.0.0/-1",
      "10.0.0.0/+8",
      "10.0.0.0/",
      "::/129",
      "::/1e2",
    ]
  ) {
    assert.throws(() => new CidrList([entry]), /needs a decimal prefix length/, entry);
  }
  // Full forms still parse, with or without a prefix.
  const list = new CidrList([
    "192.168.1.0/24",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "2001:db8::/32",
    "::1",
    "::ffff:1.2.3.4",
  ]);
  assert.ok(list.has("192.168.1.7"));
  assert.ok(list.has("1.2.3.4"));
  assert.ok(list.has("::1"));
});

Deno.test("192.168.1.0/24 is the network meant, never the one inet_aton reads into 192.168.1/24", () => {
  const list = new CidrList(["192.168.1.0/24"]);
  assert.ok(list.has("192.168.1.7"));
  assert.ok(!list.has("192.168.0.7"));
});

Deno.test("a shorthand, octal or hex peer or forwarded hop is no address: never trusted, never the client", () => {
  const trusted = new CidrList(["10.0.0.0/8"]);
  for (const spelling of ["10.1", "012.0.0.1", "0x0a.0.0.1", "167772161"]) {
    assert.equal(parseAddress(spelling), undefined, spelling);
    assert.ok(!trusted.has(spelling), spelling);
  }
  // A shorthand hop ends the walk instead of naming 10.0.0.1 or 192.168.0.1.
  assert.equal(clientAddress("10.0.0.1", "203.0.113.7, 10.1", trusted), "10.0.0.1");
  assert.equal(clientAddress("10.0.0.1", "192.168.1", trusted), "10.0.0.1");
  // An untrusted peer in shorthand is not made canonical either.
  assert.equal(clientAddress("10.1", "198.51.100.7", trusted), "10.1");
});

Deno.test("loopback is 127.0.0.0/8, ::1 and their IPv4-mapped form", () => {
  for (const address of ["127.0.0.1", "127.255.0.9", "::1", "[::1]", "::ffff:127.0.0.1"]) {
    assert.ok(isLoopback(address), address);
  }
  for (const address of ["10.0.0.1", "0.0.0.0", "::", "2001:db8::1", "127.1", "localhost", ""]) {
    assert.ok(!isLoopback(address), address);
  }
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

Deno.test("CIDR lists take IPv4-mapped IPv6 entries as the IPv4 ranges they carry", () => {
  const list = new CidrList(["::ffff:10.0.0.0/104", "::ffff:192.0.2.1", "::ffff:198.51.100.0/120"]);
  assert.deepEqual(
    ["10.0.0.1", "::ffff:10.0.0.1", "192.0.2.1", "::ffff:192.0.2.1", "198.51.100.9"].map((a) => list.has(a)),
    [true, true, true, true, true],
  );
  assert.ok(!list.has("11.0.0.1"));
  assert.ok(!list.has("192.0.2.2"));
  assert.ok(!list.has("198.51.101.9"));
  assert.throws(() => new CidrList(["::ffff:0:0/95"]), /IPv4-mapped range shorter than \/96/);
  // Other IPv6 entries are not touched.
  assert.ok(new CidrList(["::/0"]).has("2001:db8::1"));
});

Deno.test("client address strips a port from a forwarded hop, and never from a bare IPv6 address", () => {
  const trusted = new CidrList(["10.0.0.0/8", "2001:db8:ffff::/48"]);
  assert.equal(clientAddress("10.0.0.1", "203.0.113.7:51234", trusted), "203.0.113.7");
  assert.equal(clientAddress("10.0.0.1", "[2001:db8::7]:443", trusted), "2001:db8::7");
  assert.equal(clientAddress("10.0.0.1", "[2001:db8::7]", trusted), "2001:db8::7");
  // A trusted hop with a port is still recognised as trusted and walked past.
  assert.equal(clientAddress("10.0.0.1", "203.0.113.7, 10.0.0.2:8080", trusted), "203.0.113.7");
  assert.equal(clientAddress("10.0.0.1", "203.0.113.7, [2001:db8:ffff::2]:8443", trusted), "203.0.113.7");
  // Without brackets the last group of an IPv6 address is part of it, not a port.
  assert.equal(clientAddress("10.0.0.1", "2001:db8::7:443", trusted), "2001:db8::7:443");
  assert.equal(hopAddress(" 2001:db8::7 "), "2001:db8::7");
  assert.equal(hopAddress("::ffff:192.0.2.1"), "::ffff:192.0.2.1");
  assert.equal(clientAddress("10.0.0.1", "::ffff:192.0.2.1", trusted), "192.0.2.1");
  // Still malformed: the walk ends there.
  assert.equal(clientAddress("10.0.0.1", "198.51.100.7, host.example:80", trusted), "10.0.0.1");
});
