/**
 * @module
 * Holds the compiled rules of this process — the active rule set and, while one runs, a canary
 * with the share of visitors it gets — and keeps them on what the rule control record in KV
 * names: picked up through `kv.watch` within milliseconds, with polling as a fallback. Rules
 * load from `RULES_PATH` at start (and are kept in KV by `storeStartupRules`, so a rollback can
 * name them); an invalid rule set never becomes active or canary.
 */
import { type CompiledRules, parseRules, RulesError } from "./rules.ts";
import { hash } from "./bucketing.ts";
import { keys } from "../data/store.ts";
import { readRulesControl, readRuleSets } from "../data/readers.ts";
import { resolveRules } from "./control.ts";
import type { Logger } from "../obs/log.ts";
import { DeadlineError } from "../support/deadlines.ts";

/** A canary: a rule set evaluated for a share of visitors. */
export interface RulesCanary {
  rules: CompiledRules;
  /** Share of visitors in `(0, 1)`. */
  share: number;
}

/** What a {@linkcode RulesStore} holds. */
export interface RulesState {
  active: CompiledRules;
  canary: RulesCanary | undefined;
}

/**
 * Whether a visitor falls in the canary of a rules version: GrowthBook's hash (version 2) of
 * the visitor key with the seed `"rules-canary:" + version` is below the share. Stable per
 * visitor; raising the share only adds visitors; each canary version draws its own visitors.
 *
 * @param visitorKey the visitor's bucketing key (user id or anonymous id)
 * @param canary the canary's version and share
 * @returns true when the visitor evaluates the canary
 * @example
 * ```ts
 * isCanaryVisitor("anon-123", { version: 12, share: 0.05 });
 * ```
 */
export function isCanaryVisitor(visitorKey: string, canary: { version: number; share: number }): boolean {
  return canaryHash(visitorKey, canary.version) < canary.share;
}

