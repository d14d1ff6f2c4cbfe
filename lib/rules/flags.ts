/**
 * @module
 * Feature flags: the first rule whose condition holds (and, for a percentage rollout, whose
 * bucket the visitor falls in) gives the value; otherwise the default. Results carry a variant
 * name and an OpenFeature reason so OFREP can answer with them unchanged.
 */
import { hash } from "./bucketing.ts";
import {
  compileCondition,
  type CompiledCondition,
  type ConditionField,
  conditionMismatch,
  type ConditionSpec,
  INPUT,
  type TargetingContext,
} from "./targeting.ts";

export type FlagType = "boolean" | "string" | "number" | "object";

/** OpenFeature resolution reasons. */
export type FlagReason = "STATIC" | "DEFAULT" | "TARGETING_MATCH" | "SPLIT" | "DISABLED" | "ERROR";

/** A flag rule as written in the rules. */
export interface FlagRuleDefinition {
  when?: ConditionSpec | undefined;
  rollout?: number | undefined;
  seed?: string | undefined;
  value?: unknown;
  variant?: string | undefined;
}

/** A flag as written in the rules (after defaults). */
export interface FlagDefinition {
  key: string;
  type: FlagType;
  default: unknown;
  variants?: Readonly<Record<string, unknown>> | undefined;
  rules: readonly FlagRuleDefinition[];
  enabled: boolean;
}

export interface CompiledFlagRule {
  when: CompiledCondition | undefined;
  /** Share of visitors in `[0, 1]`; undefined means everyone who matches `when`. */
  rollout: number | undefined;
  seed: string;
  value: unknown;
  variant: string;
  /** The rule needs a targeting key (rollout or a variant condition). */
  needsKey: boolean;
  /** {@linkcode INPUT} bits. */
  inputs: number;
}

export interface CompiledFlag {
  key: string;
  type: FlagType;
  defaultValue: unknown;
  defaultVariant: string;
  rules: readonly CompiledFlagRule[];
  enabled: boolean;
}

/** The result of evaluating a flag. */
export interface FlagEvaluation {
  key: string;
  value: unknown;
  variant: string;
  reason: FlagReason;
  /** Set when `reason` is `ERROR`. */
  errorCode?: "TARGETING_KEY_MISSING";
  /** {@linkcode INPUT} bits. */
  inputs: number;
}

/** The visitor a flag is evaluated for. */
export interface FlagContext extends TargetingContext {
  /** Empty when unknown. */
  key: string;
}

/** What happened to one flag rule (`key-missing` ends the evaluation). */
export type FlagRuleOutcome = "when" | "rollout" | "key-missing" | "matched";

/** Receives each flag rule's outcome, in evaluation order, when an explanation is wanted. */
export interface FlagTrace {
  /** `field` is the failing `when` field; `hashValue` the rollout hash, when one was computed. */
  flagRule(
    index: number,
    outcome: FlagRuleOutcome,
    field: ConditionField | undefined,
    hashValue: number | undefined,
  ): void;
}

/**
 * Compiles a flag: conditions, rollout seeds, and the variant name of every value (the name of
 * an entry of `variants` with an equal value, else the value's text for scalars, else `default`
 * or `rule-<n>`). Values are frozen, since every request shares them.
 */
