/**
 * @module
 * `deno task bench:html`: rewrites pages whose body is one tag with a `--mb N` (default 40) MiB
 * attribute, `--pages N` (default 3) times, with the HTML rewrite caps at their defaults (or
 * `--max-bytes`, `--max-ms`), and prints the rewrite rate and the process's memory before, at its
 * peak and after. Such a tag is what made lol-html's rewriting quadratic before the caps: a run
 * shows that the page costs time linear in its size and that the rewriter's memory comes back
 * after it. Anonymous memory (`RssAnon`) is the part a page can hold; total RSS also counts the
 * runtime's own code as it is paged in. Run it with `MALLOC_MMAP_THRESHOLD_=65536` in the environment
 * to see what the system allocator keeps of the page's freed buffers (docs/deployment.md).
 */
import { rewriteHtmlStream } from "../lib/origin/html_slots.ts";
import { parseConfig } from "../lib/app/config.ts";
import { HTML_REWRITER_MEMORY_LIMIT_BYTES, HtmlRewriterLoader } from "../lib/origin/html_rewriter.ts";
import { fmt, numberArg, readRss, table } from "./harness.ts";

const mib = numberArg(Deno.args, "mb", 40);
const pages = Math.round(numberArg(Deno.args, "pages", 3));
const defaults = parseConfig({ ORIGIN_URL: "http://origin.invalid" });
const maxBytes = numberArg(Deno.args, "max-bytes", defaults.htmlRewriteMaxBytes);
const maxMs = numberArg(Deno.args, "max-ms", defaults.htmlRewriteMaxMs);
const encoder = new TextEncoder();
const rewriter = new HtmlRewriterLoader();
const mb = (bytes: number) => fmt(bytes / 1048576, 1);

const HEAD = encoder.encode(
  '<!doctype html><html><head><title>t</title></head><body><edge-slot name="hero">x</edge-slot><div data-blob="',
);
const TAIL = encoder.encode('">tail</div><edge-slot name="hero">late</edge-slot></body></html>');
const FILL = new Uint8Array(65_536).fill(97);

/**
 * The page as an origin would deliver it, in 64 KiB network reads: slot and context targets first,
 * then one tag with a `size`-byte attribute, then another slot. Generated as it is read, so the
 * bench holds no page and the RSS after it is the rewriter's.
 */
function hugePage(size: number): ReadableStream<Uint8Array> {
  let left = size;
  let state: "head" | "fill" | "tail" | "done" = "head";
  return new ReadableStream({
    pull(controller) {
      if (state === "head") (controller.enqueue(HEAD), state = "fill");
      else if (state === "fill") {
        const n = Math.min(left, FILL.byteLength);
        controller.enqueue(FILL.slice(0, n));
        left -= n;
        if (left === 0) state = "tail";
      } else if (state === "tail") (controller.enqueue(TAIL), state = "done");
      else controller.close();
    },
  });
}

/** RSS and anonymous RSS after a full collection when the process runs with `--v8-flags=--expose-gc`. */
async function settledRss(): Promise<{ rss: number; anon: number }> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  await new Promise((resolve) => setTimeout(resolve, 50));
  gc?.();
  return { rss: await readRss(Deno.pid, "VmRSS"), anon: await readRss(Deno.pid, "RssAnon") };
}

// One small page first: the rewriter module and its first instance load once, before the baseline.
for await (
  const _ of rewriteHtmlStream(hugePage(1024), { rewriter, slots: new Map(), context: {}, maxBytes, maxMs })
) {
  // drained
}
const rssBefore = await settledRss();
const rows: string[][] = [];
for (let i = 0; i < pages; i++) {
  const size = Math.round(mib * 1048576);
  let bailout = "none";
  const started = performance.now();
  let out = 0;
  const body = rewriteHtmlStream(hugePage(size), {
    rewriter,
    slots: new Map([["hero", "<h2>Hello</h2>"]]),
    context: { region: "EU" },
    maxBytes,
    maxMs,
    onBailout: ({ cap, bytes }) => bailout = `${cap} after ${mb(bytes)} MiB`,
  });
  for await (const chunk of body) out += chunk.byteLength;
  const seconds = (performance.now() - started) / 1000;
  rows.push([
    String(i + 1),
    mb(size + HEAD.byteLength + TAIL.byteLength),
    mb(out),
    fmt(seconds * 1000, 0),
    mb(size / seconds),
    bailout,
  ]);
}
const peak = await readRss(Deno.pid, "VmHWM");
const after = await settledRss();
console.log(
  `HTML rewrite of a ${mib} MiB attribute, caps ${mb(maxBytes)} MiB / ${maxMs} ms\n` +
    table(["page", "in MiB", "out MiB", "ms", "MiB/s", "bail-out"], rows),
);
console.log(
  `RSS before ${mb(rssBefore.rss)} MiB, peak ${mb(peak)} MiB, after ${mb(after.rss)} MiB; ` +
    `anonymous before ${mb(rssBefore.anon)} MiB, after ${mb(after.anon)} MiB`,
);
console.log(
  `rewriter memory after ${mb(rewriter.memoryBytes())} MiB (an instance is replaced above ` +
    `${mb(HTML_REWRITER_MEMORY_LIMIT_BYTES)} MiB); instances loaded ${rewriter.loads}`,
);
