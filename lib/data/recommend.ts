/**
 * @module
 * "You might also like" from the user's recent views and the pushed `related` lists: a pure,
 * deterministic score (see {@linkcode recommend}, docs/edge_reads.md) and a KV loader.
 */
import { readRelated } from "./readers.ts";
import type { RelatedValue } from "./store.ts";

export const MAX_RECOMMENDATIONS = 50;
export const DEFAULT_RECOMMENDATIONS = 10;
/** A view a day old counts half as much as one just now. */
export const DEFAULT_HALF_LIFE_MS = 24 * 3_600_000;
const MAX_SOURCES = 100;
const MAX_BECAUSE = 3;

/** One recommended item. */
export interface Recommendation {
  itemId: string;
  /** Rounded to 6 decimals; ranking uses the exact value. */
  score: number;
  /** The viewed items that contributed most, strongest first. */
  because: string[];
}

/** What the recommendation is computed from. */
export interface RecommendInput {
  recentViews: readonly { readonly itemId: string; readonly at: number }[];
  related: ReadonlyMap<string, RelatedValue>;
  /** Never recommended. */
  cartItemIds?: readonly string[];
}

/** Options for {@linkcode recommend}. */
export interface RecommendOptions {
  now: number;
  limit?: number;
  halfLifeMs?: number;
  /** E.g. the item on the current page. */
  exclude?: Iterable<string>;
}

/** @throws {RangeError} unless a whole number from 1 to {@linkcode MAX_RECOMMENDATIONS} */
export function checkLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_RECOMMENDATIONS;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_RECOMMENDATIONS) {
    throw new RangeError(
      `Recommendation limit must be a whole number from 1 to ${MAX_RECOMMENDATIONS}, got "${limit}"`,
    );
  }
  return limit;
}

/**
 * Scores candidate items for "you might also like", best first. Each recent view `v` weighs
 * `w(v) = 2^(-(now - v.at) / halfLife)` (1 for a view just now or in the future); a candidate `c`
 * scores `Σ_v w(v) · s(v, c)` over the views whose related list gives `c` a finite `s(v, c) > 0`.
 * Cart items, viewed items and `exclude` are never candidates; ties go by item id.
 *
 * @throws {RangeError} for an invalid limit or half-life
 */
export function recommend(input: RecommendInput, options: RecommendOptions): Recommendation[] {
  const limit = checkLimit(options.limit);
  const halfLifeMs = options.halfLifeMs ?? DEFAULT_HALF_LIFE_MS;
  if (!(halfLifeMs > 0) || !Number.isFinite(halfLifeMs)) {
    throw new RangeError(`Recommendation half-life must be a positive number, got "${halfLifeMs}"`);
  }
  const excluded = new Set<string>(options.exclude ?? []);
  for (const itemId of input.cartItemIds ?? []) excluded.add(itemId);
  const newest = new Map<string, number>();
  for (const view of input.recentViews) {
    excluded.add(view.itemId);
    const seen = newest.get(view.itemId);
    if (seen === undefined || view.at > seen) newest.set(view.itemId, view.at);
  }
  const sources = [...newest].sort((a, b) => b[1] - a[1] || compareIds(a[0], b[0])).slice(0, MAX_SOURCES);

  const scores = new Map<string, { score: number; contributions: [string, number][] }>();
  for (const [sourceId, at] of sources) {
    const list = input.related.get(sourceId);
    if (!list) continue;
    const weight = Math.pow(2, -Math.max(0, options.now - at) / halfLifeMs);
    if (weight === 0) continue;
    for (const { itemId, score } of list.related) {
      if (!(score > 0) || !Number.isFinite(score) || excluded.has(itemId)) continue;
      const contribution = weight * score;
      const entry = scores.get(itemId);
      if (entry) {
        entry.score += contribution;
        entry.contributions.push([sourceId, contribution]);
      } else {
        scores.set(itemId, { score: contribution, contributions: [[sourceId, contribution]] });
      }
    }
  }
  return [...scores].sort((a, b) => b[1].score - a[1].score || compareIds(a[0], b[0])).slice(0, limit)
    .map(([itemId, { score, contributions }]) => ({
      itemId,
      score: Math.round(score * 1e6) / 1e6,
      because: contributions.sort((a, b) => b[1] - a[1] || compareIds(a[0], b[0])).slice(0, MAX_BECAUSE)
        .map(([sourceId]) => sourceId),
    }));
}

/** Options for {@linkcode loadRecommendations}. */
export interface LoadRecommendationsOptions extends RecommendOptions {
  cartItemIds?: readonly string[];
  /** E.g. through a {@linkcode RelatedCache}; default: straight from KV. */
  readRelated?: (itemIds: readonly string[]) => Promise<ReadonlyMap<string, RelatedValue>>;
}

/**
 * Reads the related lists of the user's recent views and scores them with {@linkcode recommend}.
 *
 * @throws {RangeError} for an invalid limit; KV errors are passed on
 */
export async function loadRecommendations(
  kv: Deno.Kv,
  recentViews: RecommendInput["recentViews"],
  options: LoadRecommendationsOptions,
): Promise<Recommendation[]> {
  checkLimit(options.limit);
  if (recentViews.length === 0) return [];
  const itemIds = recentViews.slice(0, MAX_SOURCES).map((view) => view.itemId);
  const related = options.readRelated ? await options.readRelated(itemIds) : await readRelated(kv, itemIds);
  return recommend({ recentViews, related, cartItemIds: options.cartItemIds }, options);
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
