import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import { makeDeps, SEED_RULES, startOrigin } from "../support.ts";
import { applyEvents, applyOptionsFromConfig } from "../../lib/sync/apply.ts";
import type { SyncEvent } from "../../lib/sync/schema.ts";

const UNTRUSTED = { remoteAddr: { hostname: "203.0.113.9" } };
const TRUSTED = { remoteAddr: { hostname: "10.0.0.5" } };

async function withProxy(
  fn: (ctx: {
    app: ReturnType<typeof createApp>;
    origin: ReturnType<typeof startOrigin>;
    logs: string[];
  }) => Promise<void>,
  options: { env?: Record<string, string>; respond?: Parameters<typeof startOrigin>[0] } = {},
) {
  const origin = startOrigin(options.respond);
  const logs: string[] = [];
  const deps = await makeDeps(origin.url, {
    env: { TRUSTED_PROXIES: "10.0.0.0/8", CDN_SECRET: "s3cret-s3cret-s3cret", ...options.env },
    rules: SEED_RULES,
    logLines: logs,
  });
  try {
    await fn({ app: createApp(deps), origin, logs });
  } finally {
    deps.kv.close();
    await origin.close();
  }
}

Deno.test("proxy forwards method, path, query and body to the origin and returns its answer", async () => {
  await withProxy(async ({ app, origin }) => {
    const res = await app.request(
      "http://edge.test/echo/a?x=1&y=2",
      { method: "POST", body: "hello" },
      UNTRUSTED,
    );
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { method: "POST", path: "/echo/a" });
    const seen = origin.seen[0]!;
    assert.equal(seen.path, "/echo/a");
    assert.equal(seen.search, "?x=1&y=2");
    assert.equal(seen.bodyBytes, 5);
    assert.equal(new URL(seen.url).host, new URL(origin.url).host);
  });
});

Deno.test("proxy preserves origin status and headers and does not follow redirects", async () => {
  await withProxy(async ({ app }) => {
    const res = await app.request("http://edge.test/moved", {}, UNTRUSTED);
    assert.equal(res.status, 301);
    assert.equal(res.headers.get("location"), "https://elsewhere.example/new");
    assert.equal(res.headers.get("x-origin-header"), "kept");
    assert.match(res.headers.get("via") ?? "", /edge-personalizer/);
  }, {
    respond: () =>
      new Response("moved", {
        status: 301,
        headers: { location: "https://elsewhere.example/new", "x-origin-header": "kept" },
      }),
  });
});

Deno.test("proxy removes hop-by-hop headers and every name listed in Connection, both ways", async () => {
  await withProxy(async ({ app, origin }) => {
    const res = await app.request("http://edge.test/echo", {
      headers: {
        connection: "x-secret-hop, keep-alive",
        "x-secret-hop": "1",
        "keep-alive": "timeout=5",
        "proxy-authorization": "Basic Zm9vOmJhcg==",
        te: "trailers",
        "x-normal": "yes",
      },
    }, UNTRUSTED);
    const seen = origin.seen[0]!.headers;
    assert.equal(seen.get("x-secret-hop"), null);
    assert.equal(seen.get("keep-alive"), null);
    assert.equal(seen.get("proxy-authorization"), null);
    assert.equal(seen.get("te"), null);
    assert.equal(seen.get("x-normal"), "yes");
    assert.equal(res.headers.get("x-upstream-hop"), null);
    assert.equal(res.headers.get("x-upstream-kept"), "yes");
  }, {
    respond: () =>
      new Response("ok", {
        headers: { connection: "x-upstream-hop", "x-upstream-hop": "1", "x-upstream-kept": "yes" },
      }),
  });
});

Deno.test("proxy strips forged x-edge-* headers and sets its own", async () => {
  await withProxy(async ({ app, origin }) => {
    await app.request("http://edge.test/echo", {
      headers: {
        "x-edge-region": "EU",
        "x-edge-user": "admin",
        "x-edge-country": "DE",
        "X-Edge-Anything": "forged",
        "x-edge-cdn-secret": "wrong-wrong-wrong-wrong",
      },
    }, UNTRUSTED);
    const seen = origin.seen[0]!.headers;
    assert.equal(seen.get("x-edge-region"), "GLOBAL");
    assert.equal(seen.get("x-edge-user"), null);
    assert.equal(seen.get("x-edge-country"), null);
    assert.equal(seen.get("x-edge-anything"), null);
    assert.equal(seen.get("x-edge-cdn-secret"), null);
  });
});

