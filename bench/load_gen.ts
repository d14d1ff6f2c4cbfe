/**
 * @module
 * A small closed-loop HTTP/1.1 load generator on raw Deno TCP connections, with microsecond
 * latencies: the fallback when `wrk` is not installed (autocannon runs on Deno, but records
 * whole milliseconds, too coarse for sub-millisecond comparisons). Loopback only.
 *
 * As a program it prints one JSON {@linkcode LoadResult} on stdout:
 * `deno run --allow-net bench/load_gen.ts --url http://127.0.0.1:8000/path -c 32 -d 10 -H "cookie: a=b"`
 * (`--requests N` instead of `-d` stops after N requests; `--distinct` gives every request its own
 * anonymous-id cookie and `X-Forwarded-For` address, numbered from `--distinct-from N` (default 0)
 * so that consecutive runs need not repeat visitors; `--distinct-sessions PREFIX` gives request
 * `i` the session cookie `sid=PREFIX<i>`).
 */
import { parseArgs } from "node:util";

/** Outcome of one load run. */
export interface LoadResult {
  generator: string;
  /** Completed requests (any status). */
  requests: number;
  /** Wall time from first request to last response, in seconds. */
  seconds: number;
  rps: number;
  /** Latency percentiles, in milliseconds. */
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Responses with a status outside 2xx/3xx. */
  non2xx: number;
  /** Connect, read, write, parse errors and timeouts. */
  socketErrors: number;
}

/** Options for {@linkcode runLoad}. */
export interface RunLoadOptions {
  /** Concurrent keep-alive connections. */
  connections: number;
  /** Stop starting requests after this many seconds. */
  durationSec?: number;
  /** Stop after this many requests in total (whichever comes first). */
  maxRequests?: number;
  /** Extra request headers, sent with every request. */
  headers?: Record<string, string>;
  /** Builds per-request extra header lines (each ending in CRLF) for request number `i`. */
  perRequestHeaders?: (i: number) => string;
  /** Abort any request that takes longer than this, in ms (default 10 000). */
  timeoutMs?: number;
}

const CRLF_CRLF = [13, 10, 13, 10];
const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/**
 * Drives `url` with a closed loop of keep-alive connections and measures every request.
 *
 * @param url an `http://127.0.0.1…` URL
 * @param options concurrency, bounds and headers
 * @returns throughput, latency percentiles and error counts
 */
export async function runLoad(url: string, options: RunLoadOptions): Promise<LoadResult> {
  const target = new URL(url);
  if (target.protocol !== "http:" || !["127.0.0.1", "localhost", "[::1]"].includes(target.hostname)) {
    throw new Error(`Load target must be http on loopback, got "${url}"`);
  }
  const port = Number(target.port || 80);
  const head = `GET ${target.pathname}${target.search} HTTP/1.1\r\nhost: ${target.host}\r\n` +
    Object.entries(options.headers ?? {}).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  const fixed = encoder.encode(head + "\r\n");
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxRequests = options.maxRequests ?? Number.POSITIVE_INFINITY;
  const latencies: number[] = [];
  let started = 0;
  let non2xx = 0;
  let socketErrors = 0;
  const startedAt = performance.now();
  const stopAt = options.durationSec === undefined
    ? Number.POSITIVE_INFINITY
    : startedAt + options.durationSec * 1000;
  let lastDone = startedAt;
  const open = new Set<Deno.TcpConn>();
  // Bounded: whatever happens, every connection is closed shortly after the run should have ended.
  const hardStop = Number.isFinite(stopAt) ? stopAt - startedAt + timeoutMs : undefined;
  const watchdog = hardStop === undefined ? undefined : setTimeout(() => {
    for (const conn of open) conn.close();
  }, hardStop);

  const worker = async () => {
    let conn: Deno.TcpConn | undefined;
    const buf = new Uint8Array(256 * 1024);
    while (started < maxRequests && performance.now() < stopAt) {
      const i = started++;
      const request = options.perRequestHeaders
        ? encoder.encode(head + options.perRequestHeaders(i) + "\r\n")
        : fixed;
      const t0 = performance.now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        if (!conn) {
          conn = await Deno.connect({ hostname: target.hostname.replace(/^\[|\]$/g, ""), port });
          conn.setNoDelay(true);
          open.add(conn);
        }
        const current = conn;
        timer = setTimeout(() => current.close(), timeoutMs);
        await writeAll(conn, request);
        const { status, keepAlive } = await readResponse(conn, buf);
        clearTimeout(timer);
        const t1 = performance.now();
        latencies.push(t1 - t0);
        lastDone = t1;
        if (status < 200 || status >= 400) non2xx++;
        if (!keepAlive) {
          open.delete(conn);
          conn.close();
          conn = undefined;
        }
      } catch {
        clearTimeout(timer);
        socketErrors++;
        if (conn) {
          open.delete(conn);
          try {
            conn.close();
          } catch {
            // Already closed (by the timeout).
          }
          conn = undefined;
        }
      }
    }
    if (conn) {
      open.delete(conn);
      conn.close();
    }
  };
  await Promise.all(Array.from({ length: options.connections }, worker));
  clearTimeout(watchdog);
  const seconds = (lastDone - startedAt) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    generator: "deno-tcp",
    requests: latencies.length,
    seconds: round(seconds, 3),
    rps: round(seconds > 0 ? latencies.length / seconds : 0, 1),
    p50Ms: round(percentile(latencies, 0.5), 3),
    p95Ms: round(percentile(latencies, 0.95), 3),
    p99Ms: round(percentile(latencies, 0.99), 3),
    maxMs: round(latencies.at(-1) ?? 0, 3),
    non2xx,
    socketErrors,
  };
}

