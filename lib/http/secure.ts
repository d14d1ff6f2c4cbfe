/** @module Constant-time comparison and bearer-token checks, shared by every authenticated endpoint. */
import { createHash, timingSafeEqual } from "node:crypto";

/** Compares in constant time: hashing both sides first leaks neither where they differ nor the length. */
export function constantTimeEqual(a: string, b: string): boolean {
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb);
}

/** Checks `Authorization: Bearer <token>` in constant time; a malformed header goes the same path. */
export function bearerTokenMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? "");
  return constantTimeEqual(match?.[1] ?? "", token) && match !== null;
}