Deno.test("proxy ignores X-Forwarded-* and Forwarded from an untrusted peer", async () => {
  await withProxy(async ({ app, origin }) => {
    await app.request("http://edge.test/echo", {
      headers: {
        "x-forwarded-for": "1.2.3.4",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "evil.example",
        forwarded: "for=1.2.3.4;host=evil.example",
        via: "1.1 forged",
      },
    }, UNTRUSTED);
    const seen = origin.seen[0]!.headers;
    assert.equal(seen.get("x-forwarded-for"), "203.0.113.9");
    assert.equal(seen.get("x-forwarded-proto"), "http");
    assert.equal(seen.get("x-forwarded-host"), "edge.test");
    // Rebuilt from what the edge believed, never the client's.
    assert.equal(seen.get("forwarded"), 'for=203.0.113.9;host="edge.test";proto=http');
    assert.equal(seen.get("via"), "1.1 edge-personalizer");
    assert.equal(seen.get("x-edge-client-ip"), "203.0.113.9");
  });
});

Deno.test("proxy keeps and extends forwarding headers from a trusted peer", async () => {
  await withProxy(async ({ app, origin }) => {
    await app.request("http://edge.test/echo", {
      headers: {
        "x-forwarded-for": "198.51.100.7, 10.0.0.9",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "shop.example",
        via: "1.1 cdn",
      },
    }, TRUSTED);
    const seen = origin.seen[0]!.headers;
    assert.equal(seen.get("x-forwarded-for"), "198.51.100.7, 10.0.0.9, 10.0.0.5");
    assert.equal(seen.get("x-forwarded-proto"), "https");
    assert.equal(seen.get("x-forwarded-host"), "shop.example");
    assert.equal(seen.get("via"), "1.1 cdn, 1.1 edge-personalizer");
    assert.equal(seen.get("x-edge-client-ip"), "198.51.100.7");
    assert.equal(seen.get("forwarded"), 'for=198.51.100.7;host="shop.example";proto=https');
  });
});

Deno.test("rewrite uses a geo header only from a trusted peer or with the CDN secret", async () => {
  await withProxy(async ({ app, origin }) => {
    const cases: [Record<string, string>, { remoteAddr: { hostname: string } }, string, string][] = [
      [{ "cf-ipcountry": "DE" }, UNTRUSTED, "/api/products/promotions/global", "GLOBAL"],
      [{ "cf-ipcountry": "DE" }, TRUSTED, "/api/products/promotions/europe", "EU"],
      [
        { "x-geo-country": "fr", "x-edge-cdn-secret": "s3cret-s3cret-s3cret" },
        UNTRUSTED,
        "/api/products/promotions/europe",
        "EU",
      ],
      [
        { "x-geo-country": "FR", "x-edge-cdn-secret": "s3cret-s3cret-s3cre" },
        UNTRUSTED,
        "/api/products/promotions/global",
        "GLOBAL",
      ],
      [{ "cloudfront-viewer-country": "US" }, TRUSTED, "/api/products/promotions/global", "US"],
      [{ "x-vercel-ip-country": "GB" }, TRUSTED, "/api/products/promotions/europe", "EU"],
      [{ "x-appengine-country": "SG" }, TRUSTED, "/api/products/promotions/global", "APAC"],
      // The first header present decides, "no country" included: a later header (which a client
      // could have sent through the CDN) is not consulted.
      [
        { "x-appengine-country": "ZZ", "x-geo-country": "DE" },
        TRUSTED,
        "/api/products/promotions/global",
        "GLOBAL",
      ],
      [{ "cf-ipcountry": "XX", "x-geo-country": "DE" }, TRUSTED, "/api/products/promotions/global", "GLOBAL"],
      [{ "x-geo-region": "EU" }, TRUSTED, "/api/products/promotions/europe", "EU"],
      [{ "x-geo-region": "EU" }, UNTRUSTED, "/api/products/promotions/global", "GLOBAL"],
    ];
    for (const [headers, peer, expectedPath, expectedRegion] of cases) {
      const res = await app.request("http://edge.test/api/products/list?page=2", { headers }, peer);
      assert.equal(res.status, 200);
      const seen = origin.seen.at(-1)!;
      assert.equal(seen.path, expectedPath, JSON.stringify(headers));
      assert.equal(seen.search, "?page=2");
      assert.equal(seen.headers.get("x-edge-region"), expectedRegion, JSON.stringify(headers));
      assert.match(res.headers.get("cache-control") ?? "", /private/);
    }
  });
});

