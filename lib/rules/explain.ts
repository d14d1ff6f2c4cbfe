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
import type { EdgeUserContext } from "../pipeline/context.ts";
import type { Identity } from "../pipeline/identity.ts";
import { getBucketRanges } from "./bucketing.ts";
import type { CompiledExperiment, ExperimentOutcome, ExperimentResult } from "./experiments.ts";
import type { FlagEvaluation, FlagRuleOutcome } from "./flags.ts";
import type { ConditionField, TargetingContext } from "./targeting.ts";
import {
  decideForVisitor,
  type Decision,
  type DecisionTrace,
  type ExperimentStep,
  type ForcedOutcome,
  type ImageStep,
  type RouteStep,
  type RulesSource,
  type SlotStep,
  visitorContextOf,
} from "./decide.ts";
import type { CompiledRules } from "./rules.ts";
import { pathForRules } from "../http/paths.ts";
import { describeMismatch } from "./explain_text.ts";
import { explainContext, explainFacts, explainIdentity, explainRules } from "./explain_stages.ts";
import type { QaExplanation } from "./explain_qa.ts";

/** The facts the edge derived, and where each came from. */
export interface FactsExplanation {
  clientIp: string;
  peerIp: string;
  /** The peer is in `TRUSTED_PROXIES` (its forwarding headers and user header are believed). */
  peerTrusted: boolean;
  /** Geo headers are believed (trusted peer, or the CDN secret). */
  geoTrusted: boolean;
  country: {
    value: string | null;
    source: "header" | "ip" | null;
    /** The geo header that decided (present whenever one did, whatever it held). */
    header?: string;
    why: string;
  };
  region: { value: string; source: RegionSource; why: string };
  device: { value: string; reason: DeviceReason | null; why: string };
  network: { value: string; reason: NetworkReason | null; why: string };
  platform: string | null;
  viewportWidth: number | null;
  dpr: number | null;
  gpc: boolean;
  bot: boolean;
}

/** One experiment's part in the decision. */
export interface ExperimentExplanation {
  key: string;
  /** Always true: every experiment is looked at. */
  considered: boolean;
  /** The visitor was served a variation (control included): exposed, or forced by QA. */
  matched: boolean;
  /**
   * `disabled`, `path`, `when`, `forced` (by a QA request), or the assignment's outcome
   * (`bucketed`, `coverage`, `sticky`, `bot`…).
   */
  reason: ExperimentStep | ExperimentOutcome;
  why: string;
  field?: ConditionField;
  variation?: string;
  inExperiment?: boolean;
  /** The bucket in `[0, 1)` (GrowthBook's hash of the seed and the visitor key). */
  hashValue?: number;
  /** Each variation's bucket range, when the visitor was bucketed. */
  ranges?: Record<string, [number, number]>;
  /** The namespace, and the visitor's namespace hash when it decided. */
  namespace?: { id: string; range: [number, number]; hashValue?: number };
  /** The sticky cookie's entry for this experiment, and whether the cookie keeps it. */
  sticky?: { value: string; valid: boolean };
}

/** One route's part in the decision. */
export interface RouteExplanation {
  index: number;
  match: string;
  /** False for routes after the one that matched. */
  considered: boolean;
  matched: boolean;
  reason: RouteStep | "not-reached";
  why: string;
  field?: ConditionField;
  /** What the rewrite map was looked up by (`*` for the fallback). */
  key?: string;
  /** The filled-in rewrite target or redirect location. */
  target?: string;
}

/** One image rule's part in the decision. */
export interface ImageExplanation {
  index: number;
  match: string[];
  considered: boolean;
  matched: boolean;
  /** `not-proxied`: the request is redirected or not a `GET`/`HEAD`. */
  reason: ImageStep | "not-reached" | "not-proxied";
  why: string;
  field?: ConditionField;
  /** The query string after adaptation. */
  search?: string;
}

/** One flag rule's part in a flag's evaluation. */
export interface FlagRuleExplanation {
  index: number;
  considered: boolean;
  outcome: FlagRuleOutcome | "not-reached";
  why: string;
  field?: ConditionField;
  hashValue?: number;
}

/** One flag's evaluation. */
export interface FlagExplanation {
  key: string;
  value: unknown;
  variant: string;
  /**
   * The OpenFeature reason (`TARGETING_MATCH`, `SPLIT`, `DEFAULT`, `STATIC`, `DISABLED`, `ERROR`),
   * or `FORCED` when a QA request replaced the value.
   */
  reason: FlagEvaluation["reason"] | "FORCED";
  why: string;
  /** What the rules gave before a QA request replaced it. */
  evaluated?: { value: unknown; variant: string; reason: FlagEvaluation["reason"] };
  rules: FlagRuleExplanation[];
}

