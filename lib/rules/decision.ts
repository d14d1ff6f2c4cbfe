/**
 * @module
 * What the decision stage takes and gives: the visitor as it sees them, what QA forces, the
 * decision itself, and the trace an explanation listens with.
 */
import type { Identity } from "../pipeline/identity.ts";
import type { EdgeUserContext } from "../pipeline/context.ts";
import type { Facts } from "../pipeline/facts.ts";
import type { RegionSource } from "../pipeline/geo.ts";
import type { CompiledExperiment, ExperimentResult, ExperimentTrace } from "./experiments.ts";
import type { FlagEvaluation, FlagTrace } from "./flags.ts";
import type { ConditionField, DecisionInput } from "./targeting.ts";

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
  /** A rules canary runs, so the visitor key chose the rules (see {@linkcode decideForVisitor}). */
  canary?: boolean;
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
