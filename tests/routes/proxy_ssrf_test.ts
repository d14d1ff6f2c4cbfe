/**
 * SSRF and path-traversal vectors sent as raw HTTP/1.1 request lines to a real listening edge:
 * each must end either as a 400 from the edge (or Deno's own HTTP parser) or as a request
 * that reached the configured origin — never the "evil" server — with a path that has no
 * dot segments, encoded slashes or backslashes.
 */
import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import { makeDeps, rawRequest, SEED_RULES, startOrigin } from "../support.ts";

Deno.test("no SSRF or path-traversal vector reaches another host or escapes the route", async () => {
  const origin = startOrigin();
  const evil = startOrigin();
  const deps = await makeDeps(`${origin.url}/shop`, { rules: SEED_RULES });
  const edge = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, createApp(deps).fetch);
  const E = `127.0.0.1:${evil.port}`;
  const vectors = [
    "//evil.example/x",
    `//${E}/x`,
    `///${E}/x`,
    "/%2e%2e/etc/passwd",
    "/%2E%2E%2Fetc%2Fpasswd",
    "/a/..%2f..%2fetc",
    "/..",
    "/../../etc/passwd",
    "/a/%2e%2e/%2e%2e/b",
    "/.%2e/x",
    "/%2e./x",
    "/%252e%252e/x",
    "/%252f%252fevil.example",
    "/%2f%2fevil.example",
    "/a%2fb",
    "/%5cevil.example",
    "/\\evil.example",
    "/\\\\evil.example/x",
    `/\\${E}/x`,
    "/@evil.example",
    `/@${E}/`,
    "/%40evil.example",
    "/:@evil.example/",
    "//user:pass@evil.example/",
    `http://${E}/x`,
    "http://evil.example/x",
    "https://evil.example:443/x",
    `http://127.0.0.1:${origin.port}@${E}/x`,
    "/.//evil.example",
    "/api/products/..%2f..%2fadmin",
    "/api/products/%2e%2e/%2e%2e/admin",
    "/..;/admin",
    "/a/.;/b",
    "/%00/x",
    "/x%0d%0aHost:%20evil.example",
    "/a/.%00./b",
    "/x?next=//evil.example&u=http://evil.example",
    "*",
  ];
  try {
    let rejected = 0;
    let forwarded = 0;
    for (const target of vectors) {
      const before = origin.seen.length;
      const res = await rawRequest(
        edge.addr.port,
        `GET ${target} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(evil.seen.length, 0, `${target} reached the evil server`);
      if (origin.seen.length === before) {
        assert.ok(res.status >= 400 && res.status < 500, `${target} → ${res.status}, expected a 4xx`);
        rejected++;
        continue;
      }
      forwarded++;
      const seen = origin.seen.at(-1)!;
      const url = new URL(seen.url);
      assert.equal(url.port, String(origin.port), target);
      assert.equal(seen.headers.get("host"), `127.0.0.1:${origin.port}`, target);
      assert.ok(seen.path.startsWith("/shop/"), `${target} → ${seen.path}`);
      const rawPath = seen.url.slice(seen.url.indexOf("/", "http://".length)).split("?")[0]!;
      assert.doesNotMatch(rawPath, /(^|\/)\.\.?(\/|;|$)|%2f|%5c|\\|\/\//i, `${target} → ${rawPath}`);
      assert.ok(res.status < 500, `${target} → ${res.status}`);
    }
    assert.ok(vectors.length >= 30);
    assert.ok(rejected > 10 && forwarded > 5, `rejected ${rejected}, forwarded ${forwarded}`);
  } finally {
    await edge.shutdown();
    deps.kv.close();
    await origin.close();
    await evil.close();
  }
});

Deno.test("raw request targets are normalised as URL does before routing: dot segments resolved, characters encoded", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { rules: SEED_RULES });
  const edge = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, createApp(deps).fetch);
  try {
    // Deno.serve hands the raw target through in Request.url; the edge must see what URL sees.
    for (
      const [target, expected] of [
        ["/x/../echo/a", "/echo/a"],
        ["/echo/./b", "/echo/b"],
        ["/echo/caf\u00e9", "/echo/caf%C3%A9"],
        ['/echo/a"b', "/echo/a%22b"],
      ] as const
    ) {
      const res = await rawRequest(
        edge.addr.port,
        `GET ${target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(res.status, 200, target);
      assert.equal(origin.seen.at(-1)!.path, expected, target);
    }
  } finally {
    await edge.shutdown();
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("a raw spelling that resolves into the edge's own paths is refused, never forwarded to the origin's", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { rules: SEED_RULES });
  const edge = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, createApp(deps).fetch);
  try {
    for (
      const target of [
        "/x/../_edge/sync",
        "/x/%2e%2e/_edge/context",
        "//_edge/context",
        "/_edge//context",
        "/./ofrep/v1/evaluate/flags",
        "/x/../.well-known/gpc.json",
        "//%5Fedge/context",
        "/x/../%5Fedge/sync",
      ]
    ) {
      const res = await rawRequest(
        edge.addr.port,
        `GET ${target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(res.status, 400, target);
      assert.match(res.body, /"code":"bad_path"/, target);
    }
    assert.equal(origin.seen.length, 0);
    // The canonical spellings still reach the edge, and other odd spellings the origin.
    for (const [target, status] of [["/.well-known/gpc.json", 200], ["/_edge/health", 200]] as const) {
      const res = await rawRequest(
        edge.addr.port,
        `GET ${target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(res.status, status, target);
    }
    const odd = await rawRequest(
      edge.addr.port,
      `GET /shop//x/../echo HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(odd.status, 200);
    assert.equal(origin.seen.at(-1)!.path, "/shop/echo");
    // Paths that only look like the edge's stay the origin's, whatever their spelling.
    for (
      const [target, forwarded] of [
        ["/_edgewear//shirts", "/_edgewear/shirts"],
        ["/.well-known//apple-app-site-association", "/.well-known/apple-app-site-association"],
      ] as const
    ) {
      const res = await rawRequest(
        edge.addr.port,
        `GET ${target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(res.status, 200, target);
      assert.equal(origin.seen.at(-1)!.path, forwarded);
    }
  } finally {
    await edge.shutdown();
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("rules for /admin/* also hold for /%61dmin/x and /admin;x/y; the origin gets the normalised path", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, {
    rules: {
      version: 1,
      routes: [
        { match: "/admin/*", redirect: { to: "/login", status: 302 } },
        { match: "/old/*", rewrite: { "*": "/new/*" } },
      ],
      experiments: [{ key: "hero", variations: ["control", "a"], match: "/promo/*" }],
    },
  });
  const edge = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, createApp(deps).fetch);
  const get = (target: string) =>
    rawRequest(edge.addr.port, `GET ${target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`);
  try {
    for (
      const target of [
        "/%61dmin/x",
        "/%61%64%6D%69%6E/x",
        "/admin;x/y",
        "/admin;jsessionid=1/",
        "/%61dmin;a/b",
      ]
    ) {
      const res = await get(target);
      assert.equal(res.status, 302, target);
      assert.match(res.head, /\r\nlocation: \/login\r\n/i, target);
    }
    assert.equal(origin.seen.length, 0, "a redirect never reaches the origin");

    assert.equal((await get("/%6Fld/a%2Db")).status, 200);
    assert.equal(origin.seen.at(-1)!.path, "/new/a-b");
    assert.equal((await get("/pr%6Fmo;x/summer")).status, 200);
    assert.match(origin.seen.at(-1)!.headers.get("x-edge-variants") ?? "", /^hero=/);
    // What no rule matches reaches the origin normalised, with its parameters.
    assert.equal((await get("/sh%6Fp/caf%c3%a9;jsessionid=A1")).status, 200);
    const seen = origin.seen.at(-1)!;
    assert.equal(seen.url.slice(seen.url.indexOf("/", "http://".length)), "/shop/caf%C3%A9;jsessionid=A1");
  } finally {
    await edge.shutdown();
    deps.kv.close();
    await origin.close();
  }
});
