/**
 * Property test of webhook verification: a correctly signed message with any one part tampered
 * (a body byte, the id, the timestamp, a signature character, or signed with another secret) is
 * never accepted, and rejection is always a `WebhookVerificationError`.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { createWebhookVerifier, sign, WebhookVerificationError } from "../../../lib/sync/verify.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER = "whsec_" + btoa("another-secret-of-32-bytes-long!");
const NOW_SEC = 1_764_158_400;

Deno.test("property: no tampered or foreign-signed push is ever accepted", async () => {
  const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: () => NOW_SEC * 1000 });
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 1, maxLength: 200 }),
      fc.stringMatching(/^msg_[A-Za-z0-9]{1,24}$/),
      fc.integer({ min: -300, max: 300 }),
      fc.constantFrom("body", "id", "timestamp", "signature", "secret"),
      fc.nat(),
      async (body, id, skew, part, where) => {
        const timestamp = NOW_SEC + skew;
        let signature = await sign(part === "secret" ? OTHER : SECRET, { id, timestamp, body });
        let sentBody = body;
        let sentId = id;
        let sentTimestamp = String(timestamp);
        if (part === "body") {
          sentBody = body.slice();
          const at = where % body.length;
          sentBody[at] = sentBody[at]! ^ (1 + (where % 255));
        } else if (part === "id") sentId = `${id}x`;
        else if (part === "timestamp") sentTimestamp = String(timestamp + 1 + (where % 5));
        else if (part === "signature") {
          const index = 3 + (where % (signature.length - 4));
          const replacement = signature[index] === "A" ? "B" : "A";
          signature = signature.slice(0, index) + replacement + signature.slice(index + 1);
        }
        const headers = new Headers({
          "webhook-id": sentId,
          "webhook-timestamp": sentTimestamp,
          "webhook-signature": signature,
        });
        await assert.rejects(verifier.verify(sentBody, headers), WebhookVerificationError);
      },
    ),
    { numRuns: 1000 },
  );
});
