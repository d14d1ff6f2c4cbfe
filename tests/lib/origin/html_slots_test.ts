import assert from "node:assert/strict";
import { brotliCompressSync } from "node:zlib";
import {
  planHtmlRewrite,
  rewriteHtmlResponse,
  rewriteHtmlStream,
  serializeJsonForScript,
} from "../../../lib/origin/html_slots.ts";
import { HtmlRewriterLoader } from "../../../lib/origin/html_rewriter.ts";

const HTML = { "content-type": "text/html; charset=utf-8" };
const SLOTS = new Map([["hero", "<h2>Hello, Europe</h2>"], ["promo", "<b>10% off</b>"]]);
const encoder = new TextEncoder();
const rewriter = new HtmlRewriterLoader();

async function compress(text: string, format: CompressionFormat): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Response(text).body!.pipeThrough(new CompressionStream(format));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function page(body: string, head = "<head><title>t</title></head>"): string {
  return `<!doctype html><html>${head}<body>${body}</body></html>`;
}

Deno.test("html slots replace <edge-slot> elements and data-edge-slot inner content", async () => {
  const response = rewriteHtmlResponse(
    new Response(
      page(
        '<edge-slot name="hero"><p>fallback</p></edge-slot>' +
          '<div class="promo" data-edge-slot="promo">old <span>inner</span></div>' +
          '<edge-slot name="unknown">kept <i>fallback</i></edge-slot>' +
          '<section data-edge-slot="unknown">untouched</section>',
      ),
      { headers: { ...HTML, "content-length": "999", etag: '"abc"' } },
    ),
    { rewriter, slots: SLOTS },
  );
  const text = await response.text();
  assert.equal(
    text,
    page(
      "<h2>Hello, Europe</h2>" +
        '<div class="promo" data-edge-slot="promo"><b>10% off</b></div>' +
        "kept <i>fallback</i>" +
        '<section data-edge-slot="unknown">untouched</section>',
    ),
  );
  assert.equal(response.headers.get("content-length"), null);
  assert.equal(response.headers.get("etag"), null);
  assert.equal(response.headers.get("content-type"), HTML["content-type"]);
});

Deno.test("html slots inject the context as escaped JSON before </head>, else at the start of <body>", async () => {
  const context = { region: "EU", note: "</script><script>alert(1)</script><!-- & \u2028" };
  const withHead = await rewriteHtmlResponse(new Response(page("<p>x</p>"), { headers: HTML }), {
    rewriter,
    context,
  })
    .text();
  const script = /<script type="application\/json" id="edge-context">(.*?)<\/script>/s.exec(withHead);
  assert.ok(script, withHead);
  assert.ok(withHead.indexOf(script[0]) < withHead.indexOf("</head>"));
  assert.ok(!script[1]!.includes("<") && !script[1]!.includes(">"));
  assert.deepEqual(JSON.parse(script[1]!), context);
  assert.equal((withHead.match(/<script/g) ?? []).length, 1);

  const noHead = await rewriteHtmlResponse(
    new Response("<html><body><p>x</p></body></html>", { headers: HTML }),
    { rewriter, context: { a: 1 } },
  ).text();
  assert.equal(
    noHead,
    '<html><body><script type="application/json" id="edge-context">{"a":1}</script><p>x</p></body></html>',
  );
  assert.equal(serializeJsonForScript("</script>"), '"\\u003c/script\\u003e"');
});

Deno.test("html slots stream: the first rewritten bytes arrive before the origin finishes", async () => {
  const release = Promise.withResolvers<void>();
  let originFinished = false;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, () => {
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(encoder.encode(
          '<!doctype html><html><head><title>t</title></head><body><edge-slot name="hero">fallback</edge-slot><p>first</p>',
        ));
        // Held until the test has seen rewritten bytes (or gives up after 5 s).
        const giveUp = setTimeout(release.resolve, 5000);
        await release.promise;
        clearTimeout(giveUp);
        controller.enqueue(encoder.encode('<div data-edge-slot="promo">x</div></body></html>'));
        originFinished = true;
        controller.close();
      },
    });
    return new Response(body, { headers: HTML });
  });
  try {
    const origin = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    const rewritten = rewriteHtmlResponse(origin, { rewriter, slots: SLOTS });
    const reader = rewritten.body!.getReader();
    let head = "";
    const decoder = new TextDecoder();
    while (!head.includes("<p>first</p>")) {
      const { done, value } = await reader.read();
      assert.equal(done, false);
      head += decoder.decode(value, { stream: true });
    }
    assert.equal(originFinished, false, "the first bytes waited for the whole page");
    assert.ok(head.includes("<h2>Hello, Europe</h2>") && !head.includes("fallback"), head);
    release.resolve();
    let rest = "";
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += decoder.decode(value, { stream: true });
    }
    assert.ok(originFinished);
    assert.ok((head + rest).endsWith('<div data-edge-slot="promo"><b>10% off</b></div></body></html>'), rest);
  } finally {
    release.resolve();
    await server.shutdown();
  }
});

