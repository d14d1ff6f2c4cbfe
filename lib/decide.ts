/**
 * @module
 * The decision stage: a pure function from facts and rules to what the edge does with the
 * request. No I/O, no clock, no randomness — the same inputs always give the same decision.
 */
import type { Facts } from "./facts.ts";
import type { CompiledRules } from "./rules.ts";
import { resolveRegion } from "./geo.ts";

/** Who the visitor is, as far as the decision needs to know. */
export interface VisitorContext {
  /** The bucketing and targeting key: the user id when logged in, else the anonymous id. */
  key: string;
  /** Whether `key` is a logged-in user id. */
  loggedIn: boolean;
  /** Profile segments (already empty when the visitor sent `Sec-GPC: 1`). */
  segments: readonly string[];
  /** Profile attributes (already empty under GPC). */
  attributes: Readonly<Record<string, string | number | boolean>>;
  /** Sticky assignments from the visitor's cookie: experiment key → variation value. */
  sticky: ReadonlyMap<string, string>;
}

/** Inputs of {@linkcode decide}. */
export interface DecisionInputs {
  facts: Facts;
  visitor: VisitorContext;
}

/** What to do with the request. */
export type Action =
  | { type: "proxy"; path: string }
  | { type: "redirect"; location: string; status: number };

/** The outcome of the decision stage. */
export interface Decision {
  region: string;
  country: string | undefined;
  /** The rules version the decision was made with. */
  rulesVersion: number;
  action: Action;
  /** The route glob that matched, if any. */
  matchedRoute: string | undefined;
  /** Whether the response may differ by visitor (so shared caches must not store it blindly). */
  personalized: boolean;
}

/**
 * Decides what to do with a request.
 *
 * @param inputs the request facts and the visitor
 * @param rules the active compiled rules
 * @returns the decision
 */
export function decide(inputs: DecisionInputs, rules: CompiledRules): Decision {
  const { facts } = inputs;
  const region = resolveRegion(rules, facts.country, facts.regionHint);
  const base = { region, country: facts.country, rulesVersion: rules.version };
  for (const route of rules.routes) {
    const match = route.pattern.exec(facts.path);
    if (!match) continue;
    const splat = match[1] ?? "";
    if (route.action.type === "redirect") {
      return {
        ...base,
        action: {
          type: "redirect",
          location: fillSplat(route.action.to, splat),
          status: route.action.status,
        },
        matchedRoute: route.match,
        personalized: false,
      };
    }
    const target = route.action.targets.get(region) ?? route.action.targets.get("*");
    if (target === undefined) continue;
    return {
      ...base,
      action: { type: "proxy", path: fillSplat(target, splat) },
      matchedRoute: route.match,
      // A rewrite that differs by region makes the response depend on the visitor's region.
      personalized: route.action.targets.size > 1,
    };
  }
  return {
    ...base,
    action: { type: "proxy", path: facts.path },
    matchedRoute: undefined,
    personalized: false,
  };
}

function fillSplat(target: string, splat: string): string {
  if (!target.includes("*")) return target;
  const filled = target.replace("*", splat).replace(/\/{2,}/g, "/");
  return filled;
}