/**
 * A visitor's position for the canary of a rules version, which {@linkcode isCanaryVisitor}
 * compares with the share.
 *
 * @param visitorKey the visitor's bucketing key
 * @param version the canary's rules version
 * @returns a number in `[0, 1)`
 * @throws never
 */
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

  /** The rules loaded at start-up; they apply until KV names an active version that beats them. */
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

  /**
   * The rules a visitor evaluates: the canary's for visitors in its share, else the active ones.
   *
   * @param visitorKey the visitor's bucketing key (the identity stage's `key`)
   * @returns the compiled rules; their `version` is the one the decision records
   */
  rulesFor(visitorKey: string): CompiledRules {
    const canary = this.#canary;
    if (canary && isCanaryVisitor(visitorKey, { version: canary.rules.version, share: canary.share })) {
      return canary.rules;
    }
    return this.#active;
  }

  /**
   * Replaces the active rules when the candidate is newer (the canary is left alone).
   *
   * @param candidate compiled (and therefore valid) rules
   * @returns true when the candidate became active
   */
  offer(candidate: CompiledRules): boolean {
    if (candidate.version <= this.#active.version) return false;
    return this.set({ active: candidate, canary: this.#canary });
  }

  /**
   * Replaces the active rules and the canary, older versions included (a rollback).
   *
   * @param state compiled (and therefore valid) rules and the canary, if any
   * @returns true when the active version or the canary's version or share changed
   */
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

  /**
   * Registers a function called whenever the active rules or the canary change.
   *
   * @param listener called with the active rules and the whole state (e.g. to update the
   * `rules_version` gauge for both roles)
   */
  onChange(listener: (rules: CompiledRules, state: RulesState) => void): void {
    this.#listeners.push(listener);
  }
}

/** Options for {@linkcode followRulesInKv}. */
export interface FollowRulesOptions {
  /** Polling interval, the fallback when `kv.watch` is unavailable or stalls. */
  pollMs: number;
  log: Logger;
  /** Stops following. */
  signal: AbortSignal;
  /** Called once the first look at KV is done (so start-up can wait for it before serving). */
  onFirstCheck?: () => void;
  /**
   * The longest one check of KV may take before it is given up (logged, and the next trigger
   * starts afresh). Default: the poll interval, at least 1 s and at most 5 s.
   */
  checkTimeoutMs?: number;
}

/**
 * The default bound of one rules check: a check still running after a poll interval is overdue,
 * but a KV Connect round trip under load may take a second.
 */
function defaultCheckTimeoutMs(pollMs: number): number {
  return Math.min(Math.max(pollMs, 1000), 5000);
}

/**
 * Keeps `store` on the active version and canary that the rule control record in KV names,
 * until `signal` aborts. A KV version activated without a time (a `rules` event without `at`)
 * only replaces the start-up rules when it is newer than them; a timed activation (promote,
 * rollback, `rules` with `at`) always does. A rule set that fails to compile is logged and never
 * used: the active rules stay, and a canary is dropped.
 *
 * Every check is bounded (`checkTimeoutMs`): a KV read that hangs is given up, and the next poll
 * or watch event checks again, so following resumes once KV answers again; a given-up check that
 * answers late never overwrites what a later one applied. Stopping does not wait for a check in
 * progress.
 *
 * @param kv the store that sync writes rules into
 * @param store the rules holder to update
 * @param options poll interval, logger, stop signal and check bound
 * @returns a promise that settles once following has stopped
 */
export async function followRulesInKv(
  kv: Deno.Kv,
  store: RulesStore,
  options: FollowRulesOptions,
): Promise<void> {
  // Compiled sets by version; sets never change once stored, so compiling once is enough.
  const compiled = new Map<number, CompiledRules | RulesError>();
  let lastSeen = "";
  let checking: Promise<void> | undefined;
  let again = false;
  // Bumped by every check: a check that was given up (and answers late) must not apply.
  let generation = 0;
  let firstCheckDone = false;
  const checkTimeoutMs = options.checkTimeoutMs ?? defaultCheckTimeoutMs(options.pollMs);
  const compile = async (versions: number[]) => {
    const missing = versions.filter((version) => !compiled.has(version));
    if (missing.length === 0) return;
    const sets = await readRuleSets(kv, missing);
    for (const [version, set] of sets) {
      try {
        compiled.set(version, parseRules(set.rules, `rules version ${version} from KV`));
      } catch (error) {
        if (!(error instanceof RulesError)) throw error;
        compiled.set(version, error);
      }
    }
  };
  const checkOnce = async (superseded: () => boolean) => {
    const control = await readRulesControl(kv);
    if (superseded()) return;
    const resolved = resolveRules(control);
    const baseline = store.baseline;
    const active = resolved.active &&
        (resolved.active.key[0] !== null || resolved.active.version > baseline.version)
      ? resolved.active.version
      : undefined;
    const canary = resolved.canary;
    const seen = `${active ?? "baseline"}|${canary ? `${canary.version}:${canary.share}` : "-"}`;
    if (seen === lastSeen) return;
    await compile([...(active === undefined ? [] : [active]), ...(canary ? [canary.version] : [])]);
    if (superseded()) return;
    const kept = new Set(control.entries.map((entry) => entry.version));
    for (const version of compiled.keys()) if (!kept.has(version)) compiled.delete(version);
    const usable = (version: number | undefined) => {
      if (version === undefined) return undefined;
      const rules = compiled.get(version);
      if (rules instanceof RulesError) {
        options.log.warn("rules in KV not applied", { version, error: rules.message });
        return undefined;
      }
      return rules;
    };
    // A set named by the control record but not readable yet (pruned in between): try again later.
    if ((active !== undefined && !compiled.has(active)) || (canary && !compiled.has(canary.version))) return;
    lastSeen = seen;
    const nextActive = active === undefined ? baseline : usable(active) ?? store.current;
    const canaryRules = usable(canary?.version);
    const changed = store.set({
      active: nextActive,
      canary: canary && canaryRules && canaryRules.version !== nextActive.version
        ? { rules: canaryRules, share: canary.share }
        : undefined,
    });
    if (changed) {
      options.log.info("rules updated", {
        version: store.current.version,
        canary: store.canary?.rules.version,
        canaryShare: store.canary?.share,
        source: "kv",
      });
    }
  };
  // Waits for one check, at most `checkTimeoutMs`, and not at all once following stops.
  const bounded = (work: Promise<void>) =>
    new Promise<void>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        options.signal.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        done();
        resolve();
      };
      const timer = setTimeout(() => {
        done();
        reject(new DeadlineError("Rules check in KV", checkTimeoutMs));
      }, checkTimeoutMs);
      options.signal.addEventListener("abort", onAbort, { once: true });
      work.then(() => {
        done();
        resolve();
      }, (error) => {
        done();
        reject(error);
      });
    });
  // Checks never overlap (a given-up one is no longer waited for); a trigger during a check runs
  // one more check after it.
  const check = async () => {
    if (checking) {
      again = true;
      return await checking;
    }
    checking = (async () => {
      do {
        again = false;
        const mine = ++generation;
        try {
          await bounded(checkOnce(() => mine !== generation || options.signal.aborted));
        } catch (error) {
          // Once stopped, KV may be closed under a check: that is no news.
          if (!options.signal.aborted) {
            options.log.warn("rules in KV not applied", {
              error: `${(error as Error).name}: ${(error as Error).message}`,
            });
          }
        }
        // Done, failed or given up: start-up need not wait any longer.
        if (!firstCheckDone && !options.signal.aborted) {
          firstCheckDone = true;
          options.onFirstCheck?.();
        }
      } while (again && !options.signal.aborted);
    })();
    try {
      await checking;
    } finally {
      checking = undefined;
    }
  };
  if (options.signal.aborted) return;
  // The first check, the poll timer and the watch start together: a first check that hangs must
  // not keep the others from ever starting.
  check();
  const timer = setInterval(check, options.pollMs);
  const stopped = new Promise<void>((resolve) => {
    options.signal.addEventListener("abort", () => {
      clearInterval(timer);
      resolve();
    }, { once: true });
  });
  const watching = (async () => {
    try {
      const stream = kv.watch([keys.rulesControl()]);
      const reader = stream.getReader();
      options.signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
      while (!options.signal.aborted) {
        const { done } = await reader.read();
        if (done) break;
        // Not awaited: a check in progress (even a hung one) must not hold up reading the stream,
        // nor stopping; `check` coalesces triggers.
        check();
      }
    } catch (error) {
      if (!options.signal.aborted) {
        options.log.warn("kv.watch for rules failed; polling only", { error: (error as Error).message });
      }
    }
  })();
  await Promise.all([stopped, watching]);
}