Deno.test("redirect routes are answered at the edge without an origin round trip", async () => {
  await withProxy(async ({ app, origin }) => {
    const res = await app.request("http://edge.test/old-sale", {}, UNTRUSTED);
    assert.equal(res.status, 302);
    assert.equal(res.headers.get("location"), "/sale");
    assert.equal(origin.seen.length, 0);
  });
});

Deno.test("an origin timeout is answered 504 with a JSON error body", async () => {
  await withProxy(async ({ app }) => {
    const res = await app.request("http://edge.test/slow", {}, UNTRUSTED);
    assert.equal(res.status, 504);
    const body = await res.json();
    assert.equal(body.error.code, "origin_timeout");
    assert.equal(typeof body.error.message, "string");
  }, {
    env: { ORIGIN_TIMEOUT_MS: "100" },
    respond: () => new Promise((resolve) => setTimeout(() => resolve(new Response("late")), 600)),
  });
});

Deno.test("an unreachable origin is answered 502 without internal detail", async () => {
  const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const deps = await makeDeps(`http://127.0.0.1:${port}`);
  try {
    const res = await createApp(deps).request("http://edge.test/x", {}, UNTRUSTED);
    assert.equal(res.status, 502);
    const body = await res.json();
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message"]);
    assert.equal(body.error.code, "origin_unavailable");
    assert.doesNotMatch(body.error.message, /refused|ECONN|os error/i);
  } finally {
    deps.kv.close();
  }
});

Deno.test("request id is accepted when valid, replaced when not, echoed and forwarded", async () => {
  await withProxy(async ({ app, origin, logs }) => {
    const ok = await app.request(
      "http://edge.test/echo",
      { headers: { "x-request-id": "abc-123" } },
      UNTRUSTED,
    );
    assert.equal(ok.headers.get("x-request-id"), "abc-123");
    assert.equal(origin.seen[0]!.headers.get("x-request-id"), "abc-123");
    const bad = await app.request(
      "http://edge.test/echo",
      { headers: { "x-request-id": "bad id\u0001" } },
      UNTRUSTED,
    );
    assert.match(bad.headers.get("x-request-id") ?? "", /^id-\d+$/);
    assert.match(ok.headers.get("server-timing") ?? "", /^edge;dur=[\d.]+, origin;dur=[\d.]+$/);
    const line = logs.map((l) => JSON.parse(l)).find((l) => l.msg === "request" && l.requestId === "abc-123");
    assert.equal(line.path, "/echo");
    assert.equal(line.status, 200);
    assert.equal(typeof line.durMs, "number");
  });
});

Deno.test("unknown /_edge paths are 404 JSON and never reach the origin", async () => {
  await withProxy(async ({ app, origin }) => {
    const res = await app.request("http://edge.test/_edge/nope", {}, UNTRUSTED);
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.code, "not_found");
    assert.equal(origin.seen.length, 0);
  });
});

