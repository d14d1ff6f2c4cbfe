/**
 * @module
 * The sticky-assignment cookie (`ep_exp`): which variation of each experiment a visitor was
 * given, so that a change of weights does not move them. The edge signs it (HMAC-SHA256 with
 * `STICKY_SECRET`), so a visitor cannot pick a variation by writing it. Its size is bounded so
 * that browsers keep it; rule sets are checked to fit all their experiments in it.
 */
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import { FreshCache } from "../data/fresh_cache.ts";
import { estimateStringBytes } from "../support/memory_size.ts";

/** The cookie's name. */
export const STICKY_COOKIE = "ep_exp";

const STICKY_PART = /^[A-Za-z0-9_.-]{1,64}$/;
/** Most sticky assignments kept (a rule set has at most 100 experiments). */
export const MAX_STICKY = 100;
/**
 * Longest sticky cookie value as sent (percent-encoded, see {@linkcode stickyEntryLength}):
 * browsers refuse a cookie whose name and value pass 4096 bytes, and the attributes come on top.
 * Rule sets are checked to fit their experiments in it.
 */
export const STICKY_VALUE_MAX = 3800;
/** Characters of the signature at the end of the value: `.` and 43 of unpadded base64url. */
export const STICKY_SIGNATURE_LENGTH = 44;
/**
 * Longest assignment list (`key:value|…`, as sent) that fits in {@linkcode STICKY_VALUE_MAX}
 * beside its signature.
 */
export const STICKY_PAYLOAD_MAX: number = STICKY_VALUE_MAX - STICKY_SIGNATURE_LENGTH;

/**
 * What one assignment adds to the cookie value as sent: the key and variation (their characters
 * are never encoded) and the `:` and `|` around them, which `Set-Cookie` percent-encodes to 3
 * characters each.
 *
 * @param key the experiment key
 * @param variation the variation value
 * @returns characters on the wire
 */
export function stickyEntryLength(key: string, variation: string): number {
  return key.length + variation.length + 6;
}

/**
 * Parses the sticky-assignment cookie (`key:value|key:value`); invalid parts are dropped.
 *
 * @param value the cookie value
 * @returns experiment key → variation value
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
 * Serialises sticky assignments (unsigned; see {@linkcode StickySigner.sign}), in key order so
 * equal maps give equal values, within {@linkcode STICKY_PAYLOAD_MAX} characters (entries that
 * would not fit are left out).
 *
 * @param assignments experiment key → variation value
 * @returns the cookie value
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
 * The length one experiment can take in the sticky cookie as sent (its longest assignment).
 *
 * @param key the experiment key
 * @param variations its variation values
 * @returns characters on the wire
 */
export function stickyLength(key: string, variations: readonly string[]): number {
  return stickyEntryLength(
    key,
    variations.reduce((longest, v) => (v.length > longest.length ? v : longest), ""),
  );
}

/** A sticky cookie whose signature held. */
export interface VerifiedSticky {
  /** Experiment key → variation value. */
  assignments: ReadonlyMap<string, string>;
  /** Signed with the first (current) secret; otherwise it should be signed again. */
  current: boolean;
}

/** Options for {@linkcode StickySigner}. */
export interface StickySignerOptions {
  /** Most verified cookie values remembered by this isolate (0: none). Default 4096. */
  memoEntries?: number;
  /** Most estimated heap bytes of remembered values. Default 1 MiB. */
  memoBytes?: number;
}

const SIGNATURE = /^[A-Za-z0-9_-]{43}$/;
/** Longest payload whose signed value is remembered (longer ones are rare and signed each time). */
const SIGNED_MEMO_PAYLOAD_MAX = 256;
/** A verified value is checked again after this long (it only bounds how long a memo entry lives). */
const MEMO_MAX_AGE_MS = 60 * 60 * 1000;

/**
 * Signs and verifies the sticky cookie: `<assignments>.<base64url HMAC-SHA256 of them>`. The
 * first secret signs, every secret verifies (rotation: put the new one first, drop the old one
 * once a cookie lifetime has passed or its visitors may be bucketed again). Verified values are
 * remembered per isolate, so a returning visitor's cookie costs a map lookup, not an HMAC.
 *
 * @example
 * ```ts
 * const signer = new StickySigner(["a-secret-of-16-chars-or-more"]);
 * const value = signer.sign("hero:b");
 * signer.verify(value, Date.now())?.assignments.get("hero"); // "b"
 * signer.verify("hero:b", Date.now()); // undefined: unsigned
 * ```
 */
export class StickySigner {
  #secrets: readonly string[];
  #memo: FreshCache<string, VerifiedSticky> | undefined;
  /** Signed values by payload: new visitors share a handful of assignment lists. */
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
        // The value as the key, and its parsed copy (about as large) in the map.
        sizeOf: (value) => 2 * estimateStringBytes(value) + 256,
      })
      : undefined;
  }

  /**
   * Signs assignments for the cookie.
   *
   * @param payload the assignments as {@linkcode formatSticky} gives them (non-empty)
   * @returns the cookie value, {@linkcode STICKY_SIGNATURE_LENGTH} characters longer
   */
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
   * Checks a cookie value's signature against every secret and parses what it signed. The
   * signature covers the whole assignment list, so nothing in it can be changed, added or
   * dropped. Unsigned, forged or oversized values give `undefined`: the visitor is treated as
   * having no cookie.
   *
   * @param value the cookie value as received (percent-decoded)
   * @param now the current time, epoch ms (for the memo's age bound)
   * @returns the assignments and whether the current secret signed them, or undefined
   * @throws never
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
