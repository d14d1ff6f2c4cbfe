/** @module Reading `Retry-After`, for the two clients that send to the backend (exposures, push). */

/** A `Retry-After` (seconds or HTTP date) as a delay in ms; 0 when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number {
  if (!value) return 0;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? 0 : Math.max(0, date - now);
}