Deno.test("gzip (and x-gzip, which fetch does not decode) reach the client as a body its headers describe", async () => {
  const text = "hello compressed world ".repeat(50);
  const gz = new Uint8Array(
    await new Response(new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer(),
  );
  await withProxy(async ({ app }) => {
    for (const coding of ["gzip", "x-gzip"]) {
      for (const acceptEncoding of ["gzip, br", "identity", undefined]) {
        const label = `${coding}, accept-encoding ${acceptEncoding}`;
        const headers: Record<string, string> = acceptEncoding ? { "accept-encoding": acceptEncoding } : {};
        const res = await app.request(`http://edge.test/${coding}`, { headers }, UNTRUSTED);
        const body = new Uint8Array(await res.arrayBuffer());
        const encoding = res.headers.get("content-encoding");
        const decoded = encoding === "gzip" || encoding === "x-gzip"
          ? new TextDecoder().decode(
            await new Response(new Blob([body]).stream().pipeThrough(new DecompressionStream("gzip")))
              .arrayBuffer(),
          )
          : new TextDecoder().decode(body);
        assert.equal(decoded, text, label);
        // Deno's fetch leaves x-gzip encoded: the header must stay with the body.
        if (coding === "x-gzip") assert.equal(encoding, "x-gzip", label);
        const length = res.headers.get("content-length");
        if (length) assert.equal(Number(length), body.byteLength, label);
        if (!encoding) assert.equal(res.headers.get("etag"), 'W/"v1"', label);
      }
    }
  }, {
    respond: (seen) =>
      new Response(gz, {
        headers: { "content-encoding": seen.path.slice(1), etag: '"v1"', "content-type": "text/plain" },
      }),
  });
});

Deno.test("trust-only headers from an untrusted client never reach the origin; the CDN secret vouches for geo only", async () => {
  await withProxy(async ({ app, origin }) => {
    const forged = {
      "x-user-id": "admin",
      "cf-ipcountry": "DE",
      "x-geo-region": "EU",
      "x-geo-country": "FR",
    };
    await app.request("http://edge.test/echo", { headers: forged }, UNTRUSTED);
    let seen = origin.seen.at(-1)!.headers;
    for (const name of Object.keys(forged)) assert.equal(seen.get(name), null, name);
    assert.equal(seen.get("x-edge-user"), null);

    await app.request("http://edge.test/echo", {
      headers: { ...forged, "x-edge-cdn-secret": "s3cret-s3cret-s3cret" },
    }, UNTRUSTED);
    seen = origin.seen.at(-1)!.headers;
    assert.equal(seen.get("x-user-id"), null, "a CDN secret does not let a client name the user");
    assert.equal(seen.get("x-edge-user"), null);
    assert.equal(seen.get("cf-ipcountry"), "DE", "geo headers pass from a hop trusted for geo");
    assert.equal(seen.get("x-edge-region"), "EU");

    // TRUSTED_PROXIES vouches for forwarding and geo headers, never for who the user is.
    await app.request("http://edge.test/echo", { headers: { "x-user-id": "u7" } }, TRUSTED);
    seen = origin.seen.at(-1)!.headers;
    assert.equal(seen.get("x-edge-user"), null);
    assert.equal(seen.get("x-user-id"), null);
  });
});

Deno.test("a client that goes away before the origin answers gets no 500 and no error log", async () => {
  await withProxy(async ({ app, logs }) => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const res = await app.request("http://edge.test/slow", { signal: controller.signal }, UNTRUSTED);
    assert.equal(res.status, 499);
    await res.body?.cancel();
    assert.ok(!logs.some((line) => JSON.parse(line).level === "error"), logs.join("\n"));
  }, { respond: () => new Promise((resolve) => setTimeout(() => resolve(new Response("late")), 300)) });
});

Deno.test("with PUBLIC_HOSTS, a client's unknown Host is never passed on as X-Forwarded-Host", async () => {
  await withProxy(async ({ app, origin }) => {
    await app.request("http://shop.example/echo", {}, UNTRUSTED);
    assert.equal(origin.seen.at(-1)!.headers.get("x-forwarded-host"), "shop.example");
    await app.request("http://evil.example/echo", {}, UNTRUSTED);
    assert.equal(origin.seen.at(-1)!.headers.get("x-forwarded-host"), "shop.example");
    await app.request("http://WWW.SHOP.EXAMPLE/echo", {}, UNTRUSTED);
    assert.equal(origin.seen.at(-1)!.headers.get("x-forwarded-host"), "www.shop.example");
  }, { env: { PUBLIC_HOSTS: "shop.example, www.shop.example" } });
});

