/**
 * @module
 * Parsing a rule set with readable errors that name the field, and compiling it into a form the
 * decision stage can evaluate without allocating.
 */
import { exceedsJsonDepth, MAX_JSON_DEPTH } from "../support/json_limits.ts";
import {
  compileCondition,
  type CompiledCondition,
  compileGlob,
  hintsForInputs,
  INPUT,
  NETWORK_CLASSES,
  type PathGlob,
} from "./targeting.ts";
import { type CompiledExperiment, compileExperiment } from "./experiments.ts";
import { type CompiledFlag, compileFlag } from "./flags.ts";
import type { NetworkClass } from "../pipeline/device.ts";
import { type ParsedRuleSet, reservedKeyProblems, RuleSetSchema, rulesIssueMessage } from "./schema.ts";

/** What the keys of a rewrite map (`targets`) name; for `experiment`, `experiment`'s variations. */
export type RewriteBy = "region" | "device" | "network" | "experiment";

/** A route action after compilation. */
export type RouteAction =
  | {
    type: "rewrite";
    targets: ReadonlyMap<string, string>;
    by: RewriteBy;
    experiment?: string;
  }
  | { type: "redirect"; to: string; status: number };

/** A route after compilation; `inputs` are the `INPUT` bits its outcome reads once its path matched. */
export interface CompiledRoute {
  match: string;
  pattern: PathGlob;
  when: CompiledCondition | undefined;
  action: RouteAction;
  inputs: number;
}

/** An image adaptation rule after compilation; `inputs` are the `INPUT` bits its parameters read. */
export interface CompiledImageRule {
  patterns: readonly PathGlob[];
  when: CompiledCondition | undefined;
  width: { from: "viewport" | "dpr-scaled"; param: string; step: number; max: number } | undefined;
  quality: { param: string; byNetwork: ReadonlyMap<NetworkClass, number> } | undefined;
  inputs: number;
}

/** A slot content rule after compilation. */
export interface CompiledSlot {
  name: string;
  when: CompiledCondition | undefined;
  html: string;
}

/** A rule set compiled for evaluation. */
export interface CompiledRules {
  version: number;
  defaultRegion: string;
  countryRegion: ReadonlyMap<string, string>;
  regionNames: ReadonlySet<string>;
  routes: readonly CompiledRoute[];
  experiments: readonly CompiledExperiment[];
  experimentKeys: ReadonlySet<string>;
  flags: readonly CompiledFlag[];
  flagsByKey: ReadonlyMap<string, CompiledFlag>;
  images: readonly CompiledImageRule[];
  slots: readonly CompiledSlot[];
  htmlContext: boolean;
  /** Every client-hint header some rule can read, for `Accept-CH` on HTML responses. */
  clientHints: readonly string[];
  source: ParsedRuleSet;
}

/** A rule set failed validation; the message names each offending field. */
export class RulesError extends Error {
  /** One entry per problem: `field path: message`. */
  readonly problems: string[];

  constructor(message: string, problems: string[]) {
    super(message);
    this.name = "RulesError";
    this.problems = problems;
  }
}

/**
 * Validates and compiles a rule set.
 *
 * @param input parsed JSON of unknown shape
 * @param source a label for error messages, such as the file name
 * @returns the compiled rules
 * @throws {RulesError} naming every invalid field
 * @example
 * ```ts
 * const rules = parseRules(JSON.parse(await Deno.readTextFile("rules.json")), 'rules file "rules.json"');
 * ```
 */
export function parseRules(input: unknown, source = "rules"): CompiledRules {
  if (exceedsJsonDepth(input)) {
    const problem = `"(root)" must not be nested more than ${MAX_JSON_DEPTH} levels deep`;
    throw new RulesError(`Cannot parse ${source}: ${problem}`, [problem]);
  }
  const reserved = reservedKeyProblems(input).map(({ path, message }) => `"${path.join(".")}" ${message}`);
  if (reserved.length) throw new RulesError(`Cannot parse ${source}: ${reserved.join("; ")}`, reserved);
  // Parsed once per version: generating zod's compiled fast paths would cost more than it saves.
  const result = RuleSetSchema.safeParse(input, { jitless: true });
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const path = issue.path.length ? issue.path.join(".") : "(root)";
      return `"${path}" ${rulesIssueMessage(issue)}`;
    });
    throw new RulesError(`Cannot parse ${source}: ${problems.join("; ")}`, problems);
  }
  return compileRules(result.data, source);
}

