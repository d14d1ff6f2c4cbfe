/**
 * @module
 * The decision stage: a pure function from facts, the visitor and rules to what the edge does
 * with the request — experiments, route (rewrite or redirect), image adaptation and flags. No
 * I/O, no clock, no randomness — the same inputs always give the same decision.
 */
import type { Facts } from "../pipeline/facts.ts";
import type { Identity } from "../pipeline/identity.ts";
import type { EdgeUserContext } from "../pipeline/context.ts";
import { type CompiledImageRule, type CompiledRules, isSafeTargetPath } from "./rules.ts";
import { type RegionSource, regionSource, resolveRegion } from "../pipeline/geo.ts";
import { MAX_STICKY, STICKY_PAYLOAD_MAX, stickyEntryLength } from "../pipeline/sticky.ts";
import {
  assignExperiment,
  type CompiledExperiment,
  type ExperimentContext,
  type ExperimentResult,
  type ExperimentTrace,
} from "./experiments.ts";
import { evaluateFlag, type FlagEvaluation, type FlagTrace } from "./flags.ts";
import {
  type ConditionField,
  conditionMismatch,
  type DecisionInput,
  hintsForInputs,
  INPUT,
  inputNames,
  matchesAnyPath,
} from "./targeting.ts";

import { pathForRules } from "../http/paths.ts";

export type { DecisionInput } from "./targeting.ts";

/** Who the visitor is, as far as the decision needs to know. */
export interface VisitorContext {
  /** The bucketing and targeting key: the user id when logged in, else the anonymous id. */
  key: string;
  /** Whether `key` is a logged-in user id. */
  loggedIn: boolean;
  /** Profile segments (already empty when the visitor sent `Sec-GPC: 1`). */
  segments: readonly string[];
  /** Profile attributes (already empty under GPC). */
  attributes: Readonly<Record<string, string | number | boolean>>;
  /** Sticky assignments from the visitor's cookie: experiment key → variation value. */
  sticky: ReadonlyMap<string, string>;
}

/** Variations and flag values a QA request forces (see `lib/pipeline/qa.ts`). */
export interface ForcedOutcome {
  /** Experiment key → variation, served wherever the experiment's `match` covers the path. */
  variants: ReadonlyMap<string, string>;
  /** Flag key → value (already of the flag's type). */
  flags: ReadonlyMap<string, unknown>;
}

/** Inputs of {@linkcode decide}. */
export interface DecisionInputs {
  facts: Facts;
  visitor: VisitorContext;
  /** What a request with the QA token forces; never written into the sticky cookie. */
  forced?: ForcedOutcome;
}

/**
 * What to do with the request. For `proxy`, `search` is present only when the edge changed the
 * query string (image adaptation); it then replaces `facts.search`, `?` included.
 */
export type Action =
  | { type: "proxy"; path: string; search?: string }
  | { type: "redirect"; location: string; status: number };

/** The outcome of the decision stage. */
export interface Decision {
  region: string;
  country: string | undefined;
  /** The rules version the decision was made with. */
  rulesVersion: number;
  action: Action;
  /** The route glob that matched, if any. */
  matchedRoute: string | undefined;
  /**
   * Whether the outcome (route, variants, flags, added parameters) depended on who the visitor
   * is, so shared caches must not store the response blindly. Same as `dependsOn.length > 0`.
   */
  personalized: boolean;
  /** Experiment key → variation, for the experiments this request exposes the visitor to. */
  variants: Record<string, string>;
  /** What the sticky cookie should now hold: still-valid earlier assignments plus new ones. */
  stickyAssignments: Record<string, string>;
  /** Flag key → value, for every flag of the rules. */
  flags: Record<string, unknown>;
  /** The client-hint request headers the outcome depended on (canonical case), for `Vary`. */
  usedHints: string[];
  /**
   * The visitor inputs the outcome depended on. `device` also depends on `User-Agent`;
   * `visitorKey` means the visitor's id and sticky cookie (experiments, rollouts).
   */
  dependsOn: DecisionInput[];
  /** Slot name → HTML chosen for this visitor (used only when the origin answers with HTML). */
  slots: Record<string, string>;
  /** The inputs the slot choice depended on (they matter only for HTML responses). */
  slotDependsOn: DecisionInput[];
  /**
   * A QA request forced variations or flags: the response must not be stored anywhere, and its
   * variants are no exposures (nobody was assigned them).
   */
  forced?: true;
}

