/**
 * @module
 * The Hono environment shared by the edge's routers: the connection facts and the request id
 * the front door (`routes/app.ts`) gave the request.
 */

/** Hono generics for this app. */
export interface AppEnv {
  /** The connection facts and request id; absent when a test calls a router directly. */
  Bindings: { remoteAddr?: { hostname: string }; requestId?: string } | undefined;
  Variables: { requestId: string };
}
