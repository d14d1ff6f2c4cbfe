/**
 * @module
 * Lints a valid rule set for what validation cannot refuse but is almost surely a mistake:
 * routes and image rules an earlier one always answers for, slot entries an earlier one always
 * fills, experiments whose variations no visitor can get, overlapping namespace ranges,
 * references to experiments that are never served where they are read, flag rules never
 * reached, and rules that can only match the edge's own paths. Only what is provable is a
 * warning; experiments no rule reads are a note (the origin and client code may read them).
 */
import { chooseVariation, getBucketRanges } from "./bucketing.ts";
import { DEVICE_CLASSES, NETWORK_CLASSES } from "./targeting.ts";
import { globCovers, globsDisjoint, literalPrefix } from "./glob_relations.ts";
import type { ParsedRuleSet } from "./schema.ts";
import type { CompiledRules } from "./compile.ts";

/** How much a finding matters: a warning is provably wrong or dead; a note is worth knowing. */
export type LintSeverity = "warning" | "note";

/** One finding. */
export interface LintFinding {
  severity: LintSeverity;
  /** A stable name, e.g. `unreachable-route`. */
  code: string;
  /** The field it is about, e.g. `routes.3`. */
  path: string;
  message: string;
}

type Rules = ParsedRuleSet;
type Route = Rules["routes"][number];
type Condition = NonNullable<Route["when"]>;

/**
 * Lints a compiled (so valid) rule set.
 *
 * @param rules the compiled rules (their `source` is linted)
 * @returns the findings: warnings first, then notes, each in the order of the rules file
 * @example
 * ```ts
 * lintRules(parseRules({ version: 1, routes: [{ match: "/*", rewrite: { "*": "/a" } }, { match: "/b", rewrite: { "*": "/c" } }] }));
 * // [{ severity: "warning", code: "unreachable-route", path: "routes.1", … }]
 * ```
 */
export function lintRules(rules: CompiledRules): LintFinding[] {
  const source = rules.source;
  const findings: LintFinding[] = [
    ...edgePaths(source),
    ...unreachableRoutes(source, rules),
    ...unreachableImages(source),
    ...shadowedSlots(source),
    ...emptyVariations(source),
    ...namespaces(source),
    ...references(source),
    ...flagRules(source),
  ];
  return findings.sort(byPlace);
}

const SECTIONS = ["regions", "routes", "experiments", "flags", "images", "slots"];

// Warnings before notes, then in the order of the rules file.
function byPlace(a: LintFinding, b: LintFinding): number {
  if (a.severity !== b.severity) return a.severity === "warning" ? -1 : 1;
  const [sa = "", ia = "0", ...ra] = a.path.split(".");
  const [sb = "", ib = "0", ...rb] = b.path.split(".");
  return SECTIONS.indexOf(sa) - SECTIONS.indexOf(sb) || Number(ia) - Number(ib) ||
    ra.join(".").localeCompare(rb.join("."));
}

const globsOf = (match: string | readonly string[]): readonly string[] =>
  typeof match === "string" ? [match] : match;
const show = (globs: readonly string[]) => JSON.stringify(globs.length === 1 ? globs[0] : globs);

// The proxy never sees these: the edge answers them itself (docs/operations.md).
function edgeOnly(glob: string): boolean {
  const prefix = literalPrefix(glob);
  if (prefix.startsWith("/_edge/") || prefix.startsWith("/ofrep/")) return true;
  return !glob.includes("*") && (glob === "/_edge" || glob === "/.well-known/gpc.json");
}

function edgePaths(rules: Rules): LintFinding[] {
  const out: LintFinding[] = [];
  const check = (path: string, what: string, globs: readonly string[] | undefined) => {
    if (globs && globs.length > 0 && globs.every(edgeOnly)) {
      out.push({
        severity: "warning",
        code: "edge-path",
        path,
        message: `${what} ${show(globs)} only matches the edge's own endpoints, which never reach the rules`,
      });
    }
  };
  rules.routes.forEach((route, r) => check(`routes.${r}`, "The route's match", [route.match]));
  rules.images.forEach((image, i) => check(`images.${i}`, "The image rule's match", globsOf(image.match)));
  rules.experiments.forEach((experiment, e) =>
    check(`experiments.${e}`, `Experiment "${experiment.key}"'s match`, globsOf(experiment.match))
  );
  rules.slots.forEach((slot, s) =>
    check(
      `slots.${s}`,
      `Slot "${slot.name}"'s when.path`,
      slot.when?.path ? globsOf(slot.when.path) : undefined,
    )
  );
  return out;
}

// A route that answers every request its glob matches: no `when`, and a target for every
// visitor that needs no splat (a filled-in target can turn out unsafe and be skipped).
function alwaysAnswers(route: Route, compiled: CompiledRules): boolean {
  if (route.when) return false;
  if (route.redirect) return !route.redirect.to.includes("*");
  const targets = route.rewrite ?? {};
  if (Object.values(targets).some((target) => target.includes("*"))) return false;
  if (Object.hasOwn(targets, "*")) return true;
  // Without a fallback, only a map naming every value the key can take.
  if (route.experiment) return false;
  const values: readonly string[] = route.rewriteBy === "device"
    ? DEVICE_CLASSES
    : route.rewriteBy === "network"
    ? NETWORK_CLASSES
    : [...compiled.regionNames];
  return values.every((value) => Object.hasOwn(targets, value));
}

