/**
 * @module
 * Estimates of how much V8 heap a plain value takes, for the byte bounds of the per-isolate
 * caches. The figures follow V8's object layout with pointer compression (4-byte fields, 12-byte
 * heap numbers) as V8's deserializer builds values read from KV, and err on the high side
 * (docs/performance.md).
 */
import { MAX_JSON_DEPTH } from "./json_limits.ts";

/** Bytes of a plain object beside its properties: header and the reserve of in-object slots. */
const OBJECT_HEADER = 48;
/** Bytes per property of a plain object (the slot and its share of the property storage). */
const PROPERTY_SLOT = 8;
/** Bytes of a `JSArray` and the header of its backing store. */
const ARRAY_HEADER = 40;
/** Bytes per array element (the slot and the backing store's spare capacity). */
const ELEMENT_SLOT = 8;
/** Bytes of a string beside its characters (header, hash, length, alignment). */
const STRING_HEADER = 24;
/** Bytes of a boxed number (one that is not a small integer). */
const HEAP_NUMBER = 12;
/**
 * Depth walked exactly: deeper than anything a cache can hold (stored values come through sync,
 * whose events are at most {@linkcode MAX_JSON_DEPTH} deep, inside a few levels of the cache's own).
 */
const MAX_DEPTH = MAX_JSON_DEPTH + 16;
/** Bytes counted per character of the JSON text of a value nested deeper than {@linkcode MAX_DEPTH}. */
const TOO_DEEP_PER_CHAR = 16;

/**
 * Estimates the V8 heap bytes of a string: a header and one byte per character, two when any
 * character is outside Latin-1 (V8 then stores the whole string as UTF-16).
 * @returns estimated bytes, a multiple of 4
 */
export function estimateStringBytes(text: string): number {
  return align(STRING_HEADER + text.length * bytesPerChar(text));
}

/**
 * How many bytes V8 (and so Deno KV's serialisation) gives each character of a string: one when
 * every character is Latin-1, else two for all of them (the string is then stored as UTF-16).
 */
export function bytesPerChar(text: string): 1 | 2 {
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) > 0xff) return 2;
  }
  return 1;
}

/**
 * Estimates the V8 heap bytes of a plain value: strings, numbers, booleans, arrays and plain
 * objects (property names are not counted: V8 shares them between objects of the same shape).
 * It walks the value once and allocates nothing, so it is cheap enough for every cache store.
 * @param value a JSON-like value, as read from KV or parsed from JSON
 * @example
 * ```ts
 * estimateValueBytes({ itemId: "p42", at: 1_790_000_000_000 }); // 104
 * ```
 */
export function estimateValueBytes(value: unknown): number {
  return sizeOf(value, 0);
}

function sizeOf(value: unknown, depth: number): number {
  switch (typeof value) {
    case "string":
      return estimateStringBytes(value);
    case "number":
      // Small integers are stored in the field itself; anything else is boxed.
      return Number.isInteger(value) && value >= -(2 ** 30) && value < 2 ** 30 ? 0 : HEAP_NUMBER;
    case "object": {
      if (value === null) return 0;
      // Never an underestimate: deeper data is sized from its JSON text, generously.
      if (depth >= MAX_DEPTH) {
        return align(OBJECT_HEADER + (JSON.stringify(value)?.length ?? 0) * TOO_DEEP_PER_CHAR);
      }
      if (Array.isArray(value)) {
        let bytes = ARRAY_HEADER + value.length * ELEMENT_SLOT;
        for (const item of value) bytes += sizeOf(item, depth + 1);
        return bytes;
      }
      let bytes = OBJECT_HEADER;
      for (const key in value) {
        if (!Object.hasOwn(value, key)) continue;
        bytes += PROPERTY_SLOT + sizeOf((value as Record<string, unknown>)[key], depth + 1);
      }
      return bytes;
    }
    default:
      // Booleans and undefined are shared constants; functions and symbols are not cache data.
      return 0;
  }
}

function align(bytes: number): number {
  return (bytes + 3) & ~3;
}
