/**
 * @module
 * The bundled IP → country database (`@ip-location-db/geo-whois-asn-country-mmdb`, CC0; RIR data
 * CC BY 4.0 by the NRO): a country on hosts without a CDN geo header, Deno Deploy included.
 */
import { Buffer } from "node:buffer";
import { createRequire } from "node:module";
import ipaddr from "ipaddr.js";
import { Reader, type Response } from "mmdb-lib";
// Puts the package (and the .mmdb beside it) in the module graph, so no separate `deno install`.
import dbPackage from "@ip-location-db/geo-whois-asn-country-mmdb/package.json" with { type: "json" };

export const IP_GEO_DB_SPECIFIER = "@ip-location-db/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb";

/** Its publication date is in the version. */
export const IP_GEO_DB_VERSION: string = dbPackage.version;

/** Facts about a loaded database, for `/health` and logs. */
export interface IpGeoDbInfo {
  databaseType: string;
  /** 6 for a tree that holds both IPv4 and IPv6. */
  ipVersion: number;
  buildDate: Date;
  nodeCount: number;
  byteLength: number;
}

const COUNTRY_CODE = /^[A-Z]{2}$/;
const MAX_ADDRESS_LENGTH = 64;

/** Random, synchronous access to a database file, so the tree is read a block at a time. */
export interface IpGeoDbFile {
  readonly size: number;
  /** Fills `into` entirely from `position` on; throws when the bytes cannot be read. */
  readAt(into: Uint8Array, position: number): void;
}

/** The part of `Deno.FsFile` that {@linkcode openIpGeoDb} uses. */
export interface SyncReadableFile {
  statSync(): { size: number };
  seekSync(offset: number, whence: Deno.SeekMode): number;
  readSync(into: Uint8Array): number | null;
}

const BLOCK_SIZE = 4096;
// MaxMind DB format: the metadata starts within the last 128 KiB of the file.
const METADATA_MAX_SIZE = 128 * 1024;
const RECENT_LOOKUPS = 4096;

/**
 * An IP → country lookup over a MaxMind DB; create once, share read-only. Over an
 * {@linkcode IpGeoDbFile} only the metadata, data section and visited tree blocks are ever read,
 * so start-up does not page in the whole file.
 */
export class IpGeoDb {
  // "" for no country.
  readonly #recent = new Map<string, string>();
  #reader: Reader<Response>;
  #info: IpGeoDbInfo;
  #bytes: Uint8Array;
  // Which blocks of `#bytes` hold the file's bytes; undefined once all of them do.
  #loaded: Uint8Array | undefined;
  #missing = 0;
  #bytesRead = 0;
  #file: IpGeoDbFile | undefined;
  #ipv4Start = 0;

