/**
 * The hostile-input corpus (tests/fuzz/corpus/*.json) replayed in the normal test suite. Each
 * entry names its expected outcome class and this file asserts it:
 *
 * - headers.json — raw HTTP/1.1 requests to a real listening edge: `forwarded` (reached the
 *   origin, with the listed headers as the origin must see them), `rejected` (refused by the HTTP
 *   parser: connection closed or a 4xx before the app, origin untouched), `client_error` (a 4xx
 *   with the house JSON error body from the edge, origin untouched), or an `_or_` of two;
 * - sync.json — correctly signed bodies to `POST /_edge/sync`: the exact status and error code,
 *   and nothing stored for a rejected batch;
 * - rules.json — rule sets (or rules-file texts): compiled, or `RulesError`, never anything else.
 *
 * Never a 5xx, never an internal message. Compact generators keep big inputs small on disk:
 * `{"$repeat": s, "times": n}`, `{"$join": s, "times": n, "sep": ","}`, `{"$concat": [...]}`,
 * `{"$nest": "array" | "object", "depth": n}`, `{"$nestInto": key, "depth": n}`,
 * `{"$many": item, "times": n}`, `{"$manyThen": item, "times": n, "last": item}`.
 */
import assert from "node:assert/strict";
import { EdgeError } from "../../lib/http/errors.ts";
import { loadRulesFile, parseRules, RulesError } from "../../lib/rules/compile.ts";
import { sign } from "../../lib/sync/verify.ts";
import { createApp } from "../../routes/app.ts";
import { makeDeps, SEED_RULES, startOrigin } from "../support.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const SYNC_MAX_BYTES = 256 * 1024;
const INTERNAL =
  /stack|\bat [\w.<>]+ \(|TypeError|RangeError|SyntaxError|ReferenceError|os error|Internal error/;

interface HeaderEntry {
  name: string;
  headers: [string, unknown, number?][];
  expect: string;
  originSees?: Record<string, string | null | { $match: string }>;
  path?: string;
  trustedPeer?: boolean;
}
interface SyncEntry {
  name: string;
  body: unknown;
  expectStatus: number | string;
  expectCode: string | null;
}
interface RulesEntry {
  name: string;
  rules: unknown;
  expect: string;
}

async function corpus<T>(name: string): Promise<T[]> {
  return JSON.parse(await Deno.readTextFile(new URL(`./corpus/${name}`, import.meta.url)));
}

/** JSON text spliced in verbatim (for nesting deeper than `JSON.stringify` can recurse). */
class RawJson {
  constructor(readonly text: string) {}
}

function nestedText(kind: string, depth: number): string {
  return kind === "array"
    ? "[".repeat(depth) + "]".repeat(depth)
    : '{"a":'.repeat(depth) + "{}" + "}".repeat(depth);
}

function nestedValue(kind: string, depth: number): unknown {
  let value: unknown = kind === "array" ? [] : {};
  for (let i = 0; i < depth; i++) value = kind === "array" ? [value] : { a: value };
  return value;
}

/** Expands the generators; `raw` keeps deep nesting as text for the sync bodies. */
function expand(value: unknown, raw: boolean): unknown {
  if (Array.isArray(value)) return value.map((item) => expand(item, raw));
  if (value === null || typeof value !== "object") return value;
  const spec = value as Record<string, unknown>;
  if ("$repeat" in spec) return String(spec.$repeat).repeat(Number(spec.times));
  if ("$join" in spec) return Array(Number(spec.times)).fill(spec.$join).join(String(spec.sep));
  if ("$concat" in spec) return (spec.$concat as unknown[]).map((part) => expand(part, raw)).join("");
  if ("$nest" in spec) {
    const kind = String(spec.$nest);
    return raw ? new RawJson(nestedText(kind, Number(spec.depth))) : nestedValue(kind, Number(spec.depth));
  }
  if ("$nestInto" in spec) {
    const inner = raw
      ? new RawJson(nestedText("object", Number(spec.depth)))
      : nestedValue("object", Number(spec.depth));
    return { [String(spec.$nestInto)]: inner };
  }
  if ("$many" in spec) return Array.from({ length: Number(spec.times) }, () => expand(spec.$many, raw));
  if ("$manyThen" in spec) {
    return [
      ...Array.from({ length: Number(spec.times) }, () => expand(spec.$manyThen, raw)),
      expand(spec.last, raw),
    ];
  }
  return Object.fromEntries(Object.entries(spec).map(([key, item]) => [key, expand(item, raw)]));
}

function toJson(value: unknown): string {
  if (value instanceof RawJson) return value.text;
  if (Array.isArray(value)) return `[${value.map(toJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${
      Object.entries(value).map(([key, item]) => `${JSON.stringify(key)}:${toJson(item)}`).join(",")
    }}`;
  }
  return JSON.stringify(value) ?? "null";
}

