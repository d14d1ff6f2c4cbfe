/**
 * @module
 * The sticky-assignment cookie (`ep_exp`), so that a change of weights does not move visitors. The
 * edge signs it with `STICKY_SECRET`, so a visitor cannot pick a variation by writing it.
 */
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import { FreshCache } from "../data/fresh_cache.ts";
import { estimateStringBytes } from "../support/memory_size.ts";

export const STICKY_COOKIE = "ep_exp";

const STICKY_PART = /^[A-Za-z0-9_.-]{1,64}$/;
/** A rule set has at most 100 experiments. */
export const MAX_STICKY = 100;
/** Browsers refuse a cookie whose name and value pass 4096 bytes; rule sets are checked to fit in it. */
export const STICKY_VALUE_MAX = 3800;
/** `.` and 43 characters of unpadded base64url. */
export const STICKY_SIGNATURE_LENGTH = 44;
/** Longest assignment list, as sent, that fits beside its signature. */
export const STICKY_PAYLOAD_MAX: number = STICKY_VALUE_MAX - STICKY_SIGNATURE_LENGTH;

/**
 * Characters one assignment adds on the wire: `Set-Cookie` percent-encodes its `:` and `|`.
 *
 * @param key the experiment key
 * @param variation the variation value
 */
export function stickyEntryLength(key: string, variation: string): number {
  return key.length + variation.length + 6;
}

/**
 * Parses `key:value|key:value` into a map; invalid parts are dropped.
 *
 * @param value the cookie value
 */
export function parseSticky(value: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!value) return out;
  for (const part of value.split("|")) {
    if (out.size >= MAX_STICKY) break;
    const colon = part.indexOf(":");
    if (colon <= 0) continue;
    const key = part.slice(0, colon);
    const variation = part.slice(colon + 1);
    if (STICKY_PART.test(key) && STICKY_PART.test(variation)) out.set(key, variation);
  }
  return out;
}

/**
 * Serialises assignments unsigned, in key order so equal maps give equal values; entries past
 * {@linkcode STICKY_PAYLOAD_MAX} are left out.
 *
 * @param assignments experiment key → variation value
 */
export function formatSticky(assignments: Readonly<Record<string, string>>): string {
  let out = "";
  let count = 0;
  let length = 0;
  for (const key of Object.keys(assignments).sort()) {
    const variation = assignments[key]!;
    if (!STICKY_PART.test(key) || !STICKY_PART.test(variation)) continue;
    const entry = stickyEntryLength(key, variation);
    if (count >= MAX_STICKY || length + entry > STICKY_PAYLOAD_MAX) continue;
    out = out ? `${out}|${key}:${variation}` : `${key}:${variation}`;
    length += entry;
    count++;
  }
  return out;
}

/**
 * The most one experiment can take in the cookie as sent (its longest assignment).
 *
 * @param key the experiment key
 * @param variations its variation values
 */
export function stickyLength(key: string, variations: readonly string[]): number {
  return stickyEntryLength(
    key,
    variations.reduce((longest, v) => (v.length > longest.length ? v : longest), ""),
  );
}

/** A sticky cookie whose signature held. */
export interface VerifiedSticky {
  assignments: ReadonlyMap<string, string>;
  /** Signed with the first secret; otherwise it should be signed again. */
  current: boolean;
}

/** Options for {@linkcode StickySigner}. */
export interface StickySignerOptions {
  /** Verified values remembered (0: none). Default 4096. */
  memoEntries?: number;
  /** Default 1 MiB. */
  memoBytes?: number;
}

const SIGNATURE = /^[A-Za-z0-9_-]{43}$/;
const SIGNED_MEMO_PAYLOAD_MAX = 256;
const MEMO_MAX_AGE_MS = 60 * 60 * 1000;

/**
 * Signs and verifies `<assignments>.<base64url HMAC-SHA256>`: the first secret signs, every secret
 * verifies (rotation: new one first; drop the old after a cookie lifetime, or visitors re-bucket).
 *
 * @example
 * ```ts
 * const signer = new StickySigner(["a-secret-of-16-chars-or-more"]);
 * signer.verify(signer.sign("hero:b"), Date.now())?.assignments.get("hero"); // "b"
 * ```
 */
export class StickySigner {
  #secrets: readonly string[];
  #memo: FreshCache<string, VerifiedSticky> | undefined;
  /** New visitors share a handful of assignment lists. */
  #signed = new Map<string, string>();
  #signedMax: number;

  /**
   * @param secrets `STICKY_SECRET`'s entries, the signing one first
   * @param options the bounds of the memo of verified values
   * @throws {RangeError} when there is no secret
   */
  constructor(secrets: readonly string[], options: StickySignerOptions = {}) {
    if (secrets.length === 0) throw new RangeError("StickySigner needs at least one secret");
    this.#secrets = [...secrets];
    const memoEntries = options.memoEntries ?? 4096;
    this.#signedMax = Math.min(memoEntries, 1024);
    this.#memo = memoEntries > 0
      ? new FreshCache({
        name: "Sticky cookie memo",
        maxEntries: memoEntries,
        maxStaleMs: MEMO_MAX_AGE_MS,
        maxBytes: options.memoBytes ?? 1024 * 1024,
        sizeOf: (value) => 2 * estimateStringBytes(value) + 256,
      })
      : undefined;
  }

  /** @param payload the assignments as {@linkcode formatSticky} gives them (non-empty) */
  sign(payload: string): string {
    let value = this.#signed.get(payload);
    if (value === undefined) {
      value = `${payload}.${mac(this.#secrets[0]!, payload)}`;
      if (this.#signedMax > 0 && payload.length <= SIGNED_MEMO_PAYLOAD_MAX) {
        if (this.#signed.size >= this.#signedMax) this.#signed.clear();
        this.#signed.set(payload, value);
      }
    }
    return value;
  }

  /**
   * The assignments a value's signature covers, or undefined when unsigned, forged or oversized.
   *
   * @param value the cookie value as received (percent-decoded)
   * @param now epoch ms, for the memo's age bound
   */
  verify(value: string | undefined, now: number): VerifiedSticky | undefined {
    if (!value || value.length > STICKY_VALUE_MAX) return undefined;
    const remembered = this.#memo?.get(value, now);
    if (remembered) return remembered.value;
    const dot = value.lastIndexOf(".");
    const signature = value.slice(dot + 1);
    if (dot <= 0 || !SIGNATURE.test(signature)) return undefined;
    const payload = value.slice(0, dot);
    const given = Buffer.from(signature, "latin1");
    for (let i = 0; i < this.#secrets.length; i++) {
      if (timingSafeEqual(Buffer.from(mac(this.#secrets[i]!, payload), "latin1"), given)) {
        const verified = { assignments: parseSticky(payload), current: i === 0 };
        this.#memo?.set(value, verified, now);
        return verified;
      }
    }
    return undefined;
  }
}

function mac(secret: string, payload: string): string {
  return createHmac("sha256", secret).update(payload).digest("base64url");
}
