/**
 * @module
 * Rule canaries and rollback as data: merging `rules`, `rules_promote` and `rules_rollback` events
 * into the control record (a pure, order-independent merge, so every replica converges), and
 * resolving a control record into the active version and the canary (version and share).
 */
import {
  readRulesControl,
  readRuleSets,
  type RulesControlEntry,
  type RulesControlValue,
  type RulesOrderKey,
  type RulesValue,
} from "./store.ts";
import type { ParsedRuleSet } from "./rules.ts";

/** How many rule set versions are kept when `RULES_KEEP` is not given. */
export const DEFAULT_RULES_KEEP = 10;

/**
 * Most entries for versions that were promoted or rolled back to before their rule set arrived.
 * Beyond it the lowest such versions are forgotten (the only case in which the merge is not
 * exactly order-independent).
 */
export const MAX_PENDING_VERSIONS = 100;

const RANK = { canary: 0, rules: 1, promote: 2, rollback: 3 } as const;

/** A rule control event, as the merge needs it (instants in epoch ms). */
export type RulesControlEvent =
  | { kind: "rules"; version: number; rules: ParsedRuleSet; at?: number; canary?: number }
  | { kind: "rules_promote"; version: number; at: number }
  | { kind: "rules_rollback"; version: number; at: number };

/** The outcome of {@linkcode mergeRulesEvents}. */
export interface RulesMerge {
  /** The new control record (the input is not modified). */
  control: RulesControlValue;
  /** Rule sets to store under their version. */
  put: RulesValue[];
  /** Versions whose stored rule sets are to be deleted (pushed out of the kept window). */
  drop: number[];
  /** Events that changed the control record or stored a rule set. */
  applied: number;
  /**
   * Events that changed nothing: duplicates, superseded, for a version below the kept window, or
   * a promote or rollback to a version whose rule set is not kept.
   */
  stale: number;
}

/** Options for {@linkcode mergeRulesEvents}. */
export interface MergeRulesOptions {
  /** How many rule set versions to keep (`RULES_KEEP`); must be the same on every instance. */
  keep: number;
}

/**
 * Compares two order keys: `null` times sort before every time, then rank, then version.
 *
 * @param a first key
 * @param b second key (`null`: no key, before everything)
 * @returns negative, zero or positive as `a` sorts before, with or after `b`
 */
export function compareOrderKeys(a: RulesOrderKey | null, b: RulesOrderKey | null): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? -1 : 1;
  if (a[0] !== b[0]) {
    if (a[0] === null) return -1;
    if (b[0] === null) return 1;
    return a[0] - b[0];
  }
  return a[1] - b[1] || a[2] - b[2];
}

/**
 * Merges rule control events into a control record. The result depends only on the set of
 * events ever merged, not on their order, multiplicity or batching: the kept versions are the
 * `keep` highest versions whose rule set arrived, each version's entry holds the newest (by
 * order key) activation, rollback and canary, and events for a version below the kept window are
 * stale. A promote or rollback naming a version whose rule set is not kept is counted stale but
 * recorded (above the kept window), and takes effect if that rule set arrives later.
 *
 * @param control the stored control record
 * @param events validated events
 * @param options how many versions to keep
 * @returns the new record, rule sets to put and delete, applied and stale counts
 * @example
 * ```ts
 * const merged = mergeRulesEvents({ entries: [] }, [{ kind: "rules_promote", version: 12, at: 0 }], { keep: 10 });
 * ```
 */
export function mergeRulesEvents(
  control: RulesControlValue,
  events: readonly RulesControlEvent[],
  options: MergeRulesOptions,
): RulesMerge {
  const keep = Math.max(1, options.keep);
  const entries = new Map(control.entries.map((entry) => [entry.version, structuredClone(entry)]));
  const put = new Map<number, RulesValue>();
  const drop = new Set<number>();
  let applied = 0;
  let stale = 0;
  const storedVersions = () => [...entries.values()].filter((entry) => entry.stored).map((e) => e.version);
  const horizon = () => {
    const stored = storedVersions();
    return stored.length >= keep ? Math.min(...stored) : -Infinity;
  };
  for (const event of events) {
    const version = event.version;
    if (version < horizon()) {
      stale++;
      continue;
    }
    let entry = entries.get(version);
    let changed = false;
    if (!entry) {
      entry = { version, stored: false, activated: null, rolledBack: null, canary: null };
      entries.set(version, entry);
      changed = true;
    }
    if (event.kind === "rules") {
      if (!entry.stored) {
        entry.stored = true;
        put.set(version, { version, rules: event.rules });
        drop.delete(version);
        changed = true;
      }
      if (event.canary !== undefined && event.at !== undefined) {
        const candidate = { share: event.canary, key: [event.at, RANK.canary, version] as RulesOrderKey };
        if (!entry.canary || compareCanaries(candidate, entry.canary) > 0) {
          entry.canary = candidate;
          changed = true;
        }
      } else {
        changed = raise(entry, "activated", [event.at ?? null, RANK.rules, version]) || changed;
      }
    } else if (event.kind === "rules_promote") {
      changed = raise(entry, "activated", [event.at, RANK.promote, version]) || changed;
    } else {
      const key: RulesOrderKey = [event.at, RANK.rollback, version];
      changed = raise(entry, "activated", key) || changed;
      changed = raise(entry, "rolledBack", key) || changed;
    }
    // A promote or rollback to a version without a kept rule set changes nothing now: stale. It
    // is still recorded (pending), so that a rule set delivered after it converges the same.
    if (changed && (event.kind === "rules" || entry.stored)) applied++;
    else stale++;
    prune(entries, keep, put, drop);
  }
  const sorted = [...entries.values()].sort((a, b) => b.version - a.version);
  return {
    control: { entries: sorted },
    put: [...put.values()].sort((a, b) => b.version - a.version),
    drop: [...drop].sort((a, b) => b - a),
    applied,
    stale,
  };
}

