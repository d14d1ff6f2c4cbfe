/**
 * @module
 * Keeps a {@linkcode RulesStore} on the active version and canary that the rule control record
 * in KV names: picked up through `kv.watch` within milliseconds, with polling as a fallback.
 */
import { type CompiledRules, parseRules, RulesError } from "./compile.ts";
import { keys } from "../data/store.ts";
import { readRulesControl, readRuleSets } from "../data/readers.ts";
import { resolveRules } from "./control.ts";
import type { RulesStore } from "./store.ts";
import type { Logger } from "../obs/log.ts";
import { DeadlineError, DeadlineSweep } from "../support/deadlines.ts";

/** Options for {@linkcode followRulesInKv}. */
export interface FollowRulesOptions {
  /** Polling interval, the fallback when `kv.watch` is unavailable or stalls. */
  pollMs: number;
  log: Logger;
  signal: AbortSignal;
  /** So start-up can wait for the first look at KV before serving. */
  onFirstCheck?: () => void;
  /** Longest one check may take before it is given up. Default: the poll interval, within 1–5 s. */
  checkTimeoutMs?: number;
  deadlines?: DeadlineSweep;
}

/**
 * Keeps `store` on what the control record names until `signal` aborts. An untimed activation
 * replaces the start-up rules only when newer; a set that fails to compile is never used. A check
 * given up at `checkTimeoutMs` that answers late never overwrites what a later one applied.
 *
 * @param kv the store that sync writes rules into
 * @param store the rules holder to update
 * @param options poll interval, logger, stop signal and check bound
 */
export async function followRulesInKv(
  kv: Deno.Kv,
  store: RulesStore,
  options: FollowRulesOptions,
): Promise<void> {
  if (options.signal.aborted) return;
  const follower = new KvFollower(kv, store, options);
  // The first check, the poll timer and the watch start together: a first check that hangs must
  // not keep the others from ever starting.
  follower.check();
  const timer = setInterval(follower.check, options.pollMs);
  const stopped = new Promise<void>((resolve) => {
    options.signal.addEventListener("abort", () => {
      clearInterval(timer);
      resolve();
    }, { once: true });
  });
  await Promise.all([stopped, follower.watch()]);
}

// A check still running after a poll interval is overdue, but a KV Connect round trip under load
// may take a second.
function defaultCheckTimeoutMs(pollMs: number): number {
  return Math.min(Math.max(pollMs, 1000), 5000);
}

class KvFollower {
  readonly #kv: Deno.Kv;
  readonly #store: RulesStore;
  readonly #options: FollowRulesOptions;
  readonly #checkTimeoutMs: number;
  readonly #deadlines: DeadlineSweep;
  /** Compiled sets by version; sets never change once stored, so compiling once is enough. */
  readonly #compiled = new Map<number, CompiledRules | RulesError>();
  #lastSeen = "";
  #checking: Promise<void> | undefined;
  #again = false;
  /** Bumped by every check: a check that was given up (and answers late) must not apply. */
  #generation = 0;
  #firstCheckDone = false;

  constructor(kv: Deno.Kv, store: RulesStore, options: FollowRulesOptions) {
    this.#kv = kv;
    this.#store = store;
    this.#options = options;
    this.#checkTimeoutMs = options.checkTimeoutMs ?? defaultCheckTimeoutMs(options.pollMs);
    this.#deadlines = options.deadlines ?? new DeadlineSweep();
  }

  /** Checks KV; checks never overlap, and a trigger during a check runs one more after it. */
  check = async (): Promise<void> => {
    if (this.#checking) {
      this.#again = true;
      return await this.#checking;
    }
    this.#checking = this.#checkUntilQuiet();
    try {
      await this.#checking;
    } finally {
      this.#checking = undefined;
    }
  };

  /** Checks on every change of the control record until stopped; resolves when stopped. */
  async watch(): Promise<void> {
    const { signal, log } = this.#options;
    try {
      const reader = this.#kv.watch([keys.rulesControl()]).getReader();
      signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
      while (!signal.aborted) {
        const { done } = await reader.read();
        if (done) break;
        // Not awaited: a check in progress (even a hung one) must not hold up reading the stream,
        // nor stopping; `check` coalesces triggers.
        this.check();
      }
    } catch (error) {
      if (!signal.aborted) {
        log.warn("kv.watch for rules failed; polling only", { error: (error as Error).message });
      }
    }
  }

