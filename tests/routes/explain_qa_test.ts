/**
 * @module
 * `/_edge/explain` and QA forcing, over real HTTP with an in-memory KV: a request with the QA
 * token is explained with what it forces (and the proxy serves the same), one without it says
 * why nothing was forced, and the token is never echoed.
 */
import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import type { RuleSet } from "../../lib/rules/schema.ts";
import type { Explanation } from "../../lib/rules/explanation.ts";
import { makeDeps, startOrigin, type TestOrigin } from "../support.ts";

const TOKEN = "rules-token-0123456789";
const QA_TOKEN = "qa-token-0123456789abcdef";
const RULES: RuleSet = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/rules/explain.json", import.meta.url)),
);
const ENV = { RULES_TOKEN: TOKEN, TRUSTED_PROXIES: "127.0.0.1/32", QA_TOKEN };
const auth = { authorization: `Bearer ${TOKEN}` };
const VISITOR = "ep_uid=visitor-00000007";
/** Sent with every described and proxied request, so both see the same (non-bot) device. */
const DESKTOP_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36";
const FORCE = {
  "x-edge-qa": QA_TOKEN,
  "x-edge-qa-variants": "hero=b,checkout=b,retired=x",
  "x-edge-qa-flags": "new-search=true",
  "user-agent": DESKTOP_UA,
};

async function withEdge(
  env: Record<string, string>,
  fn: (edge: { url: string; origin: TestOrigin }) => Promise<void>,
): Promise<void> {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { env, rules: RULES });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, createApp(deps).fetch);
  try {
    await fn({ url: `http://127.0.0.1:${server.addr.port}`, origin });
  } finally {
    await server.shutdown();
    await origin.close();
    deps.kv.close();
  }
}

