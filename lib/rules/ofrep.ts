/**
 * @module
 * The OpenFeature Remote Evaluation Protocol (OFREP) core, Hono-free: parsing, single and bulk
 * evaluation with OFREP's shapes and error codes, the bulk `ETag`, API-key checks.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import type { CompiledRules } from "./compile.ts";
import { resolveRegion } from "../pipeline/geo.ts";
import { evaluateFlag, type FlagContext, type FlagEvaluation } from "./flags.ts";
import { assignExperiment, experimentApplies } from "./experiments.ts";
import { DEVICE_CLASSES, NETWORK_CLASSES } from "./targeting.ts";
import { constantTimeEqual } from "../http/secure.ts";
import { normalisePercentEncoding, pathForRules } from "../http/paths.ts";
import { ANON_COOKIE } from "../pipeline/identity.ts";

export const OFREP_MAX_BODY_BYTES = 64 * 1024;

export type OfrepErrorCode = "PARSE_ERROR" | "INVALID_CONTEXT" | "TARGETING_KEY_MISSING" | "FLAG_NOT_FOUND";

export interface OfrepSuccess {
  key: string;
  value: unknown;
  reason: string;
  variant: string;
  metadata: Record<string, string | number | boolean>;
}

export interface OfrepFailure {
  key: string;
  errorCode: OfrepErrorCode;
  errorDetails: string;
}

export interface OfrepBulkFailure {
  errorCode: OfrepErrorCode;
  errorDetails: string;
}

/** What the route sends: status, JSON body (none for 304) and, for bulk answers, the ETag. */
export interface OfrepAnswer {
  status: 200 | 304 | 400 | 404;
  body?: OfrepSuccess | OfrepFailure | OfrepBulkFailure | { flags: (OfrepSuccess | OfrepFailure)[] };
  etag?: string;
}

const ContextSchema = z.looseObject({
  targetingKey: z.string().max(256).optional(),
  region: z.string().min(1).max(32).optional(),
  country: z.string().regex(/^[A-Za-z]{2}$/, "must be an ISO 3166-1 alpha-2 country code").optional(),
  device: z.enum(DEVICE_CLASSES).optional(),
  network: z.enum(NETWORK_CLASSES).optional(),
  platform: z.string().max(32).optional(),
  segments: z.array(z.string().max(64)).max(100).optional(),
  // Read as the proxy reads a path, so `/admin/*` answers the same for `/%61dmin/x` and `/admin;x/y`.
  path: z.string().startsWith("/", 'must start with "/"').max(2048)
    .transform((path) => pathForRules(normalisePercentEncoding(path.replace(/\/{2,}/g, "/")))).optional(),
  loggedIn: z.boolean().optional(),
});

/** The evaluation context attributes the edge understands; others are accepted and ignored. */
export type OfrepContext = z.output<typeof ContextSchema>;

/** Fixed rules, or a source (such as `RulesStore`) that picks a canary's rules for its visitors. */
export type OfrepRules = CompiledRules | {
  readonly current: CompiledRules;
  rulesFor(visitorKey: string): CompiledRules;
};

// By `targetingKey` when one is given, so a canary visitor sees the canary's flags as on the proxy.
function ofrepRulesFor(rules: OfrepRules, context: OfrepContext): CompiledRules {
  if (!("rulesFor" in rules)) return rules;
  return context.targetingKey ? rules.rulesFor(context.targetingKey) : rules.current;
}

/** When OFREP is open (no API keys) the caller's own identity replaces the body's: it evaluates for itself only. */
export interface OfrepCaller {
  key: string | undefined;
  loggedIn: boolean;
  segments: readonly string[];
  sticky?: ReadonlyMap<string, string>;
}

const NO_STICKY: ReadonlyMap<string, string> = new Map();

function withCaller(context: OfrepContext, caller: OfrepCaller | undefined): OfrepContext {
  if (!caller) return context;
  return { ...context, targetingKey: caller.key, loggedIn: caller.loggedIn, segments: [...caller.segments] };
}

type Parsed = { ok: true; context: OfrepContext } | {
  ok: false;
  errorCode: OfrepErrorCode;
  errorDetails: string;
};

// An empty body counts as no context.
function parseOfrepRequest(text: string): Parsed {
  if (text.trim() === "") return { ok: true, context: {} };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, errorCode: "PARSE_ERROR", errorDetails: "The request body is not valid JSON" };
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return { ok: false, errorCode: "PARSE_ERROR", errorDetails: "The request body must be a JSON object" };
  }
  const context: unknown = "context" in json ? json.context : undefined;
  if (context === undefined) return { ok: true, context: {} };
  const parsed = ContextSchema.safeParse(context);
  if (!parsed.success) {
    const details = parsed.error.issues.map((issue) => {
      const path = ["context", ...issue.path.map(String)].join(".");
      return `"${path}" ${issue.message}`;
    });
    return { ok: false, errorCode: "INVALID_CONTEXT", errorDetails: details.join("; ") };
  }
  return { ok: true, context: parsed.data };
}

/**
 * Evaluates one flag for `POST /ofrep/v1/evaluate/flags/{key}`.
 *
 * @param source the rules, or a source that picks them by `targetingKey` (rule canaries)
 * @param request the flag key from the path, the body text, and (open OFREP) the caller's own identity
 */
