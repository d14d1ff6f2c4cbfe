/**
 * @module
 * QA forcing in an explanation: what the described request's QA headers force, or why not, in
 * the words an operator needs. The token itself is never echoed.
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
   * `refused`: QA headers sent without a valid token; `invalid`: an entry cannot be served, so the
   * edge answers 400 and the decision shown is the one without forcing.
   */
  status: "forced" | "offline" | "none" | "refused" | "invalid";
  variants: Record<string, string>;
  flags: Record<string, unknown>;
  why: string;
}

/** Options of {@linkcode explainQa}. */
export interface ExplainQaOptions {
  /** `QA_TOKEN`; ignored when `offline`. */
  token: string | undefined;
  /** The visitor's: a canary may have other experiments. */
  rules: CompiledRules;
  /** No token to check: the headers force as sent. */
  offline?: boolean;
}

/**
 * Reads the described request's QA headers as the pipeline does, and says what they did.
 *
 * @param headers the described request's headers
 * @param options the token, the visitor's rules, and whether this is the offline tool
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
