/**
 * @module
 * The operator's rules endpoints (mounted under `/_edge`), behind
 * `Authorization: Bearer <RULES_TOKEN>`; without `RULES_TOKEN` they do not exist (404), so they
 * are never open by accident.
 * - `GET /rules`: which rules version is active, which is the canary and with what share, and
 *   which versions are kept — as KV names them and as this instance serves them. A KV read that
 *   fails, or takes longer than `KV_TIMEOUT_MS`, answers 503 `store_unavailable`.
 * - `GET /explain` and `POST /explain`: what the edge would decide for a request, and why
 *   (docs/explain.md). Explaining sets no cookie and records no decision or exposure.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { Deps } from "../lib/app/deps.ts";
import { EdgeError, errorBody, StoreUnavailableError } from "../lib/http/errors.ts";
import { readStoredRulesStatus } from "../lib/rules/control.ts";
import { bearerTokenMatches } from "../lib/http/secure.ts";
import type { AppEnv } from "./env.ts";
import { explainRequest, kvWithin } from "../lib/pipeline/visitor.ts";
import { peerOf } from "../lib/http/net.ts";
import { invalidRequestBody } from "./validation.ts";

/**
 * The rules status and explain router.
 *
 * @param deps the service's dependencies (`config.rulesToken`, `kv`, `rules`; `deadlines`, `mono`
 *   and `metrics` to bound and time KV reads; the rest for explaining a request)
 * @returns a router with `GET /rules` and `GET|POST /explain` (absent without `RULES_TOKEN`), to be
 *   mounted under `/_edge`
 */
export function rulesRoutes(deps: Deps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const token = deps.config.rulesToken;
  if (token === undefined) return app;
  const withinKvTimeout = kvWithin(deps, "rules");
  const unauthorized = (c: Context<AppEnv>) => {
    c.header("www-authenticate", 'Bearer realm="edge-rules"');
    return c.json(errorBody("unauthorized", "A valid rules token is required"), 401);
  };

  app.use("/rules", tokenGate(token, unauthorized));
  app.use("/explain", tokenGate(token, unauthorized));

  app.get("/rules", async (c) => {
    // A failing or hanging store (past `KV_TIMEOUT_MS`) is its outage, not a bug here: 503, as sync
    // answers; the KV error goes to the log, never to the client.
    const stored = await withinKvTimeout(readStoredRulesStatus(deps.kv)).catch((error) => {
      throw new StoreUnavailableError(error);
    });
    const canary = deps.rules.canary;
    return c.json({
      active: stored.active,
      canary: stored.canary,
      kept: stored.kept,
      instance: {
        active: deps.rules.current.version,
        canary: canary ? { version: canary.rules.version, share: canary.share } : null,
        startUp: deps.rules.baseline.version,
      },
    });
  });

  const explain = explainHandler(deps);
  app.get("/explain", explain);
  app.post("/explain", explain);
  return app;
}

// Explaining loads its code on first use: it is an operator's tool, not on a visitor's path.
function explainHandler(deps: Deps): (c: Context<AppEnv>) => Promise<Response> {
  return async (c) => {
    const { ExplainRequestSchema, descriptionFromQuery, describedRequest, EXPLAIN_MAX_BODY_BYTES } =
      await import("../lib/rules/explain_request.ts");
    const url = new URL(c.req.url);
    const format = url.searchParams.get("format") ?? "json";
    if (format !== "json" && format !== "text") {
      return c.json(errorBody("invalid_request", 'Invalid request: "format" must be "json" or "text"'), 400);
    }
    let raw: unknown;
    if (c.req.method === "POST") {
      const { readLimitedBody } = await import("../lib/http/body.ts");
      const bytes = await readLimitedBody(c.req.raw.body, {
        maxBytes: EXPLAIN_MAX_BODY_BYTES,
        contentLength: c.req.header("content-length"),
      });
      try {
        raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
      } catch {
        throw new EdgeError(400, "invalid_json", "The body is not valid UTF-8 JSON");
      }
    } else raw = descriptionFromQuery(url.searchParams);
    const parsed = ExplainRequestSchema.safeParse(raw);
    if (!parsed.success) return c.json(invalidRequestBody(parsed.error.issues), 400);
    const { request, peer } = describedRequest(parsed.data, {
      url: c.req.url,
      headers: c.req.raw.headers,
      peer: peerOf(c.env),
    });
    const explanation = await explainRequest(request, peer, deps);
    if (format === "json") return c.json(explanation);
    const { formatExplanation } = await import("../lib/rules/explain_text.ts");
    return c.text(formatExplanation(explanation));
  };
}

// Every answer of these endpoints is the operator's: never stored by a cache.
function tokenGate(
  token: string,
  unauthorized: (c: Context<AppEnv>) => Response,
): (c: Context<AppEnv>, next: () => Promise<void>) => Promise<Response | void> {
  return async (c, next) => {
    c.header("cache-control", "no-store");
    if (!bearerTokenMatches(c.req.header("authorization"), token)) return unauthorized(c);
    return await next();
  };
}
