import assert from "node:assert/strict";
import { startOrigin } from "../support.ts";
import { freePort, runServiceExpectingFailure, type ServiceProcess, startService } from "./service.ts";

const MB = 1024 * 1024;
const BROWSER =
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36";
const DOWNLOAD_BYTES = 300 * MB;

function chunkStream(totalBytes: number, chunkBytes = 64 * 1024): ReadableStream<Uint8Array> {
  let sent = 0;
  const chunk = new Uint8Array(chunkBytes).fill(97);
  return new ReadableStream({
    pull(controller) {
      if (sent >= totalBytes) return controller.close();
      const n = Math.min(chunkBytes, totalBytes - sent);
      controller.enqueue(n === chunkBytes ? chunk : chunk.subarray(0, n));
      sent += n;
    },
  });
}

async function withKvDir<T>(fn: (kvPath: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir();
  try {
    return await fn(`${dir}/edge.kv`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("main.ts serves health, readiness and the seed rewrite as a real process", async () => {
  const origin = startOrigin();
  const dir = await Deno.makeTempDir();
  const rules = `${dir}/rules.json`;
  await Deno.copyFile(new URL("../../tools/demo_rules.json", import.meta.url), rules);
  await withKvDir(async (kvPath) => {
    const service = await startService({
      ORIGIN_URL: origin.url,
      KV_PATH: kvPath,
      RULES_PATH: rules,
      TRUSTED_PROXIES: "127.0.0.1/32",
    });
    try {
      const ready = await fetch(`${service.url}/_edge/ready`);
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), { ready: true, kv: "ok", rulesVersion: 1 });
      const res = await fetch(`${service.url}/api/products/promotions?x=1`, {
        headers: { "x-geo-country": "DE" },
      });
      assert.equal(res.status, 200);
      await res.body?.cancel();
      assert.equal(origin.seen.at(-1)!.path, "/api/products/promotions/europe");
      assert.equal(origin.seen.at(-1)!.search, "?x=1");
      assert.ok(res.headers.get("x-request-id"));
      // A production start without PUBLIC_HOSTS says what it leaves open, once.
      assert.equal(service.output().match(/PUBLIC_HOSTS not set: [^"]*X-Forwarded-Host/g)?.length, 1);
    } finally {
      const status = await service.stop();
      assert.equal(status.code, 0, service.output());
      await origin.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
});

Deno.test("a 100 MB upload and a 300 MB download stream through the service with bounded memory", async () => {
  const origin = startOrigin((seen, raw) => {
    if (seen.path === "/download") return new Response(chunkStream(DOWNLOAD_BYTES));
    return (async () => {
      let bytes = 0;
      for await (const chunk of raw.body!) bytes += chunk.byteLength;
      return Response.json({ bytes });
    })();
  });
  await withKvDir(async (kvPath) => {
    // The origin answers the upload only once it has read all 100 MB, which on a loaded machine
    // can take longer than the default origin timeout: this test is about memory, not timeouts.
    const service = await startService({
      ORIGIN_URL: origin.url,
      KV_PATH: kvPath,
      ORIGIN_TIMEOUT_MS: "120000",
    });
    try {
      const up = await fetch(`${service.url}/upload`, {
        method: "POST",
        body: chunkStream(100 * MB),
        // @ts-ignore: duplex is required for streamed request bodies.
        duplex: "half",
      });
      assert.equal(up.status, 200);
      assert.deepEqual(await up.json(), { bytes: 100 * MB });

      const down = await fetch(`${service.url}/download`);
      let received = 0;
      for await (const chunk of down.body!) received += chunk.byteLength;
      assert.equal(received, DOWNLOAD_BYTES);

      const peak = await service.peakRss();
      // A buffered body alone (100 MB up, 300 MB down) would push the peak well past this. The
      // bound leaves room for the origin-body idle guard, whose chunks pass through JS and are
      // freed by the GC: about +60 MB at the peak, whatever the body size (lib/origin/fetch.ts).
      assert.ok(peak > 10 * MB && peak < 256 * MB, `peak RSS ${Math.round(peak / MB)} MB`);
      console.log(`service peak RSS after 100 MB up and 300 MB down: ${Math.round(peak / MB)} MB`);
    } finally {
      await service.stop();
      await origin.close();
    }
  });
});

Deno.test("SIGTERM lets in-flight requests finish, then the process exits 0", async () => {
  const origin = startOrigin(() =>
    new Promise((resolve) => setTimeout(() => resolve(new Response("done")), 500))
  );
  await withKvDir(async (kvPath) => {
    const service = await startService({ ORIGIN_URL: origin.url, KV_PATH: kvPath });
    try {
      // A fresh connection: the in-flight request must not ride on an idle pooled one.
      using client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
      const inflight = fetch(`${service.url}/slow`, { client });
      await new Promise((resolve) => setTimeout(resolve, 150));
      service.child.kill("SIGTERM");
      const res = await inflight;
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "done");
      // The process exits by itself; no second signal (which would exit at once, non-zero).
      const status = await exitWithin(service, 15_000);
      assert.equal(status?.code, 0, service.output());
      await assert.rejects(fetch(`${service.url}/_edge/health`));
    } finally {
      await service.stop();
      await origin.close();
    }
  });
});

/** An event stream that never ends (until the reader goes away). */
function endlessResponse(): Response {
  let timer: ReturnType<typeof setInterval>;
  return new Response(
    new ReadableStream<Uint8Array>({
      start(controller) {
        timer = setInterval(() => controller.enqueue(new TextEncoder().encode("data: tick\n\n")), 50);
      },
      cancel() {
        clearInterval(timer);
      },
    }),
    { headers: { "content-type": "text/event-stream" } },
  );
}

/** An origin that answers every request with an event stream that never ends. */
function startEndlessOrigin() {
  return startOrigin(endlessResponse);
}

/**
 * Opens an endless stream through the service and keeps reading it until it is cut.
 *
 * @returns `reading`, which settles once the stream has ended (wrapped: an async function
 * returning it bare would wait for it)
 */
async function openEndlessStream(url: string): Promise<{ reading: Promise<void> }> {
  const reader = (await fetch(`${url}/events`)).body!.getReader();
  await reader.read();
  const reading = (async () => {
    try {
      while (!(await reader.read()).done);
    } catch {
      // Cut by the exiting service.
    }
  })();
  return { reading };
}

/** The exit status, or undefined when the process is still running after `ms` (a liveness bound). */
async function exitWithin(service: ServiceProcess, ms: number): Promise<Deno.CommandStatus | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([
    service.child.status,
    new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), ms)),
  ]);
  clearTimeout(timer);
  return status;
}

Deno.test("SIGTERM with an endless stream open: cut after SHUTDOWN_TIMEOUT_MS, then exit 0", async () => {
  const origin = startEndlessOrigin();
  await withKvDir(async (kvPath) => {
    const service = await startService({
      ORIGIN_URL: origin.url,
      KV_PATH: kvPath,
      SHUTDOWN_TIMEOUT_MS: "300",
    });
    try {
      const { reading } = await openEndlessStream(service.url);
      service.child.kill("SIGTERM");
      const status = await exitWithin(service, 10_000);
      assert.equal(status?.code, 0, `still running 10 s after SIGTERM: ${service.output()}`);
      await reading;
      assert.match(service.output(), /shutdown deadline passed/);
    } finally {
      await service.stop();
      await origin.close();
    }
  });
});

Deno.test("a second signal during a drain exits at once, non-zero", async () => {
  const origin = startEndlessOrigin();
  await withKvDir(async (kvPath) => {
    const service = await startService({
      ORIGIN_URL: origin.url,
      KV_PATH: kvPath,
      SHUTDOWN_TIMEOUT_MS: "600000",
      LOG_LEVEL: "info",
    });
    try {
      const { reading } = await openEndlessStream(service.url);
      service.child.kill("SIGTERM");
      // The same signal again at once (one Ctrl-C reaches a `deno task` child twice) is not a second one.
      service.child.kill("SIGTERM");
      // Draining: the stream is still open, so the process waits.
      for (let i = 0; i < 100 && !service.output().includes("shutting down"); i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.match(service.output(), /shutting down/);
      assert.equal(await exitWithin(service, 1200), undefined, "the drain waits for the open stream");
      service.child.kill("SIGINT");
      const status = await exitWithin(service, 10_000);
      assert.equal(status?.code, 130, `still running 10 s after a second signal: ${service.output()}`);
      await reading;
      assert.match(service.output(), /second signal/);
    } finally {
      await service.stop();
      await origin.close();
    }
  });
});

Deno.test("start-up against a KV Connect server that never answers exits 1 naming KV_PATH", async () => {
  // Accepts connections and never answers (a wedged denokv, a proxy with no healthy backend).
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })().catch(() => {});
  try {
    const kvPath = `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
    // Not `runServiceExpectingFailure`: a start-up that hangs must fail this test, not hold it.
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "--allow-sys", "main.ts"],
      cwd: new URL("../../", import.meta.url),
      env: {
        NO_COLOR: "1",
        PORT: String(freePort()),
        ORIGIN_URL: "http://127.0.0.1:1",
        KV_PATH: kvPath,
        DENO_KV_ACCESS_TOKEN: "token-0123456789abcdef",
        KV_OPEN_TIMEOUT_MS: "500",
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(20_000),
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 1, `exit ${output.code} (143: still starting 20 s later): ${stderr}`);
    assert.match(
      stderr,
      new RegExp(`Cannot open KV at KV_PATH "${kvPath}": no answer within 500 ms \\(KV_OPEN_TIMEOUT_MS\\)`),
    );
  } finally {
    listener.close();
    await accepting;
    for (const conn of held) conn.close();
  }
});

Deno.test("a KV_PATH with credentials is masked in the start-up error, also where Deno's own message repeats it", async () => {
  const kvPort = freePort();
  const { code, stderr } = await runServiceExpectingFailure({
    ORIGIN_URL: "http://127.0.0.1:1",
    KV_PATH: `http://edge:s3cret-pw@127.0.0.1:${kvPort}`,
    DENO_KV_ACCESS_TOKEN: "token-0123456789abcdef",
    KV_OPEN_TIMEOUT_MS: "5000",
  });
  assert.equal(code, 1, stderr);
  assert.match(
    stderr,
    new RegExp(`Cannot open KV at KV_PATH "http://\\*\\*\\*@127\\.0\\.0\\.1:${kvPort}": `),
  );
  assert.doesNotMatch(stderr, /s3cret-pw|edge:/);
});

Deno.test("deno serve --parallel main.ts serves the same app and stops cleanly on SIGTERM", async () => {
  const origin = startOrigin();
  await withKvDir(async (kvPath) => {
    const service = await startService({ ORIGIN_URL: origin.url, KV_PATH: kvPath }, { serve: true });
    try {
      const res = await fetch(`${service.url}/echo/parallel`);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { method: "GET", path: "/echo/parallel" });
      // SIGTERM drains and exits (a kv.watch left open would keep the process alive).
      const status = await service.stop();
      assert.equal(status.code, 0, service.output());
    } finally {
      await service.stop();
      await origin.close();
    }
  });
});

