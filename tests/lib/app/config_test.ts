import assert from "node:assert/strict";
import { ConfigError, parseConfig, redactCredentials } from "../../../lib/app/config.ts";

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
  assert.equal(config.listenerScheme, "http");
  // On Deno Deploy the platform terminates TLS: the request URL's scheme is the client's.
  assert.equal(
    parseConfig({ ORIGIN_URL: "http://o", DENO_DEPLOYMENT_ID: "abc123" }).listenerScheme,
    undefined,
  );
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
  // Shorthand is read the inet_aton way elsewhere (10.0.0/8 as 10.0.0.0/8 by luck, 192.168.1/24
  // as 192.168.0.0/24): refused, naming the entry.
  for (const entry of ["10.0.0/8", "192.168.1/24", "10.1", "010.0.0.1", "0x0a.0.0.1", "10.0.0.0/40"]) {
    assert.match(
      problems({ ORIGIN_URL: "http://o", TRUSTED_PROXIES: `127.0.0.1/32, ${entry}` })[0]!,
      new RegExp(`^TRUSTED_PROXIES has an invalid entry: "${entry.replaceAll(".", "\\.")}"`),
      entry,
    );
  }
  const config = parseConfig({ ORIGIN_URL: "http://o", TRUSTED_PROXIES: "10.0.0.0/8,::1" });
  assert.ok(config.trustedProxies.has("10.1.2.3"));
  assert.ok(config.trustedProxies.has("::1"));
  assert.ok(!config.trustedProxies.has("11.0.0.1"));
});