async function explainPost(url: string, description: unknown, format = "json"): Promise<string> {
  const res = await fetch(`${url}/_edge/explain?format=${format}`, {
    method: "POST",
    headers: { ...auth, "content-type": "application/json" },
    body: JSON.stringify(description),
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.equal(res.headers.get("set-cookie"), null);
  return text;
}

Deno.test("explain: a QA request with the token shows each forced variation and flag, as the proxy serves them", async () => {
  await withEdge(ENV, async ({ url, origin }) => {
    const description = { path: "/checkout", headers: { ...FORCE, cookie: VISITOR } };
    const text = await explainPost(url, description);
    assert.ok(!text.includes(QA_TOKEN), "the QA token is never echoed");
    const body: Explanation = JSON.parse(text);
    assert.equal(body.qa?.status, "forced");
    assert.deepEqual(body.qa?.variants, { hero: "b", checkout: "b", retired: "x" });
    assert.deepEqual(body.qa?.flags, { "new-search": true });
    assert.match(body.qa!.why, /^Forced: the QA token holds/);
    for (const key of ["hero", "checkout", "retired"]) {
      const entry = body.experiments.find((e) => e.key === key)!;
      assert.equal(entry.reason, "forced", key);
      assert.equal(entry.matched, true);
      assert.equal(entry.inExperiment, false);
      assert.match(entry.why, /^Forced by QA: /);
    }
    const search = body.flags.find((f) => f.key === "new-search")!;
    assert.equal(search.value, true);
    assert.equal(search.reason, "FORCED");
    assert.equal(search.evaluated?.reason, "DEFAULT", "no rule gives it: the region is GLOBAL");
    assert.equal(search.evaluated?.value, false);
    // The forced checkout variation decides the route and the flag that depends on it.
    assert.equal(body.routes[2]!.target, "/checkout-b");
    assert.equal(body.flags.find((f) => f.key === "pay-label")!.value, "Pay now");
    assert.equal(body.decision.forced, true);
    assert.deepEqual(body.decision.stickyAssignments.hero, undefined, "never sticky");

    const proxied = await fetch(`${url}/checkout`, { headers: { ...FORCE, cookie: VISITOR } });
    await proxied.body?.cancel();
    assert.equal(proxied.headers.get("cache-control"), "private, no-store");
    const seen = origin.seen.at(-1)!;
    assert.equal(seen.path, body.decision.action.type === "proxy" ? body.decision.action.path : "");
    assert.equal(seen.headers.get("x-edge-variants"), "hero=b,checkout=b,retired=x");

    const report = await explainPost(url, description, "text");
    assert.ok(!report.includes(QA_TOKEN));
    assert.match(
      report,
      /^QA {10}hero=b, checkout=b, retired=x; new-search=true — Forced: the QA token holds/m,
    );
    assert.match(report, /^ {2}✓ hero {13}b forced {13}Forced by QA: "b"/m);
    assert.match(
      report,
      /^ {2}new-search {9}= true \(FORCED\) — Forced by QA to true; the rules give false/m,
    );
  });
});

Deno.test("explain of the calling request itself shows its QA forcing, and a forced variation off its path is not served", async () => {
  await withEdge(ENV, async ({ url }) => {
    const res = await fetch(`${url}/_edge/explain`, {
      headers: { ...auth, ...FORCE, "x-edge-qa-variants": "checkout=b", cookie: VISITOR },
    });
    const body: Explanation = await res.json();
    assert.equal(res.status, 200);
    assert.equal(body.request.path, "/");
    assert.equal(body.qa?.status, "forced");
    const checkout = body.experiments.find((e) => e.key === "checkout")!;
    assert.equal(checkout.reason, "path");
    assert.match(checkout.why, /so the forced "b" is not served here$/);
    assert.deepEqual(body.decision.variants.checkout, undefined);
    assert.equal(body.decision.forced, true, "the flag is still forced");
  });
});

Deno.test("explain: QA headers without the token say why forcing was refused, and show the usual decision", async () => {
  const cases: [Record<string, string>, Record<string, string>, RegExp][] = [
    [ENV, { "x-edge-qa": "wrong-token-0123456789ab" }, /^Refused: "x-edge-qa" does not hold the QA token; /],
    [ENV, { "x-edge-qa": "" }, /^Refused: "x-edge-qa" does not hold the QA token; /],
    [ENV, { "x-edge-qa": undefined! }, /^Refused: no "x-edge-qa" header carries the QA token; /],
    [{ RULES_TOKEN: TOKEN, TRUSTED_PROXIES: "127.0.0.1/32" }, {}, /^Refused: QA_TOKEN is not configured/],
  ];
  for (const [env, token, why] of cases) {
    await withEdge(env, async ({ url, origin }) => {
      const headers: Record<string, string> = { ...FORCE, cookie: VISITOR };
      for (const [name, value] of Object.entries(token)) {
        if (value === undefined) delete headers[name];
        else headers[name] = value;
      }
      const text = await explainPost(url, { path: "/checkout", headers });
      assert.ok(!text.includes(QA_TOKEN));
      const body: Explanation = JSON.parse(text);
      assert.equal(body.qa?.status, "refused");
      assert.match(body.qa!.why, why);
      assert.match(body.qa!.why, /nothing is forced, the decision is the usual one$/);
      assert.deepEqual(body.qa?.variants, {});
      assert.equal(body.decision.forced, undefined);
      assert.notEqual(body.experiments.find((e) => e.key === "hero")!.reason, "forced");
      assert.equal(body.experiments.find((e) => e.key === "retired")!.reason, "disabled");
      assert.notEqual(body.flags.find((f) => f.key === "new-search")!.reason, "FORCED");

      // The proxy agrees: the visitor gets what the explanation says.
      const proxied = await fetch(`${url}/checkout`, { headers });
      await proxied.body?.cancel();
      const variants = Object.entries(body.decision.variants).map(([k, v]) => `${k}=${v}`).join(",");
      assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants") ?? "", variants);
    });
  }
  // A request with no QA header at all has no QA part.
  await withEdge(ENV, async ({ url }) => {
    const body: Explanation = JSON.parse(await explainPost(url, { path: "/", headers: { cookie: VISITOR } }));
    assert.equal(body.qa, null);
  });
});

Deno.test("explain: with the token, an entry the rules cannot serve is explained as the edge's 400", async () => {
  await withEdge(ENV, async ({ url }) => {
    const headers = { ...FORCE, "x-edge-qa-flags": "new-search=maybe", cookie: VISITOR };
    const body: Explanation = JSON.parse(await explainPost(url, { path: "/checkout", headers }));
    const message =
      '"x-edge-qa-flags" entry "new-search=maybe": flag "new-search" takes a boolean (true or false)';
    assert.equal(body.qa?.status, "invalid");
    assert.equal(
      body.qa?.why,
      `The edge answers 400 invalid_qa_override: ${message}; the decision shown is the one without forcing`,
    );
    assert.equal(body.decision.forced, undefined);
    const proxied = await fetch(`${url}/checkout`, { headers });
    assert.equal(proxied.status, 400);
    assert.deepEqual(await proxied.json(), { error: { code: "invalid_qa_override", message } });
  });
});
