/**
 * @module
 * The rule set: its zod schema (the single source of truth, also exported as JSON Schema for
 * editors), parsing with readable errors that name the field, cross-reference checks, and
 * compilation into a form the decision stage can evaluate without allocating.
 */
import { exceedsJsonDepth, keyPaths, MAX_JSON_DEPTH } from "../support/json_limits.ts";
import { z } from "zod";
import {
  compileCondition,
  type CompiledCondition,
  compileGlob,
  DEVICE_CLASSES,
  hintsForInputs,
  INPUT,
  NETWORK_CLASSES,
  type PathGlob,
} from "./targeting.ts";
import { type CompiledExperiment, compileExperiment } from "./experiments.ts";
import { STICKY_PAYLOAD_MAX, STICKY_VALUE_MAX, stickyLength } from "../pipeline/sticky.ts";
import { isDotSegment, normalisePercentEncoding } from "../http/paths.ts";
import { type CompiledFlag, compileFlag, valueHasType } from "./flags.ts";
import type { NetworkClass } from "../pipeline/device.ts";

export { compileGlob, PathGlob } from "./targeting.ts";

const COUNTRY = /^[A-Z]{2}$/;
const REGION = /^[A-Za-z0-9_-]{1,32}$/;
const KEY = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const PARAM = /^[A-Za-z0-9_.-]{1,32}$/;
const WEIGHT_TOLERANCE = 0.01;

/**
 * Names that would reach `Object.prototype` when used as an object key (`__proto__` even vanishes
 * from a parsed map): refused wherever the rules name something.
 */
const RESERVED_NAMES: ReadonlySet<string> = new Set(["__proto__", "constructor", "prototype"]);
const RESERVED_MESSAGE =
  'is a reserved name ("__proto__", "constructor" and "prototype" cannot name anything)';
const notReserved = (name: string) => !RESERVED_NAMES.has(name);

const RegionName = z.string().regex(REGION, "must be 1-32 letters, digits, '_' or '-'")
  .refine(notReserved, RESERVED_MESSAGE);
const CountryCode = z.string().regex(COUNTRY, "must be an upper-case ISO 3166-1 alpha-2 country code");
const Key = z.string().regex(
  KEY,
  "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
).refine(notReserved, RESERVED_MESSAGE);
const Name = z.string().regex(NAME, "must be 1-64 letters, digits, '_', '.' or '-'")
  .refine(notReserved, RESERVED_MESSAGE);

/** A path the edge may send to the origin or redirect to: absolute, no host, no dot segments. */
const SafePath = z.string().max(2048).refine(isSafeTargetPath, {
  message: 'must be a path starting with "/" (not "//"), without "\\", dot segments, query or fragment',
});

/**
 * Request paths are matched normalised (percent-encoding in normal form, `;` parameters cut; see
 * `pathForRules`): a glob spelt otherwise could never match, so it is refused.
 */
const Glob = z.string().min(1).max(512).refine((value) => value === "*" || value.startsWith("/"), {
  message: 'must start with "/" (or be "*")',
}).refine((value) => !value.includes(";"), {
  message: 'must not contain ";" (path parameters are cut from request paths before matching)',
}).superRefine((value, ctx) => {
  const normal = normalisePercentEncoding(value);
  if (normal !== value) {
    ctx.addIssue({
      code: "custom",
      message: `must spell percent-encoding as request paths are matched: "${normal}"`,
    });
  }
});

const Globs = z.union([Glob, z.array(Glob).min(1).max(50)]);

