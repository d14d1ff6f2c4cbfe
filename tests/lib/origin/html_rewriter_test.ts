import assert from "node:assert/strict";
import { HtmlRewriterLoader } from "../../../lib/origin/html_rewriter.ts";
import { rewriteHtmlStream } from "../../../lib/origin/html_slots.ts";

const encoder = new TextEncoder();
const MIB = 1024 * 1024;

/** A page whose one tag has a `size`-byte attribute, in 64 KiB reads, then a slot. */
function hugeTagPage(size: number): ReadableStream<Uint8Array> {
  const fill = new Uint8Array(64 * 1024).fill(97);
  let left = size;
  let state = 0;
  return new ReadableStream({
    pull(controller) {
      if (state === 0) (controller.enqueue(encoder.encode('<html><body><div data-x="')), state = 1);
      else if (state === 1) {
        const n = Math.min(left, fill.byteLength);
        controller.enqueue(fill.slice(0, n));
        left -= n;
        if (left === 0) state = 2;
      } else if (state === 2) {
        controller.enqueue(encoder.encode('">t</div><edge-slot name="s">old</edge-slot></body></html>'));
        state = 3;
      } else controller.close();
    },
  });
}

async function rewrite(loader: HtmlRewriterLoader, html: ReadableStream<Uint8Array>): Promise<string> {
  const out = rewriteHtmlStream(html, { rewriter: loader, slots: new Map([["s", "<b>new</b>"]]) });
  return await new Response(out).text();
}

Deno.test("html rewriter: an instance whose memory grew past the limit is replaced after its page", async () => {
  const loader = new HtmlRewriterLoader({ memoryLimitBytes: 4 * MIB });
  const big = await rewrite(loader, hugeTagPage(8 * MIB));
  assert.equal(big.length, 8 * MIB + 58);
  assert.ok(big.endsWith('">t</div><b>new</b></body></html>'));
  assert.equal(loader.loads, 1);
  // The grown instance is no longer current: its memory goes with it.
  assert.equal(loader.memoryBytes(), 0);

  assert.equal(
    await rewrite(loader, hugeTagPage(10)),
    `<html><body><div data-x="${"a".repeat(10)}">t</div><b>new</b></body></html>`,
  );
  assert.equal(loader.loads, 2);
  assert.ok(loader.memoryBytes() > 0 && loader.memoryBytes() < 4 * MIB, `${loader.memoryBytes()}`);
});

Deno.test("html rewriter: pages that start together on a cold isolate share one instance", async () => {
  const loader = new HtmlRewriterLoader();
  const leases = await Promise.all([loader.acquire(), loader.acquire(), loader.acquire()]);
  assert.equal(loader.loads, 1);
  assert.equal(new Set(leases.map((lease) => lease.HTMLRewriter)).size, 1);
  for (const lease of leases) lease.release();
});

Deno.test("html rewriter: ordinary pages keep one instance", async () => {
  const loader = new HtmlRewriterLoader();
  for (let i = 0; i < 20; i++) {
    assert.ok((await rewrite(loader, hugeTagPage(50_000))).endsWith("<b>new</b></body></html>"));
  }
  assert.equal(loader.loads, 1);
});

