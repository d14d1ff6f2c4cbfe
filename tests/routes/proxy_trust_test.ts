/**
 * @module
 * Who may tell the edge what: the user id header (its own trust, `USER_ID_HEADER` from
 * `USER_ID_PROXIES`), and the client-IP, override, host and scheme headers a client or a trusted
 * hop sends — each checked against a real origin that echoes what it received.
 */
import assert from "node:assert/strict";
import { sign } from "../../lib/sync/verify.ts";
import { createApp } from "../../routes/app.ts";
import { makeDeps, rawRequest, type SeenRequest, startOrigin } from "../support.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const LOOPBACK = { remoteAddr: { hostname: "127.0.0.1" } };
/** Loopback, but outside `127.0.0.1/32`. */
const OTHER_LOOPBACK = { remoteAddr: { hostname: "127.0.0.2" } };
const CHROME =
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

type App = ReturnType<typeof createApp>;

async function withEdge(
  env: Record<string, string>,
  fn: (ctx: { app: App; seen: SeenRequest[] }) => Promise<void>,
): Promise<void> {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { env: { SYNC_SECRETS: SECRET, ...env }, now: () => NOW });
  try {
    await fn({ app: createApp(deps), seen: origin.seen });
  } finally {
    deps.kv.close();
    await origin.close();
  }
}

/** Pushes a signed batch through `POST /_edge/sync`, as the backend would. */
async function push(app: App, events: unknown[]): Promise<void> {
  const body = JSON.stringify({ type: "edge.sync", timestamp: "2026-11-26T12:00:00Z", data: { events } });
  const id = `msg_${crypto.randomUUID()}`;
  const timestamp = NOW / 1000;
  const res = await app.request("/_edge/sync", {
    method: "POST",
    body,
    headers: {
      "content-type": "application/json",
      "webhook-id": id,
      "webhook-timestamp": String(timestamp),
      "webhook-signature": await sign(SECRET, { id, timestamp, body }),
    },
  });
  assert.equal(res.status, 200, await res.text());
}

const VICTIM_DATA = [
  { kind: "view", userId: "victim-42", itemId: "secret-item", at: "2026-11-26T11:59:00Z" },
  {
    kind: "profile",
    userId: "victim-42",
    version: 1,
    at: "2026-11-26T11:59:00Z",
    segments: ["vip"],
    attributes: {},
  },
];

async function context(app: App, headers: Record<string, string>, peer = LOOPBACK) {
  const res = await app.request("http://edge.test/_edge/context", {
    headers: { "user-agent": CHROME, ...headers },
  }, peer);
  assert.equal(res.status, 200);
  return await res.json();
}

Deno.test("TRUSTED_PROXIES does not make x-user-id believed: loopback naming a user gets nothing of theirs", async () => {
  await withEdge({ TRUSTED_PROXIES: "127.0.0.0/8" }, async ({ app, seen }) => {
    await push(app, VICTIM_DATA);
    const body = await context(app, { "x-user-id": "victim-42" });
    assert.equal(body.visitor.loggedIn, false);
    assert.equal(body.visitor.userId, null);
    assert.deepEqual(body.recentViews, []);
    assert.deepEqual(body.segments, []);

    const res = await app.request("http://edge.test/echo", {
      headers: { "user-agent": CHROME, "x-user-id": "victim-42" },
    }, LOOPBACK);
    await res.body?.cancel();
    const headers = seen.at(-1)!.headers;
    assert.equal(headers.get("x-user-id"), null);
    assert.equal(headers.get("x-edge-user"), null);
    assert.equal(headers.get("x-edge-recent-views"), null);
  });
});