interface Exchange {
  status: number;
  head: string;
  body: string;
}

/** One raw HTTP/1.1 exchange with a bounded wait; the response ends at its length or at close. */
async function exchange(port: number, request: string): Promise<Exchange> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const deadline = setTimeout(() => conn.close(), 10_000);
  const decoder = new TextDecoder();
  let text = "";
  try {
    // The server may refuse and close before the whole request is written.
    await conn.write(new TextEncoder().encode(request)).catch(() => {});
    const buffer = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
      const split = text.indexOf("\r\n\r\n");
      if (split === -1) continue;
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, split))?.[1];
      if (length !== undefined && text.length - split - 4 >= Number(length)) break;
      if (/\r\ntransfer-encoding: *chunked/i.test(text.slice(0, split)) && text.endsWith("0\r\n\r\n")) break;
    }
  } finally {
    clearTimeout(deadline);
    try {
      conn.close();
    } catch {
      // Closed by the deadline or the peer.
    }
  }
  const split = text.indexOf("\r\n\r\n");
  const head = split === -1 ? text : text.slice(0, split);
  return {
    status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0),
    head,
    body: split === -1 ? "" : text.slice(split + 4),
  };
}

function requestText(entry: HeaderEntry, path: string): string {
  let host = "edge.local";
  const lines: string[] = [];
  for (const [name, value, count] of entry.headers) {
    if (name === "$raw") lines.push(String(value));
    else if (name === "$host") host = String(value);
    else if (name === "$many") {
      for (let i = 0; i < Number(count); i++) lines.push(`${value}${i}: v`);
    } else lines.push(`${name}: ${expand(value, false)}`);
  }
  return [`GET ${path} HTTP/1.1`, `Host: ${host}`, "Connection: close", ...lines, "", ""].join("\r\n");
}

function assertNoInternals(where: string, text: string): void {
  assert.doesNotMatch(text, INTERNAL, `${where}: internal detail leaked`);
}

Deno.test("fuzz corpus: hostile headers are forwarded safely, rejected, or answered 4xx JSON", async (t) => {
  const entries = await corpus<HeaderEntry>("headers.json");
  const origin = startOrigin();
  const edges = await Promise.all([false, true].map(async (trusted) => {
    const deps = await makeDeps(origin.url, {
      rules: SEED_RULES,
      env: trusted ? { TRUSTED_PROXIES: "127.0.0.1/32", LOG_LEVEL: "silent" } : { LOG_LEVEL: "silent" },
    });
    const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, createApp(deps).fetch);
    return { deps, server };
  }));
  const counts: Record<string, number> = {};
  try {
    for (const [index, entry] of entries.entries()) {
      await t.step(entry.name, async () => {
        const edge = edges[entry.trustedPeer ? 1 : 0]!;
        const path = entry.path ?? `/fuzz/${index}`;
        const seenBefore = origin.seen.length;
        const answer = await exchange(edge.server.addr.port, requestText(entry, path));
        const reached = origin.seen.slice(seenBefore);
        assert.ok(answer.status < 500, `${entry.name}: answered ${answer.status}`);
        assertNoInternals(entry.name, answer.body);
        let outcome: string;
        if (reached.length > 0) outcome = "forwarded";
        else if (answer.status >= 400 && answer.body.startsWith("{")) {
          const body = JSON.parse(answer.body);
          assert.equal(typeof body.error?.code, "string", `${entry.name}: not the house error body`);
          outcome = "client_error";
        } else outcome = "rejected";
        counts[outcome] = (counts[outcome] ?? 0) + 1;
        assert.ok(
          entry.expect.split("_or_").includes(outcome),
          `${entry.name}: expected ${entry.expect}, got ${outcome} (${answer.status})`,
        );
        if (outcome === "forwarded") {
          assert.equal(answer.status, 200);
          const seen = reached[0]!;
          if (entry.path === undefined) assert.equal(seen.path, path);
          // A hostile path may arrive normalised by the URL parser, never escaping.
          assert.ok(seen.path.startsWith("/"), seen.path);
          assert.doesNotMatch(
            seen.path,
            /(^|\/)\.\.?(\/|$)|\\|%2f|%5c|%2e/i,
            `${entry.name}: origin saw ${seen.path}`,
          );
          for (const [name, expected] of Object.entries(entry.originSees ?? {})) {
            const actual = seen.headers.get(name);
            if (expected === null) assert.equal(actual, null, `${entry.name}: origin saw ${name}: ${actual}`);
            else if (typeof expected === "object") {
              assert.match(actual ?? "", new RegExp(expected.$match), name);
            } else assert.equal(actual, expected, `${entry.name}: ${name}`);
          }
          // Whatever was sent, no inbound x-edge-* value survives: only the edge's own set.
          for (const [name] of seen.headers) {
            if (name.startsWith("x-edge-")) {
              assert.ok(
                [
                  "x-edge-region",
                  "x-edge-country",
                  "x-edge-device",
                  "x-edge-network",
                  "x-edge-client-ip",
                  "x-edge-rules-version",
                  "x-edge-visitor",
                  "x-edge-user",
                  "x-edge-gpc",
                  "x-edge-variants",
                  "x-edge-flags",
                ].includes(name),
                `${entry.name}: unexpected ${name} reached the origin`,
              );
            }
          }
        }
      });
    }
  } finally {
    for (const edge of edges) {
      await edge.server.shutdown();
      edge.deps.kv.close();
    }
    await origin.close();
  }
  console.log(`headers corpus: ${entries.length} entries`, counts);
});

