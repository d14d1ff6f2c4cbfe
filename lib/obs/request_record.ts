/**
 * @module
 * The record each request fills in as it goes, read by the observation at its end (response
 * headers, metrics, the decision log).
 */
import type { Decision } from "../rules/decision.ts";
import type { Facts } from "../pipeline/facts.ts";
import type { RouteClass } from "../http/paths.ts";

/** What is known about a finished request. */
export interface RequestRecord {
  requestId: string;
  method: string;
  path: string;
  routeClass: RouteClass;
  status: number;
  /** `deps.mono()` at arrival. */
  startMs: number;
  /** To the response headers. */
  totalMs: number;
  originMs?: number;
  decision?: Decision;
  facts?: Facts;
  stages?: Record<string, number>;
  /** Only ever logged as a keyed hash. */
  visitorKey?: string;
  loggedIn?: boolean;
  contextOutcome?: { cache: string; readThrough: string };
  /** The edge answered itself: the decision's proxy action and route are not what happened. */
  answeredAtEdge?: boolean;
}