/**
 * What happened to an experiment: disabled, `match` missed the path, `when` failed, exposed, or
 * forced by a QA request (see `lib/pipeline/qa.ts`).
 */
export type ExperimentStep = "disabled" | "path" | "when" | "exposed" | "forced";

/**
 * What happened to a route: its glob missed the path, its `when` failed, its rewrite map had no
 * target for the visitor's key (nor `*`), the filled-in target was unsafe, or it matched.
 */
export type RouteStep = "path" | "when" | "no-target" | "unsafe-target" | "matched";

/** What happened to an image rule: its globs missed the path, its `when` failed, or it matched. */
export type ImageStep = "path" | "when" | "matched";

/**
 * What happened to a slot entry: an earlier entry of its name already won, its `when.path`
 * missed the page, the rest of its `when` failed, or it matched.
 */
export type SlotStep = "taken" | "path" | "when" | "matched";

/**
 * Receives every step of a decision, as {@linkcode decide} takes it, when an explanation is
 * wanted (see `lib/rules/explain.ts`). Without one, nothing is computed or allocated for it.
 * Rules after the one that won (routes, images) are not reported: they were not considered.
 */
export interface DecisionTrace extends ExperimentTrace, FlagTrace {
  /** The region and where it came from. */
  region(region: string, source: RegionSource): void;
  /** The sticky cookie's entry for an experiment of the rules; `valid` when it names one of its variations. */
  sticky(experiment: CompiledExperiment, remembered: string, valid: boolean): void;
  /**
   * An experiment's step; `exposed` comes after the `assignment` that decided its `result`.
   * `field` names the failing `when` field.
   */
  experiment(
    experiment: CompiledExperiment,
    step: ExperimentStep,
    field: ConditionField | undefined,
    result: ExperimentResult | undefined,
  ): void;
  /**
   * A route's step. `key` is what the rewrite map was looked up by (region, device, network or
   * variation; `*` when the fallback was taken); `target` the filled-in path or redirect location.
   */
  route(
    index: number,
    step: RouteStep,
    field: ConditionField | undefined,
    key: string | undefined,
    target: string | undefined,
  ): void;
  /** An image rule's step; `search` is the query string after adaptation. */
  image(index: number, step: ImageStep, field: ConditionField | undefined, search: string | undefined): void;
  /** A flag's result, after the `flagRule` steps that led to it. */
  flag(index: number, evaluation: FlagEvaluation): void;
  /** A QA request replaced that flag's evaluated value (reported after its `flag`). */
  flagForced(index: number, value: unknown): void;
  /** A slot entry's step. */
  slot(index: number, step: SlotStep, field: ConditionField | undefined): void;
}

/**
 * Decides what to do with a request:
 * 1. the region from the country (or a trusted region hint);
 * 2. experiments whose `match` and `when` apply: bots get control and are not in them, a
 *    still-valid sticky assignment is kept, everyone else is bucketed (GrowthBook-compatible);
 * 3. the first route whose glob matches, whose `when` holds and whose rewrite map has a target
 *    for the visitor's region, device, network or variation (else `*`) — unsafe results are skipped;
 * 4. for a proxied `GET`/`HEAD`, the first image rule: width and quality query parameters the
 *    client did not set itself;
 * 5. every flag (first matching rule).
 *
 * A QA request's forced variations replace the assignment wherever the experiment's `match`
 * covers the path, whatever its `enabled`, `when`, coverage or namespace, and the visitor being
 * a bot; its forced flag values replace the evaluated ones. Neither reaches
 * `stickyAssignments`.
 *
 * @param inputs the request facts and the visitor
 * @param rules the active compiled rules
 * @param trace told every step, for an explanation; the decision is the same with or without it
 * @returns the decision
 * @throws never
 * @example
 * ```ts
 * const decision = decide({ facts, visitor }, deps.rules.current);
 * decision.variants; // { hero: "a" }
 * ```
 */