Deno.test("USER_ID_HEADER from a peer in USER_ID_PROXIES names the user; x-user-id and other peers do not", async () => {
  const env = { USER_ID_HEADER: "x-auth-request-user", USER_ID_PROXIES: "127.0.0.1/32" };
  await withEdge(env, async ({ app, seen }) => {
    await push(app, VICTIM_DATA);
    const named = await context(app, { "x-auth-request-user": "victim-42" });
    assert.equal(named.visitor.loggedIn, true);
    assert.equal(named.visitor.userId, "victim-42");
    assert.deepEqual(named.recentViews, ["secret-item"]);

    // x-user-id is just another header when USER_ID_HEADER names a different one.
    const legacy = await context(app, { "x-user-id": "victim-42" });
    assert.equal(legacy.visitor.loggedIn, false);
    // A peer outside USER_ID_PROXIES (loopback, but not 127.0.0.1) names nobody with either.
    const outside = await context(app, { "x-auth-request-user": "victim-42" }, OTHER_LOOPBACK);
    assert.equal(outside.visitor.loggedIn, false);
    assert.deepEqual(outside.recentViews, []);

    // The origin hears who is logged in from x-edge-user only: the header that said so is gone.
    const res = await app.request("http://edge.test/echo", {
      headers: { "user-agent": CHROME, "x-auth-request-user": "victim-42", "x-user-id": "mallory" },
    }, LOOPBACK);
    await res.body?.cancel();
    let headers = seen.at(-1)!.headers;
    assert.equal(headers.get("x-edge-user"), "victim-42");
    assert.equal(headers.get("x-auth-request-user"), null);
    assert.equal(headers.get("x-user-id"), null);

    // From a peer not allowed to name the user, the header is removed as well.
    await (await app.request("http://edge.test/echo", {
      headers: { "user-agent": CHROME, "x-auth-request-user": "victim-42" },
    }, OTHER_LOOPBACK)).body?.cancel();
    headers = seen.at(-1)!.headers;
    assert.equal(headers.get("x-edge-user"), null);
    assert.equal(headers.get("x-auth-request-user"), null);
  });
});

Deno.test("open OFREP names the caller by USER_ID_HEADER only from a peer in USER_ID_PROXIES", async () => {
  const rules = {
    version: 1,
    flags: [{
      key: "vip-coupon",
      type: "string" as const,
      default: "",
      rules: [{ when: { segment: ["vip"], loggedIn: true }, value: "VIP-50-OFF" }],
    }],
  };
  const evaluate = async (app: App, headers: Record<string, string>, peer = LOOPBACK) => {
    const res = await app.request("http://edge.test/ofrep/v1/evaluate/flags/vip-coupon", {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ context: {} }),
    }, peer);
    assert.equal(res.status, 200);
    return (await res.json()).value;
  };
  const envs: Record<string, string>[] = [
    { TRUSTED_PROXIES: "127.0.0.0/8" },
    { USER_ID_HEADER: "x-user-id", USER_ID_PROXIES: "127.0.0.1" },
  ];
  for (const env of envs) {
    const origin = startOrigin();
    const deps = await makeDeps(origin.url, { env: { SYNC_SECRETS: SECRET, ...env }, now: () => NOW, rules });
    try {
      const app = createApp(deps);
      await push(app, VICTIM_DATA);
      const expected = "USER_ID_HEADER" in env ? "VIP-50-OFF" : "";
      assert.equal(await evaluate(app, { "x-user-id": "victim-42" }), expected, JSON.stringify(env));
      assert.equal(
        await evaluate(app, { "x-user-id": "victim-42" }, OTHER_LOOPBACK),
        "",
        JSON.stringify(env),
      );
    } finally {
      deps.kv.close();
      await origin.close();
    }
  }
});

const UNTRUSTED = { remoteAddr: { hostname: "203.0.113.9" } };
const TRUSTED = { remoteAddr: { hostname: "10.0.0.5" } };

/** Headers origins read as facts about the client, with the value a client would forge. */
const PROXY_ONLY_HEADERS: [name: string, forged: string][] = [
  ["true-client-ip", "6.6.6.6"],
  ["cf-connecting-ip", "6.6.6.6"],
  ["cf-connecting-ipv6", "2001:db8::666"],
  ["fastly-client-ip", "6.6.6.6"],
  ["x-client-ip", "6.6.6.6"],
  ["x-cluster-client-ip", "6.6.6.6"],
  ["x-original-forwarded-for", "6.6.6.6"],
  ["cloudfront-viewer-address", "6.6.6.6:4444"],
  ["client-ip", "6.6.6.6"],
  ["x-original-url", "/admin/delete-everything"],
  ["x-rewrite-url", "/admin/delete-everything"],
  ["x-forwarded-prefix", "/evil"],
  ["x-http-method-override", "DELETE"],
  ["x-http-method", "DELETE"],
  ["x-method-override", "DELETE"],
  ["x-forwarded-ssl", "on"],
  ["x-forwarded-scheme", "https"],
  ["x-forwarded-server", "evil.example"],
  ["x-host", "evil.example"],
  ["x-original-host", "evil.example"],
];

