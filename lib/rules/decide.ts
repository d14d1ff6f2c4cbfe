/**
 * @module
 * The decision stage: a pure function from facts, the visitor and rules to what the edge does
 * with the request. No I/O, no clock, no randomness: the same inputs give the same decision.
 */
import type { Facts } from "../pipeline/facts.ts";
import { isSafeTargetPath } from "./schema.ts";
import type { CompiledImageRule, CompiledRules, RouteAction } from "./compile.ts";
import { regionSource, resolveRegion } from "../pipeline/geo.ts";
import { MAX_STICKY, STICKY_PAYLOAD_MAX, stickyEntryLength } from "../pipeline/sticky.ts";
import { assignExperiment, type ExperimentContext } from "./experiments.ts";
import { evaluateFlag } from "./flags.ts";
import { conditionMismatch, hintsForInputs, INPUT, inputNames, matchesAnyPath } from "./targeting.ts";
import { pathForRules } from "../http/paths.ts";
import type {
  Action,
  Decision,
  DecisionInputs,
  DecisionTrace,
  ForcedOutcome,
  VisitorContext,
} from "./decision.ts";

/**
 * Decides what to do with a request, in steps: the region; the experiments whose `match` and
 * `when` apply (bots get control, a valid sticky assignment is kept, else GrowthBook bucketing);
 * the first route with a safe target; for a proxied `GET`/`HEAD` the first image rule; every
 * flag; the slot contents. A QA request's forced variations and flag values win (never sticky).
 * While a canary runs (`inputs.canary`) the outcome depends on the visitor key, which chose the rules.
 *
 * @param inputs the request facts, the visitor, what QA forces and whether a canary runs
 * @param rules the compiled rules the visitor evaluates
 * @param trace told every step, for an explanation; the decision is the same with or without it
 */
export function decide(inputs: DecisionInputs, rules: CompiledRules, trace?: DecisionTrace): Decision {
  const { facts, visitor, forced } = inputs;
  const region = resolveRegion(rules, facts.country, facts.regionHint);
  trace?.region(region, regionSource(rules, facts.country, facts.regionHint));
  const pass = startPass(facts, visitor, rules, region, trace);
  const { variants, stickyAssignments } = assignExperiments(pass, visitor, forced);
  // Assignments to experiments these rules do not have (a canary, or a push that dropped or renamed
  // one) stay in the cookie while it has room, so a rollback finds them again.
  if (visitor.sticky.size > 0) {
    keepUnknownAssignments(visitor.sticky, rules.experimentKeys, stickyAssignments);
  }
  const route = chooseRoute(pass);
  let action: Action = route?.action ?? { type: "proxy", path: facts.path };
  if (action.type === "proxy" && (facts.method === "GET" || facts.method === "HEAD")) {
    action = adaptImages(pass, action);
  }
  const flags = evaluateFlags(pass, forced);
  const { slots, slotMask } = chooseSlots(pass);
  const dependsOn = inputNames(pass.mask);
  // Appended (not a mask bit) so the order stays that of the rules' own inputs.
  if (inputs.canary && !(pass.mask & INPUT.visitorKey)) dependsOn.push("visitorKey");
  const decision: Decision = {
    region,
    country: facts.country,
    rulesVersion: rules.version,
    action,
    matchedRoute: route?.match,
    personalized: dependsOn.length > 0,
    variants,
    stickyAssignments,
    flags,
    usedHints: hintsForInputs(pass.mask),
    dependsOn,
    slots,
    slotDependsOn: inputNames(slotMask),
  };
  if (forced) decision.forced = true;
  return decision;
}

/** What the steps of one decision share; `mask` collects the `INPUT` bits the outcome read. */
interface Pass {
  facts: Facts;
  rules: CompiledRules;
  rulesPath: string;
  context: ExperimentContext;
  /** In the experiment or not. */
  served: Record<string, string>;
  trace: DecisionTrace | undefined;
  mask: number;
}

function startPass(
  facts: Facts,
  visitor: VisitorContext,
  rules: CompiledRules,
  region: string,
  trace: DecisionTrace | undefined,
): Pass {
  const device = facts.device;
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
  return { facts, rules, rulesPath, context, served, trace, mask: 0 };
}

