/**
 * @module
 * The demo shop is coherent: its catalogue holds what the demo events name, its prices follow
 * the promotion the rules' slots advertise, the `hero` experiment changes the page, and the
 * image route shows the width and quality the edge asked for — checked through the real app.
 */
import assert from "node:assert/strict";
import { CATALOGUE, promotionFor, PROMOTIONS, promotionText } from "../../tools/demo_catalogue.ts";
import { createDemoOrigin, demoOriginHandler } from "../../tools/demo_origin.ts";
import { HEROES } from "../../tools/demo_pages.ts";
import { parseNdjson } from "../../tools/publisher_events.ts";
import { parseRules } from "../../lib/rules/compile.ts";
import { createApp } from "../../routes/app.ts";
import { makeDeps } from "../support.ts";

const ROOT = new URL("../../", import.meta.url);
const LOOPBACK = { remoteAddr: { hostname: "127.0.0.1" } };
const BROWSER =
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

async function demoRules() {
  const rules = JSON.parse(await Deno.readTextFile(new URL("tools/demo_rules.json", ROOT)));
  delete rules.$schema;
  return rules;
}

/** The demo origin on a loopback port behind the real app with the demo rules. */
async function withDemoEdge(fn: (app: ReturnType<typeof createApp>) => Promise<void>): Promise<void> {
  const origin = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, demoOriginHandler);
  const deps = await makeDeps(`http://127.0.0.1:${origin.addr.port}`, {
    env: { TRUSTED_PROXIES: "127.0.0.1/32" },
    rules: await demoRules(),
  });
  try {
    await fn(createApp(deps));
  } finally {
    deps.kv.close();
    await origin.shutdown();
  }
}

Deno.test("the demo catalogue holds every item the demo events and related lists name", async () => {
  const events = parseNdjson(await Deno.readTextFile(new URL("tools/demo_events.ndjson", ROOT))) as Record<
    string,
    unknown
  >[];
  const named = new Set<string>();
  for (const event of events) {
    if (typeof event.itemId === "string") named.add(event.itemId);
    for (const item of (event.items ?? event.related ?? []) as { itemId: string }[]) named.add(item.itemId);
  }
  const ids = new Set(CATALOGUE.map((product) => product.id));
  assert.ok(named.size >= 3);
  for (const id of named) assert.ok(ids.has(id), `${id} is not in the catalogue`);
});

Deno.test("every promo slot of the demo rules advertises the discount the demo shop applies", async () => {
  const rules = parseRules(await demoRules());
  const promos = rules.source.slots?.filter((slot) => slot.name === "promo") ?? [];
  const regions = new Set<string>();
  for (const slot of promos) {
    const region = slot.when?.region?.[0] ?? "GLOBAL";
    regions.add(region);
    assert.equal(slot.html, `<strong>${promotionText(promotionFor(region))}</strong>`, region);
  }
  assert.deepEqual([...regions].sort(), Object.values(PROMOTIONS).map((p) => p.region).sort());
});

Deno.test("every variation of the demo hero experiment has a hero banner of its own", async () => {
  const rules = parseRules(await demoRules());
  const hero = rules.source.experiments?.find((experiment) => experiment.key === "hero");
  assert.ok(hero);
  const titles = hero.variations.map((variation) => HEROES[variation]?.title);
  assert.ok(titles.every((title) => title !== undefined), "each variation has a hero");
  assert.equal(new Set(titles).size, titles.length, "and each looks different");
});

Deno.test("the demo page through the edge: prices of the visitor's region, its promotion, hero and panel", async () => {
  await withDemoEdge(async (app) => {
    const page = async (headers: Record<string, string>) => {
      const res = await app.request("/", { headers: { "user-agent": BROWSER, ...headers } }, LOOPBACK);
      assert.equal(res.status, 200);
      return await res.text();
    };
    const eu = await page({ "x-geo-country": "DE" });
    const shoe = CATALOGUE.find((product) => product.id === "p7")!;
    assert.match(
      eu,
      new RegExp(`data-product="p7"><s>€${shoe.price}</s> <strong>€${Math.round(shoe.price * 0.8)}</strong>`),
    );
    assert.match(eu, /<strong>Winter sale across Europe: 20% off<\/strong>/);
    assert.match(eu, /<aside id="edge-panel">/);
    const context = JSON.parse(
      /<script type="application\/json" id="edge-context">(.*?)<\/script>/.exec(eu)![1]!,
    );
    assert.deepEqual([context.region, context.country, context.countrySource], ["EU", "DE", "header"]);
    const variation = context.variants.hero as string;
    assert.match(eu, new RegExp(`class="hero ${HEROES[variation]!.style}" data-variation="${variation}"`));
    const us = await page({ "x-geo-country": "US" });
    assert.match(us, new RegExp(`<strong>€${Math.round(shoe.price * 0.9)}</strong>`));
    assert.match(us, /<strong>Holiday deals: 10% off<\/strong>/);
    // Each variation's page differs: the origin renders the hero the edge assigned.
    const shown = new Set<string>();
    for (let i = 0; i < 40 && shown.size < 3; i++) {
      const html = await page({ cookie: `ep_uid=visitor-${i}-0123456789` });
      shown.add(/data-variation="([a-z]+)"/.exec(html)![1]!);
    }
    assert.deepEqual([...shown].sort(), ["a", "b", "control"]);
  });
});

Deno.test("the demo image route shows the width and quality the edge derived from client hints", async () => {
  await withDemoEdge(async (app) => {
    const res = await app.request("/images/p7.svg", {
      headers: { "user-agent": BROWSER, "sec-ch-viewport-width": "390", "sec-ch-dpr": "2", ect: "3g" },
    }, LOOPBACK);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "image/svg+xml");
    const svg = await res.text();
    assert.match(svg, /^<svg [^>]*width="800"/, "390 CSS px × 2, rounded up to 100");
    assert.match(svg, /w=800 · q=60/);
    const fast = await (await app.request("/images/p7.svg", { headers: { "user-agent": BROWSER } }, LOOPBACK))
      .text();
    assert.match(fast, /w=none · q=80/, "no viewport hint: no width; a fast network: q=80");
  });
});

Deno.test("the demo origin's pretend page points to the dev front when the front was bypassed", async () => {
  const origin = createDemoOrigin({ frontUrl: "http://127.0.0.1:8001" });
  const res = await origin(new Request("http://127.0.0.1:8080/_dev/pretend?country=DE"));
  assert.match(await res.text(), /href="http:\/\/127\.0\.0\.1:8001\/"/);
});