export function decide(inputs: DecisionInputs, rules: CompiledRules, trace?: DecisionTrace): Decision {
  const { facts, visitor, forced } = inputs;
  const device = facts.device;
  const region = resolveRegion(rules, facts.country, facts.regionHint);
  trace?.region(region, regionSource(rules, facts.country, facts.regionHint));
  // Globs match the path without `;` parameters, as a servlet container maps it; the origin still
  // gets `facts.path` as it was when no route applies.
  const rulesPath = pathForRules(facts.path);
  const served: Record<string, string> = {};
  const context: ExperimentContext = {
    region,
    country: facts.country,
    device: device.device,
    network: device.network,
    platform: device.platform?.toLowerCase(),
    segments: visitor.segments,
    path: rulesPath,
    loggedIn: visitor.loggedIn,
    variants: served,
    key: visitor.key,
    isBot: device.isBot,
    sticky: visitor.sticky,
  };
  let mask = 0;

  const variants: Record<string, string> = {};
  const stickyAssignments: Record<string, string> = {};
  for (const experiment of rules.experiments) {
    const remembered = visitor.sticky.get(experiment.key);
    if (remembered !== undefined) {
      const valid = experiment.variationSet.has(remembered);
      if (valid) stickyAssignments[experiment.key] = remembered;
      trace?.sticky(experiment, remembered, valid);
    }
    const forcedVariation = forced?.variants.get(experiment.key);
    if (!experiment.enabled && forcedVariation === undefined) {
      trace?.experiment(experiment, "disabled", undefined, undefined);
      continue;
    }
    if (experiment.paths && !matchesAnyPath(experiment.paths, rulesPath)) {
      trace?.experiment(experiment, "path", undefined, undefined);
      continue;
    }
    // QA forcing wins over `enabled`, `when`, coverage, namespace and bots; the page then
    // depends on who asked, as for any assignment.
    if (forcedVariation !== undefined) {
      served[experiment.key] = forcedVariation;
      variants[experiment.key] = forcedVariation;
      mask |= INPUT.visitorKey;
      trace?.experiment(experiment, "forced", undefined, {
        variation: forcedVariation,
        inExperiment: false,
        sticky: false,
      });
      continue;
    }
    if (experiment.when) {
      mask |= experiment.when.inputs;
      const failed = conditionMismatch(experiment.when, context);
      if (failed !== undefined) {
        trace?.experiment(experiment, "when", failed, undefined);
        continue;
      }
    }
    // Whoever is exposed, in the experiment or not, gets a response that depends on who they are.
    mask |= INPUT.visitorKey;
    const result = assignExperiment(experiment, context, trace);
    trace?.experiment(experiment, "exposed", undefined, result);
    served[experiment.key] = result.variation;
    if (result.inExperiment) {
      variants[experiment.key] = result.variation;
      stickyAssignments[experiment.key] = result.variation;
    }
  }
  // Assignments to experiments these rules do not have (a canary or a push that dropped or
  // renamed one) stay in the cookie while it has room, so a rollback finds them again.
  // The rules' own experiments always fit (rule sets are checked for it); these fill what is left.
  if (visitor.sticky.size > 0) {
    keepUnknownAssignments(visitor.sticky, rules.experimentKeys, stickyAssignments);
  }

  let action: Action | undefined;
  let matchedRoute: string | undefined;
  const routes = rules.routes;
  for (let r = 0; r < routes.length; r++) {
    const route = routes[r]!;
    const splat = route.pattern.splat(rulesPath);
    if (splat === null) {
      trace?.route(r, "path", undefined, undefined, undefined);
      continue;
    }
    mask |= route.inputs;
    if (route.when) {
      const failed = conditionMismatch(route.when, context);
      if (failed !== undefined) {
        trace?.route(r, "when", failed, undefined, undefined);
        continue;
      }
    }
    const routeAction = route.action;
    if (routeAction.type === "redirect") {
      const location = fillSplat(routeAction.to, splat);
      if (!isSafeTargetPath(location)) {
        trace?.route(r, "unsafe-target", undefined, undefined, location);
        continue;
      }
      // The query goes along (campaign parameters, coupons); targets never carry one of their own.
      action = { type: "redirect", location: location + facts.search, status: routeAction.status };
      matchedRoute = route.match;
      trace?.route(r, "matched", undefined, undefined, action.location);
      break;
    }
    let key: string | undefined;
    switch (routeAction.by) {
      case "region":
        key = region;
        break;
      case "device":
        key = device.device;
        break;
      case "network":
        key = device.network;
        break;
      case "experiment":
        key = served[routeAction.experiment ?? ""];
        break;
    }
    const keyed = key === undefined ? undefined : routeAction.targets.get(key);
    const target = keyed ?? routeAction.targets.get("*");
    if (target === undefined) {
      trace?.route(r, "no-target", undefined, key, undefined);
      continue;
    }
    const path = fillSplat(target, splat);
    if (!isSafeTargetPath(path)) {
      trace?.route(r, "unsafe-target", undefined, keyed === undefined ? "*" : key, path);
      continue;
    }
    action = { type: "proxy", path };
    matchedRoute = route.match;
    trace?.route(r, "matched", undefined, keyed === undefined ? "*" : key, path);
    break;
  }

  if (action === undefined) action = { type: "proxy", path: facts.path };
  if (action.type === "proxy" && (facts.method === "GET" || facts.method === "HEAD")) {
    const images = rules.images;
    for (let i = 0; i < images.length; i++) {
      const image = images[i]!;
      if (!matchesAnyPath(image.patterns, rulesPath)) {
        trace?.image(i, "path", undefined, undefined);
        continue;
      }
      if (image.when) {
        mask |= image.when.inputs;
        const failed = conditionMismatch(image.when, context);
        if (failed !== undefined) {
          trace?.image(i, "when", failed, undefined);
          continue;
        }
      }
      mask |= image.inputs;
      const search = adaptImageSearch(image, facts);
      if (search !== facts.search) action = { type: "proxy", path: action.path, search };
      trace?.image(i, "matched", undefined, search);
      break;
    }
  }

  const flags: Record<string, unknown> = {};
  const ruleFlags = rules.flags;
  for (let f = 0; f < ruleFlags.length; f++) {
    const flag = ruleFlags[f]!;
    const evaluation = evaluateFlag(flag, context, trace);
    flags[flag.key] = evaluation.value;
    mask |= evaluation.inputs;
    trace?.flag(f, evaluation);
    if (trace && forced?.flags.has(flag.key)) trace.flagForced(f, forced.flags.get(flag.key));
  }
  if (forced) { for (const [key, value] of forced.flags) flags[key] = value; }

  const slots: Record<string, string> = {};
  let slotMask = 0;
  const ruleSlots = rules.slots;
  for (let s = 0; s < ruleSlots.length; s++) {
    const slot = ruleSlots[s]!;
    if (Object.hasOwn(slots, slot.name)) {
      trace?.slot(s, "taken", undefined);
      continue;
    }
    // A slot scoped to other paths read nothing of the visitor here.
    if (slot.when?.paths && !matchesAnyPath(slot.when.paths, rulesPath)) {
      trace?.slot(s, "path", undefined);
      continue;
    }
    if (slot.when) {
      slotMask |= slot.when.inputs;
      const failed = conditionMismatch(slot.when, context);
      if (failed !== undefined) {
        trace?.slot(s, "when", failed);
        continue;
      }
    }
    slots[slot.name] = slot.html;
    trace?.slot(s, "matched", undefined);
  }

  const decision: Decision = {
    region,
    country: facts.country,
    rulesVersion: rules.version,
    action,
    matchedRoute,
    personalized: mask !== 0,
    variants,
    stickyAssignments,
    flags,
    usedHints: hintsForInputs(mask),
    dependsOn: inputNames(mask),
    slots,
    slotDependsOn: inputNames(slotMask),
  };
  if (forced) decision.forced = true;
  return decision;
}

