/**
 * @module
 * The shared front half of the pipeline — facts → identity → context → decide — so the proxy and
 * the edge-served endpoints see the visitor the same way.
 */
import type { Deps } from "../app/deps.ts";
import { type Facts, gatherFacts, type GatherFactsOptions } from "./facts.ts";
import type { Explanation } from "../rules/explanation.ts";
import { type Identity, resolveIdentity, type ResolveIdentityOptions } from "./identity.ts";
import {
  type EdgeUserContext,
  gpcRequested,
  loadUserContext,
  type LoadUserContextOptions,
} from "./context.ts";
import { decideForVisitor } from "../rules/decide.ts";
import { type Decision, visitorContextOf } from "../rules/decision.ts";
import { qaOverrides } from "./qa.ts";
import type { CompiledRules } from "../rules/compile.ts";
import { type KvRead, readThroughLabel } from "../obs/metric_labels.ts";
import { peerOf, type ServeInfo } from "../http/net.ts";
import type { RequestRecord } from "../obs/request_record.ts";

/** Everything the front half of the pipeline learned about a request. */
export interface Visitor {
  facts: Facts;
  identity: Identity;
  context: EdgeUserContext;
  decision: Decision;
  rules: CompiledRules;
  /** Milliseconds; the act stage adds its own. */
  stages: Record<string, number>;
  contextOutcome: { cache: string; readThrough: string };
}

/**
 * Runs facts, identity, context and decide, noting each stage on the request's record as it
 * finishes, so a failure still leaves the timings.
 *
 * @param request the request
 * @param info the connection facts
 * @param record the request's record (see `observe`)
 * @param deps the service's dependencies
 * @throws {BadPathError} when the path cannot be forwarded safely
 * @throws {QaOverrideError} when a request with the QA token forces what the rules do not have
 */
export async function visitorFor(
  request: Request,
  info: ServeInfo,
  record: RequestRecord,
  deps: Deps,
): Promise<Visitor> {
  const stages: Record<string, number> = {};
  record.stages = stages;
  let mark = deps.mono();
  const lap = (stage: string) => {
    const at = deps.mono();
    stages[stage] = at - mark;
    deps.tracer?.stage(stage, mark, at);
    mark = at;
  };

  const facts = gatherFacts(request, peerOf(info), factsOptions(deps, record.requestId));
  lap("facts");

  const now = deps.now();
  const identity = await resolveIdentity(request.headers, identityOptions(deps, now, facts.peerIp));
  lap("identity");

  const context = await loadUserContext(identity.userId, contextOptions(deps, now, facts.gpc));
  const { outcome } = context;
  const readThrough = readThroughLabel(outcome.backend);
  if (outcome.cache === "hit" || outcome.cache === "negative_hit") {
    deps.metrics.observeContextCache("hit");
  } else if (outcome.cache === "miss") deps.metrics.observeContextCache("miss");
  // A cache hit carries the outcome of the load that stored it, counted then.
  if (outcome.kv === "ok" && readThrough !== "skipped") {
    deps.metrics.observeReadThrough({ outcome: readThrough, durationMs: outcome.readThroughMs });
  }
  lap("context");

  const qaToken = deps.config.qaToken;
  // Checked against the rules that decide for this visitor: a canary may have other experiments.
  const forced = qaToken === undefined
    ? undefined
    : qaOverrides(request.headers, { token: qaToken, rules: deps.rules.rulesFor(identity.key) });
  const { rules, decision } = decideForVisitor(
    { facts, visitor: visitorContextOf(identity, context), forced },
    deps.rules,
  );
  lap("decide");
  deps.exposures.observe({ facts, identity, decision, rules });
  const contextOutcome = { cache: context.outcome.cache, readThrough };
  record.facts = facts;
  record.decision = decision;
  record.visitorKey = identity.key;
  record.loggedIn = identity.userId !== undefined;
  record.contextOutcome = contextOutcome;
  return { facts, identity, context, decision, rules, stages, contextOutcome };
}

/**
 * Who is calling, for open OFREP: the identity and segments the proxy would use for this request,
 * never what the request body claims. The key is absent without an `ep_uid` cookie yet.
 *
 * @param request the request
 * @param info the connection facts
 * @param deps the service's dependencies
 */
export async function callerFor(
  request: Request,
  info: ServeInfo,
  deps: Deps,
): Promise<
  { key: string | undefined; loggedIn: boolean; segments: string[]; sticky: ReadonlyMap<string, string> }
> {
  const now = deps.now();
  const identity = await resolveIdentity(request.headers, identityOptions(deps, now, peerOf(info)));
  const context = await loadUserContext(
    identity.userId,
    contextOptions(deps, now, gpcRequested(request.headers)),
  );
  return {
    // A key made up for this one call would bucket the caller at random on every call.
    key: identity.userId !== undefined || !identity.newAnonymousId ? identity.key : undefined,
    loggedIn: identity.userId !== undefined,
    segments: [...context.segments],
    sticky: identity.sticky,
  };
}

/**
 * Explains what the pipeline would decide for a request, from the same stages; nothing is recorded,
 * counted or set as a cookie, though reads fill the caches as the request itself would.
 *
 * @param request the request to explain (see `describedRequest`)
 * @param peer the address it arrives from
 * @param deps the service's dependencies
 * @throws {BadPathError} when the path cannot be forwarded safely (the proxy would answer 400)
 */
