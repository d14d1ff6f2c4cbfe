/**
 * @module
 * Readiness: the service is ready when KV answers a read in time and rules are loaded.
 */
import type { RulesStore } from "../rules/store.ts";
import type { DeadlineSweep } from "../support/deadlines.ts";

/** The readiness report served by `/_edge/ready`. */
export interface ReadyReport {
  ready: boolean;
  kv: "ok" | "failing";
  rulesVersion: number | null;
}

/** Options for {@linkcode checkReady}. */
export interface CheckReadyOptions {
  /** How long a KV read may take before it counts as failing. */
  timeoutMs: number;
  /** Bounds the probe in time. */
  deadlines: DeadlineSweep;
}

/** Checks readiness with one eventual KV read bounded by `options`; never throws. */
export async function checkReady(
  kv: Deno.Kv,
  rules: RulesStore,
  options: CheckReadyOptions,
): Promise<ReadyReport> {
  // `Promise.try` also turns a synchronous throw (a broken or closed adapter) into "failing".
  const probe = Promise.try(() => kv.get(["_edge", "ready"], { consistency: "eventual" }))
    .then(() => true, () => false);
  const kvOk = await options.deadlines.within(probe, options.timeoutMs, "KV readiness probe")
    .catch(() => false);
  const rulesVersion = rules.current ? rules.current.version : null;
  return { ready: kvOk && rulesVersion !== null, kv: kvOk ? "ok" : "failing", rulesVersion };
}
