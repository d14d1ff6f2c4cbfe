import assert from "node:assert/strict";
import { readSession, readUserContext } from "../../lib/data/readers.ts";
import { startOrigin } from "../support.ts";
import { type ServiceProcess, startService } from "./service.ts";
import { sign } from "../../lib/sync/verify.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ROOT = new URL("../../", import.meta.url);
const DEMO_NOW = Date.UTC(2026, 10, 26, 12, 0, 0);

async function push(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "tools/push.ts", ...args],
    cwd: ROOT,
    env: { EDGE_SYNC_SECRET: SECRET, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

Deno.test("the push CLI delivers the demo events to a running service, retrying after a 503", async () => {
  const dir = await Deno.makeTempDir();
  const kvPath = `${dir}/edge.kv`;
  const origin = startOrigin();
  const service = await startService({ ORIGIN_URL: origin.url, KV_PATH: kvPath, SYNC_SECRETS: SECRET });
  let forwarded = 0;
  let refused = 0;
  // A flaky hop in front of the edge: the first delivery gets a 503, later ones go through.
  const proxy = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
    const body = await request.arrayBuffer();
    if (refused === 0) {
      refused++;
      return new Response("unavailable", { status: 503 });
    }
    forwarded++;
    const url = new URL(request.url);
    return await fetch(`${service.url}${url.pathname}`, { method: "POST", headers: request.headers, body });
  });
  try {
    const first = await push([
      "--to",
      `http://127.0.0.1:${proxy.addr.port}`,
      "--schedule",
      "0,0.2,0.5",
      "tools/demo_events.ndjson",
    ]);
    assert.equal(first.code, 0, first.stderr + first.stdout);
    assert.match(first.stderr, /attempt 1 of 3 failed \(HTTP 503: unavailable\); next attempt in /);
    assert.match(first.stdout, /batch 1 of 1 \(13 events: [^)]*\): applied \d+, stale \d+\n/);
    assert.match(first.stdout, /delivered 13 events in 1 batch, failed 0 events in 0 batches/);
    assert.equal(refused, 1);
    assert.equal(forwarded, 1);

    const unreachable = await push([
      "--to",
      "http://127.0.0.1:9",
      "--schedule",
      "0",
      "tools/demo_events.ndjson",
    ]);
    assert.equal(unreachable.code, 1, "a failed delivery exits non-zero");
    assert.match(unreachable.stdout, /failed 13 events in 1 batch\n/);
  } finally {
    await proxy.shutdown();
    await service.stop();
    await origin.close();
  }
  const kv = await Deno.openKv(kvPath);
  try {
    const u1 = await readUserContext(kv, "u1", DEMO_NOW);
    assert.deepEqual(u1.recentViews.map((view) => view.itemId), ["p42", "p7"]);
    assert.equal(u1.cart?.version, 7);
    assert.deepEqual(u1.profile?.segments, ["vip"]);
    assert.equal(await readSession(kv, "s-demo-u2-0001", DEMO_NOW), "u2");
    assert.deepEqual((await readUserContext(kv, "u3", DEMO_NOW)).recentViews, [], "u3 was erased");
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rolling back to the RULES_PATH version after a canary and a push makes it active again on two instances", async () => {
  const dir = await Deno.makeTempDir();
  const origin = startOrigin();
  const rulesPath = `${dir}/rules.json`;
  await Deno.writeTextFile(rulesPath, JSON.stringify({ version: 5, defaultRegion: "START" }));
  const env = {
    ORIGIN_URL: origin.url,
    KV_PATH: `${dir}/edge.kv`,
    RULES_PATH: rulesPath,
    SYNC_SECRETS: SECRET,
    RULES_TOKEN: "rules-token-0123456789",
    RULES_POLL_MS: "100",
  };
  const services = [await startService(env), await startService(env)];
  const [a, b] = services as [ServiceProcess, ServiceProcess];
  let message = 0;
  const deliver = async (service: ServiceProcess, event: Record<string, unknown>) => {
    const body = JSON.stringify({
      type: "edge.sync",
      timestamp: new Date().toISOString(),
      data: { events: [event] },
    });
    const id = `msg_${++message}`;
    const timestamp = Math.floor(Date.now() / 1000);
    const res = await fetch(`${service.url}/_edge/sync`, {
      method: "POST",
      body,
      headers: {
        "content-type": "application/json",
        "webhook-id": id,
        "webhook-timestamp": String(timestamp),
        "webhook-signature": await sign(SECRET, { id, timestamp, body }),
      },
    });
    // What the operator is told: applied or stale, and the version KV now makes active.
    const { applied, stale, rules } = await res.json();
    return { applied, stale, active: rules?.active };
  };
  const served = async (service: ServiceProcess) => {
    const res = await fetch(`${service.url}/_edge/rules`, {
      headers: { authorization: `Bearer ${env.RULES_TOKEN}` },
    });
    const { instance } = await res.json();
    return `${instance.active}/${instance.canary?.version ?? "-"}`;
  };
  const bothServe = async (expected: string) => {
    const deadline = Date.now() + 5000;
    let seen: string[] = [];
    while (Date.now() < deadline) {
      seen = [await served(a), await served(b)];
      if (seen.every((state) => state === expected)) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.fail(`expected ${expected} on both instances, got ${seen.join(" and ")}`);
  };
  try {
    await bothServe("5/-");
    const at = (minutes: number) => new Date(Date.now() + minutes * 60_000).toISOString();
    const canary = { kind: "rules", version: 6, at: at(0), canary: 0.5, rules: { defaultRegion: "CANARY" } };
    assert.deepEqual(await deliver(a, canary), { applied: 1, stale: 0, active: 5 });
    await bothServe("5/6");
    assert.deepEqual(await deliver(b, { kind: "rules_rollback", version: 5, at: at(1) }), {
      applied: 1,
      stale: 0,
      active: 5,
    });
    await bothServe("5/-");
    assert.deepEqual(await deliver(a, { kind: "rules", version: 7, at: at(2), rules: {} }), {
      applied: 1,
      stale: 0,
      active: 7,
    });
    await bothServe("7/-");
    assert.deepEqual(await deliver(a, { kind: "rules_rollback", version: 5, at: at(3) }), {
      applied: 1,
      stale: 0,
      active: 5,
    });
    await bothServe("5/-");
    // Served from the start-up set as KV keeps it, on both.
    await fetch(`${b.url}/page`).then((res) => res.body?.cancel());
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-region"), "START");
  } finally {
    for (const service of services) await service.stop();
    await origin.close();
    await Deno.remove(dir, { recursive: true });
  }
});
