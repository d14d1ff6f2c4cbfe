/**
 * @module
 * The benchmark baseline: a bare Deno `fetch` proxy — `Deno.serve` → `fetch(origin + path)` →
 * stream the response back — with no personalization, no header hygiene and no logging. It is
 * what the edge's request path is measured against.
 *
 * ```sh
 * deno run --allow-net tools/bare_proxy.ts --origin http://127.0.0.1:8080 --port 8001 \
 *   [--alias /api/products/promotions=/api/products/promotions/europe]
 * ```
 *
 * `--alias FROM=TO` (repeatable) forwards one exact path to another, so the origin does the same
 * work as for the edge's region rewrite; it is a single `Map` lookup, not personalization.
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    origin: { type: "string" },
    port: { type: "string", default: "8001" },
    hostname: { type: "string", default: "127.0.0.1" },
    alias: { type: "string", multiple: true },
  },
});
if (!values.origin) {
  console.error("Usage: bare_proxy.ts --origin URL [--port N] [--hostname H] [--alias FROM=TO]...");
  Deno.exit(2);
}
const origin = new URL(values.origin).origin;
const aliases = new Map(
  (values.alias ?? []).map((entry) => entry.split("=", 2) as [string, string]),
);

Deno.serve({
  port: Number(values.port),
  hostname: values.hostname,
  onListen: ({ hostname, port }) => console.log(`bare proxy on http://${hostname}:${port}/ → ${origin}`),
}, async (request) => {
  const url = new URL(request.url);
  const headers = new Headers(request.headers);
  headers.delete("host");
  const upstream = await fetch(origin + (aliases.get(url.pathname) ?? url.pathname) + url.search, {
    method: request.method,
    headers,
    body: request.body,
    redirect: "manual",
  });
  return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
});
