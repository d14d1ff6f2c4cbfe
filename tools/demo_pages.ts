/**
 * @module
 * The demo shop's HTML: the home and product pages as the origin renders them from the
 * `x-edge-*` headers (region → prices, `hero` variation → hero banner, flags → search box), with
 * `<edge-slot>`s the edge fills, and the "edge panel" that a small script renders in the browser
 * from the context the edge injects (`<script id="edge-context">`).
 */
import { CATALOGUE, priceUnder, type Product, type Promotion, promotionFor } from "./demo_catalogue.ts";
import { PRETEND_PATH, SAMPLE_ADDRESSES, SAMPLE_USER_AGENTS, SAMPLE_USERS } from "./dev_front.ts";

/** What the origin learnt from the edge's headers, for rendering. */
export interface EdgeView {
  region: string | null;
  variants: Record<string, string>;
  flags: Record<string, string>;
}

/** The hero banner of each `hero` variation (control first): what the experiment changes. */
export const HEROES: Readonly<Record<string, { title: string; text: string; style: string }>> = {
  control: {
    title: "Gear for every trail",
    text: "Outdoor kit, tested on real mountains.",
    style: "hero-control",
  },
  a: {
    title: "Lighter packs, longer trails",
    text: "Everything here weighs less than it did.",
    style: "hero-a",
  },
  b: {
    title: "Free returns on everything",
    text: "Try it on the trail; send it back if not.",
    style: "hero-b",
  },
};

/**
 * Reads the edge's `x-edge-*` request headers.
 *
 * @param headers the request headers the origin received
 * @returns region, variations and flags
 */
export function edgeViewOf(headers: Headers): EdgeView {
  return {
    region: headers.get("x-edge-region"),
    variants: pairs(headers.get("x-edge-variants")),
    flags: pairs(headers.get("x-edge-flags")),
  };
}

function pairs(header: string | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? "").split(",")) {
    const [key, value] = part.split("=");
    if (!key || value === undefined) continue;
    try {
      out[key.trim()] = decodeURIComponent(value.trim());
    } catch {
      // Not from this edge: ignored.
    }
  }
  return out;
}

/**
 * Escapes text for HTML.
 *
 * @param text any text
 * @returns the text with `& < > " '` escaped
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The home page: hero by variation, promo and VIP slots, the catalogue at the region's prices.
 *
 * @param view what the edge said
 * @returns the HTML
 */
export function homePage(view: EdgeView): string {
  const promotion = promotionFor(view.region);
  const hero = HEROES[view.variants.hero ?? "control"] ?? HEROES.control!;
  const body = `
<section class="hero ${hero.style}" data-variation="${escapeHtml(view.variants.hero ?? "control")}">
  <h2>${escapeHtml(hero.title)}</h2>
  <p>${escapeHtml(hero.text)}</p>
</section>
<p class="promo"><edge-slot name="promo">Our products</edge-slot></p>
<p class="vip"><edge-slot name="vip"></edge-slot></p>
<ul class="grid">${CATALOGUE.map((product) => card(product, promotion)).join("")}</ul>`;
  return layout("Demo shop", view, body);
}

/**
 * A product page: its picture through the image route, so the edge's width and quality
 * parameters show, and its price under the region's promotion.
 *
 * @param product the product
 * @param view what the edge said
 * @returns the HTML
 */
export function productPage(product: Product, view: EdgeView): string {
  const promotion = promotionFor(view.region);
  const body = `
<article class="product">
  <img src="/images/${product.id}.svg" alt="${escapeHtml(product.name)}" class="big">
  <div>
    <h2>${escapeHtml(product.name)}</h2>
    ${price(product, promotion)}
    <p class="promo"><edge-slot name="promo">Our products</edge-slot></p>
    <p class="note">The picture comes from <code>/images/${product.id}.svg</code>: the edge adds
    <code>w</code> (from your viewport and pixel ratio hints) and <code>q</code> (from your network
    class), and the picture shows what it was asked for. The first visit has no hints yet: reload.</p>
  </div>
</article>`;
  return layout(product.name, view, body);
}

/**
 * Where `/_dev/pretend` lands when the page was not served through the dev front.
 *
 * @param frontUrl the dev front's URL, when known
 * @returns the HTML
 */
