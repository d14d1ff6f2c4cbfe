import assert from "node:assert/strict";
import { IP_GEO_DB_VERSION, IpGeoDb, ipGeoDbPath, loadIpGeoDb } from "../../lib/ip_geo.ts";

// Loaded once for the file: opening the 7.8 MB database is the slow part.
const db = await loadIpGeoDb(Deno.readFile);

Deno.test("the database loads from the npm package and describes itself", () => {
  assert.ok(ipGeoDbPath().endsWith("geo-whois-asn-country.mmdb"));
  assert.match(IP_GEO_DB_VERSION, /^\d+\.\d+\.\d+$/);
  const info = db.info;
  assert.equal(info.ipVersion, 6);
  assert.ok(info.nodeCount > 100_000);
  assert.ok(info.buildDate.getTime() > Date.UTC(2024, 0, 1));
});

// Addresses whose allocation is long-standing and that this database maps to the stated
// country (checked by reading the database): Google DNS, RIPE NCC, TU Berlin, JPNIC, Free (FR).
Deno.test("IPv4 addresses resolve to their country", () => {
  assert.equal(db.lookup("8.8.8.8"), "US");
  assert.equal(db.lookup("193.0.6.139"), "NL");
  assert.equal(db.lookup("130.149.7.201"), "DE");
  assert.equal(db.lookup("133.242.0.3"), "JP");
});

Deno.test("IPv6 addresses resolve to their country", () => {
  assert.equal(db.lookup("2001:4860:4860::8888"), "US");
  assert.equal(db.lookup("2001:67c:2e8:22::c100:68b"), "NL");
  assert.equal(db.lookup("2a01:e0c:1::1"), "FR");
});

Deno.test("IPv4-mapped IPv6, brackets and surrounding spaces are accepted", () => {
  assert.equal(db.lookup("::ffff:8.8.8.8"), "US");
  assert.equal(db.lookup("::ffff:c100:68b"), "NL");
  assert.equal(db.lookup("[2001:4860:4860::8888]"), "US");
  assert.equal(db.lookup(" 8.8.8.8 "), "US");
});

Deno.test("private, loopback, link-local, CGNAT, documentation and multicast addresses have no country", () => {
  for (
    const ip of [
      "10.0.0.1",
      "172.16.5.4",
      "192.168.1.1",
      "127.0.0.1",
      "169.254.1.1",
      "100.64.0.1",
      "0.0.0.0",
      "255.255.255.255",
      "192.0.2.1",
      "203.0.113.5",
      "224.0.0.1",
      "::1",
      "::",
      "fe80::1",
      "fc00::1",
      "fd12:3456::1",
      "2001:db8::1",
      "ff02::1",
      "::ffff:10.0.0.1",
    ]
  ) {
    assert.equal(db.lookup(ip), undefined, ip);
  }
});

Deno.test("invalid input has no country and never throws", () => {
  const garbage = [
    "",
    "garbage",
    "1.2.3",
    "256.1.1.1",
    "1.2.3.4.5",
    "0x7f.0.0.1",
    "010.0.0.1",
    "8.8.8.8/24",
    "8.8.8.8:443",
    ":::1",
    "2001:4860:4860::8888::1",
    "[8.8.8.8",
    "\u0000",
    "٨.٨.٨.٨",
    "8".repeat(10_000),
  ];
  for (const ip of garbage) assert.equal(db.lookup(ip), undefined, JSON.stringify(ip));
  // Not a string at all (untyped callers).
  assert.equal(db.lookup(undefined as unknown as string), undefined);
});

Deno.test("bytes that are not a MaxMind database are rejected with a clear error", () => {
  assert.throws(() => new IpGeoDb(new Uint8Array([1, 2, 3])), /Cannot open IP geo database/);
});

Deno.test("a missing database file is reported with its path", async () => {
  await assert.rejects(
    () => loadIpGeoDb(Deno.readFile, { path: "/nonexistent/geo.mmdb" }),
    /Cannot read IP geo database "\/nonexistent\/geo.mmdb"/,
  );
});
