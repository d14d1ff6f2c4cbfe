import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import { makeDeps, startOrigin } from "../support.ts";

Deno.test("health answers ok; ready reports KV and rules", async () => {
  const deps = await makeDeps("http://127.0.0.1:9");
  try {
    const app = createApp(deps);
    const health = await app.request("/_edge/health");
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok" });
    assert.equal(health.headers.get("cache-control"), "no-store");
    const ready = await app.request("/_edge/ready");
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { ready: true, kv: "ok", rulesVersion: 0 });
  } finally {
    deps.kv.close();
  }
});

Deno.test("ready answers 503 when KV fails", async () => {
  const deps = await makeDeps("http://127.0.0.1:9");
  deps.kv.close();
  const ready = await createApp(deps).request("/_edge/ready");
  assert.equal(ready.status, 503);
  assert.deepEqual(await ready.json(), { ready: false, kv: "failing", rulesVersion: 0 });
});

Deno.test("the edge serves /.well-known/gpc.json and proxies other well-known paths", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url);
  try {
    const app = createApp(deps);
    const gpc = await app.request("/.well-known/gpc.json");
    assert.equal(gpc.status, 200);
    assert.deepEqual(await gpc.json(), { gpc: true, lastUpdate: "2026-11-26" });
    const other = await app.request("/.well-known/security.txt");
    await other.body?.cancel();
    assert.equal(origin.seen.at(-1)?.path, "/.well-known/security.txt");
  } finally {
    deps.kv.close();
    await origin.close();
  }
});