function assignExperiments(
  pass: Pass,
  visitor: VisitorContext,
  forced: ForcedOutcome | undefined,
): { variants: Record<string, string>; stickyAssignments: Record<string, string> } {
  const { rules, rulesPath, context, served, trace } = pass;
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
      pass.mask |= INPUT.visitorKey;
      trace?.experiment(experiment, "forced", undefined, {
        variation: forcedVariation,
        inExperiment: false,
        sticky: false,
      });
      continue;
    }
    if (experiment.when) {
      pass.mask |= experiment.when.inputs;
      const failed = conditionMismatch(experiment.when, context);
      if (failed !== undefined) {
        trace?.experiment(experiment, "when", failed, undefined);
        continue;
      }
    }
    // Whoever is exposed, in the experiment or not, gets a response that depends on who they are.
    pass.mask |= INPUT.visitorKey;
    const result = assignExperiment(experiment, context, trace);
    trace?.experiment(experiment, "exposed", undefined, result);
    served[experiment.key] = result.variation;
    if (result.inExperiment) {
      variants[experiment.key] = result.variation;
      stickyAssignments[experiment.key] = result.variation;
    }
  }
  return { variants, stickyAssignments };
}

function chooseRoute(pass: Pass): { action: Action; match: string } | undefined {
  const { facts, rulesPath, context, trace } = pass;
  const routes = pass.rules.routes;
  for (let r = 0; r < routes.length; r++) {
    const route = routes[r]!;
    const splat = route.pattern.splat(rulesPath);
    if (splat === null) {
      trace?.route(r, "path", undefined, undefined, undefined);
      continue;
    }
    pass.mask |= route.inputs;
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
      const action: Action = {
        type: "redirect",
        location: location + facts.search,
        status: routeAction.status,
      };
      trace?.route(r, "matched", undefined, undefined, action.location);
      return { action, match: route.match };
    }
    const key = rewriteKey(routeAction, pass);
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
    trace?.route(r, "matched", undefined, keyed === undefined ? "*" : key, path);
    return { action: { type: "proxy", path }, match: route.match };
  }
  return undefined;
}

function rewriteKey(action: RouteAction & { type: "rewrite" }, pass: Pass): string | undefined {
  switch (action.by) {
    case "region":
      return pass.context.region;
    case "device":
      return pass.facts.device.device;
    case "network":
      return pass.facts.device.network;
    case "experiment":
      return pass.served[action.experiment ?? ""];
  }
}

function adaptImages(pass: Pass, action: Action & { type: "proxy" }): Action {
  const { facts, rulesPath, context, trace } = pass;
  const images = pass.rules.images;
  for (let i = 0; i < images.length; i++) {
    const image = images[i]!;
    if (!matchesAnyPath(image.patterns, rulesPath)) {
      trace?.image(i, "path", undefined, undefined);
      continue;
    }
    if (image.when) {
      pass.mask |= image.when.inputs;
      const failed = conditionMismatch(image.when, context);
      if (failed !== undefined) {
        trace?.image(i, "when", failed, undefined);
        continue;
      }
    }
    pass.mask |= image.inputs;
    const search = adaptImageSearch(image, facts);
    trace?.image(i, "matched", undefined, search);
    return search === facts.search ? action : { type: "proxy", path: action.path, search };
  }
  return action;
}

function evaluateFlags(pass: Pass, forced: ForcedOutcome | undefined): Record<string, unknown> {
  const flags: Record<string, unknown> = {};
  const ruleFlags = pass.rules.flags;
  for (let f = 0; f < ruleFlags.length; f++) {
    const flag = ruleFlags[f]!;
    const evaluation = evaluateFlag(flag, pass.context, pass.trace);
    flags[flag.key] = evaluation.value;
    pass.mask |= evaluation.inputs;
    pass.trace?.flag(f, evaluation);
    if (pass.trace && forced?.flags.has(flag.key)) pass.trace.flagForced(f, forced.flags.get(flag.key));
  }
  if (forced) { for (const [key, value] of forced.flags) flags[key] = value; }
  return flags;
}

function chooseSlots(pass: Pass): { slots: Record<string, string>; slotMask: number } {
  const { rulesPath, context, trace } = pass;
  const slots: Record<string, string> = {};
  let slotMask = 0;
  const ruleSlots = pass.rules.slots;
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
  return { slots, slotMask };
}

/** Where a decision takes its rules from (a `RulesStore`): the active set, or a canary's for its visitors. */
export interface RulesSource {
  rulesFor(visitorKey: string): CompiledRules;
  readonly canary: { readonly rules: CompiledRules; readonly share: number } | undefined;
}

/**
 * The decision stage as the pipeline runs it: the rules the visitor evaluates (a canary's for
 * visitors in its share), then {@linkcode decide}.
 *
 * @param inputs the request facts and the visitor
 * @param source the rules store
 * @param trace told every step, for an explanation
 */
export function decideForVisitor(
  inputs: DecisionInputs,
  source: RulesSource,
  trace?: DecisionTrace,
): { rules: CompiledRules; decision: Decision } {
  const rules = source.rulesFor(inputs.visitor.key);
  return { rules, decision: decide({ ...inputs, canary: source.canary !== undefined }, rules, trace) };
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
