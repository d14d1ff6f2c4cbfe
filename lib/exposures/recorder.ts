/**
 * @module
 * Exposures: an experiment the decision put the visitor in whose variation the sticky cookie did
 * not yet record, counted and (with `EXPOSURES_URL`) queued for the backend. A bounded set
 * suppresses repeats from requests that raced before the cookie came back.
 */
import type { Config } from "../app/config.ts";
import type { DeadlineSweep } from "../support/deadlines.ts";
import type { Decision } from "../rules/decision.ts";
import type { Facts } from "../pipeline/facts.ts";
import { FreshCache } from "../data/fresh_cache.ts";
import { type Identity, USER_ID } from "../pipeline/identity.ts";
import type { Logger } from "../obs/log.ts";
import type { EdgeMetrics } from "../obs/metrics.ts";
import type { CompiledRules } from "../rules/compile.ts";
import { EXPOSURE_PATH_MAX, type ExposureEvent } from "./events.ts";
import { ExposureQueue } from "./queue.ts";
import { ExposureSender } from "./sender.ts";
import { effectiveWeights, ExposureTally, type SampleRatioResult, sampleRatioTest } from "./srm.ts";

const RECENT_MAX_ENTRIES = 10_000;
// Longer than a page load's racing requests take.
const RECENT_TTL_MS = 30 * 60_000;

/** One decided request. */
export interface ExposureInputs {
  facts: Facts;
  identity: Identity;
  decision: Decision;
  /** Active or canary. */
  rules: CompiledRules;
}

/** One experiment in {@linkcode ExposureRecorder.report}. */
export interface ExperimentReport extends SampleRatioResult {
  key: string;
  rulesVersion: number;
  role: "active" | "canary";
  /** When this instance first served the version. */
  since: string;
  variations: { value: string; weight: number; exposures: number }[];
}

/** Options for {@linkcode ExposureRecorder}. */
export interface ExposureRecorderOptions {
  metrics: EdgeMetrics;
  now: () => number;
  /** Undefined when delivery is off. */
  queue?: ExposureQueue;
}

/** Records exposures and flag evaluations of decided requests. */
export class ExposureRecorder {
  readonly #metrics: EdgeMetrics;
  readonly #now: () => number;
  readonly #queue: ExposureQueue | undefined;
  readonly #recent = new FreshCache<string, true>({
    maxEntries: RECENT_MAX_ENTRIES,
    maxStaleMs: RECENT_TTL_MS,
    name: "Recent exposures",
  });
  readonly #tally = new ExposureTally();
  readonly #flagVariants = new WeakMap<CompiledRules, Map<string, Map<unknown, string>>>();

  constructor(options: ExposureRecorderOptions) {
    this.#metrics = options.metrics;
    this.#now = options.now;
    this.#queue = options.queue;
  }

  get delivering(): boolean {
    return this.#queue !== undefined;
  }

  get queued(): number {
    return this.#queue?.size ?? 0;
  }

  /** Records a decided request's flag evaluations and exposures; delivery happens in the background. */
  observe(inputs: ExposureInputs): void {
    const { identity, decision, rules } = inputs;
    // QA chose this outcome: counting it would skew exposures, sample ratios and flag counts.
    if (decision.forced) return;
    this.#countFlags(decision, rules);
    const now = this.#now();
    const tally = this.#tally.serve(decision.rulesVersion, now);
    let at: string | undefined;
    for (const experiment in decision.variants) {
      const variation = decision.variants[experiment]!;
      if (identity.sticky.get(experiment) === variation) continue;
      const seen = `${experiment}\u0000${variation}\u0000${identity.key}`;
      if (this.#recent.get(seen, now)) continue;
      this.#recent.set(seen, true, now);
      this.#metrics.countExposure(experiment, variation);
      tally.count(experiment, variation);
      if (this.#queue === undefined) continue;
      at ??= new Date(now).toISOString();
      this.#queue.push(exposureEvent(inputs, experiment, variation, at));
    }
  }

  /** On shutdown. */
  flush(): Promise<void> {
    return this.#queue?.close() ?? Promise.resolve();
  }

  /** This instance's exposure counts per running experiment since it first served the version, against the weights. */
  async report(
    rules: { active: CompiledRules; canary?: CompiledRules | undefined },
  ): Promise<ExperimentReport[]> {
    const reports: ExperimentReport[] = [];
    const roles = [["active", rules.active], ["canary", rules.canary]] as const;
    for (const [role, set] of roles) {
      if (set === undefined) continue;
      const tally = this.#tally.serve(set.version, this.#now());
      for (const experiment of set.experiments) {
        if (!experiment.enabled) continue;
        const weights = effectiveWeights(experiment);
        const counted = tally.counts.get(experiment.key);
        const counts = experiment.variations.map((value) => counted?.get(value) ?? 0);
        reports.push({
          key: experiment.key,
          rulesVersion: set.version,
          role,
          since: new Date(tally.since).toISOString(),
          variations: experiment.variations.map((value, i) => ({
            value,
            weight: weights[i]!,
            exposures: counts[i]!,
          })),
          ...await sampleRatioTest(counts, weights),
        });
      }
    }
    return reports;
  }

  #countFlags(decision: Decision, rules: CompiledRules): void {
    if (rules.flags.length === 0) return;
    let variants = this.#flagVariants.get(rules);
    if (variants === undefined) this.#flagVariants.set(rules, variants = flagVariantIndex(rules));
    for (const key in decision.flags) {
      const variant = variants.get(key)?.get(decision.flags[key]);
      if (variant !== undefined) this.#metrics.countFlagEvaluation(key, variant);
    }
  }
}