Deno.test("fuzz corpus: hostile, correctly signed sync bodies get their 4xx JSON and apply nothing", async (t) => {
  const entries = await corpus<SyncEntry>("sync.json");
  const deps = await makeDeps("http://127.0.0.1:9", {
    env: { SYNC_SECRETS: SECRET, SYNC_MAX_BYTES: String(SYNC_MAX_BYTES), LOG_LEVEL: "silent" },
  });
  const app = createApp(deps);
  const statuses: Record<number, number> = {};
  const stored = async () => {
    let n = 0;
    for await (const entry of deps.kv.list({ prefix: [] })) if (entry.key[0] !== "webhook") n++;
    return n;
  };
  try {
    for (const [index, entry] of entries.entries()) {
      await t.step(entry.name, async () => {
        const spec = entry.body as Record<string, unknown> | null;
        const body: Uint8Array<ArrayBuffer> = spec && typeof spec === "object" && "$bytes" in spec
          ? new Uint8Array(spec.$bytes as number[])
          : new TextEncoder().encode(
            spec && typeof spec === "object" && "$text" in spec
              ? String(expand(spec.$text, false))
              : toJson(expand(entry.body, true)),
          );
        const id = `msg_fuzz_${index}`;
        const timestamp = NOW / 1000;
        const before = await stored();
        const res = await app.request("/_edge/sync", {
          method: "POST",
          body,
          headers: {
            "content-type": "application/json",
            "webhook-id": id,
            "webhook-timestamp": String(timestamp),
            "webhook-signature": await sign(SECRET, { id, timestamp, body }),
          },
        });
        const text = await res.text();
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        assert.ok(res.status < 500, `${entry.name}: ${res.status} ${text.slice(0, 200)}`);
        assertNoInternals(entry.name, text);
        const json = JSON.parse(text);
        if (entry.expectStatus === "2xx_or_400") {
          assert.ok(res.status === 200 || res.status === 400, entry.name);
        } else assert.equal(res.status, entry.expectStatus, `${entry.name}: ${text.slice(0, 300)}`);
        if (res.status >= 400) {
          const codes = entry.expectCode === "invalid_json_or_payload"
            ? ["invalid_json", "invalid_payload"]
            : entry.expectCode
            ? [entry.expectCode]
            : ["invalid_events", "invalid_json", "invalid_payload"];
          assert.ok(codes.includes(json.error.code), `${entry.name}: code ${json.error.code}`);
          assert.equal(await stored(), before, `${entry.name}: a rejected batch stored something`);
        }
      });
    }
  } finally {
    deps.kv.close();
  }
  console.log(`sync corpus: ${entries.length} entries, statuses`, statuses);
});

Deno.test("fuzz corpus: hostile rule sets and rules files compile or fail with RulesError only", async (t) => {
  const entries = await corpus<RulesEntry>("rules.json");
  const outcomes: Record<string, number> = {};
  for (const entry of entries) {
    await t.step(entry.name, async () => {
      const spec = entry.rules as Record<string, unknown> | null;
      let outcome: "valid" | "RulesError";
      try {
        if (spec && typeof spec === "object" && "$file" in spec) {
          await loadRulesFile("corpus.json", () => Promise.resolve(String(spec.$file)));
        } else if (spec && typeof spec === "object" && "$text" in spec) {
          parseRules(JSON.parse(String(spec.$text)));
        } else {
          parseRules(expand(entry.rules, false));
        }
        outcome = "valid";
      } catch (error) {
        assert.ok(
          error instanceof RulesError,
          `${entry.name}: threw ${error instanceof Error ? error.stack : String(error)}`,
        );
        assert.ok(!(error instanceof EdgeError));
        outcome = "RulesError";
      }
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      assert.ok(
        entry.expect.split("_or_").includes(outcome),
        `${entry.name}: expected ${entry.expect}, got ${outcome}`,
      );
    });
  }
  console.log(`rules corpus: ${entries.length} entries`, outcomes);
});
