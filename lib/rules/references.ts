/**
 * @module
 * The rule set's checks that span fields — names that must refer to something, weights that
 * must sum to 1, flag values of the flag's type, sticky cookie room — run as the schema's
 * refinement, so every parse of a rule set (file, push, KV) applies them.
 */
import type { z } from "zod";
import { DEVICE_CLASSES, NETWORK_CLASSES } from "./targeting.ts";
import { STICKY_PAYLOAD_MAX, STICKY_VALUE_MAX, stickyLength } from "../pipeline/sticky.ts";
import { valueHasType } from "./flags.ts";

// The parts of a parsed rule set the checks read. Declared here, not imported from `schema.ts`,
// whose refinement these checks are: `superRefine(checkReferences)` checks that the parsed rule
// set fits, and the two modules do not import each other.
type ParsedCondition = {
  region?: string[] | undefined;
  variant?: Record<string, string[]> | undefined;
};
type CheckedRuleSet = {
  defaultRegion: string;
  regions: Record<string, unknown>;
  experiments: {
    key: string;
    variations: string[];
    weights?: number[] | undefined;
    namespace?: [string, number, number] | undefined;
    when?: ParsedCondition | undefined;
  }[];
  routes: {
    when?: ParsedCondition | undefined;
    rewrite?: Record<string, string> | undefined;
    rewriteBy?: string | undefined;
    experiment?: string | undefined;
  }[];
  flags: {
    key: string;
    type: Parameters<typeof valueHasType>[0];
    default: unknown;
    variants?: Record<string, unknown> | undefined;
    rules: { when?: ParsedCondition | undefined; value?: unknown; variant?: string | undefined }[];
  }[];
  images: { when?: ParsedCondition | undefined }[];
  slots: { when?: ParsedCondition | undefined }[];
};

const WEIGHT_TOLERANCE = 0.01;

type Path = (string | number)[];
type Problem = (path: Path, message: string) => void;

/** What the checks of one rule set share: where to report, and the names defined so far. */
interface Checker {
  problem: Problem;
  regionNames: ReadonlySet<string>;
  /** Experiment key → its variations, filled in as experiments are checked. */
  experiments: Map<string, ReadonlySet<string>>;
}

/**
 * Reports every cross-reference problem of a rule set as a zod issue on its field.
 *
 * @param rules the rule set as the schema parsed it
 * @param ctx zod's refinement context
 */
export function checkReferences(rules: CheckedRuleSet, ctx: z.RefinementCtx): void {
  const checker: Checker = {
    problem: (path, message) => ctx.addIssue({ code: "custom", path, message }),
    regionNames: new Set([rules.defaultRegion, ...Object.keys(rules.regions)]),
    experiments: new Map(),
  };
  checkStickyRoom(rules, checker.problem);
  rules.experiments.forEach((experiment, e) => checkExperiment(experiment, ["experiments", e], checker));
  rules.routes.forEach((route, r) => checkRoute(route, ["routes", r], checker));
  const flagKeys = new Set<string>();
  rules.flags.forEach((flag, f) => {
    if (flagKeys.has(flag.key)) checker.problem(["flags", f, "key"], `repeats flag key "${flag.key}"`);
    flagKeys.add(flag.key);
    checkFlag(flag, ["flags", f], checker);
  });
  rules.images.forEach((image, i) => checkCondition(image.when, ["images", i, "when"], true, checker));
  rules.slots.forEach((slot, i) => checkCondition(slot.when, ["slots", i, "when"], true, checker));
}

function checkCondition(
  when: ParsedCondition | undefined,
  path: Path,
  allowVariant: boolean,
  { problem, regionNames, experiments }: Checker,
): void {
  if (!when) return;
  when.region?.forEach((region, i) => {
    if (!regionNames.has(region)) problem([...path, "region", i], `names unknown region "${region}"`);
  });
  if (!when.variant) return;
  if (!allowVariant) {
    problem([...path, "variant"], "is not allowed here (experiments cannot depend on other experiments)");
    return;
  }
  for (const [key, values] of Object.entries(when.variant)) {
    const variations = experiments.get(key);
    if (!variations) {
      problem([...path, "variant", key], `names unknown experiment "${key}"`);
      continue;
    }
    values.forEach((value, i) => {
      if (!variations.has(value)) {
        problem([...path, "variant", key, i], `names unknown variation "${value}" of experiment "${key}"`);
      }
    });
  }
}

