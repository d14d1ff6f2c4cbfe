import assert from "node:assert/strict";
import {
  IP_GEO_DB_VERSION,
  IpGeoDb,
  type IpGeoDbFile,
  ipGeoDbPath,
  loadIpGeoDb,
  openIpGeoDb,
} from "../../../lib/pipeline/ip_geo.ts";

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

// The start-up path: the same database opened over its file, read block by block.
function countingFile(bytes: Uint8Array, options: { failReads?: () => boolean } = {}) {
  const reads: Array<[number, number]> = [];
  const file: IpGeoDbFile = {
    size: bytes.byteLength,
    readAt: (into, position) => {
      if (options.failReads?.()) throw new Error("disk on fire");
      reads.push([position, into.byteLength]);
      into.set(bytes.subarray(position, position + into.byteLength));
    },
  };
  return { file, reads, bytesRead: () => reads.reduce((sum, [, n]) => sum + n, 0) };
}

Deno.test("a database opened over its file reads only what lookups need and answers exactly", async () => {
  const bytes = await Deno.readFile(ipGeoDbPath());
  const { file, bytesRead } = countingFile(bytes);
  const paged = new IpGeoDb(file);
  assert.deepEqual(paged.info, db.info);
  const atOpen = bytesRead();
  assert.ok(atOpen < 256 * 1024, `read ${atOpen} bytes to open`);
  assert.equal(paged.lookup("85.214.132.117"), "DE");
  assert.ok(bytesRead() - atOpen < 256 * 1024, `read ${bytesRead() - atOpen} bytes for one lookup`);
  assert.equal(paged.bytesRead, bytesRead());
});

Deno.test("a database opened over its file agrees with the whole database on every address", () => {
  const paged = openIpGeoDb(Deno.openSync);
  const random = mulberry32(7);
  const octet = () => Math.floor(random() * 256);
  const group = () => Math.floor(random() * 0x10000).toString(16);
  for (let i = 0; i < 20_000; i++) {
    const v4 = `${octet()}.${octet()}.${octet()}.${octet()}`;
    assert.equal(paged.lookup(v4), db.lookup(v4), v4);
    const v6 = `2${
      Math.floor(random() * 0x1000).toString(16).padStart(3, "0")
    }:${group()}:${group()}::${group()}`;
    assert.equal(paged.lookup(v6), db.lookup(v6), v6);
  }
  for (const ip of ["8.8.8.8", "::ffff:8.8.8.8", "2a01:e0c:1::1", "10.0.0.1", "garbage"]) {
    assert.equal(paged.lookup(ip), db.lookup(ip), ip);
  }
});

Deno.test("a failed block read gives no country for that lookup and is retried on the next", async () => {
  const bytes = await Deno.readFile(ipGeoDbPath());
  let failing = false;
  const { file } = countingFile(bytes, { failReads: () => failing });
  const paged = new IpGeoDb(file);
  failing = true;
  assert.equal(paged.lookup("130.149.7.201"), undefined);
  failing = false;
  assert.equal(paged.lookup("130.149.7.201"), "DE");
});

Deno.test("a database file that cannot be opened is reported with its path", () => {
  assert.throws(
    () => openIpGeoDb(Deno.openSync, { path: "/nonexistent/geo.mmdb" }),
    /Cannot read IP geo database "\/nonexistent\/geo.mmdb"/,
  );
});

// A small seeded generator, so that a failure names an address that can be looked up again.
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