/** One slot entry's part in the decision. */
export interface SlotExplanation {
  index: number;
  name: string;
  considered: boolean;
  matched: boolean;
  reason: SlotStep;
  why: string;
  field?: ConditionField;
}

/** A decision, explained. */
export interface Explanation {
  request: { method: string; path: string; search: string };
  facts: FactsExplanation;
  identity: {
    key: string;
    source: Identity["source"];
    loggedIn: boolean;
    /** No valid `ep_uid` cookie: the key is a fresh id (an explanation sets no cookie). */
    newAnonymousId: boolean;
    /** The sticky cookie's assignments as read. */
    sticky: Record<string, string>;
    why: string;
  };
  /** The context the decision used: segments and attribute names, and how it was loaded. */
  context: {
    source: EdgeUserContext["source"];
    cache: string;
    kv: string;
    readThrough: string;
    stale: boolean;
    segments: readonly string[];
    attributes: string[];
    recentViews: number;
    cartItems: number;
    why: string;
  };
  /** What the request's QA headers forced, or why they forced nothing; null without any. */
  qa: QaExplanation | null;
  rules: {
    version: number;
    role: "active" | "canary";
    activeVersion: number;
    canary: { version: number; share: number; hashValue: number; inCanary: boolean } | null;
    why: string;
  };
  experiments: ExperimentExplanation[];
  routes: RouteExplanation[];
  images: ImageExplanation[];
  flags: FlagExplanation[];
  slots: SlotExplanation[];
  /** The decision itself, as `decideForVisitor` made it. */
  decision: Decision;
}

/** What {@linkcode ExplainCollector.explain} decides and explains. */
export interface ExplainInputs {
  /** The described request (its headers say which cookies and hints were sent). */
  request: Request;
  facts: Facts;
  identity: Identity;
  context: EdgeUserContext;
  /** The rules store (active and canary). */
  rules: RulesSource & { readonly current: CompiledRules };
  /** The session cookie's name (`SESSION_COOKIE`). */
  sessionCookie: string;
  /** Whether the IP database is loaded. */
  ipGeoLoaded: boolean;
  /** Where the context came from, when not from the context stage (an offline explanation). */
  contextWhy?: string;
  /** What the QA headers force (see `explainQa`), and its explanation. */
  qa?: { qa: QaExplanation | null; forced: ForcedOutcome | undefined };
}

interface PendingExperiment {
  outcome?: ExperimentOutcome;
  hashValue?: number | null;
  sticky?: { value: string; valid: boolean };
}

