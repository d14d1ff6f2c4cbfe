/**
 * @module
 * The Hono environment shared by every router: the request id and the fallback flag.
 */

/** Hono generics for this app. */
export interface AppEnv {
  /** Deno's `ServeHandlerInfo`, absent under `app.request()` unless a test passes one. */
  Bindings: { remoteAddr?: { hostname: string } } | undefined;
  Variables: {
    requestId: string;
    /** Set when a plain handler (proxy, edge-served reads) answered: it observes itself. */
    plain: boolean | undefined;
  };
}
