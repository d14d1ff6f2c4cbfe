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
    env: { NO_COLOR: "1", ...env },
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

Deno.test("dev ends with the service's own message when PORT is taken", async () => {
  const taken = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  try {
    const { code, output } = await runDevToExit({
      PORT: String(taken.addr.port),
      DEMO_ORIGIN_PORT: "0",
      KV_PATH: ":memory:",
    });
    assert.equal(code, 1, output);
    assert.match(
      output,
      new RegExp(`Cannot listen on "127\\.0\\.0\\.1:${taken.addr.port}".*set PORT to a free port`),
    );
    assert.doesNotMatch(output, /Uncaught|AddrInUse|\n +at |did not become healthy/, output);
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
  const run = async () => {
    const dev = startDev({ PORT: String(freePort()), DEMO_ORIGIN_PORT: "0", KV_PATH: kvPath });
    try {
      await dev.waitFor("Push the demo activity again", 20_000);
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
