/**
 * @module
 * The Hono environment shared by every router: per-request variables set by the stages.
 */
import type { Decision } from "../lib/decide.ts";

/** Hono generics for this app. */
export interface AppEnv {
  /** Deno's `ServeHandlerInfo`, absent under `app.request()` unless a test passes one. */
  Bindings: { remoteAddr?: { hostname: string } } | undefined;
  Variables: {
    requestId: string;
    decision: Decision | undefined;
    /** Time to the origin's response headers. */
    originMs: number | undefined;
  };
}