const Condition = z.strictObject({
  region: z.array(RegionName).min(1).max(100).optional().meta({ description: "Any of these regions" }),
  country: z.array(CountryCode).min(1).max(300).optional().meta({ description: "Any of these countries" }),
  device: z.array(z.enum(DEVICE_CLASSES)).min(1).optional().meta({
    description: "Any of these device classes",
  }),
  network: z.array(z.enum(NETWORK_CLASSES)).min(1).optional().meta({
    description: "Any of these network classes",
  }),
  platform: z.array(z.string().min(1).max(32)).min(1).max(20).optional().meta({
    description: "Any of these operating systems (case-insensitive), e.g. Android, iOS, Windows",
  }),
  segment: z.array(Name).min(1).max(100).optional().meta({
    description: "The visitor has at least one of these profile segments (none under GPC)",
  }),
  path: Globs.optional().meta({ description: "The request path matches one of these globs" }),
  loggedIn: z.boolean().optional(),
  variant: z.record(Key, z.array(Name).min(1).max(20)).optional().meta({
    description: "Experiment key → variations; the visitor is served one of them",
  }),
}).meta({
  id: "Condition",
  description: "Targeting condition: every field given must hold; within a list, any value matches",
});

const REWRITE_BY = ["region", "device", "network"] as const;

const Route = z.strictObject({
  match: Glob,
  when: Condition.optional(),
  rewrite: z.record(
    z.string().regex(/^(\*|[A-Za-z0-9_.-]{1,64})$/, 'must be a name or "*"').refine(
      notReserved,
      RESERVED_MESSAGE,
    ),
    SafePath,
  )
    .optional().meta({
      description:
        'Target path by region (default), device or network class, or experiment variation; "*" is the fallback. ' +
        'One "*" in the target takes the text the first "*" of "match" matched',
    }),
  rewriteBy: z.enum(REWRITE_BY).optional().meta({
    description: 'What the keys of "rewrite" name; default region',
  }),
  experiment: Key.optional().meta({ description: 'Key the "rewrite" map by this experiment\'s variations' }),
  redirect: z.strictObject({
    to: SafePath,
    status: z.union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)]).default(
      302,
    ),
  }).optional(),
}).superRefine((route, ctx) => {
  if ((route.rewrite ? 1 : 0) + (route.redirect ? 1 : 0) !== 1) {
    ctx.addIssue({ code: "custom", message: 'must have exactly one of "rewrite" or "redirect"' });
  }
  if ((route.rewriteBy || route.experiment) && !route.rewrite) {
    ctx.addIssue({ code: "custom", message: '"rewriteBy" and "experiment" need "rewrite"' });
  }
  if (route.rewriteBy && route.experiment) {
    ctx.addIssue({ code: "custom", message: 'must not have both "rewriteBy" and "experiment"' });
  }
});

const Experiment = z.strictObject({
  key: Key,
  variations: z.array(Name).min(2).max(20).meta({ description: "Variation values; the first is control" }),
  weights: z.array(z.number().min(0).max(1)).optional().meta({
    description: "One weight per variation, summing to 1; default equal",
  }),
  coverage: z.number().min(0).max(1).default(1).meta({ description: "Share of visitors in the experiment" }),
  seed: z.string().min(1).max(128).optional().meta({ description: "Hash seed; default the key" }),
  hashVersion: z.union([z.literal(1), z.literal(2)]).default(2).meta({
    description: "GrowthBook hash version (GrowthBook's SDK defaults to 1 when it is missing)",
  }),
  match: Globs.default("*").meta({ description: "Paths the experiment is exposed on" }),
  namespace: z.tuple([Name, z.number().min(0).max(1), z.number().min(0).max(1)]).optional().meta({
    description: "[id, start, end]: experiments sharing an id with disjoint ranges are mutually exclusive",
  }),
  when: Condition.optional(),
  enabled: z.boolean().default(true),
});

const JsonValue = z.json().meta({ id: "JsonValue", description: "Any JSON value" });

const FLAG_TYPES = ["boolean", "string", "number", "object"] as const;

