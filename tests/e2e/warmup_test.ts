import assert from "node:assert/strict";
import { startOrigin } from "../support.ts";
import { freePort } from "./service.ts";

const ROOT = new URL("../../", import.meta.url);

/**
 * Starts `main.ts` with its rules file a FIFO: start-up blocks reading it until the test writes
 * the rules, so "before ready" lasts exactly as long as the test wants.
 */
async function startBlocked(env: Record<string, string>) {
  const dir = await Deno.makeTempDir();
  const fifo = `${dir}/rules.json`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(made.success, "mkfifo");
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "--allow-sys", "main.ts"],
    cwd: ROOT,
    env: {
      NO_COLOR: "1",
      PORT: String(port),
      HOSTNAME: "127.0.0.1",
      LOG_LEVEL: "warn",
      KV_PATH: ":memory:",
      RULES_PATH: fifo,
      TRUSTED_PROXIES: "127.0.0.1/32",
      ...env,
    },
    clearEnv: true,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  // The entry listens before the service has loaded: wait for the port only.
  while (true) {
    try {
      (await Deno.connect({ port, hostname: "127.0.0.1" })).close();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error("main.ts did not listen within 20 s");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  return {
    url,
    child,
    release: async () => {
      const rules = await Deno.readFile(new URL("tools/demo_rules.json", ROOT));
      const file = await Deno.open(fifo, { write: true });
      await file.write(rules);
      file.close();
    },
    stop: async (signal: Deno.Signal | undefined = "SIGTERM") => {
      if (signal) child.kill(signal);
      const status = await child.status;
      const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
      await Deno.remove(dir, { recursive: true });
      return { status, stderr };
    },
  };
}

const GERMAN = { "x-geo-country": "DE", "x-forwarded-for": "203.0.113.9" };

Deno.test("WARMUP=passthrough answers unpersonalized and uncacheable before ready, personalized after", async () => {
  const origin = startOrigin((req) =>
    Response.json({ path: req.path }, {
      headers: { "cache-control": "public, max-age=600", "set-cookie": "origin=1; Path=/" },
    })
  );
  const service = await startBlocked({
    ORIGIN_URL: origin.url,
    WARMUP: "passthrough",
    WARMUP_MAX_WAIT_MS: "300",
  });
  try {
    const early = await fetch(`${service.url}/api/products/promotions?x=1`, {
      headers: { ...GERMAN, "x-edge-user": "mallory", "x-edge-variants": "hero=b", "x-geo-region": "EU" },
    });
    assert.equal(early.status, 200);
    assert.deepEqual(await early.json(), { path: "/api/products/promotions" });
    assert.equal(early.headers.get("cache-control"), "private, no-store");
    // Only the origin's own cookie: no sticky assignment, no anonymous id.
    assert.deepEqual(early.headers.getSetCookie(), ["origin=1; Path=/"]);
    const seen = origin.seen.at(-1)!;
    assert.equal(seen.search, "?x=1");
    for (const name of ["x-edge-user", "x-edge-variants", "x-geo-region", "x-geo-country"]) {
      assert.equal(seen.headers.get(name), null, name);
    }
    // No peer is trusted before ready: the forwarded chain starts at the connection.
    assert.equal(seen.headers.get("x-forwarded-for"), "127.0.0.1");

    // The edge's own paths only the app answers: they wait, bounded, then 503.
    const started = performance.now();
    const health = await fetch(`${service.url}/_edge/health`);
    assert.equal(health.status, 503);
    assert.ok(performance.now() - started >= 250, "waited for readiness first");
    assert.equal(health.headers.get("retry-after"), "1");
    assert.equal(((await health.json()) as { error: { code: string } }).error.code, "starting");

    await service.release();
    let late: Response | undefined;
    for (let i = 0; i < 100; i++) {
      late = await fetch(`${service.url}/api/products/promotions?x=1`, { headers: GERMAN });
      await late.body?.cancel();
      if (origin.seen.at(-1)!.path !== "/api/products/promotions") break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(late!.status, 200);
    assert.equal(origin.seen.at(-1)!.path, "/api/products/promotions/europe");
    assert.notEqual(late!.headers.get("cache-control"), "private, no-store");
  } finally {
    const { status, stderr } = await service.stop();
    assert.equal(status.code, 0, stderr);
    await origin.close();
  }
});

Deno.test("WARMUP=wait holds requests for at most WARMUP_MAX_WAIT_MS, then 503 starting; served once ready", async () => {
  const origin = startOrigin();
  const service = await startBlocked({ ORIGIN_URL: origin.url, WARMUP_MAX_WAIT_MS: "400" });
  try {
    const started = performance.now();
    const res = await fetch(`${service.url}/api/products/promotions`, { headers: GERMAN });
    const waited = performance.now() - started;
    assert.equal(res.status, 503);
    assert.ok(waited >= 350, `answered after ${waited} ms`);
    assert.equal(res.headers.get("retry-after"), "1");
    assert.equal(res.headers.get("cache-control"), "no-store");
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "starting");
    assert.equal(origin.seen.length, 0, "nothing reached the origin before ready");

    // A request waiting when the service becomes ready gets the full answer.
    const pending = fetch(`${service.url}/api/products/promotions`, { headers: GERMAN });
    await service.release();
    const served = await pending;
    await served.body?.cancel();
    assert.equal(served.status, 200);
    assert.equal(origin.seen.at(-1)!.path, "/api/products/promotions/europe");
  } finally {
    const { status, stderr } = await service.stop();
    assert.equal(status.code, 0, stderr);
    await origin.close();
  }
});

Deno.test("SIGTERM before ready lets a warm-up answer in flight finish, then exits 0", async () => {
  const origin = startOrigin(async (req) => {
    await new Promise((resolve) => setTimeout(resolve, 600));
    return Response.json({ path: req.path });
  });
  const service = await startBlocked({ ORIGIN_URL: origin.url, WARMUP: "passthrough" });
  try {
    const inFlight = fetch(`${service.url}/api/products/promotions`, { headers: GERMAN });
    // Until the origin has the request, the signal could beat it to the listener.
    for (let i = 0; i < 200 && origin.seen.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(origin.seen.length, 1);
    const { status, stderr } = await service.stop();
    const answer = await inFlight;
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), { path: "/api/products/promotions" });
    assert.equal(status.code, 0, stderr);
    await assert.rejects(fetch(`${service.url}/api/products/promotions`), "no longer listening");
  } finally {
    await origin.close();
  }
});

