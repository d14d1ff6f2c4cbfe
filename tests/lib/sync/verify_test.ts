import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import { createWebhookVerifier, sign, WebhookVerificationError } from "../../../lib/sync/verify.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER = "whsec_" + btoa("another-secret-of-32-bytes-long!");
const ID = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TS = 1614265330;
const BODY = '{"test": 2432232314}';
const bytes = (text: string) => new TextEncoder().encode(text);

function headers(id: string | null, ts: string | null, signature: string | null): Headers {
  const h = new Headers();
  if (id !== null) h.set("webhook-id", id);
  if (ts !== null) h.set("webhook-timestamp", ts);
  if (signature !== null) h.set("webhook-signature", signature);
  return h;
}

async function rejection(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof WebhookVerificationError);
    assert.equal(error.status, 401);
    return error.code;
  }
  assert.fail("expected a rejection");
}

Deno.test("sign reproduces the Standard Webhooks spec vector", async () => {
  assert.equal(
    await sign(SECRET, { id: ID, timestamp: TS, body: BODY }),
    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
  );
});

Deno.test("verify accepts the spec vector within the tolerance", async () => {
  const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: () => (TS + 299) * 1000 });
  const result = await verifier.verify(
    bytes(BODY),
    headers(ID, String(TS), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
  );
  assert.deepEqual(result, { id: ID, timestamp: TS });
});

Deno.test("verify accepts what the standardwebhooks library signs", async () => {
  const now = Date.UTC(2026, 10, 26, 12, 0, 0);
  const body = JSON.stringify({ type: "edge.sync", data: { events: [] }, note: "ünïcode ✓" });
  const signature = new Webhook(SECRET).sign("msg_lib", new Date(now), body);
  const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: () => now });
  const result = await verifier.verify(bytes(body), headers("msg_lib", String(now / 1000), signature));
  assert.equal(result.id, "msg_lib");
});

Deno.test("the standardwebhooks library verifies what sign produces", async () => {
  const ts = Math.floor(Date.now() / 1000);
  const body = JSON.stringify({ hello: "wörld" });
  const signature = await sign(SECRET, { id: "msg_ours", timestamp: ts, body: bytes(body) });
  const payload = new Webhook(SECRET).verify(body, {
    "webhook-id": "msg_ours",
    "webhook-timestamp": String(ts),
    "webhook-signature": signature,
  });
  assert.deepEqual(payload, { hello: "wörld" });
});

Deno.test("verify rejects a signature made with the wrong secret", async () => {
  const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: () => TS * 1000 });
  const signature = await sign(OTHER, { id: ID, timestamp: TS, body: BODY });
  assert.equal(
    await rejection(verifier.verify(bytes(BODY), headers(ID, String(TS), signature))),
    "invalid_signature",
  );
});

Deno.test("verify accepts any configured secret during rotation and any listed signature", async () => {
  const verifier = await createWebhookVerifier([OTHER, SECRET], { toleranceSec: 300, now: () => TS * 1000 });
  const oldSig = await sign(SECRET, { id: ID, timestamp: TS, body: BODY });
  const newSig = await sign(OTHER, { id: ID, timestamp: TS, body: BODY });
  for (const signature of [oldSig, newSig, `v1,bm90LWEtc2lnbmF0dXJl v2,xyz ${oldSig}`]) {
    assert.deepEqual(
      await verifier.verify(bytes(BODY), headers(ID, String(TS), signature)),
      { id: ID, timestamp: TS },
      signature,
    );
  }
});

Deno.test("verify rejects a tampered body and a tampered id", async () => {
  const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: () => TS * 1000 });
  const signature = await sign(SECRET, { id: ID, timestamp: TS, body: BODY });
  assert.equal(
    await rejection(verifier.verify(bytes('{"test": 2432232315}'), headers(ID, String(TS), signature))),
    "invalid_signature",
  );
  assert.equal(
    await rejection(verifier.verify(bytes(BODY), headers("msg_other", String(TS), signature))),
    "invalid_signature",
  );
});

Deno.test("verify rejects stale, future and malformed timestamps", async () => {
  const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: () => TS * 1000 });
  for (const ts of [TS - 301, TS + 301]) {
    const signature = await sign(SECRET, { id: ID, timestamp: ts, body: BODY });
    assert.equal(
      await rejection(verifier.verify(bytes(BODY), headers(ID, String(ts), signature))),
      "invalid_timestamp",
    );
  }
  const signature = await sign(SECRET, { id: ID, timestamp: TS, body: BODY });
  assert.equal(
    await rejection(verifier.verify(bytes(BODY), headers(ID, "16e8", signature))),
    "invalid_timestamp",
  );
});

Deno.test("verify rejects missing headers and signatures without the v1 prefix", async () => {
  const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: () => TS * 1000 });
  const signature = await sign(SECRET, { id: ID, timestamp: TS, body: BODY });
  assert.equal(
    await rejection(verifier.verify(bytes(BODY), headers(null, String(TS), signature))),
    "missing_signature_headers",
  );
  assert.equal(
    await rejection(verifier.verify(bytes(BODY), headers(ID, null, signature))),
    "missing_signature_headers",
  );
  assert.equal(
    await rejection(verifier.verify(bytes(BODY), headers(ID, String(TS), null))),
    "missing_signature_headers",
  );
  assert.equal(
    await rejection(verifier.verify(bytes(BODY), headers(ID, String(TS), signature.slice(3)))),
    "invalid_signature",
  );
});

Deno.test("createWebhookVerifier refuses malformed secrets", async () => {
  await assert.rejects(
    createWebhookVerifier(["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], { toleranceSec: 1, now: Date.now }),
    TypeError,
  );
  await assert.rejects(createWebhookVerifier([], { toleranceSec: 1, now: Date.now }), TypeError);
});