const FlagRule = z.strictObject({
  when: Condition.optional(),
  rollout: z.number().min(0).max(1).optional().meta({
    description:
      "Share of matching visitors, bucketed by GrowthBook's hash of the flag key and targeting key",
  }),
  seed: z.string().min(1).max(128).optional().meta({
    description: "Rollout hash seed; default the flag key",
  }),
  value: JsonValue.optional(),
  variant: Name.optional().meta({
    description: 'Name of an entry of the flag\'s "variants" (instead of "value")',
  }),
});

const Flag = z.strictObject({
  key: Key,
  type: z.enum(FLAG_TYPES),
  default: JsonValue,
  variants: z.record(Name, JsonValue).optional().meta({ description: "Named values" }),
  rules: z.array(FlagRule).max(100).default([]).meta({ description: "The first matching rule wins" }),
  enabled: z.boolean().default(true),
  description: z.string().max(500).optional(),
});

const Quality = z.number().int().min(1).max(100);

const ImageRule = z.strictObject({
  match: Globs,
  when: Condition.optional(),
  width: z.strictObject({
    from: z.enum(["viewport", "dpr-scaled"]).meta({
      description: "CSS viewport width, or viewport width × DPR (device pixels)",
    }),
    param: z.string().regex(PARAM).default("w"),
    step: z.number().int().min(1).max(1024).default(100).meta({
      description: "Round up to a multiple of this, to bound the number of variants",
    }),
    max: z.number().int().min(1).max(16384).default(4096),
  }).optional(),
  quality: z.strictObject({
    param: z.string().regex(PARAM).default("q"),
    fast: Quality.optional(),
    slow: Quality.optional(),
    "save-data": Quality.optional(),
  }).optional().meta({ description: "Quality by network class; a class without a value adds no parameter" }),
}).refine((rule) => rule.width !== undefined || rule.quality !== undefined, {
  message: 'must have "width" or "quality"',
});

const Slot = z.strictObject({
  name: Name.meta({ description: 'Matches `<edge-slot name="…">` and `data-edge-slot="…"` in HTML pages' }),
  when: Condition.optional(),
  html: z.string().max(16_384).meta({
    description: "Markup inserted in place of the slot's fallback (trusted: it comes from the rules)",
  }),
});

/** The zod schema of a rule set; strict at every level, so a misspelt key is refused, not dropped. */
export const RuleSetSchema = z.strictObject({
  $schema: z.string().optional(),
  version: z.number().int().nonnegative(),
  defaultRegion: RegionName.default("GLOBAL"),
  regions: z.record(RegionName, z.array(CountryCode)).default({}),
  routes: z.array(Route).max(1000).default([]),
  experiments: z.array(Experiment).max(100).default([]),
  flags: z.array(Flag).max(500).default([]),
  images: z.array(ImageRule).max(100).default([]).meta({
    description: "Content adaptation: query parameters added to image requests (first match wins)",
  }),
  slots: z.array(Slot).max(500).default([]).meta({
    description: "HTML slot content; for each slot name the first entry whose `when` holds wins",
  }),
  htmlContext: z.boolean().default(false).meta({
    description: 'Inject the visitor\'s edge context as JSON (`<script id="edge-context">`) into HTML pages',
  }),
}).superRefine(checkReferences);

/** A rule set as written in JSON (defaults not yet applied). */
export type RuleSet = z.input<typeof RuleSetSchema>;

/** A rule set after validation, with defaults applied. */
export type ParsedRuleSet = z.output<typeof RuleSetSchema>;

/** What the keys of a rewrite map name. */
export type RewriteBy = "region" | "device" | "network" | "experiment";

/** A route action after compilation. */
export type RouteAction =
  | {
    type: "rewrite";
    targets: ReadonlyMap<string, string>;
    /** What the keys of `targets` name. */
    by: RewriteBy;
    /** The experiment whose variation keys `targets`, when `by` is `experiment`. */
    experiment?: string;
  }
  | { type: "redirect"; to: string; status: number };