Deno.test("SIGTERM before ready under WARMUP=wait: a held request the service becomes ready for is served, then exit 0", async () => {
  const origin = startOrigin();
  const service = await startBlocked({ ORIGIN_URL: origin.url, WARMUP_MAX_WAIT_MS: "5000" });
  try {
    const held = fetch(`${service.url}/api/products/promotions`, { headers: GERMAN });
    await new Promise((resolve) => setTimeout(resolve, 200));
    service.child.kill("SIGTERM");
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Ready during the drain: the held request gets the full answer, and the stop then closes the service.
    await service.release();
    const answer = await held;
    await answer.body?.cancel();
    assert.equal(answer.status, 200);
    assert.equal(origin.seen.at(-1)!.path, "/api/products/promotions/europe");
    // Already signalled: a second signal would exit at once.
    const { status, stderr } = await service.stop(undefined);
    assert.equal(status.code, 0, stderr);
  } finally {
    await origin.close();
  }
});

Deno.test("WARMUP=passthrough with a bad variable the early read accepts still exits 1 naming it", async () => {
  const origin = startOrigin();
  try {
    for (
      const [env, name] of [[{ LOG_LEVEL: "loud" }, "LOG_LEVEL"], [
        { WARMUP: "sometimes" },
        "WARMUP",
      ]] as const
    ) {
      const output = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-net",
          "--allow-env",
          "--allow-read",
          "--allow-write",
          "--allow-sys",
          "main.ts",
        ],
        cwd: ROOT,
        env: {
          NO_COLOR: "1",
          PORT: String(freePort()),
          ORIGIN_URL: origin.url,
          KV_PATH: ":memory:",
          WARMUP: "passthrough",
          ...env,
        },
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(20_000),
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 1, `${name}: exit ${output.code}: ${stderr}`);
      assert.match(stderr, new RegExp(`${name} must be`), stderr);
    }
  } finally {
    await origin.close();
  }
});
