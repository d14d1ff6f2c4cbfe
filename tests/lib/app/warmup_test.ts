import assert from "node:assert/strict";
import { DEFAULT_WARMUP_MAX_WAIT_MS, earlyConfig } from "../../../lib/app/warmup.ts";
import { parseConfig } from "../../../lib/app/config.ts";

const ORIGIN = { ORIGIN_URL: "http://127.0.0.1:8080" };

Deno.test("earlyConfig reads the same defaults as the full configuration", () => {
  const early = earlyConfig(ORIGIN)!;
  const full = parseConfig(ORIGIN);
  assert.equal(early.warmup, full.warmup);
  assert.equal(early.maxWaitMs, full.warmupMaxWaitMs);
  assert.equal(early.maxWaitMs, DEFAULT_WARMUP_MAX_WAIT_MS);
  assert.equal(early.port, full.port);
  assert.equal(early.hostname, full.hostname);
  assert.equal(early.originUrl.href, full.originUrl.href);
  assert.equal(early.originTimeoutMs, full.originTimeoutMs);
  assert.equal(early.shutdownTimeoutMs, full.shutdownTimeoutMs);
  assert.equal(early.onDeploy, full.onDeploy);
  const set = { ...ORIGIN, SHUTDOWN_TIMEOUT_MS: "2500" };
  assert.equal(earlyConfig(set)!.shutdownTimeoutMs, parseConfig(set).shutdownTimeoutMs);
});

Deno.test("earlyConfig leaves anything not plainly valid to the full parse", () => {
  for (
    const env of [
      {},
      { ORIGIN_URL: "ftp://origin" },
      { ...ORIGIN, PORT: "eighty" },
      { ...ORIGIN, PORT: "70000" },
      { ...ORIGIN, WARMUP: "sometimes" },
      { ...ORIGIN, WARMUP_MAX_WAIT_MS: "-1" },
      { ...ORIGIN, ORIGIN_TIMEOUT_MS: "0" },
      { ...ORIGIN, SHUTDOWN_TIMEOUT_MS: "soon" },
    ]
  ) {
    assert.equal(earlyConfig(env), undefined, JSON.stringify(env));
    assert.throws(() => parseConfig(env), JSON.stringify(env));
  }
});

Deno.test("before ready the user id header and every geo header are dropped, configured ones included", () => {
  const early = earlyConfig({
    ...ORIGIN,
    WARMUP: "passthrough",
    USER_ID_HEADER: "X-Auth-User",
    GEO_COUNTRY_HEADERS: "X-My-Country",
  })!;
  assert.equal(early.warmup, "passthrough");
  for (const name of ["x-auth-user", "x-my-country", "cf-ipcountry", "x-geo-region"]) {
    assert.ok(early.dropped.has(name), name);
  }
});