/** A route after compilation. */
export interface CompiledRoute {
  /** The glob as written. */
  match: string;
  pattern: PathGlob;
  when: CompiledCondition | undefined;
  action: RouteAction;
  /** `INPUT` bits (see `targeting.ts`) the route's outcome depends on once its path matched. */
  inputs: number;
}

/** An image adaptation rule after compilation. */
export interface CompiledImageRule {
  patterns: readonly PathGlob[];
  when: CompiledCondition | undefined;
  width: { from: "viewport" | "dpr-scaled"; param: string; step: number; max: number } | undefined;
  quality: { param: string; byNetwork: ReadonlyMap<NetworkClass, number> } | undefined;
  /** `INPUT` bits the added parameters depend on. */
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
  /** Country code → region name. */
  countryRegion: ReadonlyMap<string, string>;
  /** Every region name the rules know. */
  regionNames: ReadonlySet<string>;
  routes: readonly CompiledRoute[];
  experiments: readonly CompiledExperiment[];
  /** The keys of `experiments`. */
  experimentKeys: ReadonlySet<string>;
  /** Flags in rule order. */
  flags: readonly CompiledFlag[];
  flagsByKey: ReadonlyMap<string, CompiledFlag>;
  images: readonly CompiledImageRule[];
  /** Slot content rules, in rule order. */
  slots: readonly CompiledSlot[];
  /** Whether HTML pages get the edge context injected as JSON. */
  htmlContext: boolean;
  /**
   * Every client-hint request header some rule can read, in canonical case: advertise them in
   * `Accept-CH` (through `acceptChValue`) on HTML responses.
   */
  clientHints: readonly string[];
  source: ParsedRuleSet;
}

/** A rule set failed validation; the message names each offending field. */
export class RulesError extends Error {
  /** One entry per problem: `field path: message`. */
  readonly problems: string[];

  /**
   * @param message summary
   * @param problems one entry per problem
   */
  constructor(message: string, problems: string[]) {
    super(message);
    this.name = "RulesError";
    this.problems = problems;
  }
}

/** The rule set used when none is configured: everyone in `GLOBAL`, no routes. */
export const EMPTY_RULES: RuleSet = { version: 0, defaultRegion: "GLOBAL", regions: {}, routes: [] };

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
  // A rule set is parsed once per version: generating zod's compiled fast paths for its many object
  // schemas costs more (~4 ms of start-up) than it saves.
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
 * The `__proto__` keys of a rule set as parsed from JSON, anywhere in it. Checked before the
 * schema, which would drop them without a word (a `regions` entry `"__proto__"` would vanish
 * and its countries fall back to the default region); the other reserved names are refused by
 * the schema itself, where they name something.
 *
 * @param input parsed JSON of unknown shape (not nested too deep: check that first)
 * @returns one problem per key found, with its path
 */
export function reservedKeyProblems(input: unknown): { path: (string | number)[]; message: string }[] {
  return keyPaths(input, PROTO_KEY).map((path) => ({ path, message: RESERVED_MESSAGE }));
}

const PROTO_KEY: ReadonlySet<string> = new Set(["__proto__"]);

/**
 * The message of a rule set's schema issue: for a map key that failed, what was wrong with the
 * key (zod itself only says "Invalid key in record").
 *
 * @param issue an issue of {@linkcode RuleSetSchema}
 * @returns the message to show after the field's path
 */
export function rulesIssueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === "invalid_key" && issue.issues.length) {
    return issue.issues.map((inner) => inner.message).join("; ");
  }
  return issue.message;
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

/**
 * The JSON Schema of a rule set as written (defaults optional), for editors and
 * `docs/rules.schema.json`. Checks that span fields (weights per variation, known regions and
 * experiments, flag value types) are not expressible in it and are only enforced by
 * {@linkcode parseRules}.
 *
 * @returns a JSON Schema (draft 2020-12) object
 * @throws never
 */
export function rulesJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(RuleSetSchema, { io: "input" }),
    title: "Edge Personalizer rule set",
    description: "Routes, experiments, flags and content adaptation evaluated at the edge; see docs/rules.md",
  };
}

