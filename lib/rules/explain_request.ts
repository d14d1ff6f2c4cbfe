/**
 * @module
 * The request an explanation is for, described by an operator or else the calling request itself,
 * built into a real `Request` so the facts stage reads it exactly as it reads a visitor's.
 */
import { z } from "zod";
import { canonicalAddress } from "../http/net.ts";

export const EXPLAIN_MAX_BODY_BYTES = 65_536;

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
// deno-lint-ignore no-control-regex
const HEADER_VALUE = /^[^\x00-\x08\x0a-\x1f\x7f]*$/;
const COOKIE_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
// deno-lint-ignore no-control-regex
const COOKIE_VALUE = /^[^;\x00-\x1f\x7f]*$/;

/** The JSON description of a request to explain. */
export const ExplainRequestSchema = z.strictObject({
  path: z.string().max(8192).startsWith("/", 'must start with "/"').optional().meta({
    description: 'The request path, with its query string if any; default "/"',
  }),
  method: z.enum(METHODS).optional().meta({ description: "Default GET" }),
  headers: z.record(
    z.string().regex(HEADER_NAME, "must be a header name"),
    z.string().max(8192).regex(HEADER_VALUE, "must not hold control characters"),
  ).optional().meta({ description: "The request headers; default the calling request's own" }),
  cookies: z.record(
    z.string().regex(COOKIE_NAME, "must be a cookie name"),
    z.string().max(4096).regex(COOKIE_VALUE, 'must not hold ";" or control characters'),
  ).optional().meta({ description: "Cookies; they replace any Cookie header" }),
  peer: z.string().max(64).refine((value) => canonicalAddress(value) !== undefined, "must be an IP address")
    .optional().meta({
      description: "The address the request arrives from (a proxy's, to explain a trusted hop); " +
        "default the calling connection's",
    }),
});

export type ExplainRequest = z.output<typeof ExplainRequestSchema>;

/**
 * A description from query parameters (`header` as `Name: value`, `cookie` as `name=value`), as JSON
 * would give it: validate it with {@linkcode ExplainRequestSchema}.
 *
 * @param params the query parameters
 */
export function descriptionFromQuery(params: URLSearchParams): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const path = params.get("path");
  if (path !== null) out.path = path;
  const method = params.get("method");
  if (method !== null) out.method = method.toUpperCase();
  const peer = params.get("peer");
  if (peer !== null) out.peer = peer;
  const headers = splitAll(params.getAll("header"), ":");
  if (headers) out.headers = headers;
  const cookies = splitAll(params.getAll("cookie"), "=");
  if (cookies) out.cookies = cookies;
  return out;
}

/** The calling request, for a description's defaults. */
export interface CallingRequest {
  /** Scheme and host are kept. */
  url: string;
  /** The described request's when the description names none. */
  headers: Headers;
  peer: string;
}

/**
 * The request a description stands for; unset parts are the calling request's, but never its
 * `Authorization`, which carried the operator's token.
 *
 * @param description the validated description
 * @param calling the calling request
 */
export function describedRequest(
  description: ExplainRequest,
  calling: CallingRequest,
): { request: Request; peer: string } {
  const base = new URL(calling.url);
  const headers = new Headers(description.headers ?? calling.headers);
  if (!description.headers) {
    headers.delete("authorization");
    headers.delete("content-length");
  }
  if (description.cookies) {
    const pairs = Object.entries(description.cookies).map(([name, value]) => `${name}=${value}`);
    if (pairs.length) headers.set("cookie", pairs.join("; "));
    else headers.delete("cookie");
  }
  const url = `${base.protocol}//${base.host}${description.path ?? "/"}`;
  return {
    request: new Request(url, { method: description.method ?? "GET", headers }),
    peer: description.peer === undefined ? calling.peer : canonicalAddress(description.peer)!,
  };
}

function splitAll(entries: string[], separator: string): Record<string, string> | undefined {
  if (entries.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const entry of entries) {
    const at = entry.indexOf(separator);
    const name = (at < 0 ? entry : entry.slice(0, at)).trim();
    out[name] = at < 0 ? "" : entry.slice(at + 1).trim();
  }
  return out;
}
