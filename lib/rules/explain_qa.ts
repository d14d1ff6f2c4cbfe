/**
 * @module
 * QA forcing in an explanation: whether the described request's QA headers force anything, what,
 * and — when they do not — why, in the words an operator needs (token not configured, not sent,
 * wrong, or an entry the rules cannot serve). The token itself is never echoed.
 */
import type { CompiledRules } from "./compile.ts";
import type { ForcedOutcome } from "./decision.ts";
import {
  checkQaToken,
  forcedBy,
  QA_FLAGS_HEADER,
  QA_TOKEN_HEADER,
  QA_VARIANTS_HEADER,
  QaOverrideError,
} from "../pipeline/qa.ts";

/** What the described request's QA headers did. */
export interface QaExplanation {
  /**
   * `forced`: the token holds and the request forces `variants` and `flags`; `offline`: the
   * offline tool forced them without a token to check; `none`: the token holds but nothing is
   * named; `refused`: QA headers were sent but the token is not configured, absent or wrong, so
   * nothing is forced; `invalid`: the token holds but an entry cannot be served, so the edge
   * answers 400 and the decision shown is the one without forcing.
   */
  status: "forced" | "offline" | "none" | "refused" | "invalid";
  /** Experiment key → the forced variation. */
  variants: Record<string, string>;
  /** Flag key → the forced value. */
  flags: Record<string, unknown>;
  why: string;
}

/** Options of {@linkcode explainQa}. */
export interface ExplainQaOptions {
  /** `QA_TOKEN` (undefined: not configured). Ignored when `offline`. */
  token: string | undefined;
  /** The rules that decide for the visitor (a canary may have other experiments). */
  rules: CompiledRules;
  /** The offline tool: there is no token to check, the headers force as sent. */
  offline?: boolean;
}

/**
 * Reads the described request's QA headers as the pipeline does, and says what they did.
 *
 * @param headers the described request's headers
 * @param options the token, the visitor's rules, and whether this is the offline tool
 * @returns the explanation (null when the request sends no QA header at all), what the
 *   decision must force, and for `invalid` the error the edge answers with
 * @throws never (an entry the rules cannot serve is reported as `invalid`)
 * @example
 * ```ts
 * const headers = new Headers({ "x-edge-qa": token, "x-edge-qa-variants": "hero=b" });
 * explainQa(headers, { token, rules }).qa?.status; // "forced"
 * ```
 */
export function explainQa(
  headers: Headers,
  options: ExplainQaOptions,
): { qa: QaExplanation | null; forced: ForcedOutcome | undefined; error?: QaOverrideError } {
  const named = headers.has(QA_VARIANTS_HEADER) || headers.has(QA_FLAGS_HEADER);
  if (!named && !headers.has(QA_TOKEN_HEADER)) return { qa: null, forced: undefined };
  const empty = { variants: {}, flags: {} };
  if (!options.offline) {
    const check = checkQaToken(headers, options.token);
    if (check !== "valid") {
      return { qa: { status: "refused", ...empty, why: refusedWhy(check, named) }, forced: undefined };
    }
  }
  let forced: ForcedOutcome | undefined;
  try {
    forced = forcedBy(headers, options.rules);
  } catch (error) {
    if (!(error instanceof QaOverrideError)) throw error;
    return {
      qa: {
        status: "invalid",
        ...empty,
        why: `The edge answers 400 invalid_qa_override: ${error.message}; the decision shown is the one ` +
          "without forcing",
      },
      forced: undefined,
      error,
    };
  }
  if (!forced) {
    return {
      qa: {
        status: "none",
        ...empty,
        why: options.offline
          ? `No variation or flag is named in "${QA_VARIANTS_HEADER}" or "${QA_FLAGS_HEADER}": nothing is forced`
          : `The QA token holds, but no variation or flag is named: nothing is forced`,
      },
      forced: undefined,
    };
  }
  return {
    qa: {
      status: options.offline ? "offline" : "forced",
      variants: Object.fromEntries(forced.variants),
      flags: Object.fromEntries(forced.flags),
      why: options.offline
        ? `Forced (offline, token not checked): the service forces only with "${QA_TOKEN_HEADER}" equal ` +
          "to QA_TOKEN"
        : "Forced: the QA token holds. The response is private, no-store, writes no sticky assignment " +
          "and counts no exposure",
    },
    forced,
  };
}

function refusedWhy(check: "unset" | "absent" | "wrong", named: boolean): string {
  const nothing = named ? "nothing is forced, the decision is the usual one" : "nothing would be forced";
  switch (check) {
    case "unset":
      return `Refused: QA_TOKEN is not configured on this service, so QA headers never force anything; ${nothing}`;
    case "absent":
      return `Refused: no "${QA_TOKEN_HEADER}" header carries the QA token; ${nothing}`;
    case "wrong":
      return `Refused: "${QA_TOKEN_HEADER}" does not hold the QA token; ${nothing}`;
  }
}