/**
 * Tells whether a configured target path is safe to send to the origin or to redirect to.
 *
 * @param path the path as written in the rules (may contain one `*` placeholder)
 * @returns true when it is an absolute path that cannot change host or escape by dot segments
 */
export function isSafeTargetPath(path: string): boolean {
  if (!path.startsWith("/") || path.startsWith("//")) return false;
  // deno-lint-ignore no-control-regex
  if (/[\\?#\s\x00-\x1f\x7f]/.test(path)) return false;
  if (/%(2f|5c|2e|00)/i.test(path)) return false;
  // `..;x` is a dot segment too for servers that cut path parameters (Tomcat, Jetty).
  return !path.split("/").some(isDotSegment);
}

// --- cross-reference checks -------------------------------------------------------------------

type ConditionInput = z.output<typeof Condition>;

function checkReferences(rules: z.output<typeof RuleSetSchema>, ctx: z.RefinementCtx): void {
  const problem = (path: (string | number)[], message: string) =>
    ctx.addIssue({ code: "custom", path, message });
  const regionNames = new Set([rules.defaultRegion, ...Object.keys(rules.regions)]);
  const experiments = new Map<string, ReadonlySet<string>>();

  const checkCondition = (
    when: ConditionInput | undefined,
    path: (string | number)[],
    allowVariant: boolean,
  ) => {
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
  };

  // Every experiment of a rule set can be sticky: their assignments fit in one cookie, beside
  // its signature.
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
  rules.experiments.forEach((experiment, e) => {
    const path = ["experiments", e];
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
    checkCondition(experiment.when, [...path, "when"], false);
  });

  rules.routes.forEach((route, r) => {
    const path = ["routes", r];
    checkCondition(route.when, [...path, "when"], true);
    if (!route.rewrite) return;
    let allowed: ReadonlySet<string> | undefined;
    let unknown: (key: string) => string;
    if (route.experiment) {
      const experiment = route.experiment;
      allowed = experiments.get(experiment);
      unknown = (key) => `names unknown variation "${key}" of experiment "${experiment}"`;
      if (!allowed) {
        problem([...path, "experiment"], `names unknown experiment "${experiment}"`);
        return;
      }
    } else if (route.rewriteBy === "device") {
      allowed = new Set(DEVICE_CLASSES);
      unknown = (key) => `names unknown device class "${key}"`;
    } else if (route.rewriteBy === "network") {
      allowed = new Set(NETWORK_CLASSES);
      unknown = (key) => `names unknown network class "${key}"`;
    } else {
      allowed = regionNames;
      unknown = (key) => `names unknown region "${key}"`;
    }
    for (const key of Object.keys(route.rewrite)) {
      if (key !== "*" && !allowed.has(key)) problem([...path, "rewrite", key], unknown(key));
    }
  });

  const flagKeys = new Set<string>();
  rules.flags.forEach((flag, f) => {
    const path = ["flags", f];
    if (flagKeys.has(flag.key)) problem([...path, "key"], `repeats flag key "${flag.key}"`);
    flagKeys.add(flag.key);
    if (!valueHasType(flag.type, flag.default)) problem([...path, "default"], `must be of type ${flag.type}`);
    for (const [name, value] of Object.entries(flag.variants ?? {})) {
      if (!valueHasType(flag.type, value)) {
        problem([...path, "variants", name], `must be of type ${flag.type}`);
      }
    }
    flag.rules.forEach((rule, i) => {
      const rulePath = [...path, "rules", i];
      checkCondition(rule.when, [...rulePath, "when"], true);
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
  });

  rules.images.forEach((image, i) => checkCondition(image.when, ["images", i, "when"], true));
  rules.slots.forEach((slot, i) => checkCondition(slot.when, ["slots", i, "when"], true));
}

// --- compilation ------------------------------------------------------------------------------

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