Deno.test("html slots decode gzip'd HTML and drop Content-Encoding and Content-Length", async () => {
  const html = page('<edge-slot name="hero">fallback</edge-slot>');
  const gz = await compress(html, "gzip");
  const response = rewriteHtmlResponse(
    new Response(gz, {
      headers: { ...HTML, "content-encoding": "gzip", "content-length": String(gz.byteLength) },
    }),
    { rewriter, slots: SLOTS },
  );
  assert.equal(response.headers.get("content-encoding"), null);
  assert.equal(response.headers.get("content-length"), null);
  assert.equal(await response.text(), page("<h2>Hello, Europe</h2>"));
});

Deno.test("html slots decode gzip'd HTML from a real origin when fetch did not decode it", async () => {
  const html = page('<edge-slot name="hero">fallback</edge-slot>');
  const gz = await compress(html, "gzip");
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    () => new Response(gz, { headers: { ...HTML, "content-encoding": "gzip" } }),
  );
  try {
    // `identity` is what keeps Deno's fetch from decoding the body itself.
    const raw = await fetch(`http://127.0.0.1:${server.addr.port}/`, {
      headers: { "accept-encoding": "identity" },
    });
    assert.equal(
      await rewriteHtmlResponse(raw, { rewriter, slots: SLOTS }).text(),
      page("<h2>Hello, Europe</h2>"),
    );
    // Any other Accept-Encoding: Deno's fetch decodes gzip itself but keeps the header.
    const decoded = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    assert.equal(decoded.headers.get("content-encoding"), "gzip");
    const rewritten = rewriteHtmlResponse(decoded, { rewriter, slots: SLOTS, fetchDecoded: true });
    assert.equal(rewritten.headers.get("content-encoding"), null);
    assert.equal(await rewritten.text(), page("<h2>Hello, Europe</h2>"));
  } finally {
    await server.shutdown();
  }
});

Deno.test("html slots decode x-gzip HTML, which Deno's fetch passes on encoded", async () => {
  const html = page('<edge-slot name="hero">fallback</edge-slot>');
  const gz = await compress(html, "gzip");
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    () => new Response(gz, { headers: { ...HTML, "content-encoding": "x-gzip" } }),
  );
  try {
    const fetched = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    assert.equal(fetched.headers.get("content-encoding"), "x-gzip");
    const rewritten = rewriteHtmlResponse(fetched, { rewriter, slots: SLOTS, fetchDecoded: true });
    assert.equal(rewritten.headers.get("content-encoding"), null);
    assert.equal(await rewritten.text(), page("<h2>Hello, Europe</h2>"));
  } finally {
    await server.shutdown();
  }
});

Deno.test("html slots decode deflate and brotli HTML", async () => {
  const html = page('<edge-slot name="hero">fallback</edge-slot>');
  const deflated = await compress(html, "deflate");
  const deflate = rewriteHtmlResponse(
    new Response(deflated, { headers: { ...HTML, "content-encoding": "deflate" } }),
    { rewriter, slots: SLOTS },
  );
  assert.equal(await deflate.text(), page("<h2>Hello, Europe</h2>"));
  const br = new Uint8Array(brotliCompressSync(encoder.encode(html)));
  const brotli = rewriteHtmlResponse(new Response(br, { headers: { ...HTML, "content-encoding": "br" } }), {
    rewriter,
    slots: SLOTS,
  });
  assert.equal(await brotli.text(), page("<h2>Hello, Europe</h2>"));
});

Deno.test("html slots leave non-HTML, partial, unknown encodings and other charsets untouched", async () => {
  const markup = '<edge-slot name="hero">fallback</edge-slot>';
  const cases: [Response, string][] = [
    [new Response(markup, { headers: { "content-type": "application/json" } }), "not_html"],
    [new Response(markup), "not_html"],
    [new Response(markup, { status: 206, headers: HTML }), "partial"],
    [new Response(markup, { headers: { ...HTML, "content-encoding": "compress" } }), "unsupported_encoding"],
    [
      new Response(markup, { headers: { "content-type": "text/html; charset=iso-8859-1" } }),
      "unsupported_charset",
    ],
    [new Response(null, { status: 204, headers: HTML }), "no_body"],
  ];
  for (const [response, reason] of cases) {
    assert.deepEqual(planHtmlRewrite(response, { slots: SLOTS }), { rewrite: false, reason });
    const result = rewriteHtmlResponse(response, { rewriter, slots: SLOTS });
    assert.equal(result, response, reason);
  }
  const json = new Response(markup, { headers: { "content-type": "application/json" } });
  assert.equal(await rewriteHtmlResponse(json, { rewriter, slots: SLOTS }).text(), markup);
  const nothing = new Response(markup, { headers: HTML });
  assert.equal(rewriteHtmlResponse(nothing, { rewriter }), nothing);
});

