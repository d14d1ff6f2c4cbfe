/**
 * @module
 * The decision stage: a pure function from facts, the visitor and rules to what the edge does
 * with the request — experiments, route (rewrite or redirect), image adaptation and flags. No
 * I/O, no clock, no randomness — the same inputs always give the same decision.
 */
import type { Facts } from "./facts.ts";
import { type CompiledImageRule, type CompiledRules, isSafeTargetPath } from "./rules.ts";
import { resolveRegion } from "./geo.ts";
import { MAX_STICKY, STICKY_PAYLOAD_MAX, stickyEntryLength } from "./sticky.ts";
import { assignExperiment, type ExperimentContext } from "./experiments.ts";
import { evaluateFlag } from "./flags.ts";
import {
  type DecisionInput,
  hintsForInputs,
  INPUT,
  inputNames,
  matchesAnyPath,
  matchesCondition,
} from "./targeting.ts";

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

/** Inputs of {@linkcode decide}. */
export interface DecisionInputs {
  facts: Facts;
  visitor: VisitorContext;
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
 * @param inputs the request facts and the visitor
 * @param rules the active compiled rules
 * @returns the decision
 * @throws never
 * @example
 * ```ts
 * const decision = decide({ facts, visitor }, deps.rules.current);
 * decision.variants; // { hero: "a" }
 * ```
 */
export function decide(inputs: DecisionInputs, rules: CompiledRules): Decision {
  const { facts, visitor } = inputs;
  const device = facts.device;
  const region = resolveRegion(rules, facts.country, facts.regionHint);
  const served: Record<string, string> = {};
  const context: ExperimentContext = {
    region,
    country: facts.country,
    device: device.device,
    network: device.network,
    platform: device.platform?.toLowerCase(),
    segments: visitor.segments,
    path: facts.path,
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
    if (remembered !== undefined && experiment.variationSet.has(remembered)) {
      stickyAssignments[experiment.key] = remembered;
    }
    if (!experiment.enabled) continue;
    if (experiment.paths && !matchesAnyPath(experiment.paths, facts.path)) continue;
    if (experiment.when) {
      mask |= experiment.when.inputs;
      if (!matchesCondition(experiment.when, context)) continue;
    }
    // Whoever is exposed, in the experiment or not, gets a response that depends on who they are.
    mask |= INPUT.visitorKey;
    const result = assignExperiment(experiment, context);
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
  for (const route of rules.routes) {
    const splat = route.pattern.splat(facts.path);
    if (splat === null) continue;
    mask |= route.inputs;
    if (route.when && !matchesCondition(route.when, context)) continue;
    const routeAction = route.action;
    if (routeAction.type === "redirect") {
      const location = fillSplat(routeAction.to, splat);
      if (!isSafeTargetPath(location)) continue;
      // The query goes along (campaign parameters, coupons); targets never carry one of their own.
      action = { type: "redirect", location: location + facts.search, status: routeAction.status };
      matchedRoute = route.match;
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
    const target = (key === undefined ? undefined : routeAction.targets.get(key)) ??
      routeAction.targets.get("*");
    if (target === undefined) continue;
    const path = fillSplat(target, splat);
    if (!isSafeTargetPath(path)) continue;
    action = { type: "proxy", path };
    matchedRoute = route.match;
    break;
  }

  if (action === undefined) action = { type: "proxy", path: facts.path };
  if (action.type === "proxy" && (facts.method === "GET" || facts.method === "HEAD")) {
    for (const image of rules.images) {
      if (!matchesAnyPath(image.patterns, facts.path)) continue;
      if (image.when) {
        mask |= image.when.inputs;
        if (!matchesCondition(image.when, context)) continue;
      }
      mask |= image.inputs;
      const search = adaptImageSearch(image, facts);
      if (search !== facts.search) action = { type: "proxy", path: action.path, search };
      break;
    }
  }

  const flags: Record<string, unknown> = {};
  for (const flag of rules.flags) {
    const evaluation = evaluateFlag(flag, context);
    flags[flag.key] = evaluation.value;
    mask |= evaluation.inputs;
  }

  const slots: Record<string, string> = {};
  let slotMask = 0;
  for (const slot of rules.slots) {
    if (Object.hasOwn(slots, slot.name)) continue;
    // A slot scoped to other paths read nothing of the visitor here.
    if (slot.when?.paths && !matchesAnyPath(slot.when.paths, facts.path)) continue;
    if (slot.when) {
      slotMask |= slot.when.inputs;
      if (!matchesCondition(slot.when, context)) continue;
    }
    slots[slot.name] = slot.html;
  }

  return {
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