export function pretendNeedsFrontPage(frontUrl: string | undefined): string {
  const where = frontUrl
    ? `<a href="${escapeHtml(frontUrl)}/">${escapeHtml(frontUrl)}/</a>`
    : "the dev front that <code>deno task dev</code> starts";
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Pretend</title></head>
<body><h1>Pretending needs the dev front</h1>
<p>The pretend switch is part of <code>deno task dev</code>'s front, which plays the CDN before the
edge. Open the shop through ${where} and use the form in the edge panel there.</p></body></html>
`;
}

function card(product: Product, promotion: Promotion): string {
  return `<li class="card"><a href="/products/${product.id}">
  <span class="swatch" style="background:${product.colour}"></span>
  <span class="name">${escapeHtml(product.name)}</span></a>
  ${price(product, promotion)}</li>`;
}

function price(product: Product, promotion: Promotion): string {
  const now = priceUnder(product, promotion);
  return `<p class="price" data-product="${product.id}"><s>€${product.price}</s> <strong>€${now}</strong>
  <small>${Math.round(promotion.discount * 100)}% off in ${escapeHtml(promotion.region)}</small></p>`;
}

function layout(title: string, view: EdgeView, body: string): string {
  const search = view.flags["new-search"] === "true"
    ? `<form class="search new" action="/"><input name="q" placeholder="Search trails, gear, sizes…">` +
      `<button>Search</button> <small>new search (flag <code>new-search</code>)</small></form>`
    : `<form class="search" action="/"><input name="q" placeholder="Search"></form>`;
  const catalogue = Object.fromEntries(CATALOGUE.map((product) => [product.id, product.name]));
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1><a href="/">Demo shop</a></h1>
<p class="greeting"><edge-slot name="greeting">Hello!</edge-slot></p>${search}</header>
<main>${body}</main>
${panelShell()}
<script type="application/json" id="demo-catalogue">${JSON.stringify(catalogue)}</script>
<script>${PANEL_SCRIPT}</script>
</body>
</html>
`;
}

function options(values: readonly string[], none: string): string {
  return `<option value="">${none}</option>` +
    values.map((value) => `<option value="${escapeHtml(value)}">${escapeHtml(value)}</option>`).join("");
}

function panelShell(): string {
  return `<aside id="edge-panel">
<h2>What the edge decided</h2>
<dl id="edge-facts"><dt>context</dt><dd>none injected (is the page served through the edge?)</dd></dl>
<form id="pretend" method="get" action="${PRETEND_PATH}">
  <strong>Pretend (dev only)</strong>
  <label>country <select name="country">${options(Object.keys(SAMPLE_ADDRESSES), "as I am")}</select></label>
  <label>device <select name="device">${options(Object.keys(SAMPLE_USER_AGENTS), "as I am")}</select></label>
  <label>network <select name="network">${options(["slow", "save-data"], "as I am")}</select></label>
  <label>user <select name="user">${options(SAMPLE_USERS, "anonymous")}</select></label>
  <input type="hidden" name="back" value="/">
  <button>Apply</button> <a href="${PRETEND_PATH}?reset=1&amp;back=/">reset</a>
</form>
<p class="links"><a id="explain-link" href="/_edge/explain">why? (/_edge/explain)</a> ·
<a href="/_edge/context">/_edge/context</a> · <a href="/echo/page">what the origin receives</a></p>
</aside>`;
}