export function compileFlag(definition: FlagDefinition): CompiledFlag {
  const variants = Object.entries(definition.variants ?? {});
  const nameOf = (value: unknown, fallback: string) => {
    const text = JSON.stringify(value);
    const named = variants.find(([, v]) => JSON.stringify(v) === text);
    if (named) return named[0];
    return typeof value === "object" && value !== null ? fallback : String(value);
  };
  return {
    key: definition.key,
    type: definition.type,
    defaultValue: deepFreeze(definition.default),
    defaultVariant: nameOf(definition.default, "default"),
    enabled: definition.enabled,
    rules: definition.rules.map((rule, index) => {
      const value =
        rule.variant !== undefined && definition.variants && Object.hasOwn(definition.variants, rule.variant)
          ? definition.variants[rule.variant]
          : rule.value;
      const when = rule.when ? compileCondition(rule.when) : undefined;
      const needsKey = rule.rollout !== undefined || (when?.variants !== undefined);
      return {
        when,
        rollout: rule.rollout,
        seed: rule.seed ?? definition.key,
        value: deepFreeze(value),
        variant: rule.variant ?? nameOf(value, `rule-${index}`),
        needsKey,
        inputs: (when?.inputs ?? 0) | (needsKey ? INPUT.visitorKey : 0),
      };
    }),
  };
}

/**
 * Evaluates a flag: the first rule whose `when` holds and, with `rollout`, whose GrowthBook v2
 * hash of (rule seed or flag key, targeting key) is below it gives its value (`SPLIT` for
 * rollouts and variant conditions, else `TARGETING_MATCH`); else the default (`DISABLED`,
 * `STATIC`, `DEFAULT`). A rule needing a key when there is none ends it: `ERROR`, `TARGETING_KEY_MISSING`.
 *
 * @param context the visitor, with the variants served on this request
 * @param trace told each rule's outcome, when an explanation is wanted
 */
export function evaluateFlag(flag: CompiledFlag, context: FlagContext, trace?: FlagTrace): FlagEvaluation {
  if (!flag.enabled) return byDefault(flag, "DISABLED", 0);
  const rules = flag.rules;
  if (rules.length === 0) return byDefault(flag, "STATIC", 0);
  let inputs = 0;
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    inputs |= rule.inputs;
    // A variant condition cannot be evaluated without a key — unless the rest of the condition
    // already rules the visitor out; a rollout needs a key once reached.
    if (!context.key && rule.when?.variants !== undefined) {
      const failed = conditionMismatch({ ...rule.when, variants: undefined }, context);
      if (failed !== undefined) {
        trace?.flagRule(i, "when", failed, undefined);
        continue;
      }
      trace?.flagRule(i, "key-missing", undefined, undefined);
      return keyMissing(flag, inputs);
    }
    const failed = conditionMismatch(rule.when, context);
    if (failed !== undefined) {
      trace?.flagRule(i, "when", failed, undefined);
      continue;
    }
    let n: number | null | undefined;
    if (rule.rollout !== undefined) {
      if (!context.key) {
        trace?.flagRule(i, "key-missing", undefined, undefined);
        return keyMissing(flag, inputs);
      }
      n = hash(rule.seed, context.key, 2);
      if (n === null || n >= rule.rollout) {
        trace?.flagRule(i, "rollout", undefined, n ?? undefined);
        continue;
      }
    }
    trace?.flagRule(i, "matched", undefined, n ?? undefined);
    return {
      key: flag.key,
      value: rule.value,
      variant: rule.variant,
      reason: rule.needsKey ? "SPLIT" : "TARGETING_MATCH",
      inputs,
    };
  }
  return byDefault(flag, "DEFAULT", inputs);
}

function byDefault(flag: CompiledFlag, reason: FlagReason, inputs: number): FlagEvaluation {
  return { key: flag.key, value: flag.defaultValue, variant: flag.defaultVariant, reason, inputs };
}

/** Whether a JSON value fits a flag type (`object`: a JSON object, not an array or null). */
export function valueHasType(type: FlagType, value: unknown): boolean {
  switch (type) {
    case "boolean":
      return typeof value === "boolean";
    case "string":
      return typeof value === "string";
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "object":
      return typeof value === "object" && value !== null && !Array.isArray(value);
  }
}

function keyMissing(flag: CompiledFlag, inputs: number): FlagEvaluation {
  return {
    key: flag.key,
    value: flag.defaultValue,
    variant: flag.defaultVariant,
    reason: "ERROR",
    errorCode: "TARGETING_KEY_MISSING",
    inputs,
  };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
