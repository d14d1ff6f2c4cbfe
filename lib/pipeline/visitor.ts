/**
 * @module
 * The shared front half of the pipeline — facts → identity → context → decide — used by the
 * proxy and by the edge-served endpoints, so every route sees the visitor the same way. Each
 * stage's duration is recorded for metrics and decision logs.
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
import { peerOf, type RequestRecord, type ServeInfo } from "../../routes/observe.ts";

/** Everything the front half of the pipeline learned about a request. */
export interface Visitor {
  facts: Facts;
  identity: Identity;
  context: EdgeUserContext;
  decision: Decision;
  rules: CompiledRules;
  /** Stage durations in ms; the act stage adds its own. */
  stages: Record<string, number>;
  /** Context-stage outcome for logs and metrics. */
  contextOutcome: { cache: string; readThrough: string };
}

/**
 * Runs facts, identity, context and decide for a request served by a plain handler, and
 * notes the stage timings (as they finish, so a failure still leaves them), the decision and
 * the context outcome on the request's record.
 *
 * @param request the request
 * @param info the connection facts
 * @param record the request's record (see `observe`)
 * @param deps the service's dependencies
 * @returns the visitor
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
  // Only a load that read KV may have waited for a read-through: a cache hit carries the outcome
  // of the load that stored its entry, which was counted then. (The KV read is timed by kvWithin.)
  if (outcome.kv === "ok" && readThrough !== "skipped") {
    deps.metrics.observeReadThrough({ outcome: readThrough, durationMs: outcome.readThroughMs });
  }
  lap("context");

  // A visitor in a rules canary is decided by the canary version (stable per visitor key).
  const qaToken = deps.config.qaToken;
  // Checked against the rules that decide for this visitor (a canary may have other experiments).
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
 * Who is calling, for an endpoint that evaluates something for "the visitor" without the rest
 * of the pipeline (open OFREP): the same identity and profile segments the proxy would use for
 * this request — session cookie, then `USER_ID_HEADER` from a peer in `USER_ID_PROXIES`, then
 * the `ep_uid` cookie — never what the request body claims.
 *
 * @param request the request
 * @param info the connection facts
 * @param deps the service's dependencies
 * @returns the visitor key (absent when the caller has no `ep_uid` cookie yet), whether a user
 *   is logged in, their segments (none under `Sec-GPC: 1`), and their sticky assignments (from
 *   the `ep_exp` cookie, only when its signature holds)
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
    // A logged-in caller is keyed by its user id; an anonymous one by its `ep_uid`, and a key
    // made up for this one call would bucket it at random on every call.
    key: identity.userId !== undefined || !identity.newAnonymousId ? identity.key : undefined,
    loggedIn: identity.userId !== undefined,
    segments: [...context.segments],
    sticky: identity.sticky,
  };
}

/**
 * Explains what the pipeline would decide for a request, from the same stages: facts, identity
 * and context as `visitorFor` runs them, QA forcing checked against `QA_TOKEN`, then the
 * decision with a trace. Nothing is recorded on
 * a request record, counted as a decision or exposure, or set as a cookie; reads fill the
 * per-isolate caches (and may read through to the backend) as the request itself would.
 *
 * @param request the request to explain (see `describedRequest`)
 * @param peer the address it arrives from
 * @param deps the service's dependencies
 * @returns the explanation
 * @throws {BadPathError} when the path cannot be forwarded safely (the proxy would answer 400)
 */
export async function explainRequest(request: Request, peer: string, deps: Deps): Promise<Explanation> {
  // An operator's tool: its code is not loaded on a visitor's path.
  const [{ ExplainCollector }, { explainQa }] = await Promise.all([
    import("../rules/explain.ts"),
    import("../rules/explain_qa.ts"),
  ]);
  const trace = new ExplainCollector();
  const facts = gatherFacts(request, peer, { ...factsOptions(deps, "explain"), trace });
  const now = deps.now();
  const identity = await resolveIdentity(request.headers, identityOptions(deps, now, facts.peerIp));
  const context = await loadUserContext(identity.userId, contextOptions(deps, now, facts.gpc));
  // Forcing is read as `visitorFor` reads it, but an entry the rules cannot serve is explained
  // (the edge's 400) rather than thrown.
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

/** The stages' callbacks for one `Deps`, made once rather than per request (they read `deps` when called). */
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
    // Only a directly connected peer in USER_ID_PROXIES may name the user: neither a CDN secret
    // nor TRUSTED_PROXIES does, since CDNs and load balancers pass their clients' headers through.
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
    // The read-through answer is used at once; its KV write need not hold the response.
    waitUntil: deps.waitUntil,
    onError: callbacks.onContextError,
    kvWithin: callbacks.kvContext,
  };
}

/** The `read` label of each kind of KV read, made once: timing a read allocates nothing more. */
const KV_READ_LABELS: Readonly<Record<KvRead, { readonly read: KvRead }>> = {
  session: { read: "session" },
  context: { read: "context" },
  related: { read: "related" },
  rules: { read: "rules" },
  other: { read: "other" },
};

/**
 * Bounds a KV read of the request path by `KV_TIMEOUT_MS`: a stalled read degrades the request
 * (anonymous, stale or empty context, no recommendations); it never holds it. Each read is
 * recorded in `edge_kv_read_duration_seconds`, whatever its end: one that fails counts the time
 * it took, one cut at the deadline the time it was waited for (`KV_TIMEOUT_MS`, plus at most
 * one deadline tick), so a stalling store shows in the latency instead of vanishing from it.
 *
 * @param deps the service's dependencies
 * @param read what is read, for the metric's `read` label
 * @returns a function that bounds and times one read
 * @example
 * ```ts
 * const session = await kvWithin(deps, "session")(kv.get(key));
 * ```
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
 * The visitor's edge context as client-side code sees it (in `/_edge/context` and injected
 * into HTML pages): their own data only, behavioural data already empty under GPC.
 *
 * @param visitor the resolved visitor
 * @returns a JSON-serialisable object
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
    // Why the region: a trusted geo header, the IP database, or neither (the default region).
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
    // Said only when true, as in the decision log: a QA tester sees that the page is forced.
    ...(decision.forced ? { qa: true } : {}),
  };
}
