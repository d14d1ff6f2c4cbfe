/**
 * @module
 * `deno task bench:html`: rewrites pages whose body is one tag with a `--mb N` (default 40) MiB
 * attribute, `--pages N` (default 3) times, with the HTML rewrite caps at their defaults (or
 * `--max-bytes`, `--max-ms`), and prints the rewrite rate and the process's peak resident memory.
 * Such a tag is what made lol-html's rewriting quadratic before the caps: a run shows that the
 * page now costs time linear in its size and that memory comes back after it.
 */
import { rewriteHtmlStream } from "../lib/origin/html_slots.ts";
import { parseConfig } from "../lib/app/config.ts";
import { fmt, numberArg, readRss, table } from "./harness.ts";

const mib = numberArg(Deno.args, "mb", 40);
const pages = Math.round(numberArg(Deno.args, "pages", 3));
const defaults = parseConfig({ ORIGIN_URL: "http://origin.invalid" });
const maxBytes = numberArg(Deno.args, "max-bytes", defaults.htmlRewriteMaxBytes);
const maxMs = numberArg(Deno.args, "max-ms", defaults.htmlRewriteMaxMs);
const encoder = new TextEncoder();
const mb = (bytes: number) => fmt(bytes / 1048576, 1);

/** The page: slot and context targets first, then the huge tag, then another slot. */
function hugePage(size: number): Uint8Array {
  return encoder.encode(
    '<!doctype html><html><head><title>t</title></head><body><edge-slot name="hero">x</edge-slot>' +
      `<div data-blob="${"a".repeat(size)}">tail</div><edge-slot name="hero">late</edge-slot></body></html>`,
  );
}

/** The body as an origin would deliver it: 64 KiB network reads. */
function chunked(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.byteLength) return controller.close();
      controller.enqueue(bytes.subarray(offset, offset += 65_536));
    },
  });
}

const rssBefore = await readRss(Deno.pid, "VmRSS");
const rows: string[][] = [];
for (let i = 0; i < pages; i++) {
  const page = hugePage(Math.round(mib * 1048576));
  let bailout = "none";
  const started = performance.now();
  let out = 0;
  const body = rewriteHtmlStream(chunked(page), {
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
    mb(page.byteLength),
    mb(out),
    fmt(seconds * 1000, 0),
    mb(page.byteLength / seconds),
    bailout,
  ]);
}
const peak = await readRss(Deno.pid, "VmHWM");
const after = await readRss(Deno.pid, "VmRSS");
console.log(
  `HTML rewrite of a ${mib} MiB attribute, caps ${mb(maxBytes)} MiB / ${maxMs} ms\n` +
    table(["page", "in MiB", "out MiB", "ms", "MiB/s", "bail-out"], rows),
);
console.log(`RSS before ${mb(rssBefore)} MiB, peak ${mb(peak)} MiB, after ${mb(after)} MiB`);
