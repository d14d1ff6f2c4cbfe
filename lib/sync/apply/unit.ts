/**
 * @module
 * The unit of a sync apply: keys read, decided on and written together; a wave's units are disjoint.
 */
/** The options of one apply, shared by its planner and its units. */
export interface ApplyOptions {
  now: number;
  recentViewsMax: number;
  viewTtlMs: number;
  cartTtlMs: number;
  profileTtlMs: number;
  tombstoneTtlMs: number;
  /** Told once, even when the batch throws, every user whose stored data changed (to drop cache entries). */
  onUsersChanged?: (userIds: string[]) => void;
  maxAttempts?: number;
  rulesKeep?: number;
}

export type Entry = Deno.KvEntryMaybe<unknown>;
export type Read = (key: Deno.KvKey) => Entry;

export interface Mutation {
  key: Deno.KvKey;
  /** `undefined` deletes the key. */
  value?: unknown;
  expireIn?: number;
}

/** What a unit decided to write, and how its events count. */
export interface Plan {
  mutations: Mutation[];
  applied: number;
  stale: number;
  users: string[];
  /** The unit has more to do after this plan is committed (a large erasure). */
  again?: boolean;
  /** Called once the plan is committed (or found to need no commit). */
  committed?: () => void;
  /** An erased user whose views at or before the committed tombstone to compact after the batch. */
  compact?: { userId: string; erasedAt: number };
}

/** A unit's decision: a plan, or keys it must read before it can decide. */
export type Step = { plan: Plan } | { needKeys: Deno.KvKey[] };

export interface Unit {
  keys: Deno.KvKey[];
  /** Keys assumed absent unread (a tombstone is rare): checked at commit, read after a failed one. */
  assumedAbsent?: Deno.KvKey[];
  attempts: number;
  step(read: Read): Step;
}

/** What the committed units of a batch add up to; filled in as commits succeed. */
export interface Outcome {
  applied: number;
  stale: number;
  users: Set<string>;
  /** Users whose views to compact once the units are done → the newest committed tombstone known. */
  compact: Map<string, number>;
}

export function emptyOutcome(): Outcome {
  return { applied: 0, stale: 0, users: new Set(), compact: new Map() };
}

export function emptyPlan(stale = 0, users: string[] = []): Plan {
  return { mutations: [], applied: 0, stale, users };
}

export function keyId(key: Deno.KvKey): string {
  return JSON.stringify(key);
}

/** @returns `items` grouped by `keyOf`, in first-seen order */
export function groupBy<T, K>(items: Iterable<T>, keyOf: (item: T) => K): Map<K, T[]> {
  const out = new Map<K, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    const list = out.get(key);
    if (list) list.push(item);
    else out.set(key, [item]);
  }
  return out;
}