// An evaluation hands out the rule's own value object, so the value finds its variant name.
function flagVariantIndex(rules: CompiledRules): Map<string, Map<unknown, string>> {
  const index = new Map<string, Map<unknown, string>>();
  for (const flag of rules.flags) {
    const byValue = new Map<unknown, string>();
    byValue.set(flag.defaultValue, flag.defaultVariant);
    for (const rule of flag.rules) if (!byValue.has(rule.value)) byValue.set(rule.value, rule.variant);
    index.set(flag.key, byValue);
  }
  return index;
}

function exposureEvent(
  inputs: ExposureInputs,
  experiment: string,
  variation: string,
  at: string,
): ExposureEvent {
  const { facts, identity, decision } = inputs;
  // Under GPC the event names no account: the anonymous id stands in for a logged-in key.
  const userId = !facts.gpc && identity.userId !== undefined && USER_ID.test(identity.userId)
    ? identity.userId
    : undefined;
  const event: ExposureEvent = {
    experiment,
    variation,
    visitor: facts.gpc ? identity.anonymousId : identity.key,
    rulesVersion: decision.rulesVersion,
    at,
    requestId: facts.requestId,
    region: decision.region,
    device: facts.device.device,
    path: facts.path.length > EXPOSURE_PATH_MAX ? copyOf(facts.path.slice(0, EXPOSURE_PATH_MAX)) : facts.path,
  };
  if (userId !== undefined) event.userId = userId;
  return event;
}

// A slice of a long string may share the original's memory (V8 keeps the whole path alive
// behind it); a queued event must hold only its own characters.
function copyOf(text: string): string {
  return JSON.parse(JSON.stringify(text));
}

/** Options for {@linkcode exposuresFromConfig}. */
export interface ExposuresFromConfigOptions {
  metrics: EdgeMetrics;
  fetch: typeof fetch;
  now: () => number;
  mono: () => number;
  randomId: () => string;
  /** For retry jitter. */
  random: () => number;
  deadlines: DeadlineSweep;
  log: Logger;
  waitUntil: (work: Promise<unknown>) => void;
  /** Read at each scrape by the sample-ratio gauge. */
  rules: () => CompiledRules;
}

/** The recorder the configuration asks for: with `EXPOSURES_URL` a queue and signing sender behind it. */
export function exposuresFromConfig(
  config: Pick<
    Config,
    "exposuresUrl" | "exposuresSecret" | "exposuresBatchMax" | "exposuresFlushMs" | "exposuresBufferMax"
  >,
  deps: ExposuresFromConfigOptions,
): ExposureRecorder {
  const { metrics, log } = deps;
  let queue: ExposureQueue | undefined;
  if (config.exposuresUrl && config.exposuresSecret) {
    const onResult = (result: "queued" | "sent" | "retried" | "dropped", events: number) =>
      metrics.countExposureEvents(result, events);
    const sender = new ExposureSender({
      url: config.exposuresUrl,
      secret: config.exposuresSecret,
      fetch: deps.fetch,
      now: deps.now,
      randomId: deps.randomId,
      random: deps.random,
      deadlines: deps.deadlines,
      log,
      onResult,
    });
    queue = new ExposureQueue({
      batchMax: config.exposuresBatchMax,
      flushMs: config.exposuresFlushMs,
      bufferMax: config.exposuresBufferMax,
      sender,
      deadlines: deps.deadlines,
      mono: deps.mono,
      waitUntil: deps.waitUntil,
      onResult,
      onFull: () =>
        log.warn("exposure buffer full (EXPOSURES_BUFFER_MAX): dropping the oldest events", {
          bufferMax: config.exposuresBufferMax,
        }),
    });
  }
  const recorder = new ExposureRecorder({ metrics, now: deps.now, queue });
  metrics.addCollectHook(async () => {
    metrics.setExposureQueue(recorder.queued);
    const reports = await recorder.report({ active: deps.rules() });
    metrics.setSrmPValues(
      reports.flatMap((report) =>
        report.pValue === null ? [] : [[report.key, report.pValue] as [string, number]]
      ),
    );
  });
  return recorder;
}
