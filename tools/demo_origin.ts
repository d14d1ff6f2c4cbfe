/**
 * @module
 * The demo origin: a small outdoor shop used by `deno task dev`, the end-to-end tests and the
 * benchmarks. HTML pages that follow what the edge decided (prices by region, a hero banner per
 * `hero` variation, a search box by flag) with slots and an edge panel, pictures that show the
 * width and quality the edge asked for, a product API with regional promotion endpoints, and
 * `/echo/*`, which answers with exactly what the origin received (method, path, query, headers,
 * body size).
 *
 * Run alone: `deno run --allow-net tools/demo_origin.ts [port]`.
 */
import { CATALOGUE, priceUnder, PROMOTIONS } from "./demo_catalogue.ts";
import { edgeViewOf, escapeHtml, homePage, pretendNeedsFrontPage, productPage } from "./demo_pages.ts";
import { PRETEND_PATH } from "./dev_front.ts";

/** Options for {@linkcode createDemoOrigin}. */
export interface DemoOriginOptions {
  /** The dev front's URL, for the page `/_dev/pretend` shows when the front was bypassed. */
  frontUrl?: string;
}

const HTML = { "content-type": "text/html; charset=utf-8" };

/**
 * Builds the demo origin's request handler.
 *
 * @param options where the dev front is, if anywhere
 * @returns the handler
 */
export function createDemoOrigin(options: DemoOriginOptions = {}): (request: Request) => Promise<Response> {
  return async (request) => {
    const url = new URL(request.url);
    const path = url.pathname;
    if (path.startsWith("/echo")) return await echo(request, url);
    if (path === "/api/products") return Response.json({ products: CATALOGUE });
    const promo = /^\/api\/products\/promotions\/([a-z]+)$/.exec(path);
    if (promo) {
      const promotion = PROMOTIONS[promo[1]!];
      if (!promotion) return notFound("No such promotion");
      return Response.json({
        promotion,
        products: CATALOGUE.map((p) => ({ ...p, price: priceUnder(p, promotion) })),
        edge: {
          region: request.headers.get("x-edge-region"),
          country: request.headers.get("x-edge-country"),
        },
      });
    }
    const product = /^\/api\/products\/([a-z0-9]+)$/.exec(path);
    if (product) {
      const found = CATALOGUE.find((p) => p.id === product[1]);
      return found ? Response.json(found) : notFound("No such product");
    }
    if (path === "/sale") return Response.json({ sale: true, products: CATALOGUE });
    if (path === "/" || path === "/index.html") {
      return new Response(homePage(edgeViewOf(request.headers)), { headers: HTML });
    }
    const page = /^\/products\/([a-z0-9]+)$/.exec(path);
    if (page) {
      const found = CATALOGUE.find((p) => p.id === page[1]);
      if (found) return new Response(productPage(found, edgeViewOf(request.headers)), { headers: HTML });
    }
    const image = /^\/images\/([a-z0-9]+)\.svg$/.exec(path);
    if (image) {
      const found = CATALOGUE.find((p) => p.id === image[1]);
      if (found) return picture(found.name, found.colour, url.searchParams);
    }
    if (path === PRETEND_PATH) {
      return new Response(pretendNeedsFrontPage(options.frontUrl), { headers: HTML });
    }
    return notFound(`Nothing at "${path}"`);
  };
}

/**
 * The demo origin without a dev front.
 *
 * @param request the request the origin received
 * @returns the demo response
 */
export const demoOriginHandler: (request: Request) => Promise<Response> = createDemoOrigin();

async function echo(request: Request, url: URL): Promise<Response> {
  let bodyBytes = 0;
  if (request.body) {
    for await (const chunk of request.body) bodyBytes += chunk.byteLength;
  }
  return Response.json({
    method: request.method,
    path: url.pathname,
    query: url.search,
    host: request.headers.get("host"),
    headers: Object.fromEntries(request.headers),
    bodyBytes,
  });
}

function notFound(message: string): Response {
  return Response.json({ error: { code: "not_found", message } }, { status: 404 });
}

/**
 * A product picture as SVG, drawn at the requested width and blurred as the requested quality
 * falls, with the parameters written on it: the edge's image rule made visible.
 */
function picture(name: string, colour: string, params: URLSearchParams): Response {
  const w = Number(params.get("w"));
  const q = Number(params.get("q"));
  const width = Number.isInteger(w) && w >= 50 && w <= 4096 ? w : undefined;
  const quality = Number.isInteger(q) && q >= 1 && q <= 100 ? q : undefined;
  const drawn = width ?? 600;
  const height = Math.round(drawn * 0.6);
  const blur = quality === undefined ? 0 : Math.max(0, (100 - quality) / 12);
  const label = `w=${width ?? "none"} · q=${quality ?? "none"}`;
  const hint = width === undefined
    ? "no viewport hint yet: reload"
    : "width from your viewport × pixel ratio";
  const font = Math.round(drawn / 16);
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${drawn}" height="${height}" ` +
    `viewBox="0 0 ${drawn} ${height}">
<defs><filter id="q"><feGaussianBlur stdDeviation="${blur.toFixed(1)}"/></filter></defs>
<g filter="url(#q)"><rect width="100%" height="100%" fill="${colour}"/>
<path d="M0 ${height} L${drawn * 0.35} ${height * 0.35} L${drawn * 0.55} ${height * 0.6} L${drawn * 0.75} ` +
    `${height * 0.25} L${drawn} ${height} Z" fill="#ffffff" fill-opacity="0.25"/></g>
<text x="${font}" y="${font * 1.6}" font-family="sans-serif" font-size="${font}" fill="#fff">` +
    `${escapeHtml(name)}</text>
<text x="${font}" y="${height - font * 2.2}" font-family="monospace" font-size="${font}" fill="#fff">` +
    `${escapeHtml(label)}</text>
<text x="${font}" y="${height - font * 0.9}" font-family="sans-serif" font-size="${
      Math.round(font * 0.6)
    }" ` +
    `fill="#fff">${escapeHtml(hint)}</text>
</svg>`;
  return new Response(svg, { headers: { "content-type": "image/svg+xml", "cache-control": "no-store" } });
}

if (import.meta.main) {
  const port = Number(Deno.args[0] ?? 8080);
  Deno.serve({ port, hostname: "127.0.0.1" }, demoOriginHandler);
}
