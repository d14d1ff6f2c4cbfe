/**
 * @module
 * The bundled IP → country database: `@ip-location-db/geo-whois-asn-country-mmdb` (IPv4 and
 * IPv6, CC0 package; the underlying RIR data is CC BY 4.0 by the NRO) read with `mmdb-lib`.
 * It gives a country on hosts without a CDN geo header, Deno Deploy included.
 */
import { Buffer } from "node:buffer";
import { createRequire } from "node:module";
import ipaddr from "ipaddr.js";
import { Reader, type Response } from "mmdb-lib";
// Importing the package's manifest makes the npm package part of the module graph, so
// `deno run`/`deno test` fetch it (and the .mmdb beside it) without a separate `deno install`.
import dbPackage from "@ip-location-db/geo-whois-asn-country-mmdb/package.json" with { type: "json" };

/** The module specifier of the combined IPv4 + IPv6 database file. */
export const IP_GEO_DB_SPECIFIER = "@ip-location-db/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb";

/** The version of the database package in use (its publication date is in the version). */
export const IP_GEO_DB_VERSION: string = dbPackage.version;

/** Facts about a loaded database, for `/health` and logs. */
export interface IpGeoDbInfo {
  /** The database's own type name from its metadata. */
  databaseType: string;
  /** 6 for a tree that holds both IPv4 and IPv6. */
  ipVersion: number;
  /** When the database was built. */
  buildDate: Date;
  /** Search-tree nodes, a rough measure of the database's detail. */
  nodeCount: number;
  /** Size of the database in memory. */
  byteLength: number;
}

const COUNTRY_CODE = /^[A-Z]{2}$/;
// Longest textual IPv6 with an embedded IPv4 and a zone is well under this.
const MAX_ADDRESS_LENGTH = 64;

/** An IP → country lookup over an in-memory MaxMind DB. Create once, share read-only. */
export class IpGeoDb {
  #reader: Reader<Response>;
  #info: IpGeoDbInfo;

  /**
   * Opens a database from its bytes (no copy is made; do not modify them afterwards).
   *
   * @param bytes the `.mmdb` file contents
   * @throws {Error} when the bytes are not a MaxMind DB
   * @example
   * ```ts
   * const db = new IpGeoDb(await Deno.readFile(ipGeoDbPath()));
   * ```
   */
  constructor(bytes: Uint8Array) {
    const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    try {
      // The decoder cache turns the ~250 distinct country records into shared objects.
      this.#reader = new Reader(buffer, { cache: new Map() });
    } catch (err) {
      throw new Error(`Cannot open IP geo database: ${err instanceof Error ? err.message : String(err)}`);
    }
    const meta = this.#reader.metadata;
    this.#info = {
      databaseType: meta.databaseType,
      ipVersion: meta.ipVersion,
      buildDate: new Date(meta.buildEpoch),
      nodeCount: meta.nodeCount,
      byteLength: bytes.byteLength,
    };
  }

  /** Facts about the database. */
  get info(): IpGeoDbInfo {
    return { ...this.#info, buildDate: new Date(this.#info.buildDate) };
  }

  /**
   * Looks up the country of a public IPv4 or IPv6 address. IPv4-mapped IPv6 (`::ffff:1.2.3.4`)
   * is looked up as the IPv4 address; `[v6]` brackets are accepted.
   *
   * @param ip a textual address
   * @returns an upper-case ISO 3166-1 alpha-2 code, or undefined for private, reserved,
   *   unknown or invalid addresses
   * @throws never
   * @example
   * ```ts
   * db.lookup("8.8.8.8"); // "US"
   * db.lookup("10.0.0.1"); // undefined
   * ```
   */
  lookup(ip: string): string | undefined {
    const address = publicAddress(ip);
    if (address === undefined) return undefined;
    try {
      return countryOf(this.#reader.get(address));
    } catch {
      return undefined;
    }
  }
}

/**
 * Finds the database file in the npm package through Node-style resolution, which works under
 * `deno run`, `deno test` and `deno serve` with the global npm cache or a `node_modules` folder.
 *
 * @returns the absolute path of the `.mmdb` file
 * @throws {Error} when the package is not installed
 * @example
 * ```ts
 * const bytes = await Deno.readFile(ipGeoDbPath());
 * ```
 */
export function ipGeoDbPath(): string {
  try {
    return createRequire(import.meta.url).resolve(IP_GEO_DB_SPECIFIER);
  } catch {
    throw new Error(`Cannot find IP geo database "${IP_GEO_DB_SPECIFIER}": run "deno install"`);
  }
}

/** Options for {@linkcode loadIpGeoDb}. */
export interface LoadIpGeoDbOptions {
  /** Where the `.mmdb` file is; default {@linkcode ipGeoDbPath}. */
  path?: string | URL;
}

/**
 * Reads and opens the database once; call it in the composition root and share the result.
 *
 * @param readFile the reader, normally `Deno.readFile`
 * @param options an explicit path
 * @returns the opened database
 * @throws {Error} when the file is missing or not a MaxMind DB
 * @example
 * ```ts
 * const geoDb = await loadIpGeoDb(Deno.readFile);
 * geoDb.lookup("2a00:1450:4001::1");
 * ```
 */
export async function loadIpGeoDb(
  readFile: (path: string | URL) => Promise<Uint8Array>,
  options: LoadIpGeoDbOptions = {},
): Promise<IpGeoDb> {
  const path = options.path ?? ipGeoDbPath();
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new Error(
      `Cannot read IP geo database "${String(path)}": ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  return new IpGeoDb(bytes);
}

// The text to look up for a globally routable unicast address, or undefined. Private, loopback,
// link-local, CGNAT, documentation, multicast, 6to4/Teredo and other special ranges are refused:
// they have no country, and a database entry for them would be wrong. Each address is parsed
// once (IPv6 parsing is the costly step), and a validated text is handed on as it is.
function publicAddress(ip: string): string | undefined {
  if (typeof ip !== "string" || ip.length === 0 || ip.length > MAX_ADDRESS_LENGTH) return undefined;
  let text = ip.trim();
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  if (!text.includes(":")) return publicIpv4(text);
  let v6: ipaddr.IPv6;
  try {
    v6 = ipaddr.IPv6.parse(text);
  } catch {
    return undefined;
  }
  if (v6.isIPv4MappedAddress()) return publicIpv4(v6.toIPv4Address().toString());
  if (v6.range() !== "unicast") return undefined;
  // A zone index (`%eth0`) is not part of the address the database knows.
  return text.includes("%") ? v6.toNormalizedString() : text;
}

// Only dotted-quad IPv4: `ipaddr.isValid` also takes inet_aton forms such as "1.2.3" or "0x7f.1".
function publicIpv4(text: string): string | undefined {
  if (!ipaddr.IPv4.isValidFourPartDecimal(text)) return undefined;
  return ipaddr.IPv4.parse(text).range() === "unicast" ? text : undefined;
}

// This database's records are `{ country_code: "US" }`; anything else yields no country.
function countryOf(record: unknown): string | undefined {
  if (typeof record !== "object" || record === null || !("country_code" in record)) return undefined;
  const code = record.country_code;
  if (typeof code !== "string") return undefined;
  const upper = code.toUpperCase();
  return COUNTRY_CODE.test(upper) ? upper : undefined;
}
