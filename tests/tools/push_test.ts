/**
 * @module
 * `deno task push` (`tools/push.ts`) run as a real process: how it reads `--schedule`.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url);
const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async function push(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "tools/push.ts", ...args],
    cwd: ROOT,
    env: { EDGE_SYNC_SECRET: SECRET, NO_COLOR: "1" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
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
    assert.match(result.stderr, /attempt 3: /);
  } finally {
    await endpoint.shutdown();
  }
});
