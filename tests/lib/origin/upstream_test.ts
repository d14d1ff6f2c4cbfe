import assert from "node:assert/strict";
import { buildUpstreamUrl, headerValue, upstreamRequestHeaders } from "../../../lib/origin/upstream.ts";
import { fetchOrigin, guardBodyIdle } from "../../../lib/origin/fetch.ts";
import { checkInboundPath, normalisePercentEncoding, pathForRules } from "../../../lib/http/paths.ts";
import { DeadlineSweep } from "../../../lib/support/deadlines.ts";
import { BadPathError, OriginBodyTimeoutError, OriginTimeoutError } from "../../../lib/http/errors.ts";

Deno.test("inbound paths: safe ones pass (repeated slashes collapsed), escaping ones are refused", () => {
  assert.equal(checkInboundPath("/a/b%20c"), "/a/b%20c");
  assert.equal(checkInboundPath("//a///b"), "/a/b");
  for (
    const bad of [
      "/a/..",
      "/a/%2e%2e/b",
      "/a%2fb",
      "/a%5cb",
      "/%252e%252e/",
      "/..;/x",
      "/a\\b",
      "/%00",
      "/%zz",
    ]
  ) {
    assert.throws(() => checkInboundPath(bad), BadPathError, bad);
  }
});

Deno.test("inbound paths come out with percent-encoding normalised: escaped unreserved decoded, other hex upper-cased", () => {
  assert.equal(checkInboundPath("/%61dmin/x"), "/admin/x");
  assert.equal(checkInboundPath("/%41%5a%30%2D%2e%5F%7e"), "/AZ0-._~");
  assert.equal(checkInboundPath("/caf%c3%a9/a%20b%3bc"), "/caf%C3%A9/a%20b%3Bc");
  // Not decoded twice: `%2561` is a literal "%61" to every server.
  assert.equal(checkInboundPath("/%2561dmin"), "/%2561dmin");
  // The common plain path is returned as it is.
  const plain = "/products/shoes-42";
  assert.equal(checkInboundPath(plain), plain);
  // Decoding never makes a dot segment or a slash: those spellings are still refused.
  for (const bad of ["/%2e/x", "/x/%2E%2E", "/.%2e;a/x", "/a%2fb"]) {
    assert.throws(() => checkInboundPath(bad), BadPathError, bad);
  }
  assert.equal(normalisePercentEncoding("/%7euser/%e2%82%ac"), "/~user/%E2%82%AC");
});

Deno.test("the path rules match cuts each segment's ; parameters, as a servlet container maps it", () => {
  assert.equal(pathForRules("/admin;x/y"), "/admin/y");
  assert.equal(pathForRules("/cart;jsessionid=ABC"), "/cart");
  assert.equal(pathForRules("/;a/admin;b=c;d/y;e"), "/admin/y");
  assert.equal(pathForRules("/a/;x/b"), "/a/b");
  assert.equal(pathForRules("/a%3Bb/c"), "/a%3Bb/c");
  const plain = "/products/shoes";
  assert.equal(pathForRules(plain), plain);
});

Deno.test("upstream URLs keep the origin and its path prefix", () => {
  const origin = new URL("http://origin.internal:8080/shop/");
  assert.equal(buildUpstreamUrl(origin, "/cart", "?a=1").href, "http://origin.internal:8080/shop/cart?a=1");
  assert.equal(buildUpstreamUrl(origin, "//evil.example/x", "").host, "origin.internal:8080");
  assert.equal(buildUpstreamUrl(new URL("https://o.example"), "/x", "").href, "https://o.example/x");
});

Deno.test("upstream headers: accept-encoding defaults to identity so bodies pass through undecoded", () => {
  const info = {
    clientIp: "1.2.3.4",
    peerIp: "1.2.3.4",
    peerTrusted: false,
    proto: "https",
    host: "shop.example",
    requestId: "r1",
  };
  assert.equal(headerValue(upstreamRequestHeaders(new Headers(), info), "accept-encoding"), "identity");
  assert.equal(
    headerValue(upstreamRequestHeaders(new Headers({ "accept-encoding": "gzip" }), info), "accept-encoding"),
    "gzip",
  );
});

const encoder = new TextEncoder();
const deadlines = new DeadlineSweep();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("body idle guard: a source silent while the consumer waits errors the stream and is cancelled", async () => {
  let cancelled: unknown;
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(encoder.encode("first"));
      // …and then nothing, ever.
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  let idleCalls = 0;
  const reader = guardBodyIdle(source, { idleMs: 50, onIdle: () => idleCalls++ }).getReader();
  assert.deepEqual(await reader.read(), { done: false, value: encoder.encode("first") });
  await assert.rejects(reader.read(), OriginBodyTimeoutError);
  assert.equal(idleCalls, 1);
  assert.ok(cancelled instanceof OriginBodyTimeoutError, "the source is released");
});

