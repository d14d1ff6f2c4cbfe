/**
 * @module
 * GrowthBook-compatible bucketing: the same FNV-1a hash, bucket ranges, namespaces and variation
 * choice as GrowthBook's SDKs, so the edge assigns a user the variation GrowthBook would.
 */

/** A half-open bucket range `[start, end)` within `[0, 1)`. */
export type VariationRange = readonly [start: number, end: number];

/** A GrowthBook namespace: `[id, start, end]`; a user is in it when their namespace hash is in `[start, end)`. */
export type Namespace = readonly [id: string, start: number, end: number];

const FNV_OFFSET_BASIS = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const CHAR_0 = 48;

// FNV-1a over UTF-16 code units, as GrowthBook does with `charCodeAt`. `Math.imul` gives the
// same 32 bits as GrowthBook's shift-and-add multiply. Feeding strings one after the other
// equals hashing their concatenation, so callers never build the joined string.
function fnvUpdate(state: number, text: string): number {
  let h = state;
  for (let i = 0; i < text.length; i++) {
    h = Math.imul(h ^ text.charCodeAt(i), FNV_PRIME);
  }
  return h;
}

// FNV-1a of the decimal text of an unsigned 32-bit integer (GrowthBook's `fnv(h + "")`),
// digit by digit, without creating the string.
function fnvOfDecimal(value: number): number {
  let divisor = 1;
  while (divisor * 10 <= value) divisor *= 10;
  let rest = value;
  let h = FNV_OFFSET_BASIS;
  while (divisor >= 1) {
    const digit = Math.floor(rest / divisor);
    rest -= digit * divisor;
    h = Math.imul(h ^ (CHAR_0 + digit), FNV_PRIME);
    divisor /= 10;
  }
  return h >>> 0;
}

/**
 * GrowthBook's hash of a value into `[0, 1)`: version 2 is `fnv(fnv(seed + value) + "") % 10000 / 10000`,
 * version 1 `fnv(value + seed) % 1000 / 1000`. The signature mirrors GrowthBook's, so its test
 * vectors apply one to one.
 *
 * @param seed the experiment seed (GrowthBook falls back to the experiment key)
 * @param value the user's hash attribute value
 * @param version the hash version, 1 or 2
 * @returns a number in `[0, 1)`, or null for an unknown version
 * @example
 * ```ts
 * hash("seed", "a", 2); // 0.0505
 * hash("b", "a", 1); // 0.946
 * ```
 */
export function hash(seed: string, value: string, version: number): number | null {
  if (version === 2) {
    const inner = fnvUpdate(fnvUpdate(FNV_OFFSET_BASIS, seed), value) >>> 0;
    return (fnvOfDecimal(inner) % 10000) / 10000;
  }
  if (version === 1) {
    return ((fnvUpdate(fnvUpdate(FNV_OFFSET_BASIS, value), seed) >>> 0) % 1000) / 1000;
  }
  return null;
}

// GrowthBook clamps coverage to [0, 1], defaulting to 1. NaN (impossible in JSON) means nobody.
function clampCoverage(coverage: number | undefined): number {
  if (coverage === undefined) return 1;
  if (Number.isNaN(coverage) || coverage < 0) return 0;
  return coverage > 1 ? 1 : coverage;
}

// The weights GrowthBook would use, or undefined for equal weights: missing, of the wrong
// length, not summing to 1 ± 0.01 — and, beyond GrowthBook, holding a non-finite number.
function usableWeights(
  numVariations: number,
  weights: readonly number[] | undefined,
): readonly number[] | undefined {
  if (!weights || weights.length !== numVariations) return undefined;
  let total = 0;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i]!;
    if (!Number.isFinite(w)) return undefined;
    total += w;
  }
  return total < 0.99 || total > 1.01 ? undefined : weights;
}

/**
 * Bucket ranges exactly as GrowthBook makes them: each starts at the sum of the weights before it
 * and is `coverage × weight` long, so lowering coverage never moves a user to another variation.
 *
 * @param numVariations the number of variations
 * @param coverage the share of users in the experiment, clamped to `[0, 1]`; undefined means 1
 * @param weights one weight per variation summing to 1 (± 0.01); otherwise equal weights are used
 * @returns one range per variation (empty for fewer than one variation)
 * @example
 * ```ts
 * getBucketRanges(3, 0.2, [0.2, 0.3, 0.5]); // [[0, 0.04], [0.2, 0.26], [0.5, 0.6]]
 * ```
 */
export function getBucketRanges(
  numVariations: number,
  coverage: number | undefined,
  weights?: readonly number[],
): VariationRange[] {
  const cov = clampCoverage(coverage);
  if (!(numVariations > 0)) return [];
  const used = usableWeights(numVariations, weights);
  const equal = 1 / numVariations;
  const ranges: VariationRange[] = new Array(numVariations);
  let cumulative = 0;
  for (let i = 0; i < numVariations; i++) {
    const w = used ? used[i]! : equal;
    const start = cumulative;
    cumulative += w;
    ranges[i] = [start, start + cov * w];
  }
  return ranges;
}

