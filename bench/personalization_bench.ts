/**
 * @module
 * Micro-benchmarks of the personalization building blocks: hashing and bucketing, device
 * classification (cold and cached User-Agent parsing) and IP → country lookups.
 * Run with `deno task bench bench/personalization_bench.ts`.
 */
import {
  assignVariation,
  type ExperimentSpec,
  getBucketRanges,
  hash,
  inNamespace,
} from "../lib/rules/bucketing.ts";
import { classifyDevice, UaCache } from "../lib/pipeline/device.ts";
import { loadIpGeoDb } from "../lib/pipeline/ip_geo.ts";

const ids = Array.from({ length: 1024 }, (_, i) => `anon-${i.toString(36)}-${(i * 7919) % 10007}`);
let next = 0;
const nextId = () => ids[next++ & 1023]!;

const hero: ExperimentSpec = {
  key: "hero",
  seed: "hero",
  hashVersion: 2,
  numVariations: 3,
  weights: [0.5, 0.25, 0.25],
  coverage: 1,
};
const namespaced: ExperimentSpec = { ...hero, key: "checkout", namespace: ["checkout", 0, 0.5] };

Deno.bench("hash v2", { group: "bucketing", baseline: true }, () => {
  hash("hero", nextId(), 2);
});
Deno.bench("hash v1", { group: "bucketing" }, () => {
  hash("hero", nextId(), 1);
});
Deno.bench("inNamespace", { group: "bucketing" }, () => {
  inNamespace(nextId(), ["checkout", 0, 0.5]);
});
Deno.bench("getBucketRanges (3 variations)", { group: "bucketing" }, () => {
  getBucketRanges(3, 0.8, [0.5, 0.25, 0.25]);
});
Deno.bench("assignVariation", { group: "bucketing" }, () => {
  assignVariation(nextId(), hero);
});
Deno.bench("assignVariation with namespace", { group: "bucketing" }, () => {
  assignVariation(nextId(), namespaced);
});
Deno.bench("assignVariation × 5 experiments", { group: "bucketing" }, () => {
  const id = nextId();
  for (let i = 0; i < 5; i++) assignVariation(id, hero);
});

const chromeAndroid =
  "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";
const hinted = new Headers({
  "user-agent": chromeAndroid,
  "sec-ch-ua-mobile": "?1",
  "sec-ch-ua-platform": '"Android"',
  "sec-ch-viewport-width": "412",
  "sec-ch-dpr": "2.625",
  "device-memory": "4",
  ect: "4g",
  rtt: "100",
  downlink: "9.5",
});
// Distinct User-Agents, so the cold case really parses every time.
const coldHeaders = Array.from(
  { length: 4096 },
  (_, i) => new Headers({ "user-agent": chromeAndroid.replace("124.0.0.0", `124.0.${i}.0`), ect: "3g" }),
);
let nextCold = 0;
const warmCache = new UaCache(1000);
classifyDevice(hinted, { uaCache: warmCache });

Deno.bench("classifyDevice, cold UA (no cache)", { group: "device" }, () => {
  classifyDevice(coldHeaders[nextCold++ & 4095]!);
});
Deno.bench("classifyDevice, cached UA", { group: "device", baseline: true }, () => {
  classifyDevice(hinted, { uaCache: warmCache });
});

const db = await loadIpGeoDb(Deno.readFile);
const v4 = ["8.8.8.8", "193.0.6.139", "130.149.7.201", "133.242.0.3", "81.2.69.142", "200.160.2.3"];
const v6 = ["2001:4860:4860::8888", "2001:67c:2e8:22::c100:68b", "2a01:e0c:1::1", "2a00:1450:4001:82b::200e"];
let nextIp = 0;

// The database remembers its last 4096 answers: these repeat a few addresses (a returning
// client), the "distinct" ones never repeat within the memo and walk the search tree each time.
Deno.bench("geo lookup IPv4 (remembered)", { group: "geo", baseline: true }, () => {
  db.lookup(v4[nextIp++ % v4.length]!);
});
Deno.bench("geo lookup IPv6 (remembered)", { group: "geo" }, () => {
  db.lookup(v6[nextIp++ % v6.length]!);
});
let distinct = 0;
Deno.bench("geo lookup IPv4, distinct addresses", { group: "geo" }, () => {
  const n = distinct++;
  db.lookup(`${1 + (n % 223)}.${(n >>> 8) & 255}.${(n >>> 3) & 255}.${n & 255}`);
});
Deno.bench("geo lookup IPv6, distinct addresses", { group: "geo" }, () => {
  const n = distinct++;
  db.lookup(`2a0${n % 10}:${(n >>> 4).toString(16)}::${(n & 0xffff).toString(16)}`);
});
Deno.bench("geo lookup IPv4-mapped IPv6", { group: "geo" }, () => {
  db.lookup("::ffff:8.8.8.8");
});
Deno.bench("geo lookup private (rejected early)", { group: "geo" }, () => {
  db.lookup("10.1.2.3");
});
