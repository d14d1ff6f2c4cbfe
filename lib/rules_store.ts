/**
 * @module
 * Holds the active compiled rule set and keeps it current: rules load from `RULES_PATH` at
 * start, and every newer valid rule set that sync stores in KV replaces them — picked up through
 * `kv.watch` within milliseconds, with polling as a fallback. An invalid rule set never
 * replaces a valid one.
 */
import { type CompiledRules, parseRules, RulesError } from "./rules.ts";
import { keys, readLatestRules } from "./store.ts";
import type { Logger } from "./log.ts";

/** The active rule set of this process. */
export class RulesStore {
  #current: CompiledRules;
  #listeners: ((rules: CompiledRules) => void)[] = [];

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
    for (const listener of this.#listeners) listener(candidate);
    return true;
  }

  /**
   * Registers a function called with every rule set that becomes active.
   *
   * @param listener the function (e.g. one updating a metrics gauge)
   */
  onChange(listener: (rules: CompiledRules) => void): void {
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
}

/**
 * Keeps `store` on the newest valid rule set stored in KV, until `signal` aborts.
 *
 * @param kv the store that sync writes rules into
 * @param store the rules holder to update
 * @param options poll interval, logger and stop signal
 * @returns a promise that settles once following has stopped
 */
export async function followRulesInKv(
  kv: Deno.Kv,
  store: RulesStore,
  options: FollowRulesOptions,
): Promise<void> {
  let lastSeen = -1;
  const check = async () => {
    try {
      const stored = await readLatestRules(kv);
      if (!stored || stored.version === lastSeen || stored.version <= store.current.version) return;
      lastSeen = stored.version;
      const compiled = parseRules(stored.rules, `rules version ${stored.version} from KV`);
      if (store.offer(compiled)) {
        options.log.info("rules updated", { version: compiled.version, source: "kv" });
      }
    } catch (error) {
      const message = error instanceof RulesError
        ? error.message
        : `${(error as Error).name}: ${(error as Error).message}`;
      options.log.warn("rules in KV not applied", { error: message });
    }
  };
  await check();
  const timer = setInterval(check, options.pollMs);
  const stopped = new Promise<void>((resolve) => {
    options.signal.addEventListener("abort", () => {
      clearInterval(timer);
      resolve();
    }, { once: true });
  });
  const watching = (async () => {
    try {
      const stream = kv.watch([keys.rules()]);
      const reader = stream.getReader();
      options.signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
      while (!options.signal.aborted) {
        const { done } = await reader.read();
        if (done) break;
        await check();
      }
    } catch (error) {
      if (!options.signal.aborted) {
        options.log.warn("kv.watch for rules failed; polling only", { error: (error as Error).message });
      }
    }
  })();
  await Promise.all([stopped, watching]);
}
