/**
 * @module
 * Standard Webhooks v1 signatures (HMAC-SHA256, `whsec_…` secrets, rotation), compared in constant time.
 */
import { EdgeError } from "../http/errors.ts";
import { constantTimeEqual } from "../http/secure.ts";
import { createHmac } from "node:crypto";

export type WebhookRejection = "missing_signature_headers" | "invalid_timestamp" | "invalid_signature";

/** A webhook failed verification: 401 with a code and nothing about which secret or why. */
export class WebhookVerificationError extends EdgeError {
  declare readonly code: WebhookRejection;

  constructor(code: WebhookRejection) {
    super(
      401,
      code,
      code === "missing_signature_headers"
        ? "Missing webhook-id, webhook-timestamp or webhook-signature header"
        : code === "invalid_timestamp"
        ? "The webhook timestamp is invalid or outside the tolerance"
        : "No valid signature",
    );
    this.name = "WebhookVerificationError";
  }
}

/** The verified identity of a webhook: `webhook-id` (the idempotency key) and `webhook-timestamp` (epoch s). */
export interface VerifiedWebhook {
  id: string;
  timestamp: number;
}

export interface WebhookVerifierOptions {
  toleranceSec: number;
  now: () => number;
}

export interface WebhookVerifier {
  /** @throws {WebhookVerificationError} for missing headers, a timestamp out of tolerance, or no matching signature */
  verify(body: Uint8Array, headers: Headers): Promise<VerifiedWebhook>;
}

const SECRET_PREFIX = "whsec_";
const encoder = new TextEncoder();

/** Decodes a `whsec_…` secret into its key bytes. @throws {TypeError} when it is malformed */
export function decodeSecret(secret: string): Uint8Array<ArrayBuffer> {
  if (!secret.startsWith(SECRET_PREFIX)) throw new TypeError('A webhook secret must start with "whsec_"');
  return base64Decode(secret.slice(SECRET_PREFIX.length));
}

const MIN_SECRET_BYTES = 16;

/** What is wrong with a `whsec_…` secret, without echoing it; undefined when nothing. */
export function webhookSecretProblem(secret: string): string | undefined {
  if (!secret.startsWith(SECRET_PREFIX)) return `it must start with "${SECRET_PREFIX}"`;
  const text = secret.slice(SECRET_PREFIX.length);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    return `the part after "${SECRET_PREFIX}" must be base64 (A–Z, a–z, 0–9, +, /, padded with = to a multiple of 4)`;
  }
  const bytes = (text.length / 4) * 3 - (text.match(/=+$/)?.[0].length ?? 0);
  if (bytes < MIN_SECRET_BYTES) {
    return `it must carry at least ${MIN_SECRET_BYTES} bytes of key, got ${bytes}`;
  }
  return undefined;
}

/** Makes a fresh signing secret from 24 cryptographically random bytes. */
export function generateWebhookSecret(randomBytes: (n: number) => Uint8Array): string {
  return `${SECRET_PREFIX}${base64Encode(randomBytes(24))}`;
}

/**
 * The checks that need no body and no key (headers present, timestamp within tolerance), run before
 * the body is read so that an unsigned or late push is refused unbuffered (401).
 */
export function checkWebhookHeaders(
  headers: Headers,
  options: WebhookVerifierOptions,
): { id: string; timestamp: number; timestampText: string; signatureHeader: string } {
  const id = headers.get("webhook-id");
  const timestampText = headers.get("webhook-timestamp");
  const signatureHeader = headers.get("webhook-signature");
  if (!id || !timestampText || !signatureHeader) {
    throw new WebhookVerificationError("missing_signature_headers");
  }
  if (!/^\d{1,12}$/.test(timestampText)) throw new WebhookVerificationError("invalid_timestamp");
  const timestamp = Number(timestampText);
  const nowSec = Math.floor(options.now() / 1000);
  if (Math.abs(nowSec - timestamp) > options.toleranceSec) {
    throw new WebhookVerificationError("invalid_timestamp");
  }
  return { id, timestamp, timestampText, signatureHeader };
}

/**
 * Builds a verifier for one or more secrets; the HMAC keys are imported once here, not per request.
 * @throws {TypeError} when a secret is malformed or none is given
 */
export async function createWebhookVerifier(
  secrets: readonly string[],
  options: WebhookVerifierOptions,
): Promise<WebhookVerifier> {
  if (secrets.length === 0) throw new TypeError("At least one webhook secret is required");
  const cryptoKeys = await Promise.all(secrets.map((secret) => importKey(decodeSecret(secret))));
  return {
    async verify(body, headers) {
      const { id, timestamp, timestampText, signatureHeader } = checkWebhookHeaders(headers, options);
      const candidates = signatureHeader.split(" ")
        .filter((part) => part.startsWith("v1,"))
        .map((part) => part.slice(3));
      if (candidates.length === 0) throw new WebhookVerificationError("invalid_signature");
      const content = signedContent(id, timestampText, body);
      let valid = false;
      for (const key of cryptoKeys) {
        const expected = base64Encode(new Uint8Array(await crypto.subtle.sign("HMAC", key, content)));
        // Every candidate is compared, matched or not, so timing says nothing about which matched.
        for (const candidate of candidates) valid = constantTimeEqual(candidate, expected) || valid;
      }
      if (!valid) throw new WebhookVerificationError("invalid_signature");
      return { id, timestamp };
    },
  };
}

/** What a webhook signature covers: id, timestamp (epoch s), and the exact body (text is sent as UTF-8). */
export interface SignedMessage {
  id: string;
  timestamp: number;
  body: Uint8Array | string;
}

/** Signs a webhook (the publisher's side): the `webhook-signature` value, `v1,<base64>`. */
export function sign(secret: string, message: SignedMessage): Promise<string> {
  try {
    return Promise.resolve(createSigner(secret)(message));
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * A signer for one secret, for senders that sign many messages: the key is decoded once and each
 * message is signed in one synchronous HMAC pass, without copying the body.
 * @throws {TypeError} when the secret is malformed
 */
export function createSigner(secret: string): (message: SignedMessage) => string {
  const key = decodeSecret(secret);
  // As Web Crypto does (and so `sign` always did): an empty HMAC key signs nothing.
  if (key.byteLength === 0) throw new TypeError('A webhook secret must carry a key after "whsec_"');
  return ({ id, timestamp, body }) =>
    `v1,${createHmac("sha256", key).update(`${id}.${timestamp}.`).update(body).digest("base64")}`;
}

function importKey(raw: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
}

function signedContent(id: string, timestamp: string, body: Uint8Array): Uint8Array<ArrayBuffer> {
  const prefix = encoder.encode(`${id}.${timestamp}.`);
  const out = new Uint8Array(prefix.byteLength + body.byteLength);
  out.set(prefix, 0);
  out.set(body, prefix.byteLength);
  return out;
}

function base64Encode(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function base64Decode(text: string): Uint8Array<ArrayBuffer> {
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    throw new TypeError("A webhook secret must be base64 after its prefix");
  }
  return Uint8Array.from(binary, (char) => char.charCodeAt(0));
}