Deno.test("html slots: a corrupt gzip body errors the stream and reports it", async () => {
  const errors: unknown[] = [];
  const response = rewriteHtmlResponse(
    new Response("definitely not gzip", { headers: { ...HTML, "content-encoding": "gzip" } }),
    { rewriter, slots: SLOTS, onError: (error) => errors.push(error) },
  );
  await assert.rejects(response.text());
  assert.equal(errors.length, 1);
});

Deno.test("html slots: cancelling the rewritten body cancels the origin body", async () => {
  const cancelled = Promise.withResolvers<unknown>();
  const origin = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(encoder.encode("<html><body><p>one</p>"));
    },
    cancel(reason) {
      cancelled.resolve(reason);
    },
  });
  const response = rewriteHtmlResponse(new Response(origin, { headers: HTML }), { rewriter, slots: SLOTS });
  const reader = response.body!.getReader();
  await reader.read();
  await reader.cancel("client went away");
  assert.equal(await cancelled.promise, "client went away");
});

function bytesOf(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return new TextDecoder().decode(bytesOf(chunks));
}

Deno.test("html rewriting past the byte cap passes the rest of the page through verbatim", async () => {
  const rest = `<div title="${"a".repeat(300_000)}">tail</div><edge-slot name="promo">late</edge-slot>`;
  const html = page(`<edge-slot name="hero">fallback</edge-slot>${rest}`);
  const bailouts: unknown[] = [];
  const text = await rewriteHtmlResponse(new Response(html, { headers: HTML }), {
    rewriter,
    slots: SLOTS,
    maxBytes: 100_000,
    onBailout: (bailout) => bailouts.push(bailout),
  }).text();
  const start = text.indexOf("<div title=");
  assert.equal(text.slice(0, start), page("<h2>Hello, Europe</h2>").replace("</body></html>", ""));
  assert.equal(text.slice(start), html.slice(html.indexOf("<div title=")));
  assert.deepEqual(bailouts, [{ cap: "bytes", bytes: 65_536 }]);
});

Deno.test("html rewriting past the time cap passes the rest through, the clock read between slices", async () => {
  let clock = 0;
  const html = page(
    `<edge-slot name="hero">x</edge-slot>${"<p>filler</p>".repeat(20_000)}` +
      '<edge-slot name="promo">late</edge-slot>',
  );
  const bailouts: unknown[] = [];
  const text = await readAll(
    rewriteHtmlStream(new Response(html).body!, {
      rewriter,
      slots: SLOTS,
      maxMs: 15,
      now: () => clock += 10,
      onBailout: (bailout) => bailouts.push(bailout),
    }),
  );
  // Each write is timed at 10 ms: after two slices the budget is spent.
  assert.deepEqual(bailouts, [{ cap: "time", bytes: 2 * 65_536 }]);
  assert.ok(text.startsWith(page("<h2>Hello, Europe</h2>").slice(0, -"</body></html>".length)));
  assert.ok(text.endsWith('<p>filler</p><edge-slot name="promo">late</edge-slot></body></html>'));
  assert.equal(
    text.length,
    html.length - '<edge-slot name="hero">x</edge-slot>'.length + "<h2>Hello, Europe</h2>".length,
  );
});

Deno.test("html rewriting within the caps rewrites the whole page and reports no bail-out", async () => {
  const html = page(
    `<edge-slot name="hero">x</edge-slot>${"<p>filler</p>".repeat(20_000)}` +
      '<div data-edge-slot="promo">old</div>',
  );
  let bailedOut = false;
  const text = await rewriteHtmlResponse(new Response(html, { headers: HTML }), {
    rewriter,
    slots: SLOTS,
    maxBytes: html.length,
    maxMs: 60_000,
    onBailout: () => bailedOut = true,
  }).text();
  assert.equal(bailedOut, false);
  assert.equal(
    text,
    page(
      `<h2>Hello, Europe</h2>${
        "<p>filler</p>".repeat(20_000)
      }<div data-edge-slot="promo"><b>10% off</b></div>`,
    ),
  );
});
