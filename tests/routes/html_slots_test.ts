import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import { makeDeps, startOrigin } from "../support.ts";
import type { RuleSet } from "../../lib/rules/schema.ts";
import { HTML_REWRITER_MEMORY_LIMIT_BYTES } from "../../lib/origin/html_rewriter.ts";

const RULES: RuleSet = {
  version: 1,
  regions: { EU: ["DE"] },
  slots: [
    { name: "promo", when: { region: ["EU"] }, html: "<b>Winter sale in Europe</b>" },
    { name: "promo", html: "<b>Welcome</b>" },
  ],
  htmlContext: true,
};
const TRUSTED = { remoteAddr: { hostname: "10.0.0.1" } };

Deno.test("HTML slots are filled by region and the edge context is injected, streaming", async () => {
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const encoder = new TextEncoder();
  const origin = startOrigin((seen) => {
    if (seen.path === "/plain.json") return Response.json({ edge: '<edge-slot name="promo">x</edge-slot>' });
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(
          encoder.encode('<html><head><title>t</title></head><body><edge-slot name="promo">'),
        );
        controller.enqueue(encoder.encode("fallback</edge-slot><p>first part</p>"));
        await released;
        controller.enqueue(encoder.encode("<p>rest</p></body></html>"));
        controller.close();
      },
    });
    return new Response(body, { headers: { "content-type": "text/html; charset=utf-8" } });
  });
  const deps = await makeDeps(origin.url, { env: { TRUSTED_PROXIES: "10.0.0.0/8" }, rules: RULES });
  try {
    const app = createApp(deps);
    const res = await app.request("http://edge.test/", { headers: { "cf-ipcountry": "DE" } }, TRUSTED);
    assert.match(res.headers.get("cache-control") ?? "", /private/);
    const reader = res.body!.getReader();
    let text = "";
    // The first rewritten bytes arrive while the origin still holds back the rest of the page.
    while (!text.includes("first part")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    assert.match(text, /<b>Winter sale in Europe<\/b>/);
    assert.doesNotMatch(text, /fallback|edge-slot/);
    assert.match(text, /<script type="application\/json" id="edge-context">/);
    assert.match(text, /"region":"EU"/);
    release();
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    assert.match(text, /<p>rest<\/p><\/body><\/html>$/);

    const other =
      await (await app.request("http://edge.test/", {}, { remoteAddr: { hostname: "203.0.113.1" } }))
        .text();
    assert.match(other, /<b>Welcome<\/b>/);

    const json = await app.request("http://edge.test/plain.json", {}, TRUSTED);
    assert.deepEqual(await json.json(), { edge: '<edge-slot name="promo">x</edge-slot>' });
  } finally {
    release();
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("a page with the injected context is never shareable, even when the origin says public", async () => {
  const rules: RuleSet = {
    version: 1,
    slots: [
      { name: "hero", when: { device: ["mobile"] }, html: "<b>mobile</b>" },
      { name: "hero", html: "<b>desktop</b>" },
    ],
    htmlContext: true,
  };
  const origin = startOrigin(() =>
    new Response('<html><head></head><body><edge-slot name="hero">x</edge-slot></body></html>', {
      headers: { "content-type": "text/html", "cache-control": "public, max-age=300" },
    })
  );
  const deps = await makeDeps(origin.url, {
    env: { TRUSTED_PROXIES: "10.0.0.0/8", USER_ID_HEADER: "x-user-id", USER_ID_PROXIES: "10.0.0.0/8" },
    rules,
  });
  try {
    const app = createApp(deps);
    const res = await app.request("http://edge.test/", {
      headers: {
        "x-user-id": "alice",
        // A returning visitor: the edge sets no cookie that would make the page private anyway.
        cookie: "ep_uid=aaaaaaaaaaaaaaaaaaaaaa",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        accept: "text/html",
      },
    }, TRUSTED);
    const text = await res.text();
    assert.match(text, /"userId":"alice"/);
    assert.equal(res.headers.get("set-cookie"), null);
    const cacheControl = res.headers.get("cache-control") ?? "";
    assert.match(cacheControl, /private/);
    assert.doesNotMatch(cacheControl, /public/);
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("a visitor no slot matched gets the page as the origin made it, private like the others", async () => {
  const rules: RuleSet = {
    version: 1,
    regions: { EU: ["DE"] },
    slots: [{ name: "notice", when: { region: ["EU"] }, html: "<p>EU consent notice</p>" }],
  };
  const origin = startOrigin(() =>
    new Response(
      '<html><head></head><body><edge-slot name="notice"><i>none</i></edge-slot><h1>Shop</h1></body></html>',
      {
        headers: {
          "content-type": "text/html; charset=utf-8",
          "cache-control": "public, max-age=300",
          etag: '"v1"',
        },
      },
    )
  );
  const deps = await makeDeps(origin.url, { env: { TRUSTED_PROXIES: "10.0.0.0/8" }, rules });
  try {
    const app = createApp(deps);
    const pages: Record<string, { text: string; cacheControl: string; etag: string | null }> = {};
    for (const country of ["US", "DE"]) {
      const res = await app.request("http://edge.test/", {
        headers: { "x-geo-country": country, cookie: "ep_uid=aaaaaaaaaaaaaaaaaaaaaa", accept: "text/html" },
      }, TRUSTED);
      pages[country] = {
        text: await res.text(),
        cacheControl: res.headers.get("cache-control") ?? "",
        etag: res.headers.get("etag"),
      };
    }
    // Nothing to insert: not rewritten (validators, length and encoding kept; the wrapper is inert).
    assert.equal(
      pages.US!.text,
      '<html><head></head><body><edge-slot name="notice"><i>none</i></edge-slot><h1>Shop</h1></body></html>',
    );
    assert.equal(pages.US!.etag, '"v1"', "the untouched page keeps its validator");
    assert.equal(pages.DE!.etag, null, "a rewritten page has none");
    assert.equal(
      pages.DE!.text,
      "<html><head></head><body><p>EU consent notice</p><h1>Shop</h1></body></html>",
    );
    for (const country of ["US", "DE"]) {
      assert.match(pages[country]!.cacheControl, /^private\b/, `${country}: the slot choice read the region`);
    }
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("a slot scoped to other paths leaves a page untouched and shareable", async () => {
  const rules: RuleSet = {
    version: 1,
    regions: { EU: ["DE"] },
    slots: [{ name: "notice", when: { path: "/checkout/*", region: ["EU"] }, html: "<p>EU checkout</p>" }],
  };
  const page = '<html><head></head><body><edge-slot name="notice"></edge-slot></body></html>';
  const origin = startOrigin(() =>
    new Response(page, {
      headers: {
        "content-type": "text/html; charset=utf-8",
        "cache-control": "public, max-age=300",
        etag: '"v1"',
      },
    })
  );
  const deps = await makeDeps(origin.url, { env: { TRUSTED_PROXIES: "10.0.0.0/8" }, rules });
  try {
    const app = createApp(deps);
    const headers = { "x-geo-country": "DE", cookie: "ep_uid=aaaaaaaaaaaaaaaaaaaaaa", accept: "text/html" };
    const product = await app.request("http://edge.test/product/1", { headers }, TRUSTED);
    assert.equal(await product.text(), page);
    assert.equal(product.headers.get("cache-control"), "public, max-age=300");
    assert.equal(product.headers.get("etag"), '"v1"');
    const checkout = await app.request("http://edge.test/checkout/pay", { headers }, TRUSTED);
    assert.match(await checkout.text(), /<p>EU checkout<\/p>/);
    assert.match(checkout.headers.get("cache-control") ?? "", /^private/);
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("a page with a 40 MB attribute is sent complete: rewritten up to the byte cap, the rest verbatim, memory given back", async () => {
  const encoder = new TextEncoder();
  const head = '<html><head><title>t</title></head><body><edge-slot name="promo">fallback</edge-slot>';
  const rest = encoder.encode(
    `<div data-blob="${
      "a".repeat(40 * 1024 * 1024)
    }">tail</div><edge-slot name="promo">late</edge-slot></body></html>`,
  );
  const originBody = new Uint8Array(head.length + rest.length);
  originBody.set(encoder.encode(head));
  originBody.set(rest, head.length);
  const origin = startOrigin((request) =>
    new Response(
      new URL(request.url).pathname === "/big" ? originBody : `${head}</body></html>`,
      { headers: { "content-type": "text/html; charset=utf-8" } },
    )
  );
  const logLines: string[] = [];
  const deps = await makeDeps(origin.url, {
    // The byte cap, not the time cap, is the one under test.
    env: { TRUSTED_PROXIES: "10.0.0.0/8", HTML_REWRITE_MAX_MS: "600000" },
    rules: RULES,
    logLines,
  });
  try {
    const app = createApp(deps);
    const res = await app.request("http://edge.test/big", { headers: { "cf-ipcountry": "DE" } }, TRUSTED);
    const body = new Uint8Array(await res.arrayBuffer());
    const prefix = new TextDecoder().decode(body.subarray(0, 4096));
    assert.match(prefix, /<b>Winter sale in Europe<\/b><div data-blob="aaa/);
    assert.match(prefix, /id="edge-context"/);
    const restAt = prefix.indexOf("<div data-blob=");
    assert.equal(body.length - restAt, rest.length);
    assert.ok(
      body.subarray(restAt).every((byte, i) => byte === rest[i]),
      "the rest is the origin's, byte for byte",
    );

    const warn = logLines.map((line) => JSON.parse(line)).find((line) => /stopped at a cap/.test(line.msg));
    assert.ok(warn, logLines.join("\n"));
    assert.equal(warn.level, "warn");
    assert.equal(warn.path, "/big");
    assert.equal(warn.cap, "HTML_REWRITE_MAX_BYTES");
    assert.ok(warn.bytes > 0 && warn.bytes <= deps.config.htmlRewriteMaxBytes, String(warn.bytes));
    const metrics = await deps.metrics.render();
    assert.match(metrics, /^edge_html_rewrite_bailouts_total\{cap="bytes"\} 1$/m);
    assert.match(metrics, /^edge_html_rewrite_bailouts_total\{cap="time"\} 0$/m);

    // The huge tag grew the rewriter's WebAssembly memory: that instance is let go, and the next
    // page is rewritten by a new one.
    assert.equal(deps.htmlRewriter.loads, 1);
    assert.equal(deps.htmlRewriter.memoryBytes(), 0);
    const next = await app.request("http://edge.test/small", { headers: { "cf-ipcountry": "DE" } }, TRUSTED);
    assert.match(await next.text(), /<body><b>Winter sale in Europe<\/b><\/body>/);
    assert.equal(deps.htmlRewriter.loads, 2);
    assert.ok(deps.htmlRewriter.memoryBytes() < HTML_REWRITER_MEMORY_LIMIT_BYTES);
  } finally {
    deps.kv.close();
    await origin.close();
  }
});
