import assert from "node:assert/strict";
import {
  buildUpstreamUrl,
  checkInboundPath,
  stripHopByHop,
  upstreamRequestHeaders,
} from "../../lib/upstream.ts";
import { BadPathError } from "../../lib/errors.ts";

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

Deno.test("upstream URLs keep the origin and its path prefix", () => {
  const origin = new URL("http://origin.internal:8080/shop/");
  assert.equal(buildUpstreamUrl(origin, "/cart", "?a=1").href, "http://origin.internal:8080/shop/cart?a=1");
  assert.equal(buildUpstreamUrl(origin, "//evil.example/x", "").host, "origin.internal:8080");
  assert.equal(buildUpstreamUrl(new URL("https://o.example"), "/x", "").href, "https://o.example/x");
});

Deno.test("hop-by-hop removal includes names listed in Connection", () => {
  const headers = new Headers({ connection: "close, x-a, bad name", "x-a": "1", "x-b": "2", upgrade: "h2c" });
  stripHopByHop(headers);
  assert.deepEqual([...headers.keys()], ["x-b"]);
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
  assert.equal(upstreamRequestHeaders(new Headers(), info).get("accept-encoding"), "identity");
  assert.equal(
    upstreamRequestHeaders(new Headers({ "accept-encoding": "gzip" }), info).get("accept-encoding"),
    "gzip",
  );
});
