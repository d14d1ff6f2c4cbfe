/**
 * @module
 * A/B experiments: where an experiment applies (path and targeting), sticky assignment from
 * the visitor's cookie, and GrowthBook-compatible bucketing for everyone else. Bots are served
 * control and never counted.
 */
import {
  type AssignmentOutcome,
  type AssignmentTrace,
  assignVariation,
  type ExperimentSpec,
  type Namespace,
} from "./bucketing.ts";
import {
  compileCondition,
  type CompiledCondition,
  compileGlob,
  type ConditionSpec,
  matchesAnyPath,
  matchesCondition,
  type PathGlob,
  type TargetingContext,
} from "./targeting.ts";

/** An experiment as written in the rules (after defaults). */
export interface ExperimentDefinition {
  key: string;
  variations: readonly string[];
  weights?: readonly number[] | undefined;
  coverage: number;
  seed?: string | undefined;
  hashVersion: 1 | 2;
  match: string | readonly string[];
  namespace?: Namespace | undefined;
  when?: ConditionSpec | undefined;
  enabled: boolean;
}

/** An experiment compiled for evaluation. */
export interface CompiledExperiment {
  key: string;
  variations: readonly string[];
  variationSet: ReadonlySet<string>;
  /** The first variation. */
  control: string;
  spec: ExperimentSpec;
  /** Path globs; undefined when the experiment applies to every path. */
  paths: readonly PathGlob[] | undefined;
  when: CompiledCondition | undefined;
  enabled: boolean;
}

/**
 * What an experiment decided for one visitor: the variation (control when not in it), whether the
 * visitor counts in its analysis, and whether the sticky cookie rather than hashing gave it.
 */
export interface ExperimentResult {
  variation: string;
  inExperiment: boolean;
  sticky: boolean;
}

/** The visitor and request an experiment is evaluated for. */
export interface ExperimentContext extends TargetingContext {
  /** The bucketing key; empty means unknown (not in any experiment). */
  key: string;
  isBot: boolean;
  sticky: ReadonlyMap<string, string>;
}

/** Why {@linkcode assignExperiment} served what it did: `bot`, `sticky`, or how bucketing went. */
export type ExperimentOutcome = "bot" | "sticky" | AssignmentOutcome;

/** Receives why an experiment's assignment came out as it did. */
export interface ExperimentTrace extends AssignmentTrace {
  /** `hashValue` is the bucket or namespace hash, when bucketing ran (see `AssignmentTrace`). */
  assignment(outcome: ExperimentOutcome, hashValue: number | null): void;
}

/** @returns the validated experiment compiled for evaluation */
export function compileExperiment(definition: ExperimentDefinition): CompiledExperiment {
  const globs = typeof definition.match === "string" ? [definition.match] : definition.match;
  const everywhere = globs.some((glob) => glob === "*");
  return {
    key: definition.key,
    variations: definition.variations,
    variationSet: new Set(definition.variations),
    control: definition.variations[0] ?? "",
    spec: {
      key: definition.key,
      numVariations: definition.variations.length,
      seed: definition.seed,
      hashVersion: definition.hashVersion,
      weights: definition.weights,
      coverage: definition.coverage,
      namespace: definition.namespace,
    },
    paths: everywhere ? undefined : globs.map(compileGlob),
    when: definition.when ? compileCondition(definition.when) : undefined,
    enabled: definition.enabled,
  };
}

/**
 * Whether an experiment applies here: enabled, its `match` covers the path (unless the path is
 * unknown, as in OFREP without `path`) and its `when` holds.
 */
export function experimentApplies(experiment: CompiledExperiment, context: TargetingContext): boolean {
  if (!experiment.enabled) return false;
  if (experiment.paths && context.path !== undefined && !matchesAnyPath(experiment.paths, context.path)) {
    return false;
  }
  return matchesCondition(experiment.when, context);
}

/**
 * Assigns a visitor to an experiment that applies: bots get control and are not in it; a sticky
 * assignment still among the variations is kept (whatever changed since); else GrowthBook's bucketing.
 *
 * @param experiment the compiled experiment (call {@linkcode experimentApplies} first)
 * @param context the visitor
 * @param trace told why, when an explanation is wanted
 * @returns the variation and whether the visitor is in the experiment
 * @example
 * ```ts
 * const result = assignExperiment(hero, { ...context, key: "user-1", isBot: false, sticky: new Map() });
 * result.variation; // "control", "a" or "b"
 * ```
 */
export function assignExperiment(
  experiment: CompiledExperiment,
  context: ExperimentContext,
  trace?: ExperimentTrace,
): ExperimentResult {
  if (context.isBot) {
    trace?.assignment("bot", null);
    return { variation: experiment.control, inExperiment: false, sticky: false };
  }
  const remembered = context.sticky.get(experiment.key);
  if (remembered !== undefined && experiment.variationSet.has(remembered)) {
    trace?.assignment("sticky", null);
    return { variation: remembered, inExperiment: true, sticky: true };
  }
  const assignment = assignVariation(context.key, experiment.spec, trace);
  return {
    variation: experiment.variations[assignment.variationIndex] ?? experiment.control,
    inExperiment: assignment.inExperiment,
    sticky: false,
  };
}