/**
 * @param n a hash value in `[0, 1)`
 * @param ranges the bucket ranges, one per variation
 * @returns the index of the first range with `start <= n < end`, or -1 when none holds it
 */
export function chooseVariation(n: number, ranges: readonly VariationRange[]): number {
  for (let i = 0; i < ranges.length; i++) {
    const range = ranges[i]!;
    if (n >= range[0] && n < range[1]) return i;
  }
  return -1;
}

/**
 * GrowthBook's `inNamespace`: experiments sharing a namespace id with disjoint ranges exclude
 * each other.
 *
 * @param hashValue the user's hash attribute value
 * @param namespace `[id, start, end]`
 * @returns true when the user's {@linkcode namespaceHash} is in `[start, end)`
 */
export function inNamespace(hashValue: string, namespace: Namespace): boolean {
  const n = namespaceHash(hashValue, namespace[0]);
  return n >= namespace[1] && n < namespace[2];
}

/**
 * @param hashValue the user's hash attribute value
 * @param id the namespace id
 * @returns GrowthBook's version 1 hash with the seed `__<id>`, in `[0, 1)` in steps of 0.001
 */
export function namespaceHash(hashValue: string, id: string): number {
  // hash("__" + id, hashValue, 1) = fnv(hashValue + "__" + id), streamed without concatenating.
  const h = fnvUpdate(fnvUpdate(fnvUpdate(FNV_OFFSET_BASIS, hashValue), "__"), id) >>> 0;
  return (h % 1000) / 1000;
}

/**
 * The bucketing-relevant part of an experiment, with GrowthBook's defaults: the key as seed, hash
 * version 1, equal weights, coverage 1; fewer than 2 variations means nobody is in it.
 */
export interface ExperimentSpec {
  key: string;
  numVariations: number;
  seed?: string;
  hashVersion?: number;
  weights?: readonly number[];
  coverage?: number;
  namespace?: Namespace;
}

/**
 * The result of {@linkcode assignVariation}: the variation (0, control, when not in the
 * experiment), whether the user counts in its analysis, and GrowthBook's `result.bucket`.
 */
export interface Assignment {
  variationIndex: number;
  inExperiment: boolean;
  hashValue: number | null;
}

/** Why {@linkcode assignVariation} put a user where it did (`coverage`: outside every covered range). */
export type AssignmentOutcome =
  | "no-key"
  | "too-few-variations"
  | "namespace"
  | "hash-version"
  | "coverage"
  | "bucketed";

/** Receives why an assignment came out as it did (see {@linkcode assignVariation}). */
export interface AssignmentTrace {
  /** `hashValue` is the bucket for `coverage` and `bucketed`, the namespace hash for `namespace`. */
  assignment(outcome: AssignmentOutcome, hashValue: number | null): void;
}

/**
 * Assigns a user to a variation as GrowthBook's `run` does without overrides; whatever leaves the
 * user out (no key, a namespace miss, an unknown hash version, coverage) serves control.
 *
 * @param hashKey the user's hash attribute value (user id or anonymous id)
 * @param experiment the experiment's key, variation count, seed, hash version, weights, coverage and namespace
 * @param trace told why, when an explanation is wanted (nothing is computed for it otherwise)
 * @returns the variation index, whether the user is in the experiment, and the bucket
 * @example
 * ```ts
 * assignVariation("123", { key: "hello", seed: "feature", hashVersion: 2, numVariations: 2, weights: [0.1, 0.9] });
 * // { variationIndex: 1, inExperiment: true, hashValue: 0.5231 }
 * ```
 */
export function assignVariation(
  hashKey: string,
  experiment: ExperimentSpec,
  trace?: AssignmentTrace,
): Assignment {
  const { numVariations } = experiment;
  if (!hashKey || !(numVariations >= 2)) {
    trace?.assignment(hashKey ? "too-few-variations" : "no-key", null);
    return { variationIndex: 0, inExperiment: false, hashValue: null };
  }
  const namespace = experiment.namespace;
  if (namespace && !inNamespace(hashKey, namespace)) {
    trace?.assignment("namespace", namespaceHash(hashKey, namespace[0]));
    return { variationIndex: 0, inExperiment: false, hashValue: null };
  }
  const n = hash(experiment.seed || experiment.key, hashKey, experiment.hashVersion || 1);
  if (n === null) {
    trace?.assignment("hash-version", null);
    return { variationIndex: 0, inExperiment: false, hashValue: null };
  }

  // The same arithmetic as getBucketRanges + chooseVariation, without building the ranges.
  const cov = clampCoverage(experiment.coverage);
  const used = usableWeights(numVariations, experiment.weights);
  const equal = 1 / numVariations;
  let cumulative = 0;
  for (let i = 0; i < numVariations; i++) {
    const w = used ? used[i]! : equal;
    const start = cumulative;
    cumulative += w;
    if (n >= start && n < start + cov * w) {
      trace?.assignment("bucketed", n);
      return { variationIndex: i, inExperiment: true, hashValue: n };
    }
  }
  trace?.assignment("coverage", n);
  return { variationIndex: 0, inExperiment: false, hashValue: n };
}
