/**
 * @module
 * Holds the active compiled rule set. Created in `main.ts`; the decision stage reads it once
 * per request, and only a valid rule set ever replaces the current one.
 */
import type { CompiledRules } from "./rules.ts";

/** The active rule set of this process. */
export class RulesStore {
  #current: CompiledRules;

  /** @param initial the rules loaded at start-up */
  constructor(initial: CompiledRules) {
    this.#current = initial;
  }

  /** The active rules. */
  get current(): CompiledRules {
    return this.#current;
  }

  /**
   * Replaces the active rules when the candidate is newer.
   *
   * @param candidate compiled (and therefore valid) rules
   * @returns true when the candidate became active
   */
  offer(candidate: CompiledRules): boolean {
    if (candidate.version <= this.#current.version) return false;
    this.#current = candidate;
    return true;
  }
}
