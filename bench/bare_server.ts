/**
 * @module
 * The smallest possible Deno server, as a baseline: `hello` answers `Hello, world`, `json`
 * answers a small JSON document shaped like an edge context.
 *
 * `deno run --allow-net bench/bare_server.ts hello|json PORT`
 */

const mode = Deno.args[0] ?? "hello";
const port = Number(Deno.args[1] ?? 8002);

const CONTEXT = {
  region: "EU",
  country: "DE",
  device: "desktop",
  variants: { hero: "a", checkout: "control" },
  flags: { "new-search": true, "free-shipping-banner": false },
  recentViews: ["p42", "p7"],
  cartItems: ["p42"],
  segments: ["returning"],
  recommendations: [],
};

Deno.serve(
  { port, hostname: "127.0.0.1", onListen: () => {} },
  mode === "json"
    ? () => Response.json(CONTEXT, { headers: { "cache-control": "private, no-store" } })
    : () => new Response("Hello, world"),
);