const STYLE = `
body { font: 16px/1.45 system-ui, sans-serif; margin: 0; color: #1a202c; background: #f7fafc; }
header { display: flex; gap: 1.5rem; align-items: center; padding: .8rem 1.5rem; background: #fff;
  border-bottom: 1px solid #e2e8f0; flex-wrap: wrap; }
header h1 { margin: 0; font-size: 1.3rem; } header a { color: inherit; text-decoration: none; }
.greeting { margin: 0; color: #4a5568; }
.search input { padding: .35rem .6rem; border: 1px solid #cbd5e0; border-radius: 4px; }
.search.new input { width: 18rem; border: 2px solid #2f855a; }
main { padding: 1rem 1.5rem 14rem; max-width: 70rem; }
.hero { padding: 1.6rem 2rem; border-radius: 10px; color: #fff; }
.hero h2 { margin: 0 0 .3rem; font-size: 1.8rem; }
.hero-control { background: #4a5568; }
.hero-a { background: linear-gradient(120deg, #276749, #68d391); font-size: 1.15rem; }
.hero-b { background: linear-gradient(120deg, #c05621, #f6ad55); }
.promo { font-size: 1.1rem; } .vip:empty { display: none; }
.grid { list-style: none; padding: 0; display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr));
  gap: 1rem; }
.card { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: .8rem; }
.card a { color: inherit; text-decoration: none; display: block; }
.swatch { display: block; height: 5rem; border-radius: 6px; margin-bottom: .4rem; }
.price s { color: #a0aec0; } .price small { display: block; color: #2f855a; }
.product { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 2rem; }
.product img.big { width: 100%; border-radius: 8px; }
.note { color: #4a5568; font-size: .9rem; }
#edge-panel { position: fixed; left: 0; right: 0; bottom: 0; background: #1a202c; color: #e2e8f0;
  padding: .6rem 1.5rem; font-size: .85rem; max-height: 45vh; overflow: auto; }
#edge-panel h2 { margin: 0 0 .3rem; font-size: .95rem; color: #90cdf4; }
#edge-facts { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: 0 0 .4rem; }
#edge-facts dt { color: #a0aec0; } #edge-facts dd { margin: 0; }
#pretend { display: flex; gap: .8rem; align-items: center; flex-wrap: wrap; }
#edge-panel a { color: #90cdf4; } .links { margin: .3rem 0 0; }
`;

/**
 * Renders the panel in the browser from the injected context; every value goes in as text.
 * Recommendations are not in the injected context: they are fetched from the edge.
 */
const PANEL_SCRIPT = `
(() => {
  const read = (id) => { const el = document.getElementById(id); try { return el && JSON.parse(el.textContent); } catch { return null; } };
  const ctx = read("edge-context");
  const names = read("demo-catalogue") || {};
  const facts = document.getElementById("edge-facts");
  const link = document.getElementById("explain-link");
  link.href = "/_edge/explain?path=" + encodeURIComponent(location.pathname);
  document.querySelector('#pretend [name="back"]').value = location.pathname + location.search;
  if (!ctx) return;
  facts.textContent = "";
  const row = (label, value, id) => {
    const dt = document.createElement("dt"); dt.textContent = label;
    const dd = document.createElement("dd"); dd.textContent = value; if (id) dd.id = id;
    facts.append(dt, dd);
    return dd;
  };
  const list = (items) => items.length ? items.map((id) => names[id] || id).join(", ") : "none";
  const pairs = (obj) => Object.entries(obj || {}).map(([k, v]) => k + " = " + JSON.stringify(v)).join(", ") || "none";
  const why = ctx.countrySource === "header" ? "country " + ctx.country + " from a trusted geo header"
    : ctx.countrySource === "ip" ? "country " + ctx.country + " looked up by client address in the IP database"
    : "country unknown, so the default region";
  row("region", ctx.region + ": " + why, "panel-region");
  row("device", ctx.device + ", network " + ctx.network + (ctx.gpc ? ", GPC: no behavioural data" : ""), "panel-device");
  const v = ctx.visitor || {};
  row("visitor", v.loggedIn ? "user " + v.userId : "anonymous " + (v.id || ""), "panel-visitor");
  row("variations", pairs(ctx.variants), "panel-variants");
  row("flags", pairs(ctx.flags), "panel-flags");
  if (ctx.qa) row("QA", "variations and flags forced by x-edge-qa: never sticky, no exposure, not cached", "panel-qa");
  row("segments", (ctx.segments || []).join(", ") || "none");
  row("recent views", list(ctx.recentViews || []), "panel-views");
  row("cart", list(ctx.cartItemIds || []), "panel-cart");
  const recs = row("recommended", "…", "panel-recommendations");
  row("rules version", String(ctx.rulesVersion), "panel-rules");
  const form = document.getElementById("pretend");
  const pick = (name, value) => { const s = form.elements[name]; if (value && [...s.options].some((o) => o.value === value)) s.value = value; };
  pick("country", ctx.country); pick("device", ctx.device); pick("network", ctx.network); pick("user", v.userId);
  fetch("/_edge/recommendations").then((r) => r.json()).then((body) => {
    recs.textContent = (body.items || []).length
      ? body.items.map((i) => (names[i.itemId] || i.itemId) + " (because you viewed " + list(i.because || []) + ")").join(", ")
      : "none (no recent views)";
  }).catch(() => { recs.textContent = "unavailable"; });
})();
`;
