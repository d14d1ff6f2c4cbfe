import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../../lib/config.ts";

function problems(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("config applies defaults for everything but ORIGIN_URL", () => {
  const config = parseConfig({ ORIGIN_URL: "http://127.0.0.1:8080/shop" });
  assert.equal(config.port, 8000);
  assert.equal(config.hostname, "0.0.0.0");
  assert.equal(config.originUrl.href, "http://127.0.0.1:8080/shop");
  assert.equal(config.originTimeoutMs, 10_000);
  assert.equal(config.logLevel, "info");
  assert.equal(config.kvPath, undefined);
  assert.equal(config.sessionCookie, "sid");
  assert.ok(config.trustedProxies.empty);
});

Deno.test("config names each missing or invalid variable", () => {
  assert.deepEqual(problems({}), ["ORIGIN_URL is required but not set"]);
  const many = problems({
    ORIGIN_URL: "ftp://x",
    PORT: "80a",
    ORIGIN_TIMEOUT_MS: "0",
    LOG_LEVEL: "loud",
    CDN_SECRET: "short",
  });
  assert.equal(many.length, 5);
  assert.match(many.join("\n"), /ORIGIN_URL must be an absolute http\(s\) URL/);
  assert.match(many.join("\n"), /PORT must be a number \(got "80a"\)/);
  assert.match(many.join("\n"), /ORIGIN_TIMEOUT_MS must be at least 1/);
  assert.match(many.join("\n"), /LOG_LEVEL must be one of/);
  // Secrets are never echoed back.
  assert.match(many.join("\n"), /CDN_SECRET must be at least 16 characters/);
  assert.doesNotMatch(many.join("\n"), /"short"/);
});

Deno.test("config rejects origin URLs with credentials or a query", () => {
  assert.equal(problems({ ORIGIN_URL: "http://user:pw@origin/" }).length, 1);
  assert.equal(problems({ ORIGIN_URL: "http://origin/?a=1" }).length, 1);
});

Deno.test("config validates TRUSTED_PROXIES and KV Connect settings", () => {
  assert.match(
    problems({ ORIGIN_URL: "http://o", TRUSTED_PROXIES: "10.0.0.0/8, nonsense" })[0]!,
    /TRUSTED_PROXIES has an invalid entry: "nonsense"/,
  );
  assert.deepEqual(problems({ ORIGIN_URL: "http://o", KV_PATH: "https://kv.example" }), [
    "DENO_KV_ACCESS_TOKEN is required when KV_PATH is a KV Connect URL",
  ]);
  const config = parseConfig({ ORIGIN_URL: "http://o", TRUSTED_PROXIES: "10.0.0.0/8,::1" });
  assert.ok(config.trustedProxies.has("10.1.2.3"));
  assert.ok(config.trustedProxies.has("::1"));
  assert.ok(!config.trustedProxies.has("11.0.0.1"));
});

Deno.test("config takes TRUSTED_PROXIES in IPv4-mapped form as the IPv4 ranges they name", () => {
  const config = parseConfig({
    ORIGIN_URL: "http://o",
    TRUSTED_PROXIES: "::ffff:10.0.0.0/104, ::ffff:192.0.2.1",
  });
  assert.ok(config.trustedProxies.has("10.1.2.3"));
  assert.ok(config.trustedProxies.has("::ffff:10.1.2.3"));
  assert.ok(config.trustedProxies.has("192.0.2.1"));
  assert.ok(!config.trustedProxies.has("11.0.0.1"));
  assert.ok(!config.trustedProxies.has("192.0.2.2"));
  // Shorter than /96 it would cover IPv6 space too: refused, naming the variable.
  assert.match(
    problems({ ORIGIN_URL: "http://o", TRUSTED_PROXIES: "::ffff:0:0/80" })[0]!,
    /TRUSTED_PROXIES has an invalid entry: "::ffff:0:0\/80" is an IPv4-mapped range shorter than \/96/,
  );
});

Deno.test("config: OFREP_API_KEYS need 16 characters each, like the other tokens, and are never echoed", () => {
  assert.deepEqual(
    problems({ ORIGIN_URL: "http://o", OFREP_API_KEYS: "a, service-key-0123456789, short-key" }),
    [
      "OFREP_API_KEYS entry 1 must be at least 16 characters so it cannot be guessed",
      "OFREP_API_KEYS entry 3 must be at least 16 characters so it cannot be guessed",
    ],
  );
  assert.match(
    problems({ ORIGIN_URL: "http://o", METRICS_TOKEN: "a" })[0]!,
    /^METRICS_TOKEN must be at least 16/,
  );
  const config = parseConfig({
    ORIGIN_URL: "http://o",
    OFREP_API_KEYS: " service-key-0123456789 ,key-two-0123456789,",
  });
  assert.deepEqual(config.ofrepApiKeys, ["service-key-0123456789", "key-two-0123456789"]);
});

Deno.test("config: STICKY_SECRET is a list of 16-character secrets, the signing one first; QA_TOKEN needs 16 too", () => {
  const found = problems({ ORIGIN_URL: "http://o", STICKY_SECRET: "sticky-secret-0123456789,short" });
  assert.deepEqual(found, ["STICKY_SECRET entry 2 must be at least 16 characters so it cannot be guessed"]);
  assert.deepEqual(problems({ ORIGIN_URL: "http://o", QA_TOKEN: "qa" }), [
    "QA_TOKEN must be at least 16 characters so it cannot be guessed",
  ]);
  const config = parseConfig({
    ORIGIN_URL: "http://o",
    STICKY_SECRET: " new-sticky-secret-0123 , old-sticky-secret-0123,",
    QA_TOKEN: "qa-token-0123456789",
  });
  assert.deepEqual(config.stickySecrets, ["new-sticky-secret-0123", "old-sticky-secret-0123"]);
  assert.equal(config.qaToken, "qa-token-0123456789");
  const unset = parseConfig({ ORIGIN_URL: "http://o" });
  assert.deepEqual([unset.stickySecrets, unset.qaToken], [[], undefined]);
});

Deno.test("config never echoes credentials of a rejected URL", () => {
  const [problem] = problems({ ORIGIN_URL: "https://admin:hunter2@origin.example" });
  assert.match(problem!, /ORIGIN_URL must be an absolute http\(s\) URL/);
  assert.doesNotMatch(problem!, /hunter2|admin/);
});

Deno.test("config: a tombstone TTL shorter than a data TTL is refused (erased data could come back)", () => {
  assert.throws(
    () => parseConfig({ ORIGIN_URL: "http://origin.test", VIEW_TTL_DAYS: "60", TOMBSTONE_TTL_DAYS: "30" }),
    (error: Error) =>
      error instanceof ConfigError && /TOMBSTONE_TTL_DAYS must be at least .* \(60\)/.test(error.message),
  );
  assert.equal(
    parseConfig({ ORIGIN_URL: "http://origin.test", VIEW_TTL_DAYS: "60", TOMBSTONE_TTL_DAYS: "60" })
      .viewTtlDays,
    60,
  );
});

Deno.test("config: SHUTDOWN_TIMEOUT_MS and KV_OPEN_TIMEOUT_MS default to 10 s and are bounded", () => {
  const defaults = parseConfig({ ORIGIN_URL: "http://o" });
  assert.equal(defaults.shutdownTimeoutMs, 10_000);
  assert.equal(defaults.kvOpenTimeoutMs, 10_000);
  const set = parseConfig({ ORIGIN_URL: "http://o", SHUTDOWN_TIMEOUT_MS: "0", KV_OPEN_TIMEOUT_MS: "2500" });
  assert.equal(set.shutdownTimeoutMs, 0);
  assert.equal(set.kvOpenTimeoutMs, 2500);
  assert.deepEqual(
    problems({ ORIGIN_URL: "http://o", SHUTDOWN_TIMEOUT_MS: "soon", KV_OPEN_TIMEOUT_MS: "0" }),
    [
      'KV_OPEN_TIMEOUT_MS must be at least 100 (got "0")',
      'SHUTDOWN_TIMEOUT_MS must be a number (got "soon")',
    ],
  );
});