  async #checkUntilQuiet(): Promise<void> {
    const { signal, log } = this.#options;
    do {
      this.#again = false;
      const mine = ++this.#generation;
      try {
        await this.#bounded(this.#checkOnce(() => mine !== this.#generation || signal.aborted));
      } catch (error) {
        // Once stopped, KV may be closed under a check: that is no news.
        if (!signal.aborted) {
          log.warn("rules in KV not applied", {
            error: `${(error as Error).name}: ${(error as Error).message}`,
          });
        }
      }
      // Done, failed or given up: start-up need not wait any longer.
      if (!this.#firstCheckDone && !signal.aborted) {
        this.#firstCheckDone = true;
        this.#options.onFirstCheck?.();
      }
    } while (this.#again && !signal.aborted);
  }

  // Waits for one check, at most `checkTimeoutMs`, and not at all once following stops.
  #bounded(work: Promise<void>): Promise<void> {
    const { signal } = this.#options;
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        cancel();
        signal.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        done();
        resolve();
      };
      const cancel = this.#deadlines.arm(this.#checkTimeoutMs, () => {
        done();
        reject(new DeadlineError("Rules check in KV", this.#checkTimeoutMs));
      });
      signal.addEventListener("abort", onAbort, { once: true });
      work.then(() => {
        done();
        resolve();
      }, (error) => {
        done();
        reject(error);
      });
    });
  }

  async #checkOnce(superseded: () => boolean): Promise<void> {
    const control = await readRulesControl(this.#kv);
    if (superseded()) return;
    const resolved = resolveRules(control);
    const baseline = this.#store.baseline;
    const active = resolved.active &&
        (resolved.active.key[0] !== null || resolved.active.version > baseline.version)
      ? resolved.active.version
      : undefined;
    const canary = resolved.canary;
    const seen = `${active ?? "baseline"}|${canary ? `${canary.version}:${canary.share}` : "-"}`;
    if (seen === this.#lastSeen) return;
    await this.#compile([...(active === undefined ? [] : [active]), ...(canary ? [canary.version] : [])]);
    if (superseded()) return;
    const kept = new Set(control.entries.map((entry) => entry.version));
    for (const version of this.#compiled.keys()) if (!kept.has(version)) this.#compiled.delete(version);
    // A set named by the control record but not readable yet (pruned in between): try again later.
    if (
      (active !== undefined && !this.#compiled.has(active)) || (canary && !this.#compiled.has(canary.version))
    ) {
      return;
    }
    this.#lastSeen = seen;
    this.#apply(active, canary);
  }

  #apply(active: number | undefined, canary: { version: number; share: number } | undefined): void {
    const store = this.#store;
    const nextActive = active === undefined ? store.baseline : this.#usable(active) ?? store.current;
    const canaryRules = this.#usable(canary?.version);
    const changed = store.set({
      active: nextActive,
      canary: canary && canaryRules && canaryRules.version !== nextActive.version
        ? { rules: canaryRules, share: canary.share }
        : undefined,
    });
    if (changed) {
      this.#options.log.info("rules updated", {
        version: store.current.version,
        canary: store.canary?.rules.version,
        canaryShare: store.canary?.share,
        source: "kv",
      });
    }
  }

  #usable(version: number | undefined): CompiledRules | undefined {
    if (version === undefined) return undefined;
    const rules = this.#compiled.get(version);
    if (rules instanceof RulesError) {
      this.#options.log.warn("rules in KV not applied", { version, error: rules.message });
      return undefined;
    }
    return rules;
  }

  async #compile(versions: number[]): Promise<void> {
    const missing = versions.filter((version) => !this.#compiled.has(version));
    if (missing.length === 0) return;
    const sets = await readRuleSets(this.#kv, missing);
    for (const [version, set] of sets) {
      try {
        this.#compiled.set(version, parseRules(set.rules, `rules version ${version} from KV`));
      } catch (error) {
        if (!(error instanceof RulesError)) throw error;
        this.#compiled.set(version, error);
      }
    }
  }
}
