import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import type { Explanation } from "../../lib/rules/explanation.ts";
import { assignVariation, namespaceHash } from "../../lib/rules/bucketing.ts";
import { canaryHash } from "../../lib/rules/store.ts";
import { makeDeps } from "../support.ts";

const RULES = "tests/fixtures/rules/explain.json";
const CANARY = "tests/fixtures/rules/explain_canary.json";
const hero = { key: "hero", numVariations: 3, hashVersion: 2, coverage: 0.5 };

/** Runs `deno task explain` as its task does (read permission only). */
async function explain(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "tools/explain.ts", ...args],
    cwd: new URL("../..", import.meta.url),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

function visitorWhere(pick: (key: string) => boolean): string {
  for (let i = 0; i < 10_000; i++) {
    const key = `visitor-${String(i).padStart(8, "0")}`;
    if (pick(key)) return key;
  }
  throw new Error("no such visitor");
}

Deno.test("deno task explain prints the same explanation as GET /_edge/explain for the same request", async () => {
  const rules = JSON.parse(await Deno.readTextFile(RULES));
  const deps = await makeDeps("http://127.0.0.1:9", {
    env: { RULES_TOKEN: "rules-token-0123456789", TRUSTED_PROXIES: "127.0.0.1/32" },
    rules,
  });
  try {
    const key = visitorWhere((k) => namespaceHash(k, "shop") >= 0.5);
    const offline = await explain([
      "--rules",
      RULES,
      "--json",
      "--path",
      "/checkout?step=2",
      "--country",
      "FR",
      "--ua",
      "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
      "--cookie",
      `ep_uid=${key}`,
    ]);
    assert.equal(offline.code, 0, offline.stderr);
    const params = new URLSearchParams([
      ["path", "/checkout?step=2"],
      ["header", "x-geo-country: FR"],
      ["header", "user-agent: Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"],
      ["cookie", `ep_uid=${key}`],
    ]);
    const res = await createApp(deps).request(`/_edge/explain?${params}`, {
      headers: { authorization: "Bearer rules-token-0123456789" },
    }, { remoteAddr: { hostname: "127.0.0.1" } });
    assert.equal(res.status, 200);
    const online: Explanation = await res.json();
    assert.deepEqual(JSON.parse(offline.stdout), online);
    assert.equal(online.experiments.find((e) => e.key === "checkout")!.reason, "namespace");
    assert.equal(online.facts.device.value, "mobile");
  } finally {
    deps.kv.close();
  }
});

Deno.test("deno task explain explains a canary visitor, out of coverage, as text", async () => {
  const key = visitorWhere((k) => canaryHash(k, 8) < 0.25 && !assignVariation(k, hero).inExperiment);
  const { code, stdout, stderr } = await explain([
    RULES,
    "--canary",
    CANARY,
    "--canary-share",
    "0.25",
    "--path",
    "/checkout",
    "--cookie",
    `ep_uid=${key}`,
  ]);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^GET \/checkout\n/);
  assert.match(
    stdout,
    /Rules {7}version 8 \(canary\) — Canary version 8: the visitor's canary hash [\d.]+ is below its share 0\.25/,
  );
  assert.match(stdout, /✓ #0 \/checkout +Rewrite to "\/checkout-v8"/);
  assert.match(stdout, /action {5}proxy \/checkout-v8/);

  const active = await explain([RULES, "--path", "/", "--cookie", `ep_uid=${key}`]);
  assert.equal(active.code, 0, active.stderr);
  assert.match(
    active.stdout,
    /· hero +control \(not in it\) +Hash [\d.]+ falls in no variation's range \(coverage 0\.5\)/,
  );
});

Deno.test("deno task explain explains a bot, a when mismatch and a logged-in visitor's segments", async () => {
  const bot = await explain([
    RULES,
    "--json",
    "--path",
    "/",
    "--ua",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
  ]);
  assert.equal(bot.code, 0, bot.stderr);
  const botExplanation: Explanation = JSON.parse(bot.stdout);
  assert.equal(botExplanation.facts.bot, true);
  assert.equal(botExplanation.experiments[0]!.reason, "bot");

  const user = await explain([
    RULES,
    "--json",
    "--path",
    "/deals",
    "--country",
    "US",
    "--user",
    "u42",
    "--segment",
    "vip",
  ]);
  assert.equal(user.code, 0, user.stderr);
  const explained: Explanation = JSON.parse(user.stdout);
  assert.equal(explained.identity.source, "header");
  assert.equal(explained.routes[1]!.field, "region");
  assert.equal(explained.flags.find((f) => f.key === "vip-deals")!.value, true);
  assert.deepEqual(explained.context.segments, ["vip"]);

  // From an untrusted hop, the CDN's country and user headers are not believed.
  const untrusted = await explain([RULES, "--json", "--untrusted", "--country", "DE", "--user", "u42"]);
  const plain: Explanation = JSON.parse(untrusted.stdout);
  assert.equal(plain.facts.country.value, null);
  assert.equal(plain.identity.source, "anonymous");
  assert.match(plain.identity.why, /x-user-id is ignored from an untrusted hop/);
});

