/**
 * @module
 * The events a publisher sends: NDJSON read and validated against the wire contract, split into
 * batches under the edge's limits, and demo files' instants moved to now.
 */
import { MAX_EVENTS_PER_BATCH, parseSyncEvent } from "../lib/sync/schema.ts";

/** The edge's default body limit; batches are kept below it. */
export const DEFAULT_MAX_BATCH_BYTES = 1024 * 1024;

/** Input that cannot be published: not NDJSON, or events that break the wire contract. */
export class PublishInputError extends Error {
  /** One entry per problem, naming the line (or index) and field. */
  readonly problems: string[];

  /**
   * @param message summary
   * @param problems one entry per problem
   */
  constructor(message: string, problems: string[]) {
    super(`${message}:\n  ${problems.join("\n  ")}`);
    this.name = "PublishInputError";
    this.problems = problems;
  }
}

/**
 * Parses NDJSON (one JSON event per line; blank lines ignored) and validates each event.
 *
 * @param text the NDJSON text
 * @returns the events, as parsed JSON (sent as they are)
 * @throws {PublishInputError} naming every line that is not JSON or not a valid event
 */
export function parseNdjson(text: string): unknown[] {
  const events: unknown[] = [];
  const problems: string[] = [];
  text.split("\n").forEach((line, index) => {
    if (line.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      problems.push(`line ${index + 1}: not JSON (${(error as Error).message})`);
      return;
    }
    const result = parseSyncEvent(value);
    if ("problems" in result) {
      for (const problem of result.problems) {
        problems.push(`line ${index + 1}: "${problem.field}" ${problem.message}`);
      }
      return;
    }
    events.push(value);
  });
  if (problems.length) throw new PublishInputError("Cannot publish the input", problems);
  return events;
}

/** Options for {@linkcode batchEvents}. */
export interface BatchOptions {
  /** Most events per batch (default and maximum 1000). */
  maxEvents?: number;
  /** Largest serialised payload per batch, in bytes (default 1 MiB). */
  maxBytes?: number;
}

const ENVELOPE_OVERHEAD = 128;

/**
 * Splits events into batches that the edge accepts: at most `maxEvents` events and a payload
 * of at most `maxBytes` bytes. Order is kept (the edge does not need it, but logs read better).
 *
 * @param events the events
 * @param options the limits
 * @returns the batches
 * @throws {PublishInputError} when one event alone is larger than `maxBytes`
 */
export function batchEvents(events: readonly unknown[], options: BatchOptions = {}): unknown[][] {
  const maxEvents = Math.min(options.maxEvents ?? MAX_EVENTS_PER_BATCH, MAX_EVENTS_PER_BATCH);
  const maxBytes = (options.maxBytes ?? DEFAULT_MAX_BATCH_BYTES) - ENVELOPE_OVERHEAD;
  const encoder = new TextEncoder();
  const batches: unknown[][] = [];
  let current: unknown[] = [];
  let bytes = 0;
  events.forEach((event, index) => {
    const size = encoder.encode(JSON.stringify(event)).byteLength + 1;
    if (size > maxBytes) {
      throw new PublishInputError("Cannot publish the input", [
        `event ${index}: larger than ${maxBytes} bytes`,
      ]);
    }
    if (current.length >= maxEvents || bytes + size > maxBytes) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(event);
    bytes += size;
  });
  if (current.length) batches.push(current);
  return batches;
}

const INSTANT_FIELDS = ["at", "expiresAt"] as const;

/**
 * Shifts every `at` and `expiresAt` of a set of events by the same amount so that the newest
 * `at` becomes `now` — for demo and fixture files whose recorded times would otherwise have
 * expired. Events that are not objects, or carry no valid instants, are returned unchanged.
 *
 * @param events the events as parsed from NDJSON
 * @param now the instant the newest `at` should move to, epoch ms
 * @returns new event objects with shifted ISO instants
 */
export function rebaseInstants(events: readonly unknown[], now: number): unknown[] {
  let newest = -Infinity;
  for (const event of events) {
    if (event && typeof event === "object" && "at" in event && typeof event.at === "string") {
      const at = Date.parse(event.at);
      if (Number.isFinite(at) && at > newest) newest = at;
    }
  }
  if (!Number.isFinite(newest)) return [...events];
  const shift = now - newest;
  return events.map((event) => {
    if (!event || typeof event !== "object" || Array.isArray(event)) return event;
    const copy: Record<string, unknown> = { ...event };
    for (const field of INSTANT_FIELDS) {
      const value = copy[field];
      if (typeof value !== "string") continue;
      const ms = Date.parse(value);
      if (Number.isFinite(ms)) copy[field] = new Date(ms + shift).toISOString();
    }
    return copy;
  });
}
