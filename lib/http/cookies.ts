/**
 * @module
 * Cookie parsing and serialisation for the edge's own cookies. Parsing is total: any bytes
 * give a map (possibly empty), never an exception.
 */

const MAX_COOKIES = 100;

/**
 * Parses a `Cookie` header: malformed pairs skipped, the first of a name wins (browsers send the
 * most specific first), values percent-decoded when valid.
 */
export function parseCookies(header: string | null): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  let count = 0;
  for (const part of header.split(";")) {
    if (++count > MAX_COOKIES) break;
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!name || out.has(name)) continue;
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    try {
      value = decodeURIComponent(value);
    } catch {
      // Keep the raw value: it was not percent-encoded.
    }
    out.set(name, value);
  }
  return out;
}

/** Attributes of a cookie the edge sets. */
export interface CookieOptions {
  maxAgeSeconds: number;
  secure: boolean;
  httpOnly?: boolean;
  sameSite?: "Lax" | "Strict" | "None";
  path?: string;
}

/** A `Set-Cookie` value; `value` is percent-encoded here. */
export function serializeCookie(name: string, value: string, options: CookieOptions): string {
  const parts = [
    `${name}=${encodeURIComponent(value)}`,
    `Path=${options.path ?? "/"}`,
    `Max-Age=${Math.floor(options.maxAgeSeconds)}`,
    `SameSite=${options.sameSite ?? "Lax"}`,
  ];
  if (options.httpOnly ?? true) parts.push("HttpOnly");
  if (options.secure) parts.push("Secure");
  return parts.join("; ");
}
