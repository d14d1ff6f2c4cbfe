/**
 * @module
 * The sample-ratio check: per-version exposure counts and a chi-square test against the weights. A
 * split that does not follow the weights is usually a bug (bots, lost cookies, a lossy redirect).
 */
import { getBucketRanges } from "../rules/bucketing.ts";
import type { CompiledExperiment } from "../rules/experiments.ts";

/** Below this p-value (with enough exposures) a split is flagged as a sample ratio mismatch. */
export const SRM_P_THRESHOLD = 0.001;
/** Fewer exposures than this are never flagged: the test says little on so few. */
export const SRM_MIN_EXPOSURES = 100;
const VERSIONS_KEPT = 4;

/** The outcome of {@linkcode sampleRatioTest}. */
export interface SampleRatioResult {
  total: number;
  /** Null when there is nothing to test. */
  statistic: number | null;
  degreesOfFreedom: number;
  pValue: number | null;
  srm: boolean;
}

interface ChiSquare {
  sf(x: number, dof: number): number;
}

/**
 * Pearson's chi-square goodness-of-fit test of counts against weights (normalised here). A variation
 * of weight 0 takes no part unless it was exposed, which is as far from the weights as it gets (p = 0).
 */
export async function sampleRatioTest(
  counts: readonly number[],
  weights: readonly number[],
  options: { chiSquare?: ChiSquare } = {},
): Promise<SampleRatioResult> {
  if (counts.length !== weights.length) {
    throw new RangeError(`Expected one weight per count, got ${weights.length} for ${counts.length}`);
  }
  const total = counts.reduce((sum, n) => sum + n, 0);
  const weightSum = weights.reduce((sum, w) => sum + (w > 0 ? w : 0), 0);
  const tested = weights.filter((w) => w > 0).length;
  const degreesOfFreedom = Math.max(0, tested - 1);
  if (total === 0 || degreesOfFreedom === 0 || weightSum <= 0) {
    return { total, statistic: null, degreesOfFreedom, pValue: null, srm: false };
  }
  let statistic = 0;
  for (let i = 0; i < counts.length; i++) {
    const weight = weights[i]!;
    const observed = counts[i]!;
    if (weight > 0) {
      const expected = total * weight / weightSum;
      statistic += (observed - expected) ** 2 / expected;
    } else if (observed > 0) statistic = Number.POSITIVE_INFINITY;
  }
  const chiSquare = options.chiSquare ?? await loadChiSquare();
  // The upper tail itself, not 1 − cdf: that difference is 0 below ~1e-16, where a broken
  // split's p-value lies.
  const pValue = Number.isFinite(statistic)
    ? Math.min(1, Math.max(0, chiSquare.sf(statistic, degreesOfFreedom)))
    : 0;
  return {
    total,
    statistic,
    degreesOfFreedom,
    pValue,
    srm: total >= SRM_MIN_EXPOSURES && pValue < SRM_P_THRESHOLD,
  };
}

/**
 * The share of bucketed visitors each variation gets, exactly as bucketing splits them
 * (GrowthBook's ranges: weights that do not sum to 1 ± 0.01 mean equal weights).
 */
export function effectiveWeights(experiment: CompiledExperiment): number[] {
  const ranges = getBucketRanges(experiment.variations.length, 1, experiment.spec.weights);
  // Hash values lie in [0, 1): a range past 1 (weights summing to 1.01) is cut there.
  const lengths = ranges.map(([start, end]) => Math.max(0, Math.min(end, 1) - Math.min(start, 1)));
  const sum = lengths.reduce((a, b) => a + b, 0);
  return lengths.map((length) => (sum > 0 ? length / sum : 0));
}

// Loaded on first use, so only the first test pays for the import.
async function loadChiSquare(): Promise<ChiSquare> {
  const { default: gammainc } = await import("@stdlib/math-base-special-gammainc");
  if (typeof gammainc !== "function") throw new Error("No incomplete gamma function in the package");
  return { sf: (x: number, dof: number) => Number(gammainc(x / 2, dof / 2, true, true)) };
}

/** Exposure counts of one rules version. */
export class VersionTally {
  /** When this instance first served the version. */
  readonly since: number;
  readonly counts: Map<string, Map<string, number>> = new Map();
  /** In {@linkcode ExposureTally}'s own serve order. */
  lastServed = 0;

  constructor(since: number) {
    this.since = since;
  }

  count(experiment: string, variation: string): void {
    let variations = this.counts.get(experiment);
    if (variations === undefined) this.counts.set(experiment, variations = new Map());
    variations.set(variation, (variations.get(variation) ?? 0) + 1);
  }
}

/**
 * This instance's exposure counts per rules version, experiment and variation, for the few
 * versions served most recently (counts of a version start when the instance first serves it).
 */
export class ExposureTally {
  readonly #versions = new Map<number, VersionTally>();
  #served = 0;

  serve(version: number, now: number): VersionTally {
    let tally = this.#versions.get(version);
    if (tally === undefined) {
      tally = new VersionTally(now);
      if (this.#versions.size >= VERSIONS_KEPT) this.#forgetLeastRecent();
      this.#versions.set(version, tally);
    }
    tally.lastServed = ++this.#served;
    return tally;
  }

  get(version: number): VersionTally | undefined {
    return this.#versions.get(version);
  }

  // The version served longest ago goes, not the one first served: the active version, served
  // all along, must outlive a series of canaries tried after it.
  #forgetLeastRecent(): void {
    let oldest: number | undefined;
    let oldestServed = Number.POSITIVE_INFINITY;
    for (const [version, tally] of this.#versions) {
      if (tally.lastServed < oldestServed) [oldest, oldestServed] = [version, tally.lastServed];
    }
    if (oldest !== undefined) this.#versions.delete(oldest);
  }
}
