/**
 * @module
 * The dev-only front (`tools/dev_front.ts`): what it sends on to the edge, and that its pretend
 * switch works end to end against the real app with loopback trusted, as `task dev` runs it.
 */
import assert from "node:assert/strict";
import {
  createDevFront,
  edgeRequestHeaders,
  parsePretence,
  PRETEND_COOKIE,
  SAMPLE_ADDRESSES,
  SAMPLE_USER_AGENTS,
} from "../../tools/dev_front.ts";
import { openIpGeoDb } from "../../lib/pipeline/ip_geo.ts";
import { createApp } from "../../routes/app.ts";
import { makeDeps } from "../support.ts";

const OPTIONS = { userIdHeader: "x-user-id", rulesToken: "dev-token" };

Deno.test("every sample address of the dev front is in its country in the bundled IP database", () => {
  const db = openIpGeoDb(Deno.openSync);
  for (const [country, address] of Object.entries(SAMPLE_ADDRESSES)) {
    assert.equal(db.lookup(address), country, address);
  }
});

Deno.test("the dev front keeps only known pretend values", () => {
  assert.deepEqual(parsePretence(new URLSearchParams("country=de&device=mobile&network=slow&user=u1")), {
    country: "DE",
    device: "mobile",
    network: "slow",
    user: "u1",
  });
  assert.deepEqual(
    parsePretence(new URLSearchParams("country=XX&device=toaster&network=warp&user=a%20b%3Cscript%3E")),
    {},
  );
});

Deno.test("the dev front replaces what the browser says with the pretence and never passes its own cookie on", () => {
  const request = new Request("http://127.0.0.1:8001/_edge/explain?path=/", {
    headers: {
      cookie: `ep_uid=abc; ${PRETEND_COOKIE}=country%3DDE; sid=s1`,
      "x-forwarded-for": "203.0.113.5",
      "x-user-id": "someone",
      "sec-ch-ua-mobile": "?0",
      "user-agent": "Real browser",
    },
  });
  const pretended = edgeRequestHeaders(request, {
    country: "JP",
    device: "mobile",
    network: "save-data",
    user: "u2",
  }, OPTIONS);
  assert.equal(pretended.get("x-forwarded-for"), SAMPLE_ADDRESSES.JP);
  assert.equal(pretended.get("user-agent"), SAMPLE_USER_AGENTS.mobile);
  assert.equal(pretended.get("sec-ch-ua-mobile"), null);
  assert.equal(pretended.get("save-data"), "on");
  assert.equal(pretended.get("x-user-id"), "u2");
  assert.equal(pretended.get("cookie"), "ep_uid=abc; sid=s1");
  assert.equal(pretended.get("authorization"), "Bearer dev-token", "explain opens in a browser");
  const plain = edgeRequestHeaders(
    new Request("http://127.0.0.1:8001/", { headers: request.headers }),
    {},
    OPTIONS,
  );
  assert.equal(plain.get("x-forwarded-for"), null, "the browser's own forwarding header is dropped");
  assert.equal(plain.get("x-user-id"), null, "and so is its user id header");
  assert.equal(plain.get("user-agent"), "Real browser");
  assert.equal(plain.get("authorization"), null);
});

Deno.test("the dev front's pretend switch sets a cookie and redirects only within the site", async () => {
  const front = createDevFront({ edgeUrl: "http://127.0.0.1:9", ...OPTIONS, fetch });
  const set = await front(
    new Request("http://127.0.0.1:8001/_dev/pretend?country=DE&user=u1&back=/products/p7"),
  );
  assert.equal(set.status, 303);
  assert.equal(set.headers.get("location"), "/products/p7");
  assert.match(
    set.headers.get("set-cookie") ?? "",
    /^dev_pretend=country%3DDE%26user%3Du1; Path=\/; .*HttpOnly/,
  );
  for (const back of ["//evil.example/", "/\\evil.example", "https://evil.example/", "javascript:alert(1)"]) {
    const res = await front(
      new Request(`http://127.0.0.1:8001/_dev/pretend?back=${encodeURIComponent(back)}`),
    );
    assert.equal(res.headers.get("location"), "/", back);
  }
  const reset = await front(new Request("http://127.0.0.1:8001/_dev/pretend?reset=1"));
  assert.match(reset.headers.get("set-cookie") ?? "", /^dev_pretend=; .*Max-Age=0/);
});

Deno.test("through the dev front a visitor pretends to be in Germany, then Japan, as a user", async () => {
  const deps = await makeDeps("http://127.0.0.1:9", {
    now: Date.now,
    ipGeo: openIpGeoDb(Deno.openSync),
    // As task dev sets them: loopback is the CDN and the login proxy that names the user.
    env: {
      TRUSTED_PROXIES: "127.0.0.1/32,::1/128",
      USER_ID_HEADER: "x-user-id",
      USER_ID_PROXIES: "127.0.0.1/32,::1/128",
    },
    rules: { version: 4, regions: { EU: ["DE"], APAC: ["JP"] } },
  });
  const edge = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, createApp(deps).fetch);
  const front = createDevFront({ edgeUrl: `http://127.0.0.1:${edge.addr.port}`, ...OPTIONS, fetch });
  try {
    const contextAs = async (query: string) => {
      const set = await front(new Request(`http://127.0.0.1:8001/_dev/pretend?${query}`));
      const cookie = set.headers.get("set-cookie")!.split(";")[0]!;
      const res = await front(new Request("http://127.0.0.1:8001/_edge/context", { headers: { cookie } }));
      assert.equal(res.status, 200);
      return await res.json();
    };
    const de = await contextAs("country=DE&device=mobile&user=u1");
    assert.deepEqual([de.region, de.country, de.countrySource, de.device], ["EU", "DE", "ip", "mobile"]);
    assert.deepEqual(de.visitor.userId, "u1");
    const jp = await contextAs("country=JP");
    assert.deepEqual([jp.region, jp.country, jp.visitor.userId], ["APAC", "JP", null]);
  } finally {
    await edge.shutdown();
    deps.kv.close();
  }
});