function unreachableRoutes(rules: Rules, compiled: CompiledRules): LintFinding[] {
  const out: LintFinding[] = [];
  rules.routes.forEach((route, r) => {
    for (let earlier = 0; earlier < r; earlier++) {
      const before = rules.routes[earlier]!;
      if (!alwaysAnswers(before, compiled) || !globCovers(before.match, route.match)) continue;
      out.push({
        severity: "warning",
        code: "unreachable-route",
        path: `routes.${r}`,
        message: `Route "${route.match}" is never reached: routes.${earlier} ("${before.match}") answers ` +
          "every path it matches",
      });
      return;
    }
  });
  return out;
}

function unreachableImages(rules: Rules): LintFinding[] {
  const out: LintFinding[] = [];
  rules.images.forEach((image, i) => {
    const globs = globsOf(image.match);
    for (let earlier = 0; earlier < i; earlier++) {
      const before = rules.images[earlier]!;
      if (before.when) continue;
      const outer = globsOf(before.match);
      if (!globs.every((glob) => outer.some((o) => globCovers(o, glob)))) continue;
      out.push({
        severity: "warning",
        code: "unreachable-image",
        path: `images.${i}`,
        message: `Image rule ${show(globs)} is never reached: images.${earlier} (${show(outer)}) matches ` +
          "every path it matches first",
      });
      return;
    }
  });
  return out;
}

// An entry is never used when an earlier entry of its name always fills the slot on its pages:
// no condition, or only a `when.path` covering the later entry's.
function shadowedSlots(rules: Rules): LintFinding[] {
  const out: LintFinding[] = [];
  rules.slots.forEach((slot, s) => {
    for (let earlier = 0; earlier < s; earlier++) {
      const before = rules.slots[earlier]!;
      if (before.name !== slot.name || !fillsAlways(before.when, slot.when)) continue;
      out.push({
        severity: "warning",
        code: "unreachable-slot",
        path: `slots.${s}`,
        message:
          `Slot "${slot.name}" entry ${s} is never used: entry ${earlier} fills the slot on every page ` +
          "it could match",
      });
      return;
    }
  });
  return out;
}

function fillsAlways(before: Condition | undefined, after: Condition | undefined): boolean {
  if (!before) return true;
  const { path, ...rest } = before;
  if (Object.keys(rest).length > 0 || path === undefined) return false;
  if (!after?.path) return globsOf(path).includes("*");
  return globsOf(after.path).every((glob) => globsOf(path).some((o) => globCovers(o, glob)));
}

// Hash values come in steps (1/10000 for hash version 2, 1/1000 for 1): a range holding none of
// them, like a weight of 0, gives its variation to nobody. Found with the deciding code itself.
function emptyVariations(rules: Rules): LintFinding[] {
  const out: LintFinding[] = [];
  rules.experiments.forEach((experiment, e) => {
    const path = `experiments.${e}`;
    const n = experiment.variations.length;
    if (experiment.coverage === 0) {
      out.push({
        severity: "warning",
        code: "empty-variation",
        path: `${path}.coverage`,
        message:
          `Experiment "${experiment.key}" has coverage 0: nobody is in it (everyone is served control)`,
      });
      return;
    }
    const ranges = getBucketRanges(n, experiment.coverage, experiment.weights);
    const steps = experiment.hashVersion === 2 ? 10_000 : 1000;
    const counts = new Array<number>(n).fill(0);
    for (let k = 0; k < steps; k++) {
      const index = chooseVariation(k / steps, ranges);
      if (index >= 0) counts[index]!++;
    }
    counts.forEach((count, i) => {
      if (count > 0) return;
      const weight = experiment.weights?.[i];
      out.push({
        severity: "warning",
        code: "empty-variation",
        path: `${path}.weights`,
        message:
          `Variation "${experiment.variations[i]}" of experiment "${experiment.key}" gets no visitor: ` +
          (weight === 0 ? "its weight is 0" : `its range ${JSON.stringify(ranges[i])} holds no hash value`),
      });
    });
  });
  return out;
}

function namespaces(rules: Rules): LintFinding[] {
  const out: LintFinding[] = [];
  rules.experiments.forEach((experiment, e) => {
    const ns = experiment.namespace;
    if (!ns) return;
    // Namespace hashes are k / 1000, compared as `inNamespace` compares them.
    let holds = false;
    for (let k = 0; k < 1000 && !holds; k++) holds = k / 1000 >= ns[1] && k / 1000 < ns[2];
    if (!holds) {
      out.push({
        severity: "warning",
        code: "empty-namespace",
        path: `experiments.${e}.namespace`,
        message:
          `Namespace range [${ns[1]}, ${ns[2]}) of experiment "${experiment.key}" holds no namespace ` +
          "hash (they come in steps of 0.001): nobody is in it",
      });
    }
    for (let other = 0; other < e; other++) {
      const them = rules.experiments[other]!;
      const theirs = them.namespace;
      if (!theirs || theirs[0] !== ns[0]) continue;
      const start = Math.max(ns[1], theirs[1]), end = Math.min(ns[2], theirs[2]);
      if (start >= end) continue;
      out.push({
        severity: "warning",
        code: "namespace-overlap",
        path: `experiments.${e}.namespace`,
        message: `Experiments "${them.key}" and "${experiment.key}" share namespace "${ns[0]}" with ` +
          `overlapping ranges: visitors in [${start}, ${end}) can be in both`,
      });
    }
  });
  return out;
}

