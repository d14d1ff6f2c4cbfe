/**
 * @module
 * `deno task push` (`tools/push.ts`) run as a real process: how it reads `--schedule` and the
 * secret, what it reports per batch, and its exit status for stale rule events.
 */
import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import { makeDeps } from "../support.ts";

const ROOT = new URL("../../", import.meta.url);
const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async function push(
  args: string[],
  options: { env?: Record<string, string>; stdin?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "tools/push.ts", ...args],
    cwd: ROOT,
    env: { EDGE_SYNC_SECRET: SECRET, NO_COLOR: "1", ...options.env },
    clearEnv: true,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const output = await child.output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

Deno.test("push refuses a --schedule with an empty or non-numeric entry, and sends nothing", async () => {
  let received = 0;
  const endpoint = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
    await request.body?.cancel();
    received++;
    return new Response(null, { status: 204 });
  });
  try {
    // `Number("")` is 0: "" read as "one attempt at once", and "0,,30" as three attempts.
    for (const schedule of ["", " ", "0,,30", "0,30,", "5,soon", "0x10", "1e3", "-1", "Infinity"]) {
      const result = await push([
        "--to",
        `http://127.0.0.1:${endpoint.addr.port}`,
        // One argument, so that "-1" is read as the value and not as an option.
        `--schedule=${schedule}`,
        "tools/demo_events.ndjson",
      ]);
      assert.equal(result.code, 2, `--schedule "${schedule}": ${result.stderr}`);
      assert.match(result.stderr, /--schedule must be comma-separated non-negative seconds, got "/);
      assert.match(result.stderr, /Usage: deno task push/);
    }
    assert.equal(received, 0);
  } finally {
    await endpoint.shutdown();
  }
});

Deno.test("push takes a --schedule of whole and fractional seconds with spaces, one attempt per entry", async () => {
  let received = 0;
  const endpoint = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
    await request.body?.cancel();
    received++;
    return new Response("unavailable", { status: 503 });
  });
  try {
    const result = await push([
      "--to",
      `http://127.0.0.1:${endpoint.addr.port}`,
      "--schedule",
      " 0, 0.1 ,0 ",
      "tools/demo_events.ndjson",
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.equal(received, 3);
    assert.match(result.stderr, /attempt 3 of 3 failed \(HTTP 503: unavailable\); no attempts left/);
  } finally {
    await endpoint.shutdown();
  }
});

/** A real edge app on a loopback port, with sync on (real clock: push signs with the time now). */
async function withEdge(fn: (url: string) => Promise<void>): Promise<void> {
  const deps = await makeDeps("http://127.0.0.1:9", { env: { SYNC_SECRETS: SECRET }, now: Date.now });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, createApp(deps).fetch);
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
    deps.kv.close();
  }
}

const rulesLine = (event: Record<string, unknown>) => `${JSON.stringify(event)}\n`;
const ruleSet = (version: number) => ({ kind: "rules", version, rules: { version } });

Deno.test("push prints each batch's applied and stale counts and the rules now active", async () => {
  await withEdge(async (url) => {
    const result = await push(["--to", url, "-"], {
      stdin: (await Deno.readTextFile(new URL("tools/demo_events.ndjson", ROOT))) + rulesLine(ruleSet(5)),
    });
    assert.equal(result.code, 0, result.stderr + result.stdout);
    assert.match(
      result.stdout,
      /batch 1 of 2 \(13 events: 4 view, 2 cart, 2 profile, 2 session, 2 related, 1 erase\): applied \d+, stale \d+\n/,
    );
    assert.match(
      result.stdout,
      /batch 2 of 2 \(1 event: 1 rules\): applied 1, stale 0; rules now: active 5, no canary\n/,
    );
    assert.match(result.stdout, /delivered 14 events in 2 batches, failed 0 events in 0 batches/);
  });
});

