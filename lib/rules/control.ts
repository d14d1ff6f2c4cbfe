/**
 * @module
 * Rule canaries and rollback as data: an order-independent merge of rule control events into the
 * control record, so every replica converges, and its resolution into the active version and canary.
 */
import {
  type RulesControlEntry,
  type RulesControlValue,
  type RulesOrderKey,
  type RulesValue,
} from "../data/store.ts";
import { readRulesControl, readRuleSets } from "../data/readers.ts";
import type { ParsedRuleSet } from "./schema.ts";

export const DEFAULT_RULES_KEEP = 10;

// Most entries for versions promoted or rolled back to before their rule set arrived; beyond it the
// lowest are forgotten (the only case in which the merge is not exactly order-independent).
const MAX_PENDING_VERSIONS = 100;

const RANK = { canary: 0, rules: 1, promote: 2, rollback: 3 } as const;

/** A rule control event, as the merge needs it (instants in epoch ms). */
export type RulesControlEvent =
  | { kind: "rules"; version: number; rules: ParsedRuleSet; at?: number; canary?: number }
  | { kind: "rules_promote"; version: number; at: number }
  | { kind: "rules_rollback"; version: number; at: number };

/** The outcome of {@linkcode mergeRulesEvents}; the input record is not modified. */
export interface RulesMerge {
  control: RulesControlValue;
  put: RulesValue[];
  drop: number[];
  applied: number;
  stale: number;
}

/** Options for {@linkcode mergeRulesEvents}: `keep` (`RULES_KEEP`) must be the same on every instance. */
export interface MergeRulesOptions {
  keep: number;
}

/** Compares two order keys: no key first, then `null` times, then time, rank and version. */
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
 * Merges rule control events in order-key order, so neither batch order nor duplicates matter.
 * A promote or rollback to a version not kept is stale but recorded, taking effect if its rule set
 * arrives later; one that arrives after a newer push deleted its rule set stays stale there.
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
  // A rule set this batch pushes out again counts as stale.
  const changedVersions: number[] = [];
  const storedVersions = () => [...entries.values()].filter((entry) => entry.stored).map((e) => e.version);
  // In time order: a rollback before a push pins its version before the push moves the window.
  for (const event of [...events].sort(compareRulesEvents)) {
    const version = event.version;
    // Below the kept window only a version still kept (pinned as active or canary) takes events.
    if (version < windowHorizon(storedVersions(), keep) && !entries.get(version)?.stored) continue;
    let entry = entries.get(version);
    let changed = false;
    if (!entry) {
      entry = { version, stored: false, activated: null, rolledBack: null, canary: null };
      entries.set(version, entry);
      changed = true;
    }
    if (event.kind === "rules" && !entry.stored) {
      entry.stored = true;
      put.set(version, { version, rules: event.rules });
      drop.delete(version);
      changed = true;
    }
    changed = applyEvent(entry, event) || changed;
    if (changed && (event.kind === "rules" || entry.stored)) changedVersions.push(version);
    prune(entries, keep, put, drop);
  }
  const applied = changedVersions.filter((version) => entries.get(version)?.stored).length;
  return {
    control: { entries: [...entries.values()].sort((a, b) => b.version - a.version) },
    put: [...put.values()].sort((a, b) => b.version - a.version),
    drop: [...drop].sort((a, b) => b - a),
    applied,
    stale: events.length - applied,
  };
}

// Raises the entry's activation, rollback or canary to the event's order key; true when it did.
function applyEvent(entry: RulesControlEntry, event: RulesControlEvent): boolean {
  const version = event.version;
  if (event.kind === "rules") {
    if (event.canary !== undefined && event.at !== undefined) {
      const candidate = { share: event.canary, key: [event.at, RANK.canary, version] as RulesOrderKey };
      if (entry.canary && compareCanaries(candidate, entry.canary) <= 0) return false;
      entry.canary = candidate;
      return true;
    }
    return raise(entry, "activated", [event.at ?? null, RANK.rules, version]);
  }
  if (event.kind === "rules_promote") return raise(entry, "activated", [event.at, RANK.promote, version]);
  const key: RulesOrderKey = [event.at, RANK.rollback, version];
  const activated = raise(entry, "activated", key);
  return raise(entry, "rolledBack", key) || activated;
}

/** Orders rule control events in time (untimed `rules` events first), as a batch is merged and split. */
export function compareRulesEvents(a: RulesControlEvent, b: RulesControlEvent): number {
  return compareOrderKeys(eventKey(a), eventKey(b));
}

function eventKey(event: RulesControlEvent): RulesOrderKey {
  if (event.kind === "rules") {
    const rank = event.canary !== undefined && event.at !== undefined ? RANK.canary : RANK.rules;
    return [event.at ?? null, rank, event.version];
  }
  return [event.at, event.kind === "rules_promote" ? RANK.promote : RANK.rollback, event.version];
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

// Keeps the `keep` highest stored versions plus those resolved as active or canary (a push never
// evicts a rolled-back-to active version); forgets pending versions below the window, caps pending.
function prune(
  entries: Map<number, RulesControlEntry>,
  keep: number,
  put: Map<number, RulesValue>,
  drop: Set<number>,
): void {
  const stored = [...entries.values()].filter((entry) => entry.stored).sort((a, b) => b.version - a.version);
  const pinned = pinnedVersions({ entries: stored });
  for (const entry of stored.slice(keep)) {
    if (pinned.has(entry.version)) continue;
    entries.delete(entry.version);
    // A set put by this same merge was never written; only sets already in KV are deleted.
    if (!put.delete(entry.version)) drop.add(entry.version);
  }
  const horizon = windowHorizon(stored.map((entry) => entry.version), keep);
  const pending = [...entries.values()].filter((entry) => !entry.stored).sort((a, b) =>
    b.version - a.version
  );
  pending.forEach((entry, index) => {
    if (entry.version < horizon || index >= MAX_PENDING_VERSIONS) entries.delete(entry.version);
  });
}

function pinnedVersions(control: RulesControlValue): Set<number> {
  const { active, canary } = resolveRules(control);
  const pinned = new Set<number>();
  if (active) pinned.add(active.version);
  if (canary) pinned.add(canary.version);
  return pinned;
}

// The lowest version of the kept window, or -Infinity while it is not full.
function windowHorizon(stored: readonly number[], keep: number): number {
  if (stored.length < keep) return -Infinity;
  return [...stored].sort((a, b) => b - a)[keep - 1]!;
}

/** The state a control record resolves to: the active version (with its event's key) and the canary. */
export interface ResolvedRules {
  active: { version: number; key: RulesOrderKey } | undefined;
  canary: { version: number; share: number } | undefined;
}

/**
 * Only versions whose rule set is kept count. The canary is the newest, unless a later rollback or
 * activation of the same or a higher version ended it, or it is the active version itself.
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

/** The rule set the control record in KV makes active, if any. */
export async function readActiveRules(kv: Deno.Kv): Promise<RulesValue | undefined> {
  const { active } = resolveRules(await readRulesControl(kv));
  if (!active) return undefined;
  return (await readRuleSets(kv, [active.version])).get(active.version);
}

/** One kept (or named, `stored` false) version as `GET /_edge/rules` shows it. */
export interface KeptVersion {
  version: number;
  stored: boolean;
  activatedAt: string | null;
  canary: { share: number; at: string } | null;
}

/** The rules state stored in KV, resolved, plus every kept version. */
export interface StoredRulesStatus {
  active: number | null;
  canary: { version: number; share: number } | null;
  kept: KeptVersion[];
}

/** The active and canary versions KV names, and every kept version, highest first. */
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