interface Reference {
  path: string;
  key: string;
  /** Path sets the reading rule needs all of (each a list of globs, any of which); none = any path. */
  scopes: (readonly string[])[];
}

// Every place that reads an experiment's variation, with the paths where it reads it.
function referencesOf(rules: Rules): Reference[] {
  const refs: Reference[] = [];
  const fromCondition = (path: string, when: Condition | undefined, scopes: (readonly string[])[]) => {
    if (!when?.variant) return;
    const all = when.path ? [...scopes, globsOf(when.path)] : scopes;
    for (const key of Object.keys(when.variant)) {
      refs.push({ path: `${path}.when.variant.${key}`, key, scopes: all });
    }
  };
  rules.routes.forEach((route, r) => {
    const scopes = [[route.match]];
    if (route.experiment) {
      refs.push({
        path: `routes.${r}.experiment`,
        key: route.experiment,
        scopes: route.when?.path ? [...scopes, globsOf(route.when.path)] : scopes,
      });
    }
    fromCondition(`routes.${r}`, route.when, scopes);
  });
  rules.flags.forEach((flag, f) =>
    flag.rules.forEach((rule, i) => fromCondition(`flags.${f}.rules.${i}`, rule.when, []))
  );
  rules.images.forEach((image, i) => fromCondition(`images.${i}`, image.when, [globsOf(image.match)]));
  rules.slots.forEach((slot, s) => fromCondition(`slots.${s}`, slot.when, []));
  return refs;
}

function references(rules: Rules): LintFinding[] {
  const refs = referencesOf(rules);
  const out: LintFinding[] = [];
  for (const ref of refs) {
    const experiment = rules.experiments.find((e) => e.key === ref.key)!;
    const where = ref.path.startsWith("routes.") && ref.path.endsWith(".experiment")
      ? "the route never sees a variation and always takes its fallback"
      : "the condition never holds";
    if (!experiment.enabled) {
      out.push({
        severity: "warning",
        code: "reference-never-served",
        path: ref.path,
        message: `Experiment "${ref.key}" is disabled: ${where}`,
      });
      continue;
    }
    const served = globsOf(experiment.match);
    const scope = ref.scopes.find((globs) =>
      globs.every((glob) => served.every((s) => globsDisjoint(s, glob)))
    );
    if (scope) {
      out.push({
        severity: "warning",
        code: "reference-never-served",
        path: ref.path,
        message: `Experiment "${ref.key}" is only served on ${show(served)}, never on ${
          show(scope)
        }: ${where}`,
      });
    }
  }
  const referenced = new Set(refs.map((ref) => ref.key));
  rules.experiments.forEach((experiment, e) => {
    if (referenced.has(experiment.key)) return;
    out.push({
      severity: "note",
      code: "unreferenced-experiment",
      path: `experiments.${e}`,
      message:
        `Experiment "${experiment.key}" is read by no route, flag, image rule or slot: only the origin ` +
        "(x-edge-variants) and client code (the edge context) see its variation",
    });
  });
  return out;
}

function flagRules(rules: Rules): LintFinding[] {
  const out: LintFinding[] = [];
  rules.flags.forEach((flag, f) => {
    const always = flag.rules.findIndex((rule) =>
      !rule.when && (rule.rollout === undefined || rule.rollout >= 1)
    );
    flag.rules.forEach((rule, i) => {
      const path = `flags.${f}.rules.${i}`;
      if (always >= 0 && i > always) {
        out.push({
          severity: "warning",
          code: "unreachable-flag-rule",
          path,
          message: `Rule ${i} of flag "${flag.key}" is never reached: rule ${always} matches every visitor`,
        });
      } else if (rule.rollout === 0) {
        out.push({
          severity: "warning",
          code: "unreachable-flag-rule",
          path: `${path}.rollout`,
          message: `Rule ${i} of flag "${flag.key}" has rollout 0: it matches nobody`,
        });
      }
    });
    const values = [flag.default, ...flag.rules.map((rule) => rule.value)].map((value) =>
      JSON.stringify(value)
    );
    for (const [name, value] of Object.entries(flag.variants ?? {})) {
      const used = flag.rules.some((rule) => rule.variant === name) || values.includes(JSON.stringify(value));
      if (used) continue;
      out.push({
        severity: "warning",
        code: "unused-flag-variant",
        path: `flags.${f}.variants.${name}`,
        message:
          `Variant "${name}" of flag "${flag.key}" is referenced nowhere: no rule gives it and it is ` +
          "not the default",
      });
    }
  });
  return out;
}
