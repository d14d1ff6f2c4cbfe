/**
 * @module
 * QA forcing: a request that carries `QA_TOKEN` in `x-edge-qa` may choose variations and flag
 * values. Without the right token these headers force nothing; they never reach the origin.
 */
import type { CompiledRules } from "../rules/compile.ts";
import type { ForcedOutcome } from "../rules/decision.ts";
import { valueHasType } from "../rules/flags.ts";
import { EdgeError } from "../http/errors.ts";
import { constantTimeEqual } from "../http/secure.ts";

export const QA_TOKEN_HEADER = "x-edge-qa";
/** `experiment=variation,…`. */
export const QA_VARIANTS_HEADER = "x-edge-qa-variants";
/** `flag=value,…`; a value percent-encoded, as in `x-edge-flags` (strings as is, others JSON). */
export const QA_FLAGS_HEADER = "x-edge-qa-flags";

/** Whether a request's QA token holds; `unset`: no `QA_TOKEN` configured. */
export type QaTokenCheck = "valid" | "unset" | "absent" | "wrong";

const MAX_ENTRIES = 100;

/** A request with the right QA token asked for something these rules cannot serve. */
export class QaOverrideError extends EdgeError {
  constructor(message: string) {
    super(400, "invalid_qa_override", message);
    this.name = "QaOverrideError";
  }
}

/**
 * What a request with the right QA token forces, checked against the visitor's rules; else undefined.
 *
 * @param headers the request headers
 * @param options `QA_TOKEN` (undefined: nothing is ever forced) and the visitor's rules
 * @throws {QaOverrideError} when the token is right but an entry is not in the rules or of the wrong type
 */
export function qaOverrides(
  headers: Headers,
  options: { token: string | undefined; rules: CompiledRules },
): ForcedOutcome | undefined {
  const { token, rules } = options;
  if (checkQaToken(headers, token) !== "valid") return undefined;
  return forcedBy(headers, rules);
}

/**
 * Checks the request's `x-edge-qa` against `QA_TOKEN`, in constant time.
 *
 * @param headers the request headers
 * @param token `QA_TOKEN`, undefined when not configured
 */
export function checkQaToken(headers: Headers, token: string | undefined): QaTokenCheck {
  if (token === undefined) return "unset";
  const sent = headers.get(QA_TOKEN_HEADER);
  if (sent === null) return "absent";
  return constantTimeEqual(sent.trim(), token) ? "valid" : "wrong";
}

/**
 * What the QA headers force, whoever sent them (the offline explain tool has no token to check).
 *
 * @param headers the request headers
 * @param rules the visitor's rules
 * @throws {QaOverrideError} when an entry is not in the rules or of the wrong type
 */
export function forcedBy(headers: Headers, rules: CompiledRules): ForcedOutcome | undefined {
  const variants = new Map<string, string>();
  for (const [key, value, entry] of entries(headers.get(QA_VARIANTS_HEADER), QA_VARIANTS_HEADER)) {
    const experiment = rules.experiments.find((e) => e.key === key);
    if (!experiment) {
      throw new QaOverrideError(
        `"${QA_VARIANTS_HEADER}" entry "${shown(entry)}": the rules have no experiment "${shown(key)}"`,
      );
    }
    if (!experiment.variationSet.has(value)) {
      throw new QaOverrideError(
        `"${QA_VARIANTS_HEADER}" entry "${shown(entry)}": "${
          shown(value)
        }" is not a variation of experiment "${key}"`,
      );
    }
    variants.set(key, value);
  }
  const flags = new Map<string, unknown>();
  for (const [key, text, entry] of entries(headers.get(QA_FLAGS_HEADER), QA_FLAGS_HEADER)) {
    const flag = rules.flagsByKey.get(key);
    if (!flag) {
      throw new QaOverrideError(
        `"${QA_FLAGS_HEADER}" entry "${shown(entry)}": the rules have no flag "${shown(key)}"`,
      );
    }
    const value = flagValue(text, flag.type);
    if (value === undefined) {
      throw new QaOverrideError(
        `"${QA_FLAGS_HEADER}" entry "${shown(entry)}": flag "${key}" takes ${TYPE_NAMES[flag.type]}`,
      );
    }
    flags.set(key, value);
  }
  return variants.size || flags.size ? { variants, flags } : undefined;
}

function entries(header: string | null, name: string): [string, string, string][] {
  if (!header) return [];
  const out: [string, string, string][] = [];
  for (const part of header.split(",")) {
    const entry = part.trim();
    if (!entry) continue;
    if (out.length === MAX_ENTRIES) {
      throw new QaOverrideError(`"${name}" has more than ${MAX_ENTRIES} entries`);
    }
    const eq = entry.indexOf("=");
    if (eq <= 0) throw new QaOverrideError(`"${name}" entry "${shown(entry)}" is not of the form key=value`);
    out.push([entry.slice(0, eq).trim(), entry.slice(eq + 1).trim(), entry]);
  }
  return out;
}

function shown(entry: string): string {
  return entry.length > 80 ? `${entry.slice(0, 80)}…` : entry;
}

const TYPE_NAMES: Readonly<Record<Parameters<typeof valueHasType>[0], string>> = {
  boolean: "a boolean (true or false)",
  number: "a number",
  string: "a percent-encoded string",
  object: "an object (percent-encoded JSON)",
};

function flagValue(text: string, type: Parameters<typeof valueHasType>[0]): unknown {
  let decoded: string;
  try {
    decoded = decodeURIComponent(text);
  } catch {
    return undefined;
  }
  if (type === "string") return decoded;
  try {
    const value: unknown = JSON.parse(decoded);
    return valueHasType(type, value) ? value : undefined;
  } catch {
    return undefined;
  }
}
