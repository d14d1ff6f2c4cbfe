/**
 * @module
 * IP address helpers: trusted-proxy CIDR lists and client-address resolution from a
 * `X-Forwarded-For` chain, built on `ipaddr.js`.
 */
import ipaddr from "ipaddr.js";

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** Entries a per-list memo keeps before it starts over. */
const MEMO_MAX = 4096;

/**
 * Remembers a pure function's answers for recently seen strings: the same few peer and
 * client addresses come back on every request, and parsing them showed up in profiles.
 * Bounded by starting over when full (cheaper than LRU bookkeeping on every hit).
 */
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

/** A parsed list of CIDR ranges that can answer "is this address inside?" quickly. */
export class CidrList {
  #v4: Range[] = [];
  #v6: Range[] = [];
  #has = memo((address) => this.#lookup(address));
  #canonical = memo(canonicalAddress);

  /**
   * Parses a list of CIDR ranges or single addresses, strictly: IPv4 only as four decimal parts
   * without leading zeros (`10.0.0.0/8`), IPv6 in its standard text form, and a decimal prefix
   * length within the family's range. Shorthand (`10.0.0/8`, `10.1`), octal (`010.0.0.1`) and
   * hex (`0x0a.0.0.1`) forms are refused: the old `inet_aton` reading gives them a different
   * network than the one meant (`192.168.1/24` is `192.168.0.0/24` there). An IPv4-mapped IPv6
   * entry (`::ffff:10.0.0.0/104`, `::ffff:192.0.2.1`) is kept as the IPv4 range it covers
   * (`10.0.0.0/8`), since lookups unwrap mapped addresses to IPv4.
   *
   * @param entries CIDR strings such as `10.0.0.0/8`, `::1/128` or plain addresses
   * @throws {Error} naming the entry when it is not a full address or range, has a prefix length
   *   out of range, or is an IPv4-mapped range shorter than `/96` (it would cover more than IPv4
   *   addresses)
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

  /** Whether the list has no ranges. */
  get empty(): boolean {
    return this.#v4.length === 0 && this.#v6.length === 0;
  }

  /**
   * {@linkcode canonicalAddress}, remembered for recently seen addresses (client addresses are
   * resolved on every request against this list).
   *
   * @param address textual address
   * @returns canonical form, or undefined when it is not an address
   */
  canonical(address: string): string | undefined {
    return this.#canonical(address);
  }

  /**
   * Tells whether an address lies inside one of the ranges. IPv4-mapped IPv6 addresses
   * (`::ffff:10.0.0.1`) are treated as the IPv4 address they carry.
   *
   * @param address textual IPv4 or IPv6 address; anything unparsable is "not inside"
   * @returns true when the address is inside a range
   */
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

/** One IPv4 part: decimal 0–255 without leading zeros. */
const OCTET = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
/** A full dotted-quad IPv4 address, and nothing `inet_aton` alone would read as one. */
const DOTTED_QUAD = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
/** One IPv6 group (1–4 hex digits), so no group can be read as a larger number. */
const IPV6_GROUP = /^[0-9a-f]{1,4}$/i;
/** A decimal prefix length without leading zeros or sign. */
const PREFIX = /^(?:0|[1-9]\d{0,2})$/;

/**
 * Parses one address in full standard form only: a dotted quad for IPv4, the RFC 4291 text form
 * for IPv6 (an embedded IPv4 tail a dotted quad too; no zone index). Brackets and IPv4-mapped
 * IPv6 are not unwrapped here.
 *
 * @param text the address
 * @returns the parsed address, or undefined when it is not in full standard form
 */
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

/**
 * Parses one entry of an address list: a full address, or one with a `/prefix` in range.
 *
 * @param entry the trimmed entry
 * @returns the address and prefix length
 * @throws {Error} naming the entry
 */
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
 * Parses an address, unwrapping IPv4-mapped IPv6 and brackets; returns undefined when invalid.
 * Only full standard forms count (see {@linkcode CidrList}): a shorthand, octal or hex IPv4
 * spelling (`10.1`, `010.0.0.1`) in a peer or an `X-Forwarded-For` hop is no address at all.
 *
 * @param address textual address, possibly `[v6]`
 * @returns the parsed address or undefined
 */
export function parseAddress(address: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  let text = address.trim();
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  const addr = parseStrict(text);
  if (addr instanceof ipaddr.IPv6 && addr.isIPv4MappedAddress()) return addr.toIPv4Address();
  return addr;
}

/**
 * Whether an address is a loopback address (`127.0.0.0/8`, `::1`, or IPv4-mapped loopback).
 *
 * @param address textual address
 * @returns true for loopback; false for anything else, unparsable included
 */
export function isLoopback(address: string): boolean {
  return parseAddress(address)?.range() === "loopback";
}

/**
 * Normalises an address to its canonical text form, or undefined when it is not an address.
 *
 * @param address textual address
 * @returns canonical form (`::ffff:1.2.3.4` becomes `1.2.3.4`)
 */
export function canonicalAddress(address: string): string | undefined {
  return parseAddress(address)?.toString();
}

/**
 * Strips a port from one `X-Forwarded-For` hop, as some load balancers send it:
 * `203.0.113.7:51234` → `203.0.113.7`, `[2001:db8::7]:443` and `[2001:db8::7]` → `2001:db8::7`.
 * A bare IPv6 address (`2001:db8::7`) is left alone: without brackets, its last group is not a port.
 *
 * @param hop one hop of the header, possibly with spaces around it
 * @returns the address part (unchanged when there is no port to strip)
 * @throws never
 * @example
 * ```ts
 * hopAddress(" 203.0.113.7:51234"); // "203.0.113.7"
 * ```
 */
export function hopAddress(hop: string): string {
  const text = hop.trim();
  const bracketed = /^\[([^\]]*)\](?::\d{1,5})?$/.exec(text);
  if (bracketed) return bracketed[1]!;
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(text);
  return v4 ? v4[1]! : text;
}

/**
 * Finds the client address. When the peer is a trusted proxy, the `X-Forwarded-For` chain is
 * walked from the right and the first address that is not itself a trusted proxy is the client;
 * otherwise the peer is the client and any forwarded header is ignored. A hop may carry a port
 * (see {@linkcode hopAddress}).
 *
 * @param peer the connection's remote address
 * @param forwardedFor the inbound `X-Forwarded-For` value, if any
 * @param trusted the trusted proxy ranges
 * @returns the client address in canonical form, or the peer text when nothing parses
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

/** Options for {@linkcode isInternalCaller}. */
export interface InternalCallerOptions {
  /** `TRUSTED_PROXIES`. */
  trusted: CidrList;
}

/**
 * Whether a request comes from this host or from the trusted proxies' networks themselves, not
 * from a client on whose behalf something forwards it: the resolved client (see
 * {@linkcode clientAddress}) must be loopback or in `TRUSTED_PROXIES`, and a peer that is not
 * trusted must not be forwarding for anyone (a proxy on loopback, such as the nginx template,
 * passes on the whole internet).
 *
 * @param peer the connection's remote address
 * @param headers the request headers (forwarding headers are read)
 * @param options the trusted proxy ranges
 * @returns true for an operator's own caller (a scraper on the host or in a trusted range)
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
