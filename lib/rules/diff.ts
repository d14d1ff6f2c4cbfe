/**
 * @module
 * What pushing one rule set over another changes: the version, regions, and the experiments,
 * flags, routes, image rules and slots added, removed or changed (field by field), with what a
 * change means for visitors already assigned. Both sets are compared after validation, so
 * defaults count as written.
 */
import type { ParsedRuleSet } from "./schema.ts";

/** One changed field: its value before and after (JSON). */
export interface FieldChange {
  field: string;
  old: unknown;
  new: unknown;
}

/** An entry present in both sets whose fields differ. */
export interface ChangedEntry {
  /** The key (experiments, flags), glob (routes, images) or slot name. */
  id: string;
  /** Its position in the new set. */
  index: number;
  fields: FieldChange[];
  /** What the change means for visitors (experiments). */
  notes: string[];
}

/** Changes to one list of the rules. */
export interface ListDiff {
  added: { id: string; index: number }[];
  removed: { id: string; index: number }[];
  changed: ChangedEntry[];
  /** The entries present in both are in another order (it matters: the first match wins). */
  reordered: boolean;
}

/** What a push of `new` over `old` changes. */
export interface RulesDiff {
  /** `same` with other content is a mistake: an edge keeps what it has for a version it stored. */
  version: { old: number; new: number; change: "up" | "same" | "down" };
  /** Top-level settings that changed (`defaultRegion`, `htmlContext`). */
  settings: FieldChange[];
  regions: {
    added: string[];
    removed: string[];
    changed: { region: string; added: string[]; removed: string[] }[];
  };
  experiments: ListDiff;
  flags: ListDiff;
  routes: ListDiff;
  images: ListDiff;
  slots: ListDiff;
  /** Nothing but (possibly) the version differs. */
  same: boolean;
}

/**
 * Compares two validated rule sets.
 *
 * @param before the rules now pushed (or active)
 * @param after the rules to push
 * @returns what changes
 * @example
 * ```ts
 * const diff = diffRules(parseRules(old).source, parseRules(next).source);
 * diff.experiments.changed; // [{ id: "hero", fields: [{ field: "weights", … }], notes: [...] }]
 * ```
 */
export function diffRules(before: ParsedRuleSet, after: ParsedRuleSet): RulesDiff {
  const settings: FieldChange[] = [];
  for (const field of ["defaultRegion", "htmlContext"] as const) {
    if (before[field] !== after[field]) settings.push({ field, old: before[field], new: after[field] });
  }
  const diff: RulesDiff = {
    version: {
      old: before.version,
      new: after.version,
      change: after.version > before.version ? "up" : after.version === before.version ? "same" : "down",
    },
    settings,
    regions: diffRegions(before.regions, after.regions),
    experiments: diffList(before.experiments, after.experiments, (e) => e.key, experimentNotes),
    flags: diffList(before.flags, after.flags, (f) => f.key),
    routes: diffList(before.routes, after.routes, (r) => r.match),
    images: diffList(before.images, after.images, (i) => JSON.stringify(i.match)),
    slots: diffList(before.slots, after.slots, (s) => s.name),
    same: false,
  };
  const lists = [diff.experiments, diff.flags, diff.routes, diff.images, diff.slots];
  diff.same = settings.length === 0 && diff.regions.added.length + diff.regions.removed.length +
          diff.regions.changed.length === 0 &&
    lists.every((list) =>
      list.added.length + list.removed.length + list.changed.length === 0 && !list.reordered
    );
  return diff;
}

function diffRegions(
  before: Record<string, string[]>,
  after: Record<string, string[]>,
): RulesDiff["regions"] {
  const changed: RulesDiff["regions"]["changed"] = [];
  for (const region of Object.keys(after)) {
    const old = before[region];
    if (!old) continue;
    const added = after[region]!.filter((country) => !old.includes(country));
    const removed = old.filter((country) => !after[region]!.includes(country));
    if (added.length || removed.length) changed.push({ region, added, removed });
  }
  return {
    added: Object.keys(after).filter((region) => !Object.hasOwn(before, region)),
    removed: Object.keys(before).filter((region) => !Object.hasOwn(after, region)),
    changed,
  };
}