Deno.test("deno serve --parallel: SIGTERM lets a request in flight finish, cuts an endless stream, exit 0", async () => {
  // `/slow` answers after 800 ms; anything else streams forever.
  const origin = startOrigin((seen) =>
    seen.path === "/slow"
      ? new Promise((resolve) => setTimeout(() => resolve(new Response("done")), 800))
      : endlessResponse()
  );
  await withKvDir(async (kvPath) => {
    const service = await startService({
      ORIGIN_URL: origin.url,
      KV_PATH: kvPath,
      SHUTDOWN_TIMEOUT_MS: "3000",
    }, { serve: true });
    try {
      using client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
      const { reading } = await openEndlessStream(service.url);
      const inflight = fetch(`${service.url}/slow`, { client })
        .then(async (res) => ({ status: res.status, body: await res.text() }));
      await new Promise((resolve) => setTimeout(resolve, 200));
      service.child.kill("SIGTERM");
      // Each worker drains its own server: one with nothing in flight must not end the process
      // while another still has requests to finish.
      assert.deepEqual(await inflight, { status: 200, body: "done" });
      const status = await exitWithin(service, 10_000);
      assert.equal(status?.code, 0, `still running 10 s after SIGTERM: ${service.output()}`);
      await reading;
    } finally {
      await service.stop();
      await origin.close();
    }
  });
});

