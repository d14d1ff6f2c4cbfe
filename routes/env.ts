/**
 * @module
 * The Hono environment shared by every router: per-request variables set by the stages.
 */
import type { Decision } from "../lib/decide.ts";
import type { Facts } from "../lib/facts.ts";

/** Hono generics for this app. */
export interface AppEnv {
  /** Deno's `ServeHandlerInfo`, absent under `app.request()` unless a test passes one. */
  Bindings: { remoteAddr?: { hostname: string } } | undefined;
  Variables: {
    requestId: string;
    decision: Decision | undefined;
    /** Time to the origin's response headers. */
    originMs: number | undefined;
    /** Milliseconds spent in each pipeline stage (facts, identity, context, decide, act). */
    stages: Record<string, number> | undefined;
    /** Facts of the request, once gathered. */
    facts: Facts | undefined;
    /** The visitor's bucketing key (only ever logged as a keyed hash). */
    visitorKey: string | undefined;
    loggedIn: boolean | undefined;
    /** Context-stage outcome for logs and metrics. */
    contextOutcome: { cache: string; readThrough: string } | undefined;
    /** Set when the request fell through to the proxy handler, which observes itself. */
    proxied: boolean | undefined;
  };
}