Deno.test("push exits 1 when a rollback changed nothing, and 0 with --allow-stale", async () => {
  await withEdge(async (url) => {
    assert.equal((await push(["--to", url, "-"], { stdin: rulesLine(ruleSet(5)) })).code, 0);
    // Version 4 was never pushed: the edge keeps nothing to roll back to.
    const rollback = rulesLine({ kind: "rules_rollback", version: 4, at: new Date().toISOString() });
    const stale = await push(["--to", url, "-"], { stdin: rollback });
    assert.equal(stale.code, 1, stale.stderr + stale.stdout);
    assert.match(
      stale.stdout,
      /\(1 event: 1 rules_rollback\): applied 0, stale 1; rules now: active 5, no canary/,
    );
    assert.match(stale.stdout, /delivered 1 event in 1 batch, failed 0 events in 0 batches/);
    assert.match(stale.stderr, /1 batch of rule control events changed nothing .*--allow-stale/);
    const allowed = await push(["--allow-stale", "--to", url, "-"], { stdin: rollback });
    assert.equal(allowed.code, 0, allowed.stderr);
    // Stale user data (an older cart) is normal convergence, not a failure.
    const cart = { kind: "cart", userId: "u1", version: 1, at: new Date().toISOString(), items: [] };
    assert.equal((await push(["--to", url, "-"], { stdin: rulesLine({ ...cart, version: 2 }) })).code, 0);
    const older = await push(["--to", url, "-"], { stdin: rulesLine(cart) });
    assert.equal(older.code, 0, older.stderr);
    assert.match(older.stdout, /applied 0, stale 1\n/);
  });
});

Deno.test("push reports a malformed secret as malformed, without echoing it, and says how to make one", async () => {
  for (const secret of ["not-a-secret-at-all", "whsec_***", "whsec_c2hvcnQ="]) {
    const result = await push(["--to", "http://127.0.0.1:9", "tools/demo_events.ndjson"], {
      env: { EDGE_SYNC_SECRET: secret },
    });
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^Malformed signing secret in EDGE_SYNC_SECRET: .*deno task secret/);
    assert.doesNotMatch(result.stderr, /No signing secret/);
    assert.ok(!result.stderr.includes(secret), "the secret is not echoed");
  }
  const none = await push(["--to", "http://127.0.0.1:9", "tools/demo_events.ndjson"], {
    env: { EDGE_SYNC_SECRET: "" },
  });
  assert.equal(none.code, 2);
  assert.match(none.stderr, /^No signing secret: .*deno task secret/);
  const help = await push(["--help"]);
  assert.match(help.stdout, /make one with `deno task secret`/);
});

Deno.test("push to a dead endpoint says connection refused and when the next attempt is", async () => {
  const closed = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const port = closed.addr.port;
  closed.close();
  const result = await push([
    "--to",
    `http://127.0.0.1:${port}`,
    "--schedule",
    "0,0.1",
    "tools/demo_events.ndjson",
  ]);
  assert.equal(result.code, 1);
  assert.match(
    result.stderr,
    /attempt 1 of 2 failed \(network error: connection refused\); next attempt in 0\.1 s \(at \d\d:\d\d:\d\d UTC\)/,
  );
  assert.match(
    result.stderr,
    /attempt 2 of 2 failed \(network error: connection refused\); no attempts left/,
  );
  assert.match(
    result.stdout,
    /NOT delivered: gave up after 2 attempts; last: network error: connection refused/,
  );
  assert.match(result.stdout, /failed 13 events in 1 batch\n/);
});

Deno.test("deno task secret prints a secret that the edge and push both accept", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "tools/secret.ts"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0);
  const secret = new TextDecoder().decode(output.stdout).trim();
  assert.match(secret, /^whsec_[A-Za-z0-9+/]{32}$/);
  const { parseConfig } = await import("../../lib/app/config.ts");
  assert.deepEqual(parseConfig({ ORIGIN_URL: "http://127.0.0.1:9", SYNC_SECRETS: secret }).syncSecrets, [
    secret,
  ]);
  const help = await push(["--help"], { env: { EDGE_SYNC_SECRET: secret } });
  assert.equal(help.code, 0);
});