/**
 * Reads, validates and compiles a rules file.
 *
 * @param path the file path
 * @param readTextFile the reader, normally `Deno.readTextFile`
 * @returns the compiled rules
 * @throws {RulesError} when the file is missing, not JSON, or invalid
 */
export async function loadRulesFile(
  path: string,
  readTextFile: (path: string) => Promise<string>,
): Promise<CompiledRules> {
  let text: string;
  try {
    text = await readTextFile(path);
  } catch (error) {
    throw new RulesError(`Cannot read rules file "${path}": ${(error as Error).message}`, []);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new RulesError(`Cannot parse rules file "${path}": ${(error as Error).message}`, []);
  }
  return parseRules(json, `rules file "${path}"`);
}

function compileRules(rules: ParsedRuleSet, source: string): CompiledRules {
  const countryRegion = new Map<string, string>();
  const problems: string[] = [];
  for (const [region, countries] of Object.entries(rules.regions)) {
    for (const country of countries) {
      const existing = countryRegion.get(country);
      if (existing && existing !== region) {
        problems.push(`"regions" puts "${country}" in both "${existing}" and "${region}"`);
      }
      countryRegion.set(country, region);
    }
  }
  if (problems.length) throw new RulesError(`Cannot parse ${source}: ${problems.join("; ")}`, problems);

  const routes = rules.routes.map(compileRoute);
  const experiments = rules.experiments.map(compileExperiment);
  const flags = rules.flags.map(compileFlag);
  const images = rules.images.map(compileImageRule);

  let inputs = 0;
  for (const route of routes) inputs |= route.inputs;
  for (const experiment of experiments) inputs |= experiment.when?.inputs ?? 0;
  for (const flag of flags) for (const rule of flag.rules) inputs |= rule.inputs;
  for (const image of images) inputs |= image.inputs;

  return {
    version: rules.version,
    defaultRegion: rules.defaultRegion,
    countryRegion,
    regionNames: new Set([rules.defaultRegion, ...Object.keys(rules.regions)]),
    routes,
    experiments,
    flags,
    flagsByKey: new Map(flags.map((flag) => [flag.key, flag])),
    experimentKeys: new Set(rules.experiments.map((experiment) => experiment.key)),
    images,
    slots: rules.slots.map((slot) => ({
      name: slot.name,
      when: slot.when ? compileCondition(slot.when) : undefined,
      html: slot.html,
    })),
    htmlContext: rules.htmlContext,
    clientHints: hintsForInputs(inputs),
    source: rules,
  };
}

function compileRoute(route: ParsedRuleSet["routes"][number]): CompiledRoute {
  const when = route.when ? compileCondition(route.when) : undefined;
  let inputs = when?.inputs ?? 0;
  let action: RouteAction;
  if (route.redirect) {
    action = { type: "redirect", to: route.redirect.to, status: route.redirect.status };
  } else {
    const targets = new Map(Object.entries(route.rewrite ?? {}));
    const by: RewriteBy = route.experiment ? "experiment" : route.rewriteBy ?? "region";
    action = route.experiment
      ? { type: "rewrite", targets, by, experiment: route.experiment }
      : { type: "rewrite", targets, by };
    // A map with only "*" rewrites everyone alike; any other key makes the outcome depend on the input.
    if (targets.size > 1 || !targets.has("*")) {
      inputs |= by === "experiment" ? INPUT.visitorKey : INPUT[by];
    }
  }
  return { match: route.match, pattern: compileGlob(route.match), when, action, inputs };
}

function compileImageRule(rule: ParsedRuleSet["images"][number]): CompiledImageRule {
  const globs = typeof rule.match === "string" ? [rule.match] : rule.match;
  const when = rule.when ? compileCondition(rule.when) : undefined;
  let inputs = when?.inputs ?? 0;
  if (rule.width) inputs |= rule.width.from === "viewport" ? INPUT.viewport : INPUT.viewport | INPUT.dpr;
  let quality: CompiledImageRule["quality"];
  if (rule.quality) {
    const byNetwork = new Map<NetworkClass, number>();
    for (const network of NETWORK_CLASSES) {
      const value = rule.quality[network];
      if (value !== undefined) byNetwork.set(network, value);
    }
    quality = { param: rule.quality.param, byNetwork };
    inputs |= INPUT.network;
  }
  return { patterns: globs.map(compileGlob), when, width: rule.width, quality, inputs };
}
