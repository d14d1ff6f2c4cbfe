/**
 * @module
 * What an explanation of a decision holds: the facts and why, the visitor, and for every rule
 * whether it was considered, matched, and why not.
 */
import type { DeviceReason, NetworkReason } from "../pipeline/device.ts";
import type { RegionSource } from "../pipeline/geo.ts";
import type { Facts } from "../pipeline/facts.ts";
import type { EdgeUserContext } from "../pipeline/context.ts";
import type { Identity } from "../pipeline/identity.ts";
import type { ExperimentOutcome } from "./experiments.ts";
import type { FlagEvaluation, FlagRuleOutcome } from "./flags.ts";
import type { ConditionField } from "./targeting.ts";
import type { RulesSource } from "./decide.ts";
import type { Decision, ExperimentStep, ForcedOutcome, ImageStep, RouteStep, SlotStep } from "./decision.ts";
import type { CompiledRules } from "./compile.ts";
import type { QaExplanation } from "./explain_qa.ts";

/** The facts the edge derived, and where each came from. */
export interface FactsExplanation {
  clientIp: string;
  peerIp: string;
  peerTrusted: boolean;
  geoTrusted: boolean;
  country: {
    value: string | null;
    source: "header" | "ip" | null;
    /** Present whenever one decided, whatever it held. */
    header?: string;
    why: string;
  };
  region: { value: string; source: RegionSource; why: string };
  device: { value: string; reason: DeviceReason | null; why: string };
  network: { value: string; reason: NetworkReason | null; why: string };
  platform: string | null;
  viewportWidth: number | null;
  dpr: number | null;
  gpc: boolean;
  bot: boolean;
}

/** One experiment's part in the decision. */
export interface ExperimentExplanation {
  key: string;
  considered: boolean;
  /** Served a variation (control included): exposed, or forced by QA. */
  matched: boolean;
  reason: ExperimentStep | ExperimentOutcome;
  why: string;
  field?: ConditionField;
  variation?: string;
  inExperiment?: boolean;
  hashValue?: number;
  ranges?: Record<string, [number, number]>;
  namespace?: { id: string; range: [number, number]; hashValue?: number };
  sticky?: { value: string; valid: boolean };
}

/** One route's part in the decision. */
export interface RouteExplanation {
  index: number;
  match: string;
  considered: boolean;
  matched: boolean;
  reason: RouteStep | "not-reached";
  why: string;
  field?: ConditionField;
  /** What the rewrite map was looked up by. */
  key?: string;
  target?: string;
}

/** One image rule's part in the decision. */
export interface ImageExplanation {
  index: number;
  match: string[];
  considered: boolean;
  matched: boolean;
  /** `not-proxied`: the request is redirected or not a `GET`/`HEAD`. */
  reason: ImageStep | "not-reached" | "not-proxied";
  why: string;
  field?: ConditionField;
  search?: string;
}

/** One flag rule's part in a flag's evaluation. */
export interface FlagRuleExplanation {
  index: number;
  considered: boolean;
  outcome: FlagRuleOutcome | "not-reached";
  why: string;
  field?: ConditionField;
  hashValue?: number;
}

/** One flag's evaluation. */
export interface FlagExplanation {
  key: string;
  value: unknown;
  variant: string;
  reason: FlagEvaluation["reason"] | "FORCED";
  why: string;
  /** What the rules gave before a QA request replaced it. */
  evaluated?: { value: unknown; variant: string; reason: FlagEvaluation["reason"] };
  rules: FlagRuleExplanation[];
}

/** One slot entry's part in the decision. */
export interface SlotExplanation {
  index: number;
  name: string;
  considered: boolean;
  matched: boolean;
  reason: SlotStep;
  why: string;
  field?: ConditionField;
}

/** A decision, explained. */
export interface Explanation {
  request: { method: string; path: string; search: string };
  facts: FactsExplanation;
  identity: {
    key: string;
    source: Identity["source"];
    loggedIn: boolean;
    /** The key is a fresh id (an explanation sets no cookie). */
    newAnonymousId: boolean;
    sticky: Record<string, string>;
    why: string;
  };
  context: {
    source: EdgeUserContext["source"];
    cache: string;
    kv: string;
    readThrough: string;
    stale: boolean;
    segments: readonly string[];
    attributes: string[];
    recentViews: number;
    cartItems: number;
    why: string;
  };
  /** What the request's QA headers forced, or why they forced nothing; null without any. */
  qa: QaExplanation | null;
  rules: {
    version: number;
    role: "active" | "canary";
    activeVersion: number;
    canary: { version: number; share: number; hashValue: number; inCanary: boolean } | null;
    why: string;
  };
  experiments: ExperimentExplanation[];
  routes: RouteExplanation[];
  images: ImageExplanation[];
  flags: FlagExplanation[];
  slots: SlotExplanation[];
  decision: Decision;
}

/** What {@linkcode ExplainCollector.explain} decides and explains. */
export interface ExplainInputs {
  request: Request;
  facts: Facts;
  identity: Identity;
  context: EdgeUserContext;
  rules: RulesSource & { readonly current: CompiledRules };
  sessionCookie: string;
  ipGeoLoaded: boolean;
  /** For an offline explanation, whose context is not the context stage's. */
  contextWhy?: string;
  /** What the QA headers force (see `explainQa`), and its explanation. */
  qa?: { qa: QaExplanation | null; forced: ForcedOutcome | undefined };
}
