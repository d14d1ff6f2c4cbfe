/**
 * @module
 * What every request leaves behind, whichever router answered it (headers, metrics, log lines),
 * and the one mapping from an error to the JSON answer a client may see.
 */
import type { Deps } from "../lib/app/deps.ts";
import { BusyError, EdgeError, errorBody } from "../lib/http/errors.ts";
import type { ServeInfo } from "../lib/http/net.ts";
import type { RequestRecord } from "../lib/obs/request_record.ts";

/** A handler that fills in what it learns on the request's record. */
export type ObservedHandler = (request: Request, info: ServeInfo, record: RequestRecord) => Promise<Response>;

/**
 * Runs a handler and observes it the same way, whichever handler it is.
 *
 * @param deps the service's dependencies
 * @param handler the handler; it may set `decision`, `facts`, `stages`, … on the record
 * @param request the request
 * @param info the connection facts
 * @param record the request's record, with its id, path, route class and arrival time
 */
export async function observe(
  deps: Deps,
  handler: ObservedHandler,
  request: Request,
  info: ServeInfo,
  record: RequestRecord,
): Promise<Response> {
  let response: Response;
  try {
    response = await handler(request, info, record);
  } catch (error) {
    response = errorResponse(deps, error, record.requestId);
  }
  record.status = response.status;
  record.totalMs = deps.mono() - record.startMs;
  stampResponse(response.headers, record);
  recordRequest(deps, record);
  return response;
}

function stampResponse(headers: Headers, record: RequestRecord): void {
  const { totalMs, originMs } = record;
  const timing = originMs === undefined
    ? `edge;dur=${totalMs.toFixed(2)}`
    : `edge;dur=${(totalMs - originMs).toFixed(2)}, origin;dur=${originMs.toFixed(2)}`;
  headers.set("x-request-id", record.requestId);
  const existing = headers.get("server-timing");
  headers.set("server-timing", existing ? `${existing}, ${timing}` : timing);
}

function recordRequest(deps: Deps, record: RequestRecord): void {
  const { decision, facts, stages, originMs, totalMs, requestId, routeClass } = record;
  deps.metrics.observeRequest({
    routeClass,
    status: record.status,
    region: decision?.region,
    durationMs: totalMs,
    stages,
    originMs,
  });
  if (!deps.log.enabled("info")) return;
  deps.log.info("request", {
    requestId,
    method: record.method,
    path: record.path,
    rewrittenPath: decision?.action.type === "proxy" && !record.answeredAtEdge
      ? decision.action.path
      : undefined,
    region: decision?.region,
    status: record.status,
    durMs: round(totalMs),
    originMs: originMs === undefined ? undefined : round(originMs),
  });
  if (!decision) return;
  const outcome = record.contextOutcome;
  deps.logDecision({
    requestId,
    rulesVersion: decision.rulesVersion,
    region: decision.region,
    country: decision.country,
    device: facts?.device.device,
    network: facts?.device.network,
    variants: decision.variants,
    flags: decision.flags,
    userKey: record.visitorKey,
    loggedIn: record.loggedIn,
    clientIp: facts?.clientIp,
    routeClass,
    matchedRoute: record.answeredAtEdge ? undefined : decision.matchedRoute,
    action: record.answeredAtEdge ? "edge" : decision.action.type,
    status: record.status,
    cache: outcome?.cache,
    readThrough: outcome?.readThrough,
    durations: { total: totalMs, origin: originMs, ...stages },
    forced: decision.forced,
  });
}

/**
 * An {@linkcode EdgeError}'s status, code and safe message, or a bare 500 whose details go to the
 * log, never the client.
 *
 * @param deps the service's dependencies
 * @param error what was thrown
 * @param requestId the request's id, for the log line
 */
export function errorResponse(deps: Deps, error: unknown, requestId: string | undefined): Response {
  const headers: Record<string, string> = { "cache-control": "no-store" };
  if (error instanceof BusyError) headers["retry-after"] = String(error.retryAfterSec);
  if (error instanceof EdgeError) {
    if (error.status >= 500 && error.cause !== undefined) {
      deps.log.warn("request failed", { requestId, code: error.code, cause: String(error.cause) });
    } else if (error.status === 499) {
      deps.log.debug("client closed the request", { requestId });
    }
    return Response.json(errorBody(error.code, error.message, error.details), {
      status: error.status,
      headers,
    });
  }
  deps.log.error("unhandled error", {
    requestId,
    error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  });
  return Response.json(errorBody("internal", "Internal error"), { status: 500, headers });
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