export async function explainRequest(request: Request, peer: string, deps: Deps): Promise<Explanation> {
  // Not loaded on a visitor's path.
  const [{ ExplainCollector }, { explainQa }] = await Promise.all([
    import("../rules/explain.ts"),
    import("../rules/explain_qa.ts"),
  ]);
  const trace = new ExplainCollector();
  const facts = gatherFacts(request, peer, { ...factsOptions(deps, "explain"), trace });
  const now = deps.now();
  const identity = await resolveIdentity(request.headers, identityOptions(deps, now, facts.peerIp));
  const context = await loadUserContext(identity.userId, contextOptions(deps, now, facts.gpc));
  // An entry the rules cannot serve is explained (the edge's 400) rather than thrown.
  const qa = explainQa(request.headers, {
    token: deps.config.qaToken,
    rules: deps.rules.rulesFor(identity.key),
  });
  return trace.explain({
    qa,
    request,
    facts,
    identity,
    context,
    rules: deps.rules,
    sessionCookie: deps.config.sessionCookie,
    ipGeoLoaded: deps.ipGeo !== undefined,
  }).explanation;
}

/** Made once per `Deps` rather than per request. */
interface StageCallbacks {
  onLookupError: ResolveIdentityOptions["onLookupError"];
  onContextError: LoadUserContextOptions["onError"];
  kvSession: ResolveIdentityOptions["kvWithin"];
  kvContext: LoadUserContextOptions["kvWithin"];
}

const callbacksByDeps = new WeakMap<Deps, StageCallbacks>();

function callbacksOf(deps: Deps): StageCallbacks {
  let callbacks = callbacksByDeps.get(deps);
  if (callbacks === undefined) {
    callbacks = {
      onLookupError: (error) => deps.log.warn("session lookup failed", { error: String(error) }),
      onContextError: (stage, error) =>
        deps.log.warn("context stage degraded", { stage, error: String(error) }),
      kvSession: kvWithin(deps, "session"),
      kvContext: kvWithin(deps, "context"),
    };
    callbacksByDeps.set(deps, callbacks);
  }
  return callbacks;
}

function factsOptions(deps: Deps, requestId: string): GatherFactsOptions {
  const { config } = deps;
  return {
    trustedProxies: config.trustedProxies,
    cdnSecret: config.cdnSecret,
    countryHeaders: config.countryHeaders,
    requestId,
    uaCache: deps.uaCache,
    ipGeo: deps.ipGeo,
    listenerScheme: config.listenerScheme,
  };
}

function identityOptions(deps: Deps, now: number, peer: string): ResolveIdentityOptions {
  const { config } = deps;
  const callbacks = callbacksOf(deps);
  return {
    kv: deps.kv,
    now,
    sessionCookie: config.sessionCookie,
    // Only a direct peer in USER_ID_PROXIES: CDNs and load balancers pass their clients' headers through.
    userIdHeader: config.userIdHeader !== undefined && config.userIdProxies.has(peer)
      ? config.userIdHeader
      : undefined,
    randomId: deps.randomId,
    sessionCache: deps.sessionCache,
    stickySigner: deps.stickySigner,
    onLookupError: callbacks.onLookupError,
    kvWithin: callbacks.kvSession,
  };
}

function contextOptions(deps: Deps, now: number, gpc: boolean): LoadUserContextOptions {
  const callbacks = callbacksOf(deps);
  return {
    kv: deps.kv,
    now,
    config: deps.config,
    cache: deps.contextCache,
    backend: deps.backend,
    gpc,
    waitUntil: deps.waitUntil,
    onError: callbacks.onContextError,
    kvWithin: callbacks.kvContext,
  };
}

const KV_READ_LABELS: Readonly<Record<KvRead, { readonly read: KvRead }>> = {
  session: { read: "session" },
  context: { read: "context" },
  related: { read: "related" },
  rules: { read: "rules" },
  other: { read: "other" },
};

/**
 * Bounds a KV read of the request path by `KV_TIMEOUT_MS` (a stalled read degrades the request, never
 * holds it) and times it whatever its end, so a stalling store shows in the latency.
 *
 * @param deps the service's dependencies
 * @param read what is read, for the metric's `read` label
 */
export function kvWithin(
  deps: Pick<Deps, "config" | "deadlines" | "metrics" | "mono">,
  read: KvRead,
): <T>(read: Promise<T>) => Promise<T> {
  const label = KV_READ_LABELS[read];
  return async (work) => {
    const started = deps.mono();
    try {
      return await deps.deadlines.within(work, deps.config.kvTimeoutMs, "KV read");
    } finally {
      deps.metrics.observeKvRead(deps.mono() - started, label);
    }
  };
}

/**
 * The visitor's context as client-side code sees it: their own data only, behavioural data empty
 * under GPC.
 *
 * @param visitor the resolved visitor
 */
export function contextView(visitor: Visitor): Record<string, unknown> {
  const { decision, context, facts, identity } = visitor;
  return {
    visitor: {
      id: identity.anonymousId,
      loggedIn: identity.userId !== undefined,
      userId: identity.userId ?? null,
    },
    region: decision.region,
    country: decision.country ?? null,
    countrySource: decision.country === undefined ? null : facts.countrySource ?? null,
    device: facts.device.device,
    network: facts.device.network,
    gpc: facts.gpc,
    rulesVersion: decision.rulesVersion,
    variants: decision.variants,
    flags: decision.flags,
    recentViews: context.recentViews.map((view) => view.itemId),
    cartItemIds: context.cartItemIds,
    segments: context.segments,
    ...(decision.forced ? { qa: true } : {}),
  };
}