/**
 * Collects the trace of one request: pass it as `trace` to `gatherFacts`, then call
 * {@linkcode ExplainCollector.explain} with the later stages' results. One collector per request.
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

  /** @param name the geo header that decided the country */
  countryHeader(name: string): void {
    this.#countryHeader = name;
  }

  /** @param reason why the device class */
  device(reason: DeviceReason): void {
    this.#deviceReason = reason;
  }

  /** @param reason why the network class */
  network(reason: NetworkReason): void {
    this.#networkReason = reason;
  }

  /**
   * @param region the region
   * @param source where it came from
   */
  region(region: string, source: RegionSource): void {
    this.#region = { value: region, source };
    if (this.#targeting) this.#targeting.region = region;
  }

  /**
   * @param experiment the experiment
   * @param remembered the cookie's value for it
   * @param valid whether it is one of the variations
   */
  sticky(experiment: CompiledExperiment, remembered: string, valid: boolean): void {
    this.#pendingFor(experiment.key).sticky = { value: remembered, valid };
  }

  /**
   * @param outcome how the assignment went
   * @param hashValue the bucket or namespace hash
   */
  assignment(outcome: ExperimentOutcome, hashValue: number | null): void {
    this.#current.outcome = outcome;
    this.#current.hashValue = hashValue;
  }

  /**
   * @param experiment the experiment
   * @param step what happened
   * @param field the failing `when` field
   * @param result the assignment, when exposed
   */
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

  /**
   * @param index the route's position
   * @param step what happened
   * @param field the failing `when` field
   * @param key what the rewrite map was looked up by
   * @param target the filled-in target or location
   */
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
    const action = route.action;
    switch (step) {
      case "path":
        entry.why = `The path "${this.#path()}" does not match "${route.match}"`;
        break;
      case "when":
        entry.why = describeMismatch(field!, route.when!, this.#targeting!);
        break;
      case "no-target":
        entry.why = action.type === "rewrite" && action.by === "experiment" && key === undefined
          ? `The visitor is not exposed to experiment "${action.experiment}" here and the rewrite has no "*"`
          : `The rewrite has no target for ${action.type === "rewrite" ? action.by : "key"} "${key}" nor "*"`;
        break;
      case "unsafe-target":
        entry.why = `The filled-in target "${target}" is not a safe path, so the route is skipped`;
        break;
      case "matched":
        entry.why = action.type === "redirect"
          ? `Redirect ${action.status} to "${target}"`
          : `Rewrite to "${target}" (${action.by} ${key === "*" ? 'fallback "*"' : `"${key}"`})`;
        break;
    }
    this.#routes.push(entry);
  }

  /**
   * @param index the image rule's position
   * @param step what happened
   * @param field the failing `when` field
   * @param search the query after adaptation
   */
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

  /**
   * @param index the flag rule's position
   * @param outcome what happened
   * @param field the failing `when` field
   * @param hashValue the rollout hash
   */
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

  /**
   * @param index the flag's position
   * @param evaluation its result
   */
  flag(index: number, evaluation: FlagEvaluation): void {
    const flag = this.#rules!.flags[index]!;
    const steps = this.#flagRules;
    this.#flagRules = [];
    const rules: FlagRuleExplanation[] = flag.rules.map((rule, i) => {
      const step = steps.find((s) => s.index === i);
      if (!step) return { index: i, considered: false, outcome: "not-reached", why: "Not reached" };
      switch (step.outcome) {
        case "when":
          step.why = describeMismatch(step.field!, rule.when!, this.#targeting!);
          break;
        case "rollout":
          step.why = `The visitor's rollout hash ${step.hashValue} is not below ${rule.rollout}`;
          break;
        case "key-missing":
          step.why = "The rule needs a visitor key and there is none";
          break;
        case "matched":
          step.why = rule.rollout === undefined
            ? "Matched"
            : `Matched: the visitor's rollout hash ${step.hashValue} is below ${rule.rollout}`;
          break;
      }
      return step;
    });
    const matched = rules.find((rule) => rule.outcome === "matched");
    const why = {
      DISABLED: "The flag is disabled: its default",
      STATIC: "The flag has no rules: its default",
      DEFAULT: "No rule matched: the default",
      ERROR: `Rule ${
        rules.find((rule) => rule.outcome === "key-missing")?.index
      } needs a visitor key: the default`,
      TARGETING_MATCH: `Rule ${matched?.index} matched`,
      SPLIT: `Rule ${matched?.index} matched`,
    }[evaluation.reason];
    this.#flags.push({
      key: flag.key,
      value: evaluation.value,
      variant: evaluation.variant,
      reason: evaluation.reason,
      why,
      rules,
    });
  }

  /**
   * @param index the flag's position
   * @param value the value a QA request forced
   */
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

  /**
   * @param index the slot entry's position
   * @param step what happened
   * @param field the failing `when` field
   */
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
   * @throws never
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

function rangesOf(experiment: CompiledExperiment): Record<string, [number, number]> {
  const spec = experiment.spec;
  const ranges = getBucketRanges(spec.numVariations, spec.coverage, spec.weights);
  const out: Record<string, [number, number]> = {};
  experiment.variations.forEach((variation, i) => {
    const range = ranges[i]!;
    out[variation] = [round(range[0]), round(range[1])];
  });
  return out;
}

function round(n: number): number {
  return Number(n.toFixed(6));
}

function assignmentWhy(experiment: CompiledExperiment, entry: ExperimentExplanation): string {
  const served = `serves "${entry.variation}"`;
  switch (entry.reason) {
    case "bot":
      return `Bots are served control and are not in the experiment: ${served}`;
    case "sticky":
      return `The sticky cookie's "${entry.variation}" is still a variation: kept`;
    case "no-key":
      return `No visitor key: not in the experiment, ${served}`;
    case "too-few-variations":
      return `Fewer than two variations: not in the experiment, ${served}`;
    case "hash-version":
      return `Unknown hash version: not in the experiment, ${served}`;
    case "namespace": {
      const ns = entry.namespace!;
      return `Namespace hash ${ns.hashValue} is outside "${ns.id}" [${ns.range[0]}, ${ns.range[1]}): ` +
        `not in the experiment, ${served}`;
    }
    case "coverage":
      return `Hash ${entry.hashValue} falls in no variation's range (coverage ${experiment.spec.coverage}): ` +
        `not in the experiment, ${served}`;
    case "bucketed": {
      const range = entry.ranges?.[entry.variation!];
      return `Hash ${entry.hashValue} is in "${entry.variation}" [${range?.[0]}, ${range?.[1]})`;
    }
    default:
      return served;
  }
}
