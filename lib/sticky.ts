/**
 * @module
 * The sticky-assignment cookie (`ep_exp`): which variation of each experiment a visitor was
 * given, so that a change of weights does not move them. Its size is bounded so that browsers
 * keep it; rule sets are checked to fit all their experiments in it.
 */

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
 * Serialises sticky assignments for the cookie, in key order so equal maps give equal values,
 * within {@linkcode STICKY_VALUE_MAX} characters (entries that would not fit are left out).
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
    if (count >= MAX_STICKY || length + entry > STICKY_VALUE_MAX) continue;
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