  /**
   * @param source the `.mmdb` bytes (not copied: do not modify them), or random access to the file
   * @throws {Error} when the bytes are not a MaxMind DB, or the file cannot be read
   */
  constructor(source: Uint8Array | IpGeoDbFile) {
    if (source instanceof Uint8Array) {
      this.#bytes = source;
    } else {
      this.#file = source;
      this.#bytes = new Uint8Array(source.size);
      this.#missing = Math.ceil(source.size / BLOCK_SIZE);
      this.#loaded = new Uint8Array(this.#missing);
    }
    const bytes = this.#bytes;
    const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    try {
      this.#ensure(Math.max(0, bytes.byteLength - METADATA_MAX_SIZE), bytes.byteLength);
      // Shares the few distinct country records.
      this.#reader = new Reader(buffer, { cache: new Map() });
      const meta = this.#reader.metadata;
      if (this.#loaded !== undefined) {
        this.#ensure(meta.searchTreeSize, bytes.byteLength);
        // IPv4 starts where 96 zero bits lead; the reader looked before those blocks were read.
        this.#ipv4Start = this.#walk(new Uint8Array(12), 0);
        this.#reader.load(buffer);
      }
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

  get info(): IpGeoDbInfo {
    return { ...this.#info, buildDate: new Date(this.#info.buildDate) };
  }

  /** All of them when opened from bytes. */
  get bytesRead(): number {
    return this.#file === undefined && this.#loaded === undefined ? this.#bytes.byteLength : this.#bytesRead;
  }

  /**
   * The ISO country of a public address (IPv4-mapped IPv6 as IPv4), or undefined for private,
   * reserved, unknown or invalid ones and when the file cannot be read.
   *
   * @param ip a textual address, `[v6]` brackets accepted
   */
  lookup(ip: string): string | undefined {
    const known = this.#recent.get(ip);
    if (known !== undefined) return known || undefined;
    const address = publicAddress(ip);
    if (address === undefined) return undefined;
    let country: string | undefined;
    try {
      if (this.#loaded !== undefined) {
        this.#walk(address.bytes, address.bytes.length === 4 ? this.#ipv4Start : 0);
      }
      country = countryOf(this.#reader.get(address.text));
    } catch {
      // Not remembered: a failed block read is retried by the next lookup.
      return undefined;
    }
    if (this.#recent.size >= RECENT_LOOKUPS) this.#recent.clear();
    this.#recent.set(ip, country ?? "");
    return country;
  }

  #walk(address: Uint8Array, node: number): number {
    const { nodeCount, recordSize } = this.#reader.metadata;
    const nodeBytes = recordSize / 4;
    const bits = address.length * 8;
    for (let depth = 0; depth < bits && node < nodeCount; depth++) {
      const offset = node * nodeBytes;
      this.#ensure(offset, offset + nodeBytes);
      node = readRecord(this.#bytes, offset, recordSize, (address[depth >> 3]! >>> (7 ^ (depth & 7))) & 1);
    }
    return node;
  }

  #ensure(start: number, end: number): void {
    const loaded = this.#loaded;
    if (loaded === undefined || this.#file === undefined) return;
    const last = Math.ceil(Math.min(end, this.#bytes.byteLength) / BLOCK_SIZE);
    let block = Math.floor(start / BLOCK_SIZE);
    while (block < last) {
      if (loaded[block]) {
        block++;
        continue;
      }
      let runEnd = block + 1;
      while (runEnd < last && !loaded[runEnd]) runEnd++;
      const from = block * BLOCK_SIZE;
      const to = Math.min(runEnd * BLOCK_SIZE, this.#bytes.byteLength);
      this.#file.readAt(this.#bytes.subarray(from, to), from);
      loaded.fill(1, block, runEnd);
      this.#bytesRead += to - from;
      this.#missing -= runEnd - block;
      block = runEnd;
    }
    if (this.#missing === 0) {
      this.#loaded = undefined;
      this.#file = undefined;
    }
  }
}

function readRecord(bytes: Uint8Array, offset: number, recordSize: number, bit: number): number {
  const b = bytes;
  if (recordSize === 24) {
    const o = offset + bit * 3;
    return (b[o]! << 16) | (b[o + 1]! << 8) | b[o + 2]!;
  }
  if (recordSize === 28) {
    return bit === 0
      ? ((b[offset + 3]! & 0xf0) << 20) | (b[offset]! << 16) | (b[offset + 1]! << 8) | b[offset + 2]!
      : ((b[offset + 3]! & 0x0f) << 24) | (b[offset + 4]! << 16) | (b[offset + 5]! << 8) | b[offset + 6]!;
  }
  const o = offset + bit * 4;
  return b[o]! * 0x1000000 + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!);
}

/**
 * The `.mmdb` path by Node-style resolution, which works with the global npm cache or `node_modules`.
 *
 * @throws {Error} when the package is not installed
 */
export function ipGeoDbPath(): string {
  try {
    return createRequire(import.meta.url).resolve(IP_GEO_DB_SPECIFIER);
  } catch {
    throw new Error(`Cannot find IP geo database "${IP_GEO_DB_SPECIFIER}": run "deno install"`);
  }
}

/** Options for {@linkcode loadIpGeoDb} and {@linkcode openIpGeoDb}. */
export interface LoadIpGeoDbOptions {
  /** Default {@linkcode ipGeoDbPath}. */
  path?: string | URL;
}

/**
 * Reads the whole database and opens it; {@linkcode openIpGeoDb} starts faster.
 *
 * @param readFile normally `Deno.readFile`
 * @param options an explicit path
 * @throws {Error} when the file is missing or not a MaxMind DB
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

/**
 * Opens the database over its file, the tree read block by block as lookups need it: the fast
 * start-up path. The file stays open for the life of the process.
 *
 * @param openSync normally `Deno.openSync`
 * @param options an explicit path
 * @throws {Error} when the file is missing or not a MaxMind DB
 */
export function openIpGeoDb(
  openSync: (path: string | URL) => SyncReadableFile,
  options: LoadIpGeoDbOptions = {},
): IpGeoDb {
  const path = options.path ?? ipGeoDbPath();
  let file: SyncReadableFile;
  let size: number;
  try {
    file = openSync(path);
    size = file.statSync().size;
  } catch (err) {
    throw new Error(
      `Cannot read IP geo database "${String(path)}": ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  return new IpGeoDb({
    size,
    readAt: (into, position) => {
      file.seekSync(position, Deno.SeekMode.Start);
      for (let done = 0; done < into.byteLength;) {
        const n = file.readSync(into.subarray(done));
        if (n === null) throw new Error(`Unexpected end of IP geo database "${String(path)}"`);
        done += n;
      }
    },
  });
}

// Special ranges (private, CGNAT, 6to4, …) have no country; a database entry for them would be wrong.
function publicAddress(ip: string): { text: string; bytes: Uint8Array } | undefined {
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
  return {
    text: text.includes("%") ? v6.toNormalizedString() : text,
    bytes: new Uint8Array(v6.toByteArray()),
  };
}

// Only dotted-quad IPv4: `ipaddr.isValid` also takes inet_aton forms such as "1.2.3" or "0x7f.1".
function publicIpv4(text: string): { text: string; bytes: Uint8Array } | undefined {
  if (!ipaddr.IPv4.isValidFourPartDecimal(text)) return undefined;
  const v4 = ipaddr.IPv4.parse(text);
  return v4.range() === "unicast" ? { text, bytes: new Uint8Array(v4.octets) } : undefined;
}

function countryOf(record: unknown): string | undefined {
  if (typeof record !== "object" || record === null || !("country_code" in record)) return undefined;
  const code = record.country_code;
  if (typeof code !== "string") return undefined;
  const upper = code.toUpperCase();
  return COUNTRY_CODE.test(upper) ? upper : undefined;
}
