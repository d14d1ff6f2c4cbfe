/**
 * @module
 * Explaining a decision: a collector that the facts and decision stages report every step to
 * (their optional trace hooks), and the {@linkcode Explanation} it builds — what the edge derived
 * about the request and why, who the visitor is, which rules version decided, and for every
 * experiment, route, image rule, flag and slot whether it was considered, matched, and why not.
 * The decision is the one `decideForVisitor` makes, the trace its own account of it.
 */
import type { DeviceReason, DeviceTrace, NetworkReason } from "../pipeline/device.ts";
import type { GeoTrace, RegionSource } from "../pipeline/geo.ts";
import type { Facts } from "../pipeline/facts.ts";
import type { CompiledExperiment, ExperimentOutcome, ExperimentResult } from "./experiments.ts";
import type { FlagEvaluation, FlagRuleOutcome } from "./flags.ts";
import type { ConditionField, TargetingContext } from "./targeting.ts";
import { decideForVisitor } from "./decide.ts";
import {
  type Decision,
  type DecisionTrace,
  type ExperimentStep,
  type ForcedOutcome,
  type ImageStep,
  type RouteStep,
  type SlotStep,
  visitorContextOf,
} from "./decision.ts";
import type {
  ExperimentExplanation,
  ExplainInputs,
  Explanation,
  FlagExplanation,
  FlagRuleExplanation,
  ImageExplanation,
  RouteExplanation,
  SlotExplanation,
} from "./explanation.ts";
import type { CompiledRules } from "./compile.ts";
import { pathForRules } from "../http/paths.ts";
import { assignmentWhy, describeMismatch, flagRuleWhy, flagWhy, rangesOf, routeWhy } from "./explain_text.ts";
import { explainContext, explainFacts, explainIdentity, explainRules } from "./explain_stages.ts";

interface PendingExperiment {
  outcome?: ExperimentOutcome;
  hashValue?: number | null;
  sticky?: { value: string; valid: boolean };
}

/**
 * Collects the trace of one request: pass it as `trace` to `gatherFacts`, then call
 * {@linkcode ExplainCollector.explain} with the later stages' results. One collector per request;
 * its hooks are those of `DecisionTrace`, `GeoTrace` and `DeviceTrace`, documented there.
 *
 * @example
 * ```ts
 * const trace = new ExplainCollector();
 * const facts = gatherFacts(request, peer, { ...options, trace });
 * const { explanation } = trace.explain({ request, facts, identity, context, rules, sessionCookie, ipGeoLoaded });
 * ```
 */
export class ExplainCollector implements DecisionTrace, GeoTrace, DeviceTrace {
  #countryHeader: string | undefined;
  #deviceReason: DeviceReason | null = null;
  #networkReason: NetworkReason | null = null;
  #region: { value: string; source: RegionSource } | undefined;
  #pending = new Map<string, PendingExperiment>();
  #current: PendingExperiment = {};
  #experiments: ExperimentExplanation[] = [];
  #served: Record<string, string> = {};
  #routes: RouteExplanation[] = [];
  #images: ImageExplanation[] = [];
  #flagRules: FlagRuleExplanation[] = [];
  #flags: FlagExplanation[] = [];
  #slots: SlotExplanation[] = [];
  #rules: CompiledRules | undefined;
  #search = "";
  #targeting: TargetingContext | undefined;
  #forced: ForcedOutcome | undefined;

  countryHeader(name: string): void {
    this.#countryHeader = name;
  }

  device(reason: DeviceReason): void {
    this.#deviceReason = reason;
  }

  network(reason: NetworkReason): void {
    this.#networkReason = reason;
  }