Deno.test("html rewriter: a page still rewriting keeps its instance while the next page gets a new one", async () => {
  const loader = new HtmlRewriterLoader({ memoryLimitBytes: 4 * MIB });
  const [grower, survivor] = [await loader.acquire(), await loader.acquire()];
  let survivorText = "";
  const decoder = new TextDecoder();
  const survivorRewriter = new survivor.HTMLRewriter((chunk) =>
    survivorText += decoder.decode(chunk, { stream: true })
  );
  survivorRewriter.on("p", {
    element: (element) => {
      element.setInnerContent("kept");
    },
  });
  await survivorRewriter.write(encoder.encode("<html><body><p>"));

  const growerRewriter = new grower.HTMLRewriter(() => {});
  // lol-html buffers an open tag only when a selector could match it.
  growerRewriter.on("div", { element: () => {} });
  await growerRewriter.write(encoder.encode('<div data-x="'));
  for (let i = 0; i < 128; i++) await growerRewriter.write(new Uint8Array(64 * 1024).fill(97));
  growerRewriter.free();
  grower.release();
  grower.release(); // idempotent
  assert.equal(loader.memoryBytes(), 0, "the grown instance is retired");

  const next = await loader.acquire();
  assert.equal(loader.loads, 2);
  assert.notEqual(next.HTMLRewriter, survivor.HTMLRewriter);
  // The retired instance still serves the page that was using it.
  await survivorRewriter.write(encoder.encode("old</p></body></html>"));
  await survivorRewriter.end();
  survivorRewriter.free();
  survivor.release();
  next.release();
  assert.equal(
    survivorText,
    "<html><body><p>kept</p></body></html>",
  );
});

Deno.test("html rewriter: where require fails, the module cache serves the rewriter, without replacement", async () => {
  const loader = new HtmlRewriterLoader({
    memoryLimitBytes: 4 * MIB,
    createRequire: () => {
      throw new Error("no require here");
    },
  });
  assert.ok(await loader.available());
  assert.ok((await rewrite(loader, hugeTagPage(8 * MIB))).endsWith('">t</div><b>new</b></body></html>'));
  assert.ok((await rewrite(loader, hugeTagPage(10))).endsWith("<b>new</b></body></html>"));
  assert.equal(loader.loads, 1);
});

Deno.test("html rewriter: a page past a cap lets go of its instance before the rest streams through", async () => {
  const loader = new HtmlRewriterLoader({ memoryLimitBytes: 1 });
  let bailedOut = false;
  const out = rewriteHtmlStream(hugeTagPage(1 * MIB), {
    rewriter: loader,
    slots: new Map([["s", "<b>new</b>"]]),
    maxBytes: 128 * 1024,
    onBailout: () => bailedOut = true,
  });
  const reader = out.getReader();
  while (!bailedOut) assert.equal((await reader.read()).done, false);
  // The page still streams, but its (grown) instance is no longer current: the next page gets a new one.
  assert.equal(loader.memoryBytes(), 0);
  await reader.cancel();
});

Deno.test("html rewriter: a replaced instance is garbage collected, its memory with it", async () => {
  // Collection is only observable with --expose-gc, so this runs in its own process.
  const module = new URL("../../../lib/origin/html_rewriter.ts", import.meta.url).href;
  const code = `
    import { HtmlRewriterLoader } from "${module}";
    const loader = new HtmlRewriterLoader({ memoryLimitBytes: 4 * 1024 * 1024 });
    // In a function, so that nothing in scope still holds the first instance's objects.
    async function growAndReplace() {
      const lease = await loader.acquire();
      const rewriter = new lease.HTMLRewriter(() => {});
      rewriter.on("div", { element: () => {} });
      await rewriter.write(new TextEncoder().encode('<div data-x="'));
      for (let i = 0; i < 128; i++) await rewriter.write(new Uint8Array(65536).fill(97));
      rewriter.free();
      lease.release();
      (await loader.acquire()).release();
      return new WeakRef(lease.HTMLRewriter);
    }
    const old = await growAndReplace();
    // deref() keeps its target alive to the end of the job, so each collection runs in a later one.
    const tick = () => new Promise((resolve) => setTimeout(resolve, 20));
    for (let i = 0; i < 5; i++) {
      await tick();
      globalThis.gc();
      await tick();
      if (!old.deref()) break;
    }
    console.log(JSON.stringify({ collected: old.deref() === undefined, loads: loader.loads }));
  `;
  const { stdout, stderr, success } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--expose-gc", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(success, new TextDecoder().decode(stderr));
  assert.deepEqual(JSON.parse(new TextDecoder().decode(stdout)), { collected: true, loads: 2 });
});