Deno.test("client-IP, override and host-hint headers reach the origin only from a trusted peer", async () => {
  await withEdge({ TRUSTED_PROXIES: "10.0.0.0/8" }, async ({ app, seen }) => {
    const forged = Object.fromEntries(PROXY_ONLY_HEADERS);
    await (await app.request("http://edge.test/echo", { headers: forged }, UNTRUSTED)).body?.cancel();
    let headers = seen.at(-1)!.headers;
    assert.equal(seen.at(-1)!.method, "GET");
    for (const [name] of PROXY_ONLY_HEADERS) assert.equal(headers.get(name), null, `untrusted ${name}`);

    await (await app.request("http://edge.test/echo", { headers: forged }, TRUSTED)).body?.cancel();
    headers = seen.at(-1)!.headers;
    for (const [name, value] of PROXY_ONLY_HEADERS) assert.equal(headers.get(name), value, `trusted ${name}`);
  });
});

Deno.test("X-Real-IP at the origin is the client address the edge resolved, whoever sent one", async () => {
  await withEdge({ TRUSTED_PROXIES: "10.0.0.0/8" }, async ({ app, seen }) => {
    const cases: [Record<string, string>, typeof UNTRUSTED, string][] = [
      [{ "x-real-ip": "6.6.6.6" }, UNTRUSTED, "203.0.113.9"],
      [{ "x-real-ip": "6.6.6.6", "x-forwarded-for": "6.6.6.6" }, UNTRUSTED, "203.0.113.9"],
      [{ "x-forwarded-for": "198.51.100.7, 10.0.0.9" }, TRUSTED, "198.51.100.7"],
      // A trusted hop's own X-Real-IP is overwritten too: the edge resolved the chain itself.
      [{ "x-real-ip": "6.6.6.6", "x-forwarded-for": "198.51.100.7" }, TRUSTED, "198.51.100.7"],
      [{}, TRUSTED, "10.0.0.5"],
    ];
    for (const [headers, peer, client] of cases) {
      const res = await app.request("http://edge.test/echo", { headers }, peer);
      await res.body?.cancel();
      const at = seen.at(-1)!.headers;
      assert.equal(at.get("x-real-ip"), client, JSON.stringify(headers));
      assert.equal(at.get("x-edge-client-ip"), client, JSON.stringify(headers));
    }
  });
});

Deno.test("underscore and mixed-case spellings of protected names never reach the origin", async () => {
  const spellings: Record<string, string> = {
    "x_edge_user": "alice",
    "X_Edge_Segments": "staff",
    "x-edge_segments": "staff",
    "x_edge-region": "EU",
    "X-EDGE-USER": "alice",
    "X-Edge-Visitor": "forged",
    "x_forwarded_for": "6.6.6.6",
    "x_forwarded_host": "evil.example",
    "x_real_ip": "6.6.6.6",
    "true_client_ip": "6.6.6.6",
    "x_original_url": "/admin",
    "x_http_method_override": "DELETE",
    "x_user_id": "alice",
    "cf_ipcountry": "DE",
    "x_geo_country": "DE",
  };
  const env = { TRUSTED_PROXIES: "10.0.0.0/8", USER_ID_HEADER: "x-user-id", USER_ID_PROXIES: "10.0.0.0/8" };
  await withEdge(env, async ({ app, seen }) => {
    for (const peer of [UNTRUSTED, TRUSTED]) {
      const res = await app.request("http://edge.test/echo", {
        headers: { ...spellings, "user-agent": CHROME },
      }, peer);
      await res.body?.cancel();
      const at = seen.at(-1)!;
      const names: string[] = [];
      at.headers.forEach((_, name) => names.push(name));
      const label = peer.remoteAddr.hostname;
      assert.deepEqual(names.filter((name) => name.includes("_")), [], label);
      assert.equal(at.headers.get("x-edge-user"), null, label);
      assert.equal(at.headers.get("x-edge-segments"), null, label);
      assert.notEqual(at.headers.get("x-edge-visitor"), "forged", label);
      assert.equal(at.headers.get("x-edge-region"), "GLOBAL", label);
      assert.ok(!at.headers.get("x-forwarded-for")?.includes("6.6.6.6"), label);
    }
  });
});