/**
 * The value at quantile `q` of sorted samples (nearest rank).
 *
 * @param sorted ascending samples
 * @param q quantile in [0, 1]
 * @returns the sample, or 0 when there are none
 */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index]!;
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

async function writeAll(conn: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/** Reads one whole response (Content-Length, chunked, or no body); returns its status. */
async function readResponse(
  conn: Deno.TcpConn,
  buf: Uint8Array,
): Promise<{ status: number; keepAlive: boolean }> {
  let len = 0;
  let headerEnd = -1;
  let status = 0;
  let keepAlive = true;
  let contentLength = -1;
  let chunked = false;
  while (true) {
    if (len === buf.length) throw new Error("Response larger than the read buffer");
    const n = await conn.read(buf.subarray(len));
    if (n === null) throw new Error("Connection closed mid-response");
    len += n;
    if (headerEnd < 0) {
      headerEnd = indexOf(buf, len, CRLF_CRLF, 0);
      if (headerEnd < 0) continue;
      const headText = latin1.decode(buf.subarray(0, headerEnd)).toLowerCase();
      status = Number(headText.slice(9, 12));
      const cl = /\r\ncontent-length:\s*(\d+)/.exec(headText);
      contentLength = cl ? Number(cl[1]) : -1;
      chunked = /\r\ntransfer-encoding:[^\r]*chunked/.test(headText);
      keepAlive = !/\r\nconnection:\s*close/.test(headText) && headText.startsWith("http/1.1");
      if (status === 204 || status === 304 || (status >= 100 && status < 200)) contentLength = 0;
      if (!chunked && contentLength < 0) contentLength = 0;
    }
    const bodyStart = headerEnd + 4;
    if (chunked) {
      if (chunkedComplete(buf, bodyStart, len)) return { status, keepAlive };
    } else if (len - bodyStart >= contentLength) {
      return { status, keepAlive };
    }
  }
}

function chunkedComplete(buf: Uint8Array, start: number, len: number): boolean {
  let pos = start;
  while (pos < len) {
    const lineEnd = indexOf(buf, len, [13, 10], pos);
    if (lineEnd < 0) return false;
    const size = parseInt(latin1.decode(buf.subarray(pos, lineEnd)).split(";")[0]!, 16);
    if (Number.isNaN(size)) throw new Error("Bad chunk size");
    if (size === 0) return indexOf(buf, len, CRLF_CRLF, lineEnd) === lineEnd;
    pos = lineEnd + 2 + size + 2;
  }
  return false;
}

function indexOf(buf: Uint8Array, len: number, needle: readonly number[], from: number): number {
  outer: for (let i = from; i <= len - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (buf[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/**
 * Header lines that make request `i` come from a distinct anonymous visitor: its own `ep_uid`
 * cookie and a distinct German address in a trusted `X-Forwarded-For`.
 *
 * @param i the request number
 * @returns header lines, each ending in CRLF
 */
export function distinctVisitorHeaders(i: number): string {
  const uid = `bench${i.toString(36).padStart(12, "0")}`;
  // 85.214.0.0/16 and 5.9.0.0/16 are German address blocks in the bundled database.
  const block = i >> 16 === 0 ? "85.214" : "5.9";
  const ip = `${block}.${(i >> 8) & 255}.${i & 255}`;
  return `cookie: ep_uid=${uid}\r\nx-forwarded-for: ${ip}\r\n`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      url: { type: "string" },
      connections: { type: "string", short: "c", default: "32" },
      duration: { type: "string", short: "d" },
      requests: { type: "string", short: "n" },
      header: { type: "string", short: "H", multiple: true },
      distinct: { type: "boolean", default: false },
      "distinct-from": { type: "string", default: "0" },
      "distinct-sessions": { type: "string" },
    },
  });
  if (!values.url) {
    console.error(
      "Usage: load_gen.ts --url URL [-c N] [-d SEC | -n REQUESTS] [-H 'name: value']... [--distinct | --distinct-sessions P]",
    );
    Deno.exit(2);
  }
  const headers: Record<string, string> = {};
  for (const line of values.header ?? []) {
    const at = line.indexOf(":");
    if (at > 0) headers[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim();
  }
  const sessionPrefix = values["distinct-sessions"];
  if (values.distinct || sessionPrefix !== undefined) {
    delete headers["cookie"];
  }
  if (values.distinct) {
    delete headers["x-forwarded-for"];
  }
  if (values.duration === undefined && values.requests === undefined) {
    console.error("One of --duration or --requests is required");
    Deno.exit(2);
  }
  const result = await runLoad(values.url, {
    connections: Number(values.connections),
    durationSec: values.duration === undefined ? undefined : Number(values.duration),
    maxRequests: values.requests === undefined ? undefined : Number(values.requests),
    headers,
    perRequestHeaders: values.distinct
      ? (i) => distinctVisitorHeaders(Number(values["distinct-from"]) + i)
      : sessionPrefix !== undefined
      ? (i) => `cookie: sid=${sessionPrefix}${i}\r\n`
      : undefined,
  });
  console.log(JSON.stringify(result));
}
