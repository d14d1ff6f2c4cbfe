/**
 * @module
 * What a decided request exposed the visitor to. Every experiment the decision put the visitor
 * in (bots, visitors outside coverage or namespace, and paths the experiment does not `match`
 * are never in one) whose variation the sticky cookie did not already record is an exposure:
 * counted in the metrics and in this instance's sample-ratio tally, and — with `EXPOSURES_URL`
 * — queued for the backend. A bounded per-isolate set suppresses repeats from requests that
 * raced before the cookie came back. The pipeline's flag evaluations are counted here too.
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

/** Visitor–experiment pairs remembered to suppress repeats. */
const RECENT_MAX_ENTRIES = 10_000;
/** How long a pair is remembered, in ms: longer than a page load's racing requests take. */
const RECENT_TTL_MS = 30 * 60_000;

/** One decided request. */
export interface ExposureInputs {
  facts: Facts;
  identity: Identity;
  decision: Decision;
  /** The rules that decided (active or canary). */
  rules: CompiledRules;
}

/** One experiment in {@linkcode ExposureRecorder.report}. */
export interface ExperimentReport extends SampleRatioResult {
  key: string;
  rulesVersion: number;
  /** Which rules of this instance hold it. */
  role: "active" | "canary";
  /** When this instance first served the version, ISO 8601. */
  since: string;
  variations: { value: string; weight: number; exposures: number }[];
}

/** Options for {@linkcode ExposureRecorder}. */
export interface ExposureRecorderOptions {
  metrics: EdgeMetrics;
  /** Wall clock, epoch ms. */
  now: () => number;
  /** Where exposure events go; undefined when delivery is off (`EXPOSURES_URL` unset). */
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
  /** Per rule set: flag key → value → variant name (values are the rules' own objects). */
  readonly #flagVariants = new WeakMap<CompiledRules, Map<string, Map<unknown, string>>>();

  /** @param options metrics, clock and the queue (when delivery is on) */
  constructor(options: ExposureRecorderOptions) {
    this.#metrics = options.metrics;
    this.#now = options.now;
    this.#queue = options.queue;
  }

  /** Whether exposure events are queued for delivery. */
  get delivering(): boolean {
    return this.#queue !== undefined;
  }

  /** Events waiting for delivery. */
  get queued(): number {
    return this.#queue?.size ?? 0;
  }

  /**
   * Records a decided request: its flag evaluations and its exposures (none for a request QA
   * forced). Synchronous and cheap; delivery happens in the background.
   *
   * @param inputs the request's facts, identity, decision and the rules that decided
   */
  observe(inputs: ExposureInputs): void {
    const { identity, decision, rules } = inputs;
    // QA chose this outcome, not the visitor's assignment or targeting: counting it would skew
    // the exposures, the sample-ratio tally and the flag evaluations alike.
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

  /**
   * Sends what is queued now (on shutdown).
   *
   * @returns settles once delivered or dropped
   */
  flush(): Promise<void> {
    return this.#queue?.close() ?? Promise.resolve();
  }

  /**
   * The sample-ratio check of every running experiment of the given rules: this instance's
   * exposure counts since it first served each version, against the weights.
   *
   * @param rules the active rules and, while one runs, the canary's
   * @returns one report per enabled experiment
   */
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

/**
 * The variant name of each value a flag can take, from its compiled rules: an evaluation hands
 * out the rule's own value (the same object for objects), so the value finds the variant. Should
 * two rules give an equal scalar under different variant names, the first one's name is counted.
 */
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
  /** Uniform in [0, 1), for retry jitter. */
  random: () => number;
  deadlines: DeadlineSweep;
  log: Logger;
  waitUntil: (work: Promise<unknown>) => void;
  /** The rules the sample-ratio gauge reports on, read at each scrape (the active ones). */
  rules: () => CompiledRules;
}

/**
 * The recorder the configuration asks for: with `EXPOSURES_URL`, a queue and a signing sender
 * behind it; without, counting only. Also registers the queue and sample-ratio gauges' sources
 * on the metrics.
 *
 * @param config the configuration
 * @param deps the side effects, shared objects and the active rules
 * @returns the recorder
 */
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
