/**
 * @module
 * The rule set: its zod schema (the single source of truth, also exported as JSON Schema for
 * editors), parsing with readable errors, and compilation into a form the decision stage can
 * evaluate without allocating.
 */
import { z } from "zod";

const COUNTRY = /^[A-Z]{2}$/;
const REGION = /^[A-Za-z0-9_-]{1,32}$/;

/** A path the edge may send to the origin or redirect to: absolute, no host, no dot segments. */
const SafePath = z.string().max(2048).refine(isSafeTargetPath, {
  message: 'must be a path starting with "/" (not "//"), without "\\", dot segments, query or fragment',
});

const Glob = z.string().min(1).max(512).refine((value) => value === "*" || value.startsWith("/"), {
  message: 'must start with "/" (or be "*")',
});

const Route = z.object({
  match: Glob,
  rewrite: z.record(z.string().regex(/^(\*|[A-Za-z0-9_-]{1,32})$/, 'must be a region name or "*"'), SafePath)
    .optional(),
  redirect: z.object({
    to: SafePath,
    status: z.union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)]).default(
      302,
    ),
  }).optional(),
}).refine((route) => (route.rewrite ? 1 : 0) + (route.redirect ? 1 : 0) === 1, {
  message: 'must have exactly one of "rewrite" or "redirect"',
});

/** The zod schema of a rule set. */
export const RuleSetSchema = z.object({
  version: z.number().int().nonnegative(),
  defaultRegion: z.string().regex(REGION, "must be 1-32 letters, digits, '_' or '-'").default("GLOBAL"),
  regions: z.record(
    z.string().regex(REGION, "must be 1-32 letters, digits, '_' or '-'"),
    z.array(z.string().regex(COUNTRY, "must be an upper-case ISO 3166-1 alpha-2 country code")),
  ).default({}),
  routes: z.array(Route).max(1000).default([]),
});

/** A rule set as written in JSON. */
export type RuleSet = z.infer<typeof RuleSetSchema>;

/** A route action after compilation. */
export type RouteAction =
  | { type: "rewrite"; targets: ReadonlyMap<string, string> }
  | { type: "redirect"; to: string; status: number };

/** A route after compilation. */
export interface CompiledRoute {
  /** The glob as written. */
  match: string;
  pattern: RegExp;
  action: RouteAction;
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
  source: RuleSet;
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
 */
export function parseRules(input: unknown, source = "rules"): CompiledRules {
  const result = RuleSetSchema.safeParse(input);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const path = issue.path.length ? issue.path.join(".") : "(root)";
      return `"${path}" ${issue.message}`;
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

function compileRules(rules: RuleSet, source: string): CompiledRules {
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
  return {
    version: rules.version,
    defaultRegion: rules.defaultRegion,
    countryRegion,
    regionNames: new Set([rules.defaultRegion, ...Object.keys(rules.regions)]),
    routes: rules.routes.map((route) => ({
      match: route.match,
      pattern: globToRegExp(route.match),
      action: route.redirect
        ? { type: "redirect", to: route.redirect.to, status: route.redirect.status }
        : { type: "rewrite", targets: new Map(Object.entries(route.rewrite ?? {})) },
    })),
    source: rules,
  };
}

/**
 * Turns a path glob into an anchored regular expression: `*` matches any run of characters
 * (including `/`), everything else literally. The first `*` is captured so a rewrite target
 * can reuse it.
 *
 * @param glob a glob such as `/api/products/*`
 * @returns the regular expression
 */
export function globToRegExp(glob: string): RegExp {
  if (glob === "*") return /^(.*)$/s;
  const parts = glob.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${parts.join("(.*)")}$`, "s");
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
  return !path.split("/").some((segment) => segment === "." || segment === "..");
}
