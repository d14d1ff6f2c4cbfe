/**
 * Property tests of sync payload handling: `parseSyncPayload` answers any JSON — random
 * documents and valid batches of every event kind with random fields replaced — with events or a
 * `SyncPayloadError`; and `ingestSync`, given arbitrary *correctly signed* bytes, rejects with an
 * `EdgeError` (400/413 and the like) and writes nothing — never another exception.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { EdgeError } from "../../../lib/http/errors.ts";
import { parseSyncPayload, SyncPayloadError } from "../../../lib/sync/schema.ts";
import { ingestSync } from "../../../lib/sync/ingest.ts";
import { applyOptionsFromConfig } from "../../../lib/sync/apply.ts";
import { createWebhookVerifier, sign } from "../../../lib/sync/verify.ts";
import { parseConfig } from "../../../lib/app/config.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const AT = "2026-11-26T11:59:58Z";

const VALID_EVENTS = [
  { kind: "view", userId: "u1", itemId: "p42", at: AT },
  { kind: "cart", userId: "u1", version: 7, at: AT, items: [{ itemId: "p42", qty: 1 }] },
  { kind: "profile", userId: "u1", version: 3, at: AT, segments: ["vip"], attributes: { locale: "de-DE" } },
  { kind: "session", sessionId: "s-0123456789", userId: "u1", expiresAt: "2026-11-27T12:00:00Z", at: AT },
  { kind: "session_end", sessionId: "s-0123456789", at: AT },
  { kind: "related", itemId: "p42", version: 2, related: [{ itemId: "p7", score: 0.8 }] },
  { kind: "erase", userId: "u2", at: AT },
  { kind: "rules", version: 12, rules: { defaultRegion: "GLOBAL", regions: {}, routes: [] } },
];
const VALID = { type: "edge.sync", timestamp: "2026-11-26T12:00:00Z", data: { events: VALID_EVENTS } };

function mutate(doc: unknown, path: number[], replacement: unknown): unknown {
  if (path.length === 0 || doc === null || typeof doc !== "object") return replacement;
  const [step, ...rest] = path as [number, ...number[]];
  if (Array.isArray(doc)) {
    if (doc.length === 0) return [replacement];
    const copy = [...doc];
    copy[step % doc.length] = mutate(copy[step % doc.length], rest, replacement);
    return copy;
  }
  const keys = Object.keys(doc);
  if (keys.length === 0) return { x: replacement };
  const key = keys[step % keys.length]!;
  return { ...doc, [key]: mutate((doc as Record<string, unknown>)[key], rest, replacement) };
}

const jsonish = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.constantFrom(
    "",
    "\u0000",
    "\ud800",
    "\u202e",
    "x".repeat(70_000),
    "9999-99-99T99:99:99Z",
    "2026-11-26T12:00:00",
    -1,
    1e308,
    Number.MAX_SAFE_INTEGER + 2,
    0.5,
    "__proto__",
  ),
);

function eventsOrPayloadError(input: unknown): void {
  try {
    const events = parseSyncPayload(input);
    assert.ok(Array.isArray(events));
  } catch (error) {
    assert.ok(
      error instanceof SyncPayloadError,
      `unexpected ${error instanceof Error ? error.stack : String(error)}`,
    );
    assert.ok(error.status === 400 || error.status === 413);
  }
}

Deno.test("property: parseSyncPayload never throws anything but SyncPayloadError on arbitrary JSON", () => {
  fc.assert(fc.property(fc.json({ maxDepth: 6 }), (text) => eventsOrPayloadError(JSON.parse(text))), {
    numRuns: 1000,
  });
});

Deno.test("property: parseSyncPayload never throws anything but SyncPayloadError on a mutated valid batch", () => {
  eventsOrPayloadError(VALID);
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.array(fc.nat(20), { maxLength: 6 }), jsonish), { minLength: 1, maxLength: 4 }),
      (mutations) => {
        let doc: unknown = VALID;
        for (const [path, replacement] of mutations) doc = mutate(doc, path, replacement);
        eventsOrPayloadError(doc);
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("property: ingestSync answers arbitrary correctly-signed bytes with an EdgeError and writes nothing", async () => {
  const config = parseConfig({ ORIGIN_URL: "http://127.0.0.1:9" });
  const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: () => NOW });
  const kv = await Deno.openKv(":memory:");
  try {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 400 }),
          fc.json({ maxDepth: 5 }).map((text) => new TextEncoder().encode(text)),
          fc.string({ unit: "binary", maxLength: 200 }).map((text) => new TextEncoder().encode(text)),
        ),
        async (body) => {
          const id = `msg_prop_${++n}`;
          const timestamp = NOW / 1000;
          const headers = new Headers({
            "webhook-id": id,
            "webhook-timestamp": String(timestamp),
            "webhook-signature": await sign(SECRET, { id, timestamp, body }),
          });
          try {
            await ingestSync(kv, { body, headers }, {
              verifier,
              toleranceSec: 300,
              apply: applyOptionsFromConfig(config, NOW),
            });
            // Random bytes that happen to be a valid empty batch are fine.
          } catch (error) {
            assert.ok(
              error instanceof EdgeError,
              `unexpected ${error instanceof Error ? error.stack : String(error)}`,
            );
            assert.ok(error.status >= 400 && error.status < 500, `status ${error.status}`);
          }
        },
      ),
      { numRuns: 500 },
    );
    for await (const entry of kv.list({ prefix: [] })) {
      assert.deepEqual(
        entry.key[0],
        "webhook",
        `only idempotency records may exist, found ${String(entry.key)}`,
      );
    }
  } finally {
    kv.close();
  }
});