// Entries are paired by id, the n-th of an id before with the n-th after (routes may repeat a glob).
function diffList<T extends object>(
  before: readonly T[],
  after: readonly T[],
  idOf: (entry: T) => string,
  notesOf: (old: T, next: T, fields: FieldChange[]) => string[] = () => [],
): ListDiff {
  const occurrence = (list: readonly T[]) => {
    const seen = new Map<string, number>();
    return list.map((entry) => {
      const id = idOf(entry);
      const n = seen.get(id) ?? 0;
      seen.set(id, n + 1);
      return `${id}\u0000${n}`;
    });
  };
  const oldKeys = occurrence(before);
  const newKeys = occurrence(after);
  const oldIndex = new Map(oldKeys.map((key, i) => [key, i]));
  const result: ListDiff = { added: [], removed: [], changed: [], reordered: false };
  let lastOld = -1;
  newKeys.forEach((key, index) => {
    const next = after[index]!;
    const at = oldIndex.get(key);
    if (at === undefined) {
      result.added.push({ id: idOf(next), index });
      return;
    }
    if (at < lastOld) result.reordered = true;
    lastOld = at;
    const fields = fieldChanges(before[at]!, next);
    if (fields.length) {
      result.changed.push({ id: idOf(next), index, fields, notes: notesOf(before[at]!, next, fields) });
    }
  });
  const kept = new Set(newKeys);
  oldKeys.forEach((key, index) => {
    if (!kept.has(key)) result.removed.push({ id: idOf(before[index]!), index });
  });
  return result;
}

function fieldChanges(before: object, after: object): FieldChange[] {
  const old = before as Record<string, unknown>;
  const next = after as Record<string, unknown>;
  const fields = [...new Set([...Object.keys(old), ...Object.keys(next)])];
  return fields
    .filter((field) => JSON.stringify(old[field]) !== JSON.stringify(next[field]))
    .map((field) => ({ field, old: old[field], new: next[field] }));
}

type Experiment = ParsedRuleSet["experiments"][number];

function experimentNotes(before: Experiment, after: Experiment, fields: FieldChange[]): string[] {
  const changed = new Set(fields.map((f) => f.field));
  const notes: string[] = [];
  const removed = before.variations.filter((v) => !after.variations.includes(v));
  if (removed.length) {
    notes.push(`Visitors assigned ${removed.map((v) => `"${v}"`).join(", ")} are bucketed again`);
  }
  if (changed.has("seed") || changed.has("hashVersion")) {
    notes.push("The hash changes: visitors without a sticky assignment may move to another variation");
  }
  if (changed.has("weights") || changed.has("coverage") || changed.has("namespace")) {
    notes.push("Sticky visitors keep their variation; the others are bucketed by the new settings");
  }
  if (changed.has("enabled")) {
    notes.push(
      after.enabled
        ? "Exposed again: sticky visitors find their variation"
        : "Exposes nobody; sticky assignments are kept for when it comes back",
    );
  }
  if (changed.has("match") || changed.has("when")) notes.push("Exposed on other requests");
  return notes;
}

/**
 * Renders a diff as text, one line per change.
 *
 * @param diff the diff
 * @returns the report, ending with a newline
 */
export function formatRulesDiff(diff: RulesDiff): string {
  const out: string[] = [];
  const { version } = diff;
  out.push(`version ${version.old} → ${version.new}`);
  if (diff.same) {
    out.push("No change besides the version");
    return `${out.join("\n")}\n`;
  }
  if (version.change === "same") {
    out.push(
      `! The content changes but the version does not: an edge that has version ${version.new} keeps ` +
        "the rule set it has; give the push a new version",
    );
  } else if (version.change === "down") {
    out.push(`! The version goes down: which version is active follows each push's "at" (docs/sync.md)`);
  }
  for (const s of diff.settings) out.push(`~ ${s.field}: ${short(s.old)} → ${short(s.new)}`);
  const { regions } = diff;
  for (const region of regions.added) out.push(`+ region ${region}`);
  for (const region of regions.removed) out.push(`- region ${region}`);
  for (const change of regions.changed) {
    const parts = [...change.added.map((c) => `+${c}`), ...change.removed.map((c) => `-${c}`)];
    out.push(`~ region ${change.region}: ${parts.join(" ")}`);
  }
  list(out, "experiment", diff.experiments);
  list(out, "flag", diff.flags);
  list(out, "route", diff.routes);
  list(out, "image rule", diff.images);
  list(out, "slot", diff.slots);
  return `${out.join("\n")}\n`;
}

function list(out: string[], what: string, changes: ListDiff): void {
  for (const entry of changes.added) out.push(`+ ${what} ${entry.id} (#${entry.index})`);
  for (const entry of changes.removed) out.push(`- ${what} ${entry.id} (was #${entry.index})`);
  for (const entry of changes.changed) {
    out.push(`~ ${what} ${entry.id} (#${entry.index})`);
    for (const field of entry.fields) {
      out.push(`    ${field.field}: ${short(field.old)} → ${short(field.new)}`);
    }
    for (const note of entry.notes) out.push(`    ${note}`);
  }
  if (changes.reordered) out.push(`~ ${what}s reordered (the first match wins)`);
}

function short(value: unknown): string {
  const text = value === undefined ? "(none)" : JSON.stringify(value);
  return text.length > 100 ? `${text.slice(0, 99)}…` : text;
}
