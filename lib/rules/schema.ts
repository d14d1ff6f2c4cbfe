/**
 * @module
 * The rule set's zod schema — the single source of truth, also exported as JSON Schema for
 * editors — and the checks on single fields that the schema and the sync push share.
 */
import { keyPaths } from "../support/json_limits.ts";
import { z } from "zod";
import { DEVICE_CLASSES, NETWORK_CLASSES } from "./targeting.ts";
import { isDotSegment, normalisePercentEncoding } from "../http/paths.ts";
import { checkReferences } from "./references.ts";

const COUNTRY = /^[A-Z]{2}$/;
const REGION = /^[A-Za-z0-9_-]{1,32}$/;
const KEY = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const PARAM = /^[A-Za-z0-9_.-]{1,32}$/;

// Would reach `Object.prototype` as an object key: refused wherever the rules name something.
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

// Paths are matched normalised (`pathForRules`): a glob spelt otherwise could never match.
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

const RuleSetFields = z.strictObject({
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
});

/**
 * The zod schema of a rule set; strict at every level, so a misspelt key is refused, not dropped.
 * Its refinement checks what spans fields (see `references.ts`).
 */
export const RuleSetSchema = RuleSetFields.superRefine(checkReferences);

/** A rule set as written in JSON (defaults not yet applied). */
export type RuleSet = z.input<typeof RuleSetFields>;

/** A rule set after validation, with defaults applied. */
export type ParsedRuleSet = z.output<typeof RuleSetFields>;

/** A targeting condition after validation. */
export type ParsedCondition = z.output<typeof Condition>;

/** Everyone in `GLOBAL`, no routes. */
export const EMPTY_RULES: RuleSet = { version: 0, defaultRegion: "GLOBAL", regions: {}, routes: [] };

/**
 * The `__proto__` keys anywhere in parsed JSON, checked before the schema, which would drop them
 * without a word (a `regions` entry `"__proto__"` would vanish into the default region).
 *
 * @param input parsed JSON of unknown shape (not nested too deep: check that first)
 */
export function reservedKeyProblems(input: unknown): { path: (string | number)[]; message: string }[] {
  return keyPaths(input, PROTO_KEY).map((path) => ({ path, message: RESERVED_MESSAGE }));
}

const PROTO_KEY: ReadonlySet<string> = new Set(["__proto__"]);

/**
 * The message of a schema issue; for a map key, what was wrong with it (zod says only "Invalid key").
 *
 * @param issue an issue of {@linkcode RuleSetSchema}
 */
export function rulesIssueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === "invalid_key" && issue.issues.length) {
    return issue.issues.map((inner) => inner.message).join("; ");
  }
  return issue.message;
}

/**
 * The JSON Schema (draft 2020-12) of a rule set as written, for editors and `docs/rules.schema.json`;
 * checks that span fields are enforced only by {@linkcode parseRules}.
 */
export function rulesJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(RuleSetSchema, { io: "input" }),
    title: "Edge Personalizer rule set",
    description: "Routes, experiments, flags and content adaptation evaluated at the edge; see docs/rules.md",
  };
}

/**
 * Whether a target path is absolute and can neither change host nor escape by dot segments.
 *
 * @param path the path as written in the rules (may contain one `*` placeholder)
 */
export function isSafeTargetPath(path: string): boolean {
  if (!path.startsWith("/") || path.startsWith("//")) return false;
  // deno-lint-ignore no-control-regex
  if (/[\\?#\s\x00-\x1f\x7f]/.test(path)) return false;
  if (/%(2f|5c|2e|00)/i.test(path)) return false;
  // `..;x` is a dot segment too for servers that cut path parameters (Tomcat, Jetty).
  return !path.split("/").some(isDotSegment);
}