Deno.test("a trusted hop's X-Forwarded-Host goes through the PUBLIC_HOSTS check like Host", async () => {
  await withEdge({ TRUSTED_PROXIES: "10.0.0.0/8", PUBLIC_HOSTS: "shop.example" }, async ({ app, seen }) => {
    const cases: [Record<string, string>, typeof TRUSTED, string][] = [
      [{ "x-forwarded-host": "evil.example" }, TRUSTED, "shop.example"],
      [{ "x-forwarded-host": "evil.example, shop.example" }, TRUSTED, "shop.example"],
      [{ "x-forwarded-host": "SHOP.example" }, TRUSTED, "SHOP.example"],
      [{ "x-forwarded-host": "evil.example" }, UNTRUSTED, "shop.example"],
    ];
    for (const [headers, peer, expected] of cases) {
      await (await app.request("http://evil.example/echo", { headers }, peer)).body?.cancel();
      const at = seen.at(-1)!.headers;
      assert.equal(at.get("x-forwarded-host"), expected, JSON.stringify(headers));
      assert.match(at.get("forwarded") ?? "", new RegExp(`;host="${expected}";`), JSON.stringify(headers));
    }
  });
});

Deno.test("a client's Forwarded never reaches the origin verbatim: the edge rebuilds it from what it believed", async () => {
  await withEdge({ TRUSTED_PROXIES: "10.0.0.0/8" }, async ({ app, seen }) => {
    const forged = "for=6.6.6.6;host=evil.example;proto=https";
    for (const peer of [UNTRUSTED, TRUSTED]) {
      await (await app.request("http://shop.example/echo", { headers: { forwarded: forged } }, peer)).body
        ?.cancel();
      const forwarded = seen.at(-1)!.headers.get("forwarded");
      assert.equal(
        forwarded,
        `for=${peer.remoteAddr.hostname};host="shop.example";proto=http`,
        peer.remoteAddr.hostname,
      );
    }
    // An IPv6 client is quoted and bracketed, as RFC 7239 needs.
    await (await app.request("http://shop.example/echo", {
      headers: { "x-forwarded-for": "2001:db8::7", "x-forwarded-proto": "https" },
    }, TRUSTED)).body?.cancel();
    assert.equal(
      seen.at(-1)!.headers.get("forwarded"),
      'for="[2001:db8::7]";host="shop.example";proto=https',
    );
  });
});

Deno.test("an absolute-form https target over plain HTTP does not make the hop https", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { env: { TRUSTED_PROXIES: "10.0.0.0/8" }, now: () => NOW });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, createApp(deps).fetch);
  try {
    const res = await rawRequest(
      server.addr.port,
      "GET https://evil.com/echo HTTP/1.1\r\nHost: evil.com\r\n" +
        `User-Agent: ${CHROME}\r\nAccept: text/html\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(res.status, 200, res.head);
    const seenHere = origin.seen.at(-1)!;
    assert.equal(seenHere.headers.get("x-forwarded-proto"), "http");
    assert.match(seenHere.headers.get("forwarded") ?? "", /;proto=http$/);
    // The page navigation sets ep_uid, without Secure: the hop was plain HTTP.
    const cookies = res.head.split("\r\n").filter((line) => /^set-cookie:/i.test(line));
    assert.ok(cookies.length > 0, res.head);
    for (const cookie of cookies) assert.doesNotMatch(cookie, /;\s*secure/i);
  } finally {
    await server.shutdown();
    deps.kv.close();
    await origin.close();
  }
});