/** Where a decision takes its rules from (a `RulesStore`): the active set, or a canary's for its visitors. */
export interface RulesSource {
  /** The rules a visitor evaluates. */
  rulesFor(visitorKey: string): CompiledRules;
  /** The running canary, if any. */
  readonly canary: { readonly rules: CompiledRules; readonly share: number } | undefined;
}

/**
 * The decision stage as the pipeline runs it: the rules the visitor evaluates (a canary's for
 * visitors in its share), then {@linkcode decide}. While a canary runs, which rules decided
 * depends on the visitor key whatever they say, so the decision says so.
 *
 * @param inputs the request facts and the visitor
 * @param source the rules store
 * @param trace told every step, for an explanation
 * @returns the rules used and the decision
 * @throws never
 */
export function decideForVisitor(
  inputs: DecisionInputs,
  source: RulesSource,
  trace?: DecisionTrace,
): { rules: CompiledRules; decision: Decision } {
  const rules = source.rulesFor(inputs.visitor.key);
  const decision = decide(inputs, rules, trace);
  if (source.canary && !decision.dependsOn.includes("visitorKey")) {
    return {
      rules,
      decision: { ...decision, personalized: true, dependsOn: [...decision.dependsOn, "visitorKey"] },
    };
  }
  return { rules, decision };
}

