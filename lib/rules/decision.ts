/**
 * @module
 * What the decision stage takes and gives, and the trace an explanation listens with.
 */
import type { Identity } from "../pipeline/identity.ts";
import type { EdgeUserContext } from "../pipeline/context.ts";
import type { Facts } from "../pipeline/facts.ts";
import type { RegionSource } from "../pipeline/geo.ts";
import type { CompiledExperiment, ExperimentResult, ExperimentTrace } from "./experiments.ts";
import type { FlagEvaluation, FlagTrace } from "./flags.ts";
import type { ConditionField, DecisionInput } from "./targeting.ts";

/** Who the visitor is, as far as the decision needs to know (segments and attributes empty under GPC). */
export interface VisitorContext {
  /** The user id when logged in, else the anonymous id. */
  key: string;
  loggedIn: boolean;
  segments: readonly string[];
  attributes: Readonly<Record<string, string | number | boolean>>;
  /** The sticky cookie's assignments: experiment key → variation. */
  sticky: ReadonlyMap<string, string>;
}

/** Variations and flag values a QA request forces (see `lib/pipeline/qa.ts`). */
export interface ForcedOutcome {
  variants: ReadonlyMap<string, string>;
  flags: ReadonlyMap<string, unknown>;
}

/** Inputs of `decide`; `canary` says a rules canary runs, so the visitor key chose the rules. */
export interface DecisionInputs {
  facts: Facts;
  visitor: VisitorContext;
  forced?: ForcedOutcome;
  canary?: boolean;
}

/** What to do with the request; a proxy's `search` (with `?`) replaces the query when images changed it. */
export type Action =
  | { type: "proxy"; path: string; search?: string }
  | { type: "redirect"; location: string; status: number };

/**
 * The outcome of the decision stage. `personalized` (= `dependsOn.length > 0`) keeps shared caches
 * from storing it blindly; `usedHints` feed `Vary`; `forced` marks a QA request (never stored, no
 * exposure).
 */
export interface Decision {
  region: string;
  country: string | undefined;
  rulesVersion: number;
  action: Action;
  matchedRoute: string | undefined;
  personalized: boolean;
  /** The experiments this request exposes the visitor to: key → variation. */
  variants: Record<string, string>;
  /** What the sticky cookie should now hold. */
  stickyAssignments: Record<string, string>;
  flags: Record<string, unknown>;
  usedHints: string[];
  /** `visitorKey` means the visitor's id and sticky cookie; `device` includes `User-Agent`. */
  dependsOn: DecisionInput[];
  /** Slot name → HTML (used only when the origin answers with HTML). */
  slots: Record<string, string>;
  slotDependsOn: DecisionInput[];
  forced?: true;
}

// What happened to an experiment, route, image rule or slot entry, as the trace reports it.
export type ExperimentStep = "disabled" | "path" | "when" | "exposed" | "forced";

export type RouteStep = "path" | "when" | "no-target" | "unsafe-target" | "matched";

export type ImageStep = "path" | "when" | "matched";

export type SlotStep = "taken" | "path" | "when" | "matched";

/**
 * Receives every step of a decision when an explanation is wanted (see `lib/rules/explain.ts`);
 * without one nothing is computed for it. Rules after the one that won are not reported.
 */
export interface DecisionTrace extends ExperimentTrace, FlagTrace {
  region(region: string, source: RegionSource): void;
  sticky(experiment: CompiledExperiment, remembered: string, valid: boolean): void;
  /** `exposed` comes after the `assignment` that decided `result`; `field` names a failing `when`. */
  experiment(
    experiment: CompiledExperiment,
    step: ExperimentStep,
    field: ConditionField | undefined,
    result: ExperimentResult | undefined,
  ): void;
  /** `key` is what the rewrite map was looked up by (`*` for the fallback). */
  route(
    index: number,
    step: RouteStep,
    field: ConditionField | undefined,
    key: string | undefined,
    target: string | undefined,
  ): void;
  image(index: number, step: ImageStep, field: ConditionField | undefined, search: string | undefined): void;
  flag(index: number, evaluation: FlagEvaluation): void;
  /** A QA request replaced that flag's value (reported after its `flag`). */
  flagForced(index: number, value: unknown): void;
  slot(index: number, step: SlotStep, field: ConditionField | undefined): void;
}

/** The visitor as the decision sees them, from the identity and context stages (primitive attributes only). */
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