Deno.test("a request the routers hand on to the proxy keeps the one request id they made", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { rules: SEED_RULES });
  let made = 0;
  const randomId = deps.randomId;
  deps.randomId = () => {
    made++;
    return randomId();
  };
  try {
    // A percent-encoded path goes through Hono (which decodes before routing) to the proxy.
    const res = await createApp(deps).request("http://edge.test/echo/%61b", {
      headers: { cookie: "ep_uid=known-visitor-0001" },
    }, UNTRUSTED);
    assert.equal(res.status, 200);
    assert.equal(made, 1);
    assert.equal(origin.seen.at(-1)!.headers.get("x-request-id"), res.headers.get("x-request-id"));
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("data stored before ids were checked cannot break the proxy: headers are left out or made well-formed", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { rules: SEED_RULES });
  const now = deps.now();
  try {
    // Written past the sync schema (which now refuses these ids), as an older edge stored them.
    await applyEvents(deps.kv, [
      {
        kind: "session",
        sessionId: "session-unicode-01",
        userId: "\u0142ukasz",
        at: now - 1000,
        expiresAt: now + 3_600_000,
      },
      {
        kind: "session",
        sessionId: "session-crlf-00001",
        userId: "bob\r\nx-evil: 1",
        at: now - 1000,
        expiresAt: now + 3_600_000,
      },
      {
        kind: "session",
        sessionId: "session-lone-00001",
        userId: "u1",
        at: now - 1000,
        expiresAt: now + 3_600_000,
      },
      { kind: "cart", userId: "u1", version: 1, at: now - 1000, items: [{ itemId: "sku-\ud800", qty: 1 }] },
    ] as unknown as SyncEvent[], applyOptionsFromConfig(deps.config, now));
    const app = createApp(deps);
    for (const sid of ["session-unicode-01", "session-crlf-00001", "session-lone-00001"]) {
      const res = await app.request("http://edge.test/account", { headers: { cookie: `sid=${sid}` } });
      assert.equal(res.status, 200, sid);
      await res.body?.cancel();
    }
    const [unicode, crlf, lone] = origin.seen;
    assert.equal(unicode!.headers.get("x-edge-user"), null);
    assert.equal(crlf!.headers.get("x-edge-user"), null);
    assert.equal(crlf!.headers.get("x-evil"), null);
    assert.equal(lone!.headers.get("x-edge-user"), "u1");
    assert.equal(lone!.headers.get("x-edge-cart-items"), "sku-%EF%BF%BD");
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("an origin's public answer to a logged-in visitor is made private: the edge told it who they are", async () => {
  await withProxy(async ({ app, origin }) => {
    const anonymous = await app.request("http://edge.test/echo/shared", {
      headers: { cookie: "ep_uid=known-visitor-0001" },
    }, UNTRUSTED);
    await anonymous.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-user"), null);
    assert.equal(anonymous.headers.get("cache-control"), "public, max-age=300");

    const named = await app.request("http://edge.test/echo/shared", {
      headers: { cookie: "ep_uid=known-visitor-0001", "x-auth-request-user": "alice" },
    }, TRUSTED);
    await named.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-user"), "alice");
    assert.equal(named.headers.get("cache-control"), "private, max-age=300");

    // A Vary on the edge's headers does not keep it shareable: caches in front never see them.
    const varied = await app.request("http://edge.test/echo/varied", {
      headers: { cookie: "ep_uid=known-visitor-0001", "x-auth-request-user": "alice" },
    }, TRUSTED);
    await varied.body?.cancel();
    assert.equal(varied.headers.get("cache-control"), "private, max-age=300");
  }, {
    env: { USER_ID_HEADER: "x-auth-request-user", USER_ID_PROXIES: "10.0.0.0/8" },
    respond: (seen) =>
      new Response("same for everyone?", {
        headers: seen.path === "/echo/varied"
          ? { "cache-control": "public, max-age=300", vary: "x-edge-user, x-edge-segments" }
          : { "cache-control": "public, max-age=300" },
      }),
  });
});