/**
 * The visitor as the decision sees them, from the identity and context stages.
 *
 * @param identity the identity stage's result
 * @param context the context stage's result (already without behavioural data under GPC)
 * @returns the visitor context; profile attributes keep only strings, numbers and booleans
 * @throws never
 */
export function visitorContextOf(identity: Identity, context: EdgeUserContext): VisitorContext {
  return {
    key: identity.key,
    loggedIn: identity.userId !== undefined,
    segments: context.segments,
    attributes: primitiveAttributes(context.attributes),
    sticky: identity.sticky,
  };
}

function primitiveAttributes(
  attributes: Readonly<Record<string, unknown>>,
): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [key, value] of Object.entries(attributes)) {
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") {
      out[key] = value;
    }
  }
  return out;
}

// Appends the rule's width and quality parameters unless the client already set them, so an
// explicit `?w=200` thumbnail request keeps its size.
function adaptImageSearch(image: CompiledImageRule, facts: Facts): string {
  const device = facts.device;
  let search = facts.search;
  let params: URLSearchParams | undefined;
  const has = (name: string) => {
    if (facts.search.length <= 1) return false;
    params ??= new URLSearchParams(facts.search);
    return params.has(name);
  };
  const add = (name: string, value: number) => {
    search += `${search.length > 1 ? "&" : "?"}${name}=${value}`;
  };
  const width = image.width;
  if (width && device.viewportWidth !== undefined && !has(width.param)) {
    const pixels = width.from === "dpr-scaled"
      ? device.viewportWidth * (device.dpr ?? 1)
      : device.viewportWidth;
    add(width.param, Math.min(width.max, Math.ceil(pixels / width.step) * width.step));
  }
  const quality = image.quality;
  if (quality) {
    const value = quality.byNetwork.get(device.network);
    if (value !== undefined && !has(quality.param)) add(quality.param, value);
  }
  return search;
}

function keepUnknownAssignments(
  sticky: ReadonlyMap<string, string>,
  known: ReadonlySet<string>,
  assignments: Record<string, string>,
): void {
  let length = -1;
  let count = 0;
  for (const [key, variation] of sticky) {
    if (known.has(key)) continue;
    if (length < 0) {
      length = 0;
      for (const own in assignments) {
        length += stickyEntryLength(own, assignments[own]!);
        count++;
      }
    }
    length += stickyEntryLength(key, variation);
    if (length > STICKY_PAYLOAD_MAX || ++count > MAX_STICKY) break;
    assignments[key] = variation;
  }
}

function fillSplat(target: string, splat: string): string {
  if (!target.includes("*")) return target;
  // A function, so `$&`, `$'` and the like in the request path are not replacement patterns.
  return target.replace("*", () => splat).replace(/\/{2,}/g, "/");
}