Deno.test("deno task explain exits 1 for an invalid rules file or path and 2 for a usage error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/bad.json`,
      JSON.stringify({ version: 1, experiments: [{ key: "x", variations: ["a"] }] }),
    );
    const invalid = await explain([`${dir}/bad.json`]);
    assert.equal(invalid.code, 1);
    assert.match(invalid.stderr, /Cannot parse rules file/);
    const badPath = await explain([RULES, "--path", "/a%2fb"]);
    assert.equal(badPath.code, 1);
    assert.match(badPath.stderr, /The edge would answer 400 bad_path/);
    const none = await explain([]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /No rules file/);
    const share = await explain([RULES, "--canary", CANARY]);
    assert.equal(share.code, 2);
    assert.match(share.stderr, /--canary-share/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The shell commands of a Markdown file's `sh` blocks, continuation lines joined, split into words. */
function shellCommands(markdown: string): string[][] {
  const commands: string[][] = [];
  for (const block of markdown.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const line of block[1]!.replace(/\\\n\s*/g, " ").split("\n")) {
      if (line.trim()) commands.push(shellWords(line.trim()));
    }
  }
  return commands;
}

function shellWords(line: string): string[] {
  const words: string[] = [];
  for (const match of line.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g)) {
    words.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, "$1") : match[2] ?? match[3]!);
  }
  return words;
}

const QA_TOKEN_FOR_DOCS = "qa-token-for-the-docs-0123";

Deno.test("every command in docs/explain.md works as written", async () => {
  const commands = shellCommands(await Deno.readTextFile("docs/explain.md"));
  const token = "rules-token-0123456789";
  const rules = JSON.parse(await Deno.readTextFile("tools/demo_rules.json"));
  const deps = await makeDeps("http://127.0.0.1:9", {
    env: { RULES_TOKEN: token, TRUSTED_PROXIES: "127.0.0.1/32", QA_TOKEN: QA_TOKEN_FOR_DOCS },
    rules,
  });
  let tasks = 0, curls = 0, forced = 0;
  try {
    const app = createApp(deps);
    for (const words of commands) {
      if (words[0] === "deno" && words[1] === "task") {
        const output = await new Deno.Command(Deno.execPath(), {
          args: words.slice(1),
          cwd: new URL("../..", import.meta.url),
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.equal(output.code, 0, `${words.join(" ")}\n${new TextDecoder().decode(output.stderr)}`);
        assert.ok(output.stdout.length > 0, words.join(" "));
        tasks++;
      } else if (words[0] === "curl") {
        const headers = new Headers();
        let body: string | undefined;
        let url = "";
        for (let i = 1; i < words.length; i++) {
          const word = words[i]!;
          if (word === "-H") {
            const [name, ...value] = words[++i]!.replace("$RULES_TOKEN", token).replace(
              "$QA_TOKEN",
              QA_TOKEN_FOR_DOCS,
            )
              .split(":");
            headers.set(name!, value.join(":").trim());
          } else if (word === "-d") body = words[++i];
          else if (!word.startsWith("-")) url = word;
        }
        const res = await app.request(url, { method: body ? "POST" : "GET", headers, body }, {
          remoteAddr: { hostname: "127.0.0.1" },
        });
        const text = await res.text();
        assert.equal(res.status, 200, `${words.join(" ")}\n${text}`);
        assert.ok(!text.includes(QA_TOKEN_FOR_DOCS), "the QA token is never echoed");
        if (headers.has("x-edge-qa")) {
          assert.match(text, /^QA {10}hero=b; new-search=true — Forced: the QA token holds/m);
          forced++;
        }
        curls++;
      } else {
        assert.fail(`Unexpected command in docs/explain.md: ${words.join(" ")}`);
      }
    }
  } finally {
    deps.kv.close();
  }
  assert.ok(tasks >= 7 && curls === 3 && forced === 1, `${tasks} tasks, ${curls} curls, ${forced} forced`);
});

Deno.test("deno task explain forces QA variations and flags as sent, labelled as not token-checked", async () => {
  const json = await explain([
    RULES,
    "--json",
    "--path",
    "/checkout",
    "--qa-variants",
    "checkout=b",
    "--header",
    "x-edge-qa-flags: vip-deals=true",
    "--cookie",
    "ep_uid=visitor-00000007",
  ]);
  assert.equal(json.code, 0, json.stderr);
  const body: Explanation = JSON.parse(json.stdout);
  assert.equal(body.qa?.status, "offline");
  assert.deepEqual(body.qa?.variants, { checkout: "b" });
  assert.deepEqual(body.qa?.flags, { "vip-deals": true });
  assert.equal(body.experiments.find((e) => e.key === "checkout")?.reason, "forced");
  assert.equal(body.decision.action.type === "proxy" && body.decision.action.path, "/checkout-b");
  assert.equal(body.flags.find((f) => f.key === "vip-deals")?.reason, "FORCED");

  const text = await explain([RULES, "--qa-variants", "checkout=b", "--path", "/checkout"]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^QA {10}checkout=b — Forced \(offline, token not checked\): /m);
  assert.match(text.stdout, /^ {2}✓ checkout {9}b forced /m);

  const invalid = await explain([RULES, "--qa-variants", "checkout=z"]);
  assert.equal(invalid.code, 1);
  assert.equal(
    invalid.stderr.trim(),
    'The edge would answer 400 invalid_qa_override: "x-edge-qa-variants" entry "checkout=z": "z" is not a ' +
      'variation of experiment "checkout"',
  );
});
