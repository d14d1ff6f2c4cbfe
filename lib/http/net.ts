/**
 * @module
 * Trusted-proxy CIDR lists and client-address resolution from `X-Forwarded-For` (on `ipaddr.js`).
 */
import ipaddr from "ipaddr.js";

/** The connection facts `Deno.serve` gives a handler (absent under tests' `app.request`). */
export type ServeInfo = { remoteAddr?: Deno.Addr | { hostname: string } } | undefined;

/** The peer address of a connection (`0.0.0.0` when unknown, e.g. a Unix socket). */
export function peerOf(info: ServeInfo): string {
  const addr = info?.remoteAddr;
  return addr && "hostname" in addr ? addr.hostname : "0.0.0.0";
}

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

const MEMO_MAX = 4096;

// The same few addresses come back on every request; starting over when full is cheaper than an LRU.
function memo<T>(compute: (key: string) => T): (key: string) => T {
  const seen = new Map<string, T>();
  return (key) => {
    const known = seen.get(key);
    if (known !== undefined || seen.has(key)) return known as T;
    const value = compute(key);
    if (seen.size >= MEMO_MAX) seen.clear();
    seen.set(key, value);
    return value;
  };
}

/** A parsed list of CIDR ranges answering "is this address inside?" quickly. */
export class CidrList {
  #v4: Range[] = [];
  #v6: Range[] = [];
  #has = memo((address) => this.#lookup(address));
  #canonical = memo(canonicalAddress);

  /**
   * Parses CIDR ranges or addresses strictly: shorthand, octal and hex IPv4 (`10.1`, `010.0.0.1`) are
   * refused, since `inet_aton` reads them as another network than the one meant. IPv4-mapped entries
   * become the IPv4 range they cover, as lookups unwrap mapped addresses; throws naming the entry.
   */
  constructor(entries: readonly string[]) {
    for (const raw of entries) {
      const entry = raw.trim();
      if (!entry) continue;
      let range = parseRange(entry);
      const [addr, bits] = range;
      if (addr instanceof ipaddr.IPv6 && addr.isIPv4MappedAddress()) {
        if (bits < 96) {
          throw new Error(
            `"${entry}" is an IPv4-mapped range shorter than /96; write the IPv4 range (such as "10.0.0.0/8") instead`,
          );
        }
        range = [addr.toIPv4Address(), bits - 96];
      }
      (range[0].kind() === "ipv4" ? this.#v4 : this.#v6).push(range);
    }
  }

  get empty(): boolean {
    return this.#v4.length === 0 && this.#v6.length === 0;
  }

  /** {@linkcode canonicalAddress}, memoised. */
  canonical(address: string): string | undefined {
    return this.#canonical(address);
  }

  /** Whether an address is inside a range; IPv4-mapped IPv6 counts as its IPv4 address. */
  has(address: string | undefined): boolean {
    if (!address || this.empty) return false;
    return this.#has(address);
  }

  #lookup(address: string): boolean {
    const addr = parseAddress(address);
    if (!addr) return false;
    const ranges = addr.kind() === "ipv4" ? this.#v4 : this.#v6;
    for (const range of ranges) {
      if (addr.match(range)) return true;
    }
    return false;
  }
}

const OCTET = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const DOTTED_QUAD = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const IPV6_GROUP = /^[0-9a-f]{1,4}$/i;
const PREFIX = /^(?:0|[1-9]\d{0,2})$/;

// Full standard form only: dotted quad, RFC 4291 text without a zone index.
function parseStrict(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (!text.includes(":")) return DOTTED_QUAD.test(text) ? ipaddr.IPv4.parse(text) : undefined;
  const groups = text.split(":");
  const tail = groups.at(-1)!;
  const ipv4Tail = tail.includes(".");
  if (ipv4Tail && !DOTTED_QUAD.test(tail)) return undefined;
  for (let i = 0; i < groups.length - (ipv4Tail ? 1 : 0); i++) {
    // Empty groups are the `::` (ipaddr.js checks there is at most one).
    if (groups[i] !== "" && !IPV6_GROUP.test(groups[i]!)) return undefined;
  }
  return ipaddr.IPv6.isValid(text) ? ipaddr.IPv6.parse(text) : undefined;
}

function parseRange(entry: string): Range {
  const slash = entry.indexOf("/");
  const addr = parseStrict(slash < 0 ? entry : entry.slice(0, slash));
  if (!addr) {
    throw new Error(
      `"${entry}" is not a full IP address or CIDR range (IPv4 needs four decimal parts, such as "10.0.0.0/8")`,
    );
  }
  const max = addr.kind() === "ipv4" ? 32 : 128;
  if (slash < 0) return [addr, max];
  const prefix = entry.slice(slash + 1);
  if (!PREFIX.test(prefix) || Number(prefix) > max) {
    throw new Error(`"${entry}" needs a decimal prefix length from 0 to ${max}`);
  }
  return [addr, Number(prefix)];
}

/**
 * Parses an address, unwrapping brackets and IPv4-mapped IPv6. Only full standard forms count: a
 * shorthand or octal IPv4 in a peer or an `X-Forwarded-For` hop is no address at all.
 */
export function parseAddress(address: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  let text = address.trim();
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  const addr = parseStrict(text);
  if (addr instanceof ipaddr.IPv6 && addr.isIPv4MappedAddress()) return addr.toIPv4Address();
  return addr;
}

/** Whether an address is loopback (IPv4-mapped included); unparsable is not. */
export function isLoopback(address: string): boolean {
  return parseAddress(address)?.range() === "loopback";
}

/** The canonical text form (`::ffff:1.2.3.4` → `1.2.3.4`), or undefined when not an address. */
export function canonicalAddress(address: string): string | undefined {
  return parseAddress(address)?.toString();
}

/**
 * Strips a port some load balancers add to an `X-Forwarded-For` hop. A bare IPv6 address is left
 * alone: without brackets, its last group is not a port.
 */
export function hopAddress(hop: string): string {
  const text = hop.trim();
  const bracketed = /^\[([^\]]*)\](?::\d{1,5})?$/.exec(text);
  if (bracketed) return bracketed[1]!;
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(text);
  return v4 ? v4[1]! : text;
}

/**
 * The client address: behind a trusted peer, the first `X-Forwarded-For` hop from the right that is
 * not itself trusted; otherwise the peer, since an untrusted peer's forwarding headers are ignored.
 */
export function clientAddress(peer: string, forwardedFor: string | null, trusted: CidrList): string {
  if (!forwardedFor || !trusted.has(peer)) return trusted.canonical(peer) ?? peer;
  const hops = forwardedFor.split(",");
  let client = trusted.canonical(peer) ?? peer;
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = trusted.canonical(hopAddress(hops[i]!));
    // A malformed hop ends the trustworthy part of the chain.
    if (!hop) break;
    client = hop;
    if (!trusted.has(hop)) break;
  }
  return client;
}

export interface InternalCallerOptions {
  trusted: CidrList;
}

/**
 * Whether a request comes from this host or a trusted proxy's network itself: the client must be
 * loopback or trusted, and an untrusted peer must not be forwarding for anyone (a proxy on
 * loopback, such as the nginx template, passes on the whole internet).
 */
export function isInternalCaller(peer: string, headers: Headers, options: InternalCallerOptions): boolean {
  const { trusted } = options;
  const forwardedFor = headers.get("x-forwarded-for");
  if (!trusted.has(peer) && (forwardedFor !== null || headers.has("forwarded") || headers.has("x-real-ip"))) {
    return false;
  }
  const client = clientAddress(peer, forwardedFor, trusted);
  return isLoopback(client) || trusted.has(client);
}