Deno.test("start-up fails fast with a message naming the bad variable", async () => {
  const missing = await runServiceExpectingFailure({ KV_PATH: ":memory:" });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /ORIGIN_URL is required/);

  const badPort = await runServiceExpectingFailure({ ORIGIN_URL: "http://127.0.0.1:1", PORT: "eighty" });
  assert.equal(badPort.code, 1);
  assert.match(badPort.stderr, /PORT must be a number/);

  const badRules = await runServiceExpectingFailure({
    ORIGIN_URL: "http://127.0.0.1:1",
    KV_PATH: ":memory:",
    RULES_PATH: "/nonexistent/rules.json",
  });
  assert.equal(badRules.code, 1);
  assert.match(badRules.stderr, /Cannot read rules file "\/nonexistent\/rules.json"/);

  const halfIdentity = await runServiceExpectingFailure({
    ORIGIN_URL: "http://127.0.0.1:1",
    KV_PATH: ":memory:",
    USER_ID_HEADER: "x-auth-request-user",
  });
  assert.equal(halfIdentity.code, 1);
  assert.match(halfIdentity.stderr, /USER_ID_PROXIES is required when USER_ID_HEADER is set/);
});

Deno.test("with STICKY_SECRET a visitor's signed assignment survives a restart; without it main.ts warns and its key is its own", async () => {
  const origin = startOrigin();
  const dir = await Deno.makeTempDir();
  const rulesWith = async (name: string, weights: number[]) => {
    const path = `${dir}/${name}.json`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({ version: 1, experiments: [{ key: "hero", variations: ["control", "b"], weights }] }),
    );
    return path;
  };
  const allB = await rulesWith("all-b", [0, 1]);
  const allControl = await rulesWith("all-control", [1, 0]);
  const base = { ORIGIN_URL: origin.url, KV_PATH: ":memory:" };
  const secret = { STICKY_SECRET: "e2e-sticky-secret-0123456789" };
  const visit = async (service: ServiceProcess, cookie: string) => {
    // A browser's User-Agent: `fetch`'s own counts as a bot, and bots are in no experiment.
    const res = await fetch(`${service.url}/page`, { headers: { cookie, "user-agent": BROWSER } });
    await res.body?.cancel();
    const sticky = res.headers.getSetCookie().find((c) => c.startsWith("ep_exp="))?.split(";")[0];
    return { variants: origin.seen.at(-1)!.headers.get("x-edge-variants"), sticky };
  };
  const visitor = "ep_uid=e2e-visitor-0123456789";
  let cookie = "";
  try {
    const first = await startService({ ...base, ...secret, RULES_PATH: allB });
    try {
      const seen = await visit(first, visitor);
      assert.equal(seen.variants, "hero=b");
      assert.ok(seen.sticky);
      cookie = `${visitor}; ${seen.sticky}`;
      assert.doesNotMatch(first.output(), /STICKY_SECRET not set/);
    } finally {
      await first.stop();
    }
    // Restarted with weights that now give everyone control: the cookie of the first process holds.
    const second = await startService({ ...base, ...secret, RULES_PATH: allControl });
    try {
      assert.deepEqual(await visit(second, cookie), { variants: "hero=b", sticky: undefined });
      assert.equal((await visit(second, visitor)).variants, "hero=control");
    } finally {
      await second.stop();
    }
    const unset = await startService({ ...base, RULES_PATH: allControl });
    try {
      assert.match(unset.output(), /STICKY_SECRET not set/);
      const seen = await visit(unset, cookie);
      assert.equal(seen.variants, "hero=control", "another process's signature is not this one's");
      assert.match(seen.sticky ?? "", /^ep_exp=hero%3Acontrol\.[A-Za-z0-9_-]{43}$/);
    } finally {
      await unset.stop();
    }
  } finally {
    await origin.close();
    await Deno.remove(dir, { recursive: true });
  }
});
