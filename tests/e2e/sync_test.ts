import assert from "node:assert/strict";
import { readSession, readUserContext } from "../../lib/store.ts";
import { startOrigin } from "../support.ts";
import { startService } from "./service.ts";

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