Deno.test("body idle guard: a slow consumer (backpressure) never trips it, and the stream completes", async () => {
  const chunks = ["a", "b", "c"];
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = chunks.shift();
      if (next === undefined) controller.close();
      else controller.enqueue(encoder.encode(next));
    },
  });
  const reader = guardBodyIdle(source, { idleMs: 20 }).getReader();
  const got: string[] = [];
  while (true) {
    // The consumer dawdles far longer than the idle timeout between reads.
    await sleep(60);
    const { done, value } = await reader.read();
    if (done) break;
    got.push(new TextDecoder().decode(value));
  }
  assert.deepEqual(got, ["a", "b", "c"]);
});

Deno.test("body idle guard: cancelling the guarded stream cancels the source and leaves no timer", async () => {
  let cancelled = false;
  const source = new ReadableStream<Uint8Array>({
    pull: () => new Promise(() => {}),
    cancel() {
      cancelled = true;
    },
  });
  const guarded = guardBodyIdle(source, { idleMs: 10_000 });
  const reader = guarded.getReader();
  const pending = reader.read();
  await reader.cancel("client went away");
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.ok(cancelled);
  // The test's timer sanitizer fails this test if the 10 s timer were still armed.
});

Deno.test("fetchOrigin: an origin that stalls mid-body is cut off after the idle timeout", async () => {
  let stop: () => void = () => {};
  const stalled = new Promise<void>((resolve) => stop = resolve);
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, () =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(encoder.encode("partial"));
        },
        cancel: () => stop(),
      }),
    ));
  try {
    const url = new URL(`http://127.0.0.1:${server.addr.port}/stall`);
    const response = await fetchOrigin(url, { method: "GET", headers: new Headers(), body: null }, {
      fetch,
      deadlines,
      timeoutMs: 1000,
      bodyIdleTimeoutMs: 100,
    });
    assert.equal(response.status, 200);
    assert.ok(response.body instanceof ReadableStream, "an unsized body streams");
    const reader = response.body.getReader();
    assert.equal(new TextDecoder().decode((await reader.read()).value), "partial");
    await assert.rejects(reader.read(), OriginBodyTimeoutError);
    // The upstream connection was released: the origin saw its stream cancelled.
    await stalled;
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetchOrigin: a small sized body is read whole; one that stalls is a 504, not a cut-off body", async () => {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, (request) => {
    const stall = new URL(request.url).pathname === "/stall";
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(encoder.encode("partial"));
        if (!stall) controller.close();
      },
    });
    return new Response(body, { headers: { "content-length": stall ? "100" : "7" } });
  });
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const whole = await fetchOrigin(new URL(`${base}/ok`), { method: "GET", headers: [], body: null }, {
      fetch,
      deadlines,
      timeoutMs: 1000,
    });
    assert.ok(whole.body instanceof Uint8Array);
    assert.equal(new TextDecoder().decode(whole.body), "partial");
    let idle = 0;
    await assert.rejects(
      fetchOrigin(new URL(`${base}/stall`), { method: "GET", headers: [], body: null }, {
        fetch,
        deadlines,
        timeoutMs: 1000,
        bodyIdleTimeoutMs: 100,
        onBodyIdle: () => idle++,
      }),
      OriginTimeoutError,
    );
    assert.equal(idle, 1);
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetchOrigin: bodyless answers (204, 304) come back unwrapped", async () => {
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    (request) => new Response(null, { status: new URL(request.url).pathname === "/nc" ? 204 : 304 }),
  );
  try {
    for (const [path, status] of [["/nc", 204], ["/nm", 304]] as const) {
      const response = await fetchOrigin(
        new URL(`http://127.0.0.1:${server.addr.port}${path}`),
        { method: "GET", headers: new Headers(), body: null },
        { fetch, deadlines, timeoutMs: 1000 },
      );
      assert.equal(response.status, status);
      assert.equal(response.body, null);
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("upstream URLs never climb out of the origin's path prefix, even for an unchecked path", () => {
  // Found by tests/lib/origin/upstream_property_test.ts: the pathname setter resolves dot segments.
  const origin = new URL("http://127.0.0.1:3000/a/b/");
  for (const path of ["/..", "/../x", "/./../..", "/%2e%2e/x"]) {
    assert.throws(() => buildUpstreamUrl(origin, path, ""), BadPathError, path);
  }
  assert.equal(buildUpstreamUrl(origin, "/c/../d", "").pathname, "/a/b/d");
});
