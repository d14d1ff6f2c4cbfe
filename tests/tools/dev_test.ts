/**
 * @module
 * `deno task dev` as a newcomer meets it: `tools/dev.ts` run as a real process, with a busy
 * port, an invalid port, and a KV file that still holds rules pushed in an earlier run.
 */
import assert from "node:assert/strict";
import { freePort } from "../e2e/service.ts";
import { applyEvents } from "../../lib/sync/apply.ts";
import { parseSyncEvents } from "../../lib/sync/schema.ts";

const ROOT = new URL("../../", import.meta.url);
const PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-sys",
];

/** A running `tools/dev.ts`, its service's output included (the service inherits its streams). */
interface DevProcess {
  child: Deno.ChildProcess;
  output: () => string;
  /** Resolves once the output contains `text`; rejects after `ms` or when the process ends first. */
  waitFor: (text: string, ms: number) => Promise<void>;
  /** Resolves with the exit status once the process and its output have ended. */
  finished: Promise<Deno.CommandStatus>;
}

function startDev(env: Record<string, string>): DevProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, "tools/dev.ts"],
    cwd: ROOT,
    // A free port for the dev front unless a test says otherwise: 8001 may be taken by a real dev.
    env: { NO_COLOR: "1", DEMO_FRONT_PORT: "0", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  let ended = false;
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const finished = Promise.all([child.status, drained]).then(([status]) => {
    ended = true;
    return status;
  });
  const waitFor = async (wanted: string, ms: number) => {
    const deadline = Date.now() + ms;
    while (!text.includes(wanted)) {
      if (ended || Date.now() > deadline) {
        throw new Error(`dev never printed ${JSON.stringify(wanted)}; its output:\n${text}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  };
  return { child, output: () => text, waitFor, finished };
}

/** Runs `tools/dev.ts` until it ends by itself (every case here fails at start-up). */
async function runDevToExit(env: Record<string, string>): Promise<{ code: number; output: string }> {
  const dev = startDev(env);
  const status = await dev.finished;
  return { code: status.code, output: dev.output() };
}

/** Stores a rules event in a KV file, as an earlier dev run's `task push` would have. */
async function pushRulesInto(kvPath: string, version: number): Promise<void> {
  const rules = JSON.parse(await Deno.readTextFile(new URL("tools/demo_rules.json", ROOT)));
  delete rules.$schema;
  const kv = await Deno.openKv(kvPath);
  try {
    const day = 86_400_000;
    await applyEvents(kv, parseSyncEvents([{ kind: "rules", version, rules: { ...rules, version } }]), {
      now: Date.now(),
      recentViewsMax: 20,
      viewTtlMs: day,
      cartTtlMs: day,
      profileTtlMs: day,
      tombstoneTtlMs: day,
    });
  } finally {
    kv.close();
  }
}

Deno.test("dev names DEMO_ORIGIN_PORT in one line when the demo origin's port is taken", async () => {
  const taken = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  try {
    const { code, output } = await runDevToExit({ DEMO_ORIGIN_PORT: String(taken.addr.port) });
    assert.equal(code, 1, output);
    assert.match(
      output,
      new RegExp(`"127\\.0\\.0\\.1:${taken.addr.port}".*set DEMO_ORIGIN_PORT to a free port`),
    );
    assert.doesNotMatch(output, /Uncaught|AddrInUse|\n +at /, output);
  } finally {
    taken.close();
  }
});

Deno.test("dev finds a taken PORT before the banner and before the demo events go to whoever holds it", async () => {
  // Another service on the port, answering everything (an earlier task dev): the health check and
  // the demo push must not reach it.
  const seen: string[] = [];
  const squatter = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, (request) => {
    seen.push(new URL(request.url).pathname);
    return Response.json({ ok: true, rulesVersion: 9 });
  });
  try {
    const { code, output } = await runDevToExit({
      PORT: String(squatter.addr.port),
      DEMO_ORIGIN_PORT: "0",
      KV_PATH: ":memory:",
    });
    assert.equal(code, 1, output);
    assert.equal(
      output.trim(),
      `Cannot start the service on "127.0.0.1:${squatter.addr.port}": the address is already in use ` +
        "(another task dev?); set PORT to a free port",
    );
    assert.deepEqual(seen, [], "nothing was sent to the other instance");
  } finally {
    await squatter.shutdown();
  }
});

Deno.test("dev names DEMO_FRONT_PORT in one line when the dev front's port is taken", async () => {
  const taken = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  try {
    const { code, output } = await runDevToExit({
      PORT: String(freePort()),
      DEMO_FRONT_PORT: String(taken.addr.port),
      DEMO_ORIGIN_PORT: "0",
      KV_PATH: ":memory:",
    });
    assert.equal(code, 1, output);
    assert.match(
      output,
      new RegExp(`"127\\.0\\.0\\.1:${taken.addr.port}".*set DEMO_FRONT_PORT to a free port`),
    );
  } finally {
    taken.close();
  }
});

Deno.test("dev leaves an invalid PORT to the service's config error, without a URL built from it", async () => {
  const { code, output } = await runDevToExit({ PORT: "eighty", DEMO_ORIGIN_PORT: "0", KV_PATH: ":memory:" });
  assert.equal(code, 1, output);
  assert.match(output, /PORT must be a number \(got "eighty"\)/);
  assert.doesNotMatch(output, /did not become healthy|:eighty/, output);
});

Deno.test("dev starts without a LOG_HASH_KEY or STICKY_SECRET warning and says when rules pushed earlier override the demo rules", async () => {
  const dir = await Deno.makeTempDir();
  const kvPath = `${dir}/dev.kv`;
  let loggedIn: unknown;
  const run = async () => {
    const port = freePort();
    const dev = startDev({ PORT: String(port), DEMO_ORIGIN_PORT: "0", KV_PATH: kvPath });
    try {
      await dev.waitFor("Push the demo activity again", 20_000);
      // The banner's x-user-id example: loopback names the user in dev.
      const res = await fetch(`http://127.0.0.1:${port}/_edge/context`, { headers: { "x-user-id": "u1" } });
      loggedIn = (await res.json()).visitor.loggedIn;
    } finally {
      try {
        dev.child.kill("SIGINT");
      } catch {
        // It ended already: the output says why.
      }
      await dev.finished;
    }
    return dev.output();
  };
  try {
    const fresh = await run();
    assert.match(fresh, /rules {8}version 1 from tools\/demo_rules\.json, KV at /);
    assert.doesNotMatch(fresh, /LOG_HASH_KEY not set/);
    assert.doesNotMatch(fresh, /PUBLIC_HOSTS not set/);
    assert.match(fresh, /USER_ID_HEADER=x-user-id from USER_ID_PROXIES=127\.0\.0\.1\/32,::1\/128/);
    assert.equal(loggedIn, true);
    assert.doesNotMatch(fresh, /STICKY_SECRET not set/);
    assert.match(fresh, /npx -y deno@\S+ task push --rebase-now --to http:\/\/127\.0\.0\.1:\d+ /);

    await pushRulesInto(kvPath, 2);
    const restarted = await run();
    assert.match(
      restarted,
      /rules {8}version 2 from KV at \S+ \(pushed through sync earlier\), not tools\/demo_rules\.json \(version 1\)/,
    );
    assert.match(restarted, /to start over, stop and delete /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dev stops the service when the process that started it is killed, as a killed npx is", async () => {
  const port = freePort();
  // `npx deno task dev` is a chain of processes; killing its first one leaves the rest running
  // unless dev watches them. A shell that waits for dev (`; true` keeps it from exec'ing) is one.
  const command = [Deno.execPath(), "run", ...PERMISSIONS, "tools/dev.ts"].map((arg) => `'${arg}'`).join(" ");
  const launcher = new Deno.Command("/bin/sh", {
    args: ["-c", `${command}; true`],
    cwd: ROOT,
    env: {
      NO_COLOR: "1",
      PORT: String(port),
      DEMO_ORIGIN_PORT: "0",
      DEMO_FRONT_PORT: "0",
      KV_PATH: ":memory:",
    },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  };
  // The pipes stay open while dev or the service holds them: they close once both have exited.
  const drained = Promise.all([drain(launcher.stdout), drain(launcher.stderr)]);
  try {
    const deadline = Date.now() + 20_000;
    while (!text.includes("Push the demo activity again")) {
      if (Date.now() > deadline) throw new Error(`dev never printed its banner:\n${text}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const health = await fetch(`http://127.0.0.1:${port}/_edge/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();

    launcher.kill("SIGKILL");
    await launcher.status;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      drained.then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 15_000)),
    ]);
    clearTimeout(timer);
    assert.ok(closed, `dev and the service kept running after their launcher was killed:\n${text}`);
    assert.match(text, /The process that started task dev is gone: stopping the service/);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/_edge/health`), "the service no longer answers");
  } finally {
    try {
      launcher.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
});

Deno.test("dev: opening a page as a browser prints its exposure, and a backend-only user is read through", async () => {
  const port = freePort();
  const dev = startDev({ PORT: String(port), DEMO_ORIGIN_PORT: "0", KV_PATH: ":memory:" });
  try {
    await dev.waitFor("Push the demo activity again", 20_000);
    assert.match(
      dev.output(),
      /backend {6}http:\/\/127\.0\.0\.1:\d+ {2}\(read-through; prints an exposure line/,
    );
    const page = await fetch(`http://127.0.0.1:${port}/`, {
      headers: { "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0" },
    });
    assert.equal(page.status, 200);
    await page.body?.cancel();
    await dev.waitFor("exposure: hero=", 10_000);
    assert.match(
      dev.output(),
      /exposure: hero=(control|a|b) {2}visitor \S+ {2}GLOBAL\/desktop {2}\/ {2}rules v1/,
    );
    const context = await fetch(`http://127.0.0.1:${port}/_edge/context`, { headers: { "x-user-id": "u4" } });
    const body = await context.json();
    assert.equal(body.visitor.userId, "u4");
    assert.deepEqual(body.recentViews, ["p13", "p42"]);
    assert.deepEqual(body.segments, ["returning"]);
  } finally {
    try {
      dev.child.kill("SIGINT");
    } catch {
      // It ended already: the output says why.
    }
    await dev.finished;
  }
});
