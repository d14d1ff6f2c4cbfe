/**
 * @module
 * Small security primitives shared by several stages: constant-time string comparison and bearer
 * token checks.
 */
import { createHash, timingSafeEqual } from "node:crypto";

/**
 * Compares two strings in time that does not depend on where they differ. Both sides are
 * hashed first, so neither the position of a difference nor the secret's length leaks.
 *
 * @param a first string (e.g. a client-supplied value)
 * @param b second string (e.g. the configured secret)
 * @returns true when the strings are equal
 */
export function constantTimeEqual(a: string, b: string): boolean {
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb);
}

/**
 * Checks an `Authorization: Bearer <token>` header against the configured token in constant
 * time. A missing or malformed header takes the same path as a wrong token.
 *
 * @param header the `Authorization` header value, if any
 * @param token the configured token
 * @returns true when the header carries exactly the token
 */
export function bearerTokenMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? "");
  return constantTimeEqual(match?.[1] ?? "", token) && match !== null;
}
