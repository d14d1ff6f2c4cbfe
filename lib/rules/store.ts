/**
 * @module
 * Holds the compiled rules of this process — the active set and, while one runs, a canary with
 * its share of visitors — and says which a visitor evaluates. `follower.ts` keeps it on what KV
 * names; an invalid rule set never becomes active or canary.
 */
import type { CompiledRules } from "./compile.ts";
import { hash } from "./bucketing.ts";

/** A canary: a rule set evaluated for a share of visitors, in `(0, 1)`. */
export interface RulesCanary {
  rules: CompiledRules;
  share: number;
}

/** What a {@linkcode RulesStore} holds. */
export interface RulesState {
  active: CompiledRules;
  canary: RulesCanary | undefined;
}

/**
 * Whether a visitor evaluates the canary of a rules version: stable per visitor, raising the share
 * only adds visitors, and each canary version draws its own.
 */
export function isCanaryVisitor(visitorKey: string, canary: { version: number; share: number }): boolean {
  return canaryHash(visitorKey, canary.version) < canary.share;
}

/** A visitor's position in `[0, 1)` for a canary: GrowthBook's hash (v2) of the key, seeded by version. */
export function canaryHash(visitorKey: string, version: number): number {
  return hash(`rules-canary:${version}`, visitorKey, 2) ?? 1;
}

/** The rules of this process: the active set and an optional canary. */
export class RulesStore {
  readonly #baseline: CompiledRules;
  #active: CompiledRules;
  #canary: RulesCanary | undefined;
  #listeners: ((rules: CompiledRules, state: RulesState) => void)[] = [];

  /** @param initial the rules loaded at start-up */
  constructor(initial: CompiledRules) {
    this.#baseline = initial;
    this.#active = initial;
  }

  /** The start-up rules; they apply until KV names an active version that beats them. */
  get baseline(): CompiledRules {
    return this.#baseline;
  }

  /** The active rules (what visitors outside a canary evaluate). */
  get current(): CompiledRules {
    return this.#active;
  }

  /** The running canary, if any. */
  get canary(): RulesCanary | undefined {
    return this.#canary;
  }

  /** The rules a visitor key evaluates: the canary's in its share, else the active ones. */
  rulesFor(visitorKey: string): CompiledRules {
    const canary = this.#canary;
    if (canary && isCanaryVisitor(visitorKey, { version: canary.rules.version, share: canary.share })) {
      return canary.rules;
    }
    return this.#active;
  }

  /** Makes the candidate active when it is newer (the canary is left alone); true when it did. */
  offer(candidate: CompiledRules): boolean {
    if (candidate.version <= this.#active.version) return false;
    return this.set({ active: candidate, canary: this.#canary });
  }

  /** Replaces the state, older versions included (a rollback); true when anything changed. */
  set(state: RulesState): boolean {
    const same = state.active.version === this.#active.version && state.active === this.#active &&
      state.canary?.rules.version === this.#canary?.rules.version &&
      state.canary?.share === this.#canary?.share;
    if (same) return false;
    this.#active = state.active;
    this.#canary = state.canary;
    const snapshot = { active: state.active, canary: state.canary };
    for (const listener of this.#listeners) listener(state.active, snapshot);
    return true;
  }

  /** @param listener called with the active rules and the whole state whenever either changes */
  onChange(listener: (rules: CompiledRules, state: RulesState) => void): void {
    this.#listeners.push(listener);
  }
}
