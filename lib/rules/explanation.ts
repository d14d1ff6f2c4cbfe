/**
 * @module
 * What an explanation of a decision holds — the facts and why, the visitor, the rules version,
 * and for every experiment, route, image rule, flag and slot whether it was considered, matched,
 * and why not — and what explaining takes.
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
  /** The peer is in `TRUSTED_PROXIES` (its forwarding headers and user header are believed). */
  peerTrusted: boolean;
  /** Geo headers are believed (trusted peer, or the CDN secret). */
  geoTrusted: boolean;
  country: {
    value: string | null;
    source: "header" | "ip" | null;
    /** The geo header that decided (present whenever one did, whatever it held). */
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
  /** The visitor was served a variation (control included): exposed, or forced by QA. */
  matched: boolean;
  /** A step (`disabled`, `path`, `when`, `forced`) or the assignment's outcome (`bucketed`, `bot`…). */
  reason: ExperimentStep | ExperimentOutcome;
  why: string;
  field?: ConditionField;
  variation?: string;
  inExperiment?: boolean;
  /** The bucket in `[0, 1)` (GrowthBook's hash of the seed and the visitor key). */
  hashValue?: number;
  /** Each variation's bucket range, when the visitor was bucketed. */
  ranges?: Record<string, [number, number]>;
  /** The namespace, and the visitor's namespace hash when it decided. */
  namespace?: { id: string; range: [number, number]; hashValue?: number };
  /** The sticky cookie's entry for this experiment, and whether the cookie keeps it. */
  sticky?: { value: string; valid: boolean };
}

/** One route's part in the decision. */
export interface RouteExplanation {
  index: number;
  match: string;
  /** False for routes after the one that matched. */
  considered: boolean;
  matched: boolean;
  reason: RouteStep | "not-reached";
  why: string;
  field?: ConditionField;
  /** What the rewrite map was looked up by (`*` for the fallback). */
  key?: string;
  /** The filled-in rewrite target or redirect location. */
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
  /** The query string after adaptation. */
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
  /** The OpenFeature reason, or `FORCED` when a QA request replaced the value. */
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
    /** No valid `ep_uid` cookie: the key is a fresh id (an explanation sets no cookie). */
    newAnonymousId: boolean;
    /** The sticky cookie's assignments as read. */
    sticky: Record<string, string>;
    why: string;
  };
  /** The context the decision used: segments and attribute names, and how it was loaded. */
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
  /** The decision itself, as `decideForVisitor` made it. */
  decision: Decision;
}

/** What {@linkcode ExplainCollector.explain} decides and explains. */
export interface ExplainInputs {
  /** The described request (its headers say which cookies and hints were sent). */
  request: Request;
  facts: Facts;
  identity: Identity;
  context: EdgeUserContext;
  rules: RulesSource & { readonly current: CompiledRules };
  sessionCookie: string;
  ipGeoLoaded: boolean;
  /** Where the context came from, when not from the context stage (an offline explanation). */
  contextWhy?: string;
  /** What the QA headers force (see `explainQa`), and its explanation. */
  qa?: { qa: QaExplanation | null; forced: ForcedOutcome | undefined };
}