function raise(entry: RulesControlEntry, field: "activated" | "rolledBack", key: RulesOrderKey): boolean {
  if (compareOrderKeys(key, entry[field]) <= 0) return false;
  entry[field] = key;
  return true;
}

function compareCanaries(
  a: { share: number; key: RulesOrderKey },
  b: { share: number; key: RulesOrderKey },
): number {
  return compareOrderKeys(a.key, b.key) || a.share - b.share;
}

/** Keeps the `keep` highest stored versions, forgets pending versions below them, caps pending. */
function prune(
  entries: Map<number, RulesControlEntry>,
  keep: number,
  put: Map<number, RulesValue>,
  drop: Set<number>,
): void {
  const stored = [...entries.values()].filter((entry) => entry.stored).sort((a, b) => b.version - a.version);
  for (const entry of stored.slice(keep)) {
    entries.delete(entry.version);
    // A set put by this same merge was never written; only sets already in KV are deleted.
    if (!put.delete(entry.version)) drop.add(entry.version);
  }
  const horizon = stored.length >= keep ? stored[keep - 1]!.version : -Infinity;
  const pending = [...entries.values()].filter((entry) => !entry.stored).sort((a, b) =>
    b.version - a.version
  );
  pending.forEach((entry, index) => {
    if (entry.version < horizon || index >= MAX_PENDING_VERSIONS) entries.delete(entry.version);
  });
}

/** The state a control record resolves to. */
export interface ResolvedRules {
  /** The active version and the key of the event that made it active; undefined: none in KV. */
  active: { version: number; key: RulesOrderKey } | undefined;
  /** The canary version and the share of visitors it gets; undefined: no canary. */
  canary: { version: number; share: number } | undefined;
}

/**
 * Resolves a control record. Only versions whose rule set is kept count. The active version is
 * the one activated by the newest event (by order key). The canary is the newest canary, unless a
 * later rollback (to any version), or a later activation of the same or a higher version, ended
 * it — or it is the active version itself.
 *
 * @param control the control record
 * @returns the active version (if any) and the canary (if any)
 */
export function resolveRules(control: RulesControlValue): ResolvedRules {
  const stored = control.entries.filter((entry) => entry.stored);
  let active: ResolvedRules["active"];
  let canary: RulesControlEntry | undefined;
  for (const entry of stored) {
    if (entry.activated && (!active || compareOrderKeys(entry.activated, active.key) > 0)) {
      active = { version: entry.version, key: entry.activated };
    }
    if (entry.canary && (!canary || compareCanaries(entry.canary, canary.canary!) > 0)) canary = entry;
  }
  if (!canary || canary.version === active?.version) return { active, canary: undefined };
  const since = canary.canary!.key;
  const ended = stored.some((entry) =>
    compareOrderKeys(entry.rolledBack, since) > 0 ||
    (entry.version >= canary.version && compareOrderKeys(entry.activated, since) > 0)
  );
  return { active, canary: ended ? undefined : { version: canary.version, share: canary.canary!.share } };
}

/**
 * Reads the rule set that the control record in KV makes active.
 *
 * @param kv the store
 * @returns the active rule set JSON and its version, or `undefined` when KV names none
 */
export async function readActiveRules(kv: Deno.Kv): Promise<RulesValue | undefined> {
  const { active } = resolveRules(await readRulesControl(kv));
  if (!active) return undefined;
  return (await readRuleSets(kv, [active.version])).get(active.version);
}

/** One kept (or named but not yet received) version, as `GET /_edge/rules` shows it. */
export interface KeptVersion {
  version: number;
  /** False for a version that was promoted or rolled back to before its rule set arrived. */
  stored: boolean;
  /** When it was last made active (ISO 8601), `"unordered"` for a `rules` event without `at`. */
  activatedAt: string | null;
  /** Its newest canary, whether or not it still runs. */
  canary: { share: number; at: string } | null;
}

/** The rules state stored in KV, resolved, plus every kept version. */
export interface StoredRulesStatus {
  active: number | null;
  canary: { version: number; share: number } | null;
  kept: KeptVersion[];
}

/**
 * Reads and resolves the control record for display.
 *
 * @param kv the store
 * @returns the active and canary versions KV names, and every kept version, highest first
 */
export async function readStoredRulesStatus(kv: Deno.Kv): Promise<StoredRulesStatus> {
  const control = await readRulesControl(kv);
  const resolved = resolveRules(control);
  const iso = (key: RulesOrderKey | null) =>
    key === null ? null : key[0] === null ? "unordered" : new Date(key[0]).toISOString();
  return {
    active: resolved.active?.version ?? null,
    canary: resolved.canary ?? null,
    kept: control.entries.map((entry) => ({
      version: entry.version,
      stored: entry.stored,
      activatedAt: iso(entry.activated),
      canary: entry.canary ? { share: entry.canary.share, at: iso(entry.canary.key)! } : null,
    })),
  };
}
