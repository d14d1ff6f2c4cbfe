/**
 * @module
 * Shared scaffolding of the sync tests: apply options with 30-day TTLs, and an in-memory KV
 * that is closed afterwards.
 */
import type { ApplyOptions } from "../../../lib/sync/apply/unit.ts";

const DAY = 86_400_000;

/**
 * Apply options for a test: 30-day TTLs for everything, the given clock and limits.
 *
 * @param base the clock (`now`) and the views kept per user (`recentViewsMax`)
 * @param overrides anything else to change
 * @returns the options
 */
export function applyOptions(
  base: { now: number; recentViewsMax: number },
  overrides: Partial<ApplyOptions> = {},
): ApplyOptions {
  return {
    ...base,
    viewTtlMs: 30 * DAY,
    cartTtlMs: 30 * DAY,
    profileTtlMs: 30 * DAY,
    tombstoneTtlMs: 30 * DAY,
    ...overrides,
  };
}

/**
 * Runs `fn` with a fresh in-memory KV and closes it afterwards.
 *
 * @param fn the test body
 */
export async function withKv(fn: (kv: Deno.Kv) => Promise<void>): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(kv);
  } finally {
    kv.close();
  }
}