// Every experiment of a rule set can be sticky: their assignments fit in one cookie, beside its
// signature.
function checkStickyRoom(rules: CheckedRuleSet, problem: Problem): void {
  const stickyTotal = rules.experiments.reduce(
    (sum, experiment) => sum + stickyLength(experiment.key, experiment.variations),
    0,
  );
  if (stickyTotal > STICKY_PAYLOAD_MAX) {
    problem(
      ["experiments"],
      `need ${stickyTotal} characters of sticky cookie (keys and longest variations), more than ` +
        `${STICKY_PAYLOAD_MAX} (its ${STICKY_VALUE_MAX} less the signature): use shorter keys or ` +
        "variation values, or fewer experiments",
    );
  }
}

function checkExperiment(
  experiment: CheckedRuleSet["experiments"][number],
  path: Path,
  checker: Checker,
): void {
  const { problem, experiments } = checker;
  if (experiments.has(experiment.key)) {
    problem([...path, "key"], `repeats experiment key "${experiment.key}"`);
  }
  const variations = new Set(experiment.variations);
  experiments.set(experiment.key, variations);
  if (variations.size !== experiment.variations.length) problem([...path, "variations"], "must be unique");
  if (experiment.weights) {
    if (experiment.weights.length !== experiment.variations.length) {
      problem(
        [...path, "weights"],
        `must have one weight per variation (${experiment.variations.length}), got ${experiment.weights.length}`,
      );
    } else {
      const total = experiment.weights.reduce((sum, w) => sum + w, 0);
      if (Math.abs(total - 1) > WEIGHT_TOLERANCE) {
        problem([...path, "weights"], `must sum to 1, got ${Number(total.toFixed(6))}`);
      }
    }
  }
  if (experiment.namespace && experiment.namespace[1] >= experiment.namespace[2]) {
    problem([...path, "namespace"], "must have a start below its end");
  }
  checkCondition(experiment.when, [...path, "when"], false, checker);
}

function checkRoute(route: CheckedRuleSet["routes"][number], path: Path, checker: Checker): void {
  checkCondition(route.when, [...path, "when"], true, checker);
  if (!route.rewrite) return;
  let allowed: ReadonlySet<string> | undefined;
  let unknown: (key: string) => string;
  if (route.experiment) {
    const experiment = route.experiment;
    allowed = checker.experiments.get(experiment);
    unknown = (key) => `names unknown variation "${key}" of experiment "${experiment}"`;
    if (!allowed) {
      checker.problem([...path, "experiment"], `names unknown experiment "${experiment}"`);
      return;
    }
  } else if (route.rewriteBy === "device") {
    allowed = new Set(DEVICE_CLASSES);
    unknown = (key) => `names unknown device class "${key}"`;
  } else if (route.rewriteBy === "network") {
    allowed = new Set(NETWORK_CLASSES);
    unknown = (key) => `names unknown network class "${key}"`;
  } else {
    allowed = checker.regionNames;
    unknown = (key) => `names unknown region "${key}"`;
  }
  for (const key of Object.keys(route.rewrite)) {
    if (key !== "*" && !allowed.has(key)) checker.problem([...path, "rewrite", key], unknown(key));
  }
}

function checkFlag(flag: CheckedRuleSet["flags"][number], path: Path, checker: Checker): void {
  const { problem } = checker;
  if (!valueHasType(flag.type, flag.default)) problem([...path, "default"], `must be of type ${flag.type}`);
  for (const [name, value] of Object.entries(flag.variants ?? {})) {
    if (!valueHasType(flag.type, value)) problem([...path, "variants", name], `must be of type ${flag.type}`);
  }
  flag.rules.forEach((rule, i) => {
    const rulePath = [...path, "rules", i];
    checkCondition(rule.when, [...rulePath, "when"], true, checker);
    const hasValue = rule.value !== undefined;
    const hasVariant = rule.variant !== undefined;
    if (hasValue === hasVariant) {
      problem(rulePath, 'must have exactly one of "value" or "variant"');
    } else if (hasValue && !valueHasType(flag.type, rule.value)) {
      problem([...rulePath, "value"], `must be of type ${flag.type}`);
    } else if (hasVariant && !Object.hasOwn(flag.variants ?? {}, rule.variant!)) {
      problem([...rulePath, "variant"], `names unknown variant "${rule.variant}"`);
    }
  });
}