Deno.test("config: naming the user by header needs both USER_ID_HEADER and USER_ID_PROXIES", () => {
  const none = parseConfig({ ORIGIN_URL: "http://o", TRUSTED_PROXIES: "10.0.0.0/8" });
  assert.equal(none.userIdHeader, undefined);
  assert.ok(none.userIdProxies.empty);
  assert.deepEqual(problems({ ORIGIN_URL: "http://o", USER_ID_HEADER: "x-auth-request-user" }), [
    "USER_ID_PROXIES is required when USER_ID_HEADER is set (the peers allowed to name the user)",
  ]);
  assert.deepEqual(problems({ ORIGIN_URL: "http://o", USER_ID_PROXIES: "127.0.0.1/32" }), [
    "USER_ID_HEADER is required when USER_ID_PROXIES is set (the header that names the user)",
  ]);
  assert.match(
    problems({ ORIGIN_URL: "http://o", USER_ID_HEADER: "x-user-id", USER_ID_PROXIES: "127.0.0/8" }).join(
      "\n",
    ),
    /^USER_ID_PROXIES has an invalid entry: "127\.0\.0\/8" is not a full IP address/,
  );
  assert.match(
    problems({ ORIGIN_URL: "http://o", USER_ID_HEADER: "x_user_id", USER_ID_PROXIES: "127.0.0.1" })[0]!,
    /^USER_ID_HEADER must be a header name \(without underscores\)/,
  );
  for (const name of ["x-edge-user", "x-forwarded-for", "x-real-ip", "host", "cookie", "true-client-ip"]) {
    assert.match(
      problems({ ORIGIN_URL: "http://o", USER_ID_HEADER: name, USER_ID_PROXIES: "127.0.0.1" })[0]!,
      /^USER_ID_HEADER must not name a header the edge sets or removes itself/,
      name,
    );
  }
  assert.equal(
    parseConfig({ ORIGIN_URL: "http://o", USER_ID_HEADER: "x-user-id", USER_ID_PROXIES: "::1" }).userIdHeader,
    "x-user-id",
  );
  const set = parseConfig({
    ORIGIN_URL: "http://o",
    USER_ID_HEADER: " X-Auth-Request-User ",
    USER_ID_PROXIES: "127.0.0.1/32, ::1",
  });
  assert.equal(set.userIdHeader, "x-auth-request-user");
  assert.ok(set.userIdProxies.has("127.0.0.1"));
  assert.ok(set.userIdProxies.has("::1"));
  assert.ok(!set.userIdProxies.has("127.0.0.2"));
  assert.ok(set.trustedProxies.empty, "one trust does not imply the other");
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

Deno.test("URL credentials are masked wherever a value may hold a URL", () => {
  assert.equal(redactCredentials("http://u:pw@kv.internal:4512"), "http://***@kv.internal:4512");
  assert.equal(
    redactCredentials("failed to connect to 'https://edge:s3cret@kv.example/': refused (https://a@b/)"),
    "failed to connect to 'https://***@kv.example/': refused (https://***@b/)",
  );
  assert.equal(redactCredentials(".data/dev.kv"), ".data/dev.kv");
  assert.equal(redactCredentials("https://kv.example/path@x"), "https://kv.example/path@x");
});

Deno.test("config: exposures are off without EXPOSURES_URL and take their batching defaults", () => {
  const config = parseConfig({ ORIGIN_URL: "http://o" });
  assert.equal(config.exposuresUrl, undefined);
  assert.equal(config.exposuresBatchMax, 500);
  assert.equal(config.exposuresFlushMs, 1000);
  assert.equal(config.exposuresBufferMax, 10_000);
  const on = parseConfig({
    ORIGIN_URL: "http://o",
    EXPOSURES_URL: "https://backend.example/edge/exposures",
    EXPOSURES_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    EXPOSURES_BATCH_MAX: "100",
    EXPOSURES_FLUSH_MS: "250",
    EXPOSURES_BUFFER_MAX: "2000",
  });
  assert.equal(on.exposuresUrl?.href, "https://backend.example/edge/exposures");
  assert.equal(on.exposuresBatchMax, 100);
  assert.equal(on.exposuresFlushMs, 250);
  assert.equal(on.exposuresBufferMax, 2000);
});

Deno.test("config: EXPOSURES_URL needs a well-formed EXPOSURES_SECRET, named without echoing it", () => {
  const url = "https://backend.example/edge/exposures";
  assert.deepEqual(problems({ ORIGIN_URL: "http://o", EXPOSURES_URL: url }), [
    "EXPOSURES_SECRET is required when EXPOSURES_URL is set (exposure batches are signed)",
  ]);
  const malformed = problems({
    ORIGIN_URL: "http://o",
    EXPOSURES_URL: url,
    EXPOSURES_SECRET: "hunter2hunter2hunter2",
  });
  assert.deepEqual(malformed, ['EXPOSURES_SECRET must be "whsec_" followed by base64 of at least 16 bytes']);
  assert.deepEqual(
    problems({ ORIGIN_URL: "http://o", EXPOSURES_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }),
    [
      "EXPOSURES_URL is required when EXPOSURES_SECRET is set",
    ],
  );
  assert.match(
    problems({ ORIGIN_URL: "http://o", EXPOSURES_URL: "ftp://x" }).join("\n"),
    /EXPOSURES_URL must be/,
  );
  assert.deepEqual(
    problems({
      ORIGIN_URL: "http://o",
      EXPOSURES_URL: url,
      EXPOSURES_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
      EXPOSURES_BATCH_MAX: "600",
      EXPOSURES_BUFFER_MAX: "500",
    }),
    ["EXPOSURES_BATCH_MAX must be at most EXPOSURES_BUFFER_MAX (500)"],
  );
});

Deno.test("config: HTML rewriting is capped at 4 MiB and 100 ms per page by default, and bounded", () => {
  const config = parseConfig({ ORIGIN_URL: "http://origin.test" });
  assert.equal(config.htmlRewriteMaxBytes, 4 * 1024 * 1024);
  assert.equal(config.htmlRewriteMaxMs, 100);
  const set = parseConfig({
    ORIGIN_URL: "http://origin.test",
    HTML_REWRITE_MAX_BYTES: "65536",
    HTML_REWRITE_MAX_MS: "20",
  });
  assert.equal(set.htmlRewriteMaxBytes, 65_536);
  assert.equal(set.htmlRewriteMaxMs, 20);
  assert.throws(
    () =>
      parseConfig({
        ORIGIN_URL: "http://origin.test",
        HTML_REWRITE_MAX_BYTES: "10",
        HTML_REWRITE_MAX_MS: "0",
      }),
    (error: Error) =>
      /HTML_REWRITE_MAX_BYTES must be at least 1024/.test(error.message) &&
      /HTML_REWRITE_MAX_MS must be at least 1/.test(error.message),
  );
});

Deno.test("config bounds sync bodies in flight: 4 × SYNC_MAX_BYTES by default, never below SYNC_MAX_BYTES", () => {
  const base = { ORIGIN_URL: "http://127.0.0.1:9" };
  const defaults = parseConfig({ ...base, SYNC_MAX_BYTES: "2048" });
  assert.equal(defaults.syncMaxBytesInFlight, 8192);
  assert.equal(defaults.syncMinBodyBytesPerSec, 1024);
  assert.equal(
    parseConfig({ ...base, SYNC_MAX_BYTES: "2048", SYNC_MAX_BYTES_IN_FLIGHT: "4096" }).syncMaxBytesInFlight,
    4096,
  );
  assert.throws(
    () => parseConfig({ ...base, SYNC_MAX_BYTES: "4096", SYNC_MAX_BYTES_IN_FLIGHT: "2048" }),
    (error) =>
      error instanceof ConfigError && /SYNC_MAX_BYTES_IN_FLIGHT must be at least/.test(error.message),
  );
  assert.throws(
    () => parseConfig({ ...base, SYNC_MIN_BODY_BYTES_PER_S: "-1" }),
    (error) => error instanceof ConfigError && /SYNC_MIN_BODY_BYTES_PER_S/.test(error.message),
  );
});