  region(region: string, source: RegionSource): void {
    this.#region = { value: region, source };
    if (this.#targeting) this.#targeting.region = region;
  }

  sticky(experiment: CompiledExperiment, remembered: string, valid: boolean): void {
    this.#pendingFor(experiment.key).sticky = { value: remembered, valid };
  }

  assignment(outcome: ExperimentOutcome, hashValue: number | null): void {
    this.#current.outcome = outcome;
    this.#current.hashValue = hashValue;
  }

  experiment(
    experiment: CompiledExperiment,
    step: ExperimentStep,
    field: ConditionField | undefined,
    result: ExperimentResult | undefined,
  ): void {
    const pending = this.#pendingFor(experiment.key);
    const entry: ExperimentExplanation = {
      key: experiment.key,
      considered: true,
      matched: step === "exposed" || step === "forced",
      reason: step,
      why: "",
    };
    if (pending.sticky) entry.sticky = pending.sticky;
    const namespace = experiment.spec.namespace;
    if (namespace) entry.namespace = { id: namespace[0], range: [namespace[1], namespace[2]] };
    const forced = this.#forced?.variants.get(experiment.key);
    if (step === "disabled") entry.why = "The experiment is disabled";
    else if (step === "path") {
      entry.why = `The path "${this.#path()}" is not in its match ${
        JSON.stringify(experiment.paths?.map((glob) => glob.source) ?? [])
      }${forced === undefined ? "" : `, so the forced "${forced}" is not served here`}`;
    } else if (step === "forced" && result) {
      this.#served[experiment.key] = result.variation;
      entry.variation = result.variation;
      entry.inExperiment = false;
      entry.why = `Forced by QA: "${result.variation}" whatever enabled, when, coverage or namespace say; ` +
        "not in the experiment, never sticky, no exposure";
    } else if (step === "when") {
      entry.field = field;
      entry.why = describeMismatch(field!, experiment.when!, this.#targeting!);
    } else if (result) {
      const outcome = this.#current.outcome ?? "bucketed";
      const hashValue = this.#current.hashValue ?? undefined;
      this.#current = {};
      this.#served[experiment.key] = result.variation;
      entry.reason = outcome;
      entry.variation = result.variation;
      entry.inExperiment = result.inExperiment;
      if (outcome === "namespace" && entry.namespace) entry.namespace.hashValue = hashValue;
      if ((outcome === "bucketed" || outcome === "coverage") && hashValue !== undefined) {
        entry.hashValue = hashValue;
        entry.ranges = rangesOf(experiment);
      }
      entry.why = assignmentWhy(experiment, entry);
    }
    this.#experiments.push(entry);
  }

  route(
    index: number,
    step: RouteStep,
    field: ConditionField | undefined,
    key: string | undefined,
    target: string | undefined,
  ): void {
    const route = this.#rules!.routes[index]!;
    const entry: RouteExplanation = {
      index,
      match: route.match,
      considered: true,
      matched: step === "matched",
      reason: step,
      why: "",
    };
    if (field) entry.field = field;
    if (key !== undefined) entry.key = key;
    if (target !== undefined) entry.target = target;
    entry.why = routeWhy(route, entry, this.#path(), this.#targeting!);
    this.#routes.push(entry);
  }

  image(index: number, step: ImageStep, field: ConditionField | undefined, search: string | undefined): void {
    const image = this.#rules!.images[index]!;
    const entry: ImageExplanation = {
      index,
      match: image.patterns.map((glob) => glob.source),
      considered: true,
      matched: step === "matched",
      reason: step,
      why: "",
    };
    if (field) entry.field = field;
    if (search !== undefined) entry.search = search;
    if (step === "path") {
      entry.why = `The path "${this.#path()}" matches none of ${JSON.stringify(entry.match)}`;
    } else if (step === "when") entry.why = describeMismatch(field!, image.when!, this.#targeting!);
    else {
      entry.why = search === undefined || search === this.#search
        ? "Matched; no parameter added (the client set them, or no viewport or network value applies)"
        : `Matched; the query becomes "${search}"`;
    }
    this.#images.push(entry);
  }

  flagRule(
    index: number,
    outcome: FlagRuleOutcome,
    field: ConditionField | undefined,
    hashValue: number | undefined,
  ): void {
    // Worded once the flag reports (its rules are known then).
    const entry: FlagRuleExplanation = { index, considered: true, outcome, why: "" };
    if (field) entry.field = field;
    if (hashValue !== undefined) entry.hashValue = hashValue;
    this.#flagRules.push(entry);
  }

  flag(index: number, evaluation: FlagEvaluation): void {
    const flag = this.#rules!.flags[index]!;
    const steps = this.#flagRules;
    this.#flagRules = [];
    const rules: FlagRuleExplanation[] = flag.rules.map((rule, i) => {
      const step = steps.find((s) => s.index === i);
      if (!step) return { index: i, considered: false, outcome: "not-reached", why: "Not reached" };
      step.why = flagRuleWhy(rule, step, this.#targeting!);
      return step;
    });
    this.#flags.push({
      key: flag.key,
      value: evaluation.value,
      variant: evaluation.variant,
      reason: evaluation.reason,
      why: flagWhy(evaluation, rules),
      rules,
    });
  }

  flagForced(index: number, value: unknown): void {
    const key = this.#rules!.flags[index]!.key;
    const entry = this.#flags.findLast((flag) => flag.key === key);
    if (!entry) return;
    const { value: evaluated, variant, reason } = entry;
    if (reason === "FORCED") return;
    entry.evaluated = { value: evaluated, variant, reason };
    entry.why = `Forced by QA to ${JSON.stringify(value)}; the rules give ${JSON.stringify(evaluated)} ` +
      `(${entry.why})`;
    entry.value = value;
    entry.variant = "forced";
    entry.reason = "FORCED";
  }

  slot(index: number, step: SlotStep, field: ConditionField | undefined): void {
    const slot = this.#rules!.slots[index]!;
    const entry: SlotExplanation = {
      index,
      name: slot.name,
      considered: true,
      matched: step === "matched",
      reason: step,
      why: "",
    };
    if (step === "taken") entry.why = `An earlier "${slot.name}" entry already filled the slot`;
    else if (step === "path") {
      entry.why = `The path "${this.#path()}" is not in its when.path ${
        JSON.stringify(slot.when?.paths?.map((glob) => glob.source) ?? [])
      }`;
    } else if (step === "when") {
      entry.field = field;
      entry.why = describeMismatch(field!, slot.when!, this.#targeting!);
    } else entry.why = "Matched: its HTML fills the slot on HTML pages";
    this.#slots.push(entry);
  }

  /**
   * Decides for the request, as the pipeline does (`decideForVisitor`), with this collector as
   * the trace, and explains the result. Call once, after `gatherFacts` reported to it.
   *
   * @param inputs the request, the stages' results, the rules store and what the facts need
   * @returns the explanation; `explanation.decision` is the decision
   */
  explain(inputs: ExplainInputs): { explanation: Explanation; decision: Decision } {
    const { facts, identity, context } = inputs;
    const visitor = visitorContextOf(identity, context);
    const rules = inputs.rules.rulesFor(identity.key);
    this.#rules = rules;
    this.#search = facts.search;
    // What conditions are evaluated against, kept current as the decision reports (region,
    // served variations), to word a failing field.
    this.#targeting = {
      region: "",
      country: facts.country,
      device: facts.device.device,
      network: facts.device.network,
      platform: facts.device.platform?.toLowerCase(),
      segments: visitor.segments,
      // The path the globs matched, as the decision reads it.
      path: pathForRules(facts.path),
      loggedIn: visitor.loggedIn,
      variants: this.#served,
    };
    const forced = inputs.qa?.forced;
    this.#forced = forced;
    const { decision } = decideForVisitor({ facts, visitor, forced }, inputs.rules, this);
    const explanation: Explanation = {
      request: { method: facts.method, path: facts.path, search: facts.search },
      facts: explainFacts(inputs, {
        countryHeader: this.#countryHeader,
        deviceReason: this.#deviceReason,
        networkReason: this.#networkReason,
        region: this.#region,
        defaultRegion: rules.defaultRegion,
      }),
      identity: explainIdentity(inputs),
      qa: inputs.qa?.qa ?? null,
      context: { ...explainContext(context), ...(inputs.contextWhy ? { why: inputs.contextWhy } : {}) },
      rules: explainRules(inputs, rules),
      experiments: this.#experiments,
      routes: this.#allRoutes(rules),
      images: this.#allImages(rules, decision, facts),
      flags: this.#flags,
      slots: this.#slots,
      decision,
    };
    return { explanation, decision };
  }

  #pendingFor(key: string): PendingExperiment {
    let pending = this.#pending.get(key);
    if (!pending) this.#pending.set(key, pending = {});
    return pending;
  }

  #path(): string {
    return this.#targeting?.path ?? "";
  }

  #allRoutes(rules: CompiledRules): RouteExplanation[] {
    const seen = new Map(this.#routes.map((entry) => [entry.index, entry]));
    return rules.routes.map((route, index) =>
      seen.get(index) ?? {
        index,
        match: route.match,
        considered: false,
        matched: false,
        reason: "not-reached",
        why: "Not reached: an earlier route matched",
      }
    );
  }

  #allImages(rules: CompiledRules, decision: Decision, facts: Facts): ImageExplanation[] {
    const seen = new Map(this.#images.map((entry) => [entry.index, entry]));
    const proxied = decision.action.type === "proxy" && (facts.method === "GET" || facts.method === "HEAD");
    return rules.images.map((image, index) =>
      seen.get(index) ?? {
        index,
        match: image.patterns.map((glob) => glob.source),
        considered: false,
        matched: false,
        reason: proxied ? "not-reached" : "not-proxied",
        why: proxied
          ? "Not reached: an earlier image rule matched"
          : decision.action.type === "redirect"
          ? "Not considered: the request is redirected"
          : `Not considered: images adapt only GET and HEAD, not ${facts.method}`,
      }
    );
  }
}