export function evaluateOfrepFlag(
  source: OfrepRules,
  request: { key: string; body: string; caller?: OfrepCaller },
): OfrepAnswer {
  const { key } = request;
  const parsed = parseOfrepRequest(request.body);
  if (!parsed.ok) {
    return { status: 400, body: { key, errorCode: parsed.errorCode, errorDetails: parsed.errorDetails } };
  }
  const context = withCaller(parsed.context, request.caller);
  const rules = ofrepRulesFor(source, context);
  const flag = rules.flagsByKey.get(key);
  if (!flag) {
    return {
      status: 404,
      body: { key, errorCode: "FLAG_NOT_FOUND", errorDetails: `No flag with key "${truncate(key)}"` },
    };
  }
  const evaluation = evaluateFlag(flag, flagContext(rules, context, request.caller?.sticky));
  const result = toOfrep(evaluation, rules, request.caller !== undefined);
  return "errorCode" in result ? { status: 400, body: result } : { status: 200, body: result };
}

/**
 * Evaluates every flag for `POST /ofrep/v1/evaluate/flags`; flags that cannot be evaluated for
 * this context are failures in the list, and an `If-None-Match` listing the answer's ETag gives 304.
 *
 * @param source the rules, or a source that picks them by `targetingKey` (rule canaries)
 * @param request the body text, the `If-None-Match` header, and (open OFREP) the caller's own identity
 */
export function evaluateOfrepBulk(
  source: OfrepRules,
  request: { body: string; ifNoneMatch?: string | null; caller?: OfrepCaller },
): OfrepAnswer {
  const parsed = parseOfrepRequest(request.body);
  if (!parsed.ok) {
    return { status: 400, body: { errorCode: parsed.errorCode, errorDetails: parsed.errorDetails } };
  }
  const own = withCaller(parsed.context, request.caller);
  const rules = ofrepRulesFor(source, own);
  const context = flagContext(rules, own, request.caller?.sticky);
  const open = request.caller !== undefined;
  const body = { flags: rules.flags.map((flag) => toOfrep(evaluateFlag(flag, context), rules, open)) };
  const etag = `"${createHash("sha256").update(JSON.stringify(body)).digest("base64url").slice(0, 27)}"`;
  if (request.ifNoneMatch && etagMatches(request.ifNoneMatch, etag)) return { status: 304, etag };
  return { status: 200, body, etag };
}

// Weak comparison. `*` matches nothing: on the bulk `POST` it is a guard for conditional writes,
// not a sign the client holds this answer.
function etagMatches(ifNoneMatch: string, etag: string): boolean {
  const wanted = etag.replace(/^W\//, "");
  return ifNoneMatch.split(",").some((tag) => tag.trim().replace(/^W\//, "") === wanted);
}

/**
 * Checks `Authorization: Bearer <key>` or `X-API-Key` against every configured key in constant time.
 *
 * @param headers the request headers
 * @param keys the accepted keys; empty means no key is needed
 */
export function ofrepKeyAccepted(headers: Headers, keys: readonly string[]): boolean {
  if (keys.length === 0) return true;
  const bearer = /^Bearer[ \t]+(\S+)\s*$/i.exec(headers.get("authorization") ?? "")?.[1];
  const presented = bearer ?? headers.get("x-api-key")?.trim();
  if (!presented) return false;
  let accepted = false;
  for (const key of keys) accepted = constantTimeEqual(presented, key) || accepted;
  return accepted;
}

// Experiments assigned from `targetingKey` (a caller's valid sticky assignment kept, as on the
// proxy), so variant conditions work; `match` of experiments only restricts when `path` was given.
function flagContext(
  rules: CompiledRules,
  context: OfrepContext,
  sticky: ReadonlyMap<string, string> = NO_STICKY,
): FlagContext {
  const country = context.country?.toUpperCase();
  const device = context.device;
  const flagContext: FlagContext = {
    region: resolveRegion(rules, country, context.region),
    country,
    device,
    network: context.network,
    platform: context.platform?.toLowerCase(),
    segments: context.segments ?? [],
    path: context.path,
    loggedIn: context.loggedIn,
    variants: {},
    key: context.targetingKey ?? "",
  };
  if (rules.experiments.length === 0) return flagContext;
  const served: Record<string, string> = {};
  const experimentContext = { ...flagContext, isBot: device === "bot", sticky };
  for (const experiment of rules.experiments) {
    if (!experimentApplies(experiment, experimentContext)) continue;
    served[experiment.key] = assignExperiment(experiment, experimentContext).variation;
  }
  return { ...flagContext, variants: served };
}

// `open`: the caller's own identity replaced the body's (no OFREP_API_KEYS), so a missing key is
// the caller's missing `ep_uid` or session, and a `targetingKey` in the body would not help.
function toOfrep(
  evaluation: FlagEvaluation,
  rules: CompiledRules,
  open: boolean,
): OfrepSuccess | OfrepFailure {
  if (evaluation.errorCode) {
    return {
      key: evaluation.key,
      errorCode: evaluation.errorCode,
      errorDetails: open
        ? `Flag "${evaluation.key}" needs a visitor key. Open OFREP (no OFREP_API_KEYS) evaluates for ` +
          `the caller itself and ignores "targetingKey" in the body: call it with the caller's session ` +
          `cookie or the "${ANON_COOKIE}" cookie the edge sets on every page, or configure OFREP_API_KEYS ` +
          `to evaluate for the "targetingKey" you send`
        : `Flag "${evaluation.key}" needs "targetingKey" in the context`,
    };
  }
  return {
    key: evaluation.key,
    value: evaluation.value,
    reason: evaluation.reason,
    variant: evaluation.variant,
    metadata: { rulesVersion: rules.version },
  };
}

function truncate(text: string): string {
  return text.length > 128 ? `${text.slice(0, 128)}…` : text;
}
