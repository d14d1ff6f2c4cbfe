/**
 * @module
 * The demo origin: a tiny shop used by `deno task dev`, the end-to-end tests and the
 * benchmarks. Product API with regional promotion endpoints, an HTML page, and `/echo/*`,
 * which answers with exactly what the origin received (method, path, query, headers, body size).
 *
 * Run alone: `deno run --allow-net tools/demo_origin.ts [port]`.
 */

const PRODUCTS = [
  { id: "p1", name: "Trail shoe", price: 120 },
  { id: "p2", name: "Rain jacket", price: 180 },
  { id: "p3", name: "Wool socks", price: 18 },
];

const PROMOTIONS: Record<string, { region: string; headline: string; discount: number }> = {
  europe: { region: "EU", headline: "Winter sale across Europe", discount: 0.2 },
  apac: { region: "APAC", headline: "Lunar new year picks", discount: 0.15 },
  us: { region: "US", headline: "Free shipping on orders over $50", discount: 0.1 },
  global: { region: "GLOBAL", headline: "This week's favourites", discount: 0.05 },
};

const PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Demo shop</title></head>
<body>
<h1>Demo shop</h1>
<p><edge-slot name="greeting">Hello!</edge-slot></p>
<p><edge-slot name="promo">Our products</edge-slot></p>
<p>Served by the demo origin behind Edge Personalizer. Your edge context is in the
<code>edge-context</code> script the edge adds to this page's head (view the page source).</p>
<ul>${PRODUCTS.map((p) => `<li>${p.name} — ${p.price}</li>`).join("")}</ul>
</body>
</html>
`;

/**
 * Handles one request to the demo origin.
 *
 * @param request the request the origin received
 * @returns the demo response
 */
export async function demoOriginHandler(request: Request): Promise<Response> {
  const url = new URL(request.url);
  const path = url.pathname;
  if (path.startsWith("/echo")) {
    let bodyBytes = 0;
    if (request.body) {
      for await (const chunk of request.body) bodyBytes += chunk.byteLength;
    }
    return Response.json({
      method: request.method,
      path,
      query: url.search,
      host: request.headers.get("host"),
      headers: Object.fromEntries(request.headers),
      bodyBytes,
    });
  }
  if (path === "/api/products") return Response.json({ products: PRODUCTS });
  const promo = /^\/api\/products\/promotions\/([a-z]+)$/.exec(path);
  if (promo) {
    const promotion = PROMOTIONS[promo[1]!];
    if (!promotion) {
      return Response.json({ error: { code: "not_found", message: "No such promotion" } }, { status: 404 });
    }
    return Response.json({
      promotion,
      products: PRODUCTS.map((p) => ({ ...p, price: Math.round(p.price * (1 - promotion.discount)) })),
      edge: { region: request.headers.get("x-edge-region"), country: request.headers.get("x-edge-country") },
    });
  }
  const product = /^\/api\/products\/([a-z0-9]+)$/.exec(path);
  if (product) {
    const found = PRODUCTS.find((p) => p.id === product[1]);
    return found
      ? Response.json(found)
      : Response.json({ error: { code: "not_found", message: "No such product" } }, { status: 404 });
  }
  if (path === "/sale") return Response.json({ sale: true, products: PRODUCTS });
  if (path === "/" || path === "/index.html") {
    return new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } });
  }
  return Response.json({ error: { code: "not_found", message: `Nothing at "${path}"` } }, { status: 404 });
}

if (import.meta.main) {
  const port = Number(Deno.args[0] ?? 8080);
  Deno.serve({ port, hostname: "127.0.0.1" }, demoOriginHandler);
}
