/**
 * @module
 * The OFREP router, mounted at `/ofrep/v1`: `POST /evaluate/flags/{key}` and the bulk
 * `POST /evaluate/flags` (with `ETag` / `If-None-Match`), behind optional API keys. Its
 * modules are imported on first use: they are not on the path of a visitor's request.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/app/deps.ts";
import { errorBody } from "../lib/http/errors.ts";
import type { OfrepAnswer, OfrepCaller } from "../lib/rules/ofrep.ts";
import type { AppEnv } from "./env.ts";
import { callerFor } from "../lib/pipeline/visitor.ts";

/**
 * The OFREP router.
 *
 * @param deps the service's dependencies (rules with their canary, `config.ofrepApiKeys`)
 * @returns routes to be mounted under `/ofrep/v1`
 */
export function ofrepRoutes(deps: Deps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const keys = deps.config.ofrepApiKeys;

  app.use("*", async (c, next) => {
    const { ofrepKeyAccepted } = await import("../lib/rules/ofrep.ts");
    if (!ofrepKeyAccepted(c.req.raw.headers, keys)) {
      c.header("www-authenticate", 'Bearer realm="ofrep"');
      c.header("cache-control", "no-store");
      return c.json(errorBody("unauthorized", "A valid API key is required"), 401);
    }
    return await next();
  });

  // With API keys the callers are services evaluating for their users: the body's context is
  // theirs to give, and no user data of the request is read. Open, the callers are browsers: each
  // evaluates for itself (its session or `ep_uid`, and its signed sticky `ep_exp` assignments, as
  // the proxy would), whatever `targetingKey`, `loggedIn` or `segments` the body claims.
  const callerOf = async (request: Request, info: AppEnv["Bindings"]): Promise<OfrepCaller | undefined> => {
    if (keys.length) return undefined;
    return await callerFor(request, info, deps);
  };

  app.post("/evaluate/flags", async (c) => {
    const { evaluateOfrepBulk } = await import("../lib/rules/ofrep.ts");
    const body = await readText(c.req.raw);
    // By targetingKey, so that a rules canary's visitors see its flags, as on the proxy.
    const answer = evaluateOfrepBulk(deps.rules, {
      body,
      ifNoneMatch: c.req.header("if-none-match"),
      caller: await callerOf(c.req.raw, c.env),
    });
    return respond(answer, "private, no-cache");
  });

  app.post("/evaluate/flags/:key", async (c) => {
    const { evaluateOfrepFlag } = await import("../lib/rules/ofrep.ts");
    const body = await readText(c.req.raw);
    const caller = await callerOf(c.req.raw, c.env);
    return respond(evaluateOfrepFlag(deps.rules, { key: c.req.param("key"), body, caller }), "no-store");
  });

  const notAllowed = () =>
    new Response(JSON.stringify(errorBody("method_not_allowed", "Use POST")), {
      status: 405,
      headers: { allow: "POST", "content-type": "application/json" },
    });
  app.all("/evaluate/flags", notAllowed);
  app.all("/evaluate/flags/:key", notAllowed);
  app.all("*", (c) => c.json(errorBody("not_found", `No OFREP endpoint at "${c.req.path}"`), 404));
  return app;
}

async function readText(request: Request): Promise<string> {
  const [{ OFREP_MAX_BODY_BYTES }, { readLimitedBody }] = await Promise.all([
    import("../lib/rules/ofrep.ts"),
    import("../lib/http/body.ts"),
  ]);
  const bytes = await readLimitedBody(request.body, {
    maxBytes: OFREP_MAX_BODY_BYTES,
    contentLength: request.headers.get("content-length"),
  });
  // Invalid UTF-8 becomes U+FFFD, which then fails as JSON (PARSE_ERROR) or as a value.
  return new TextDecoder().decode(bytes);
}

function respond(answer: OfrepAnswer, cacheControl: string): Response {
  const headers = new Headers({ "cache-control": cacheControl });
  if (answer.etag) headers.set("etag", answer.etag);
  if (answer.status === 304) return new Response(null, { status: 304, headers });
  headers.set("content-type", "application/json");
  return new Response(JSON.stringify(answer.body), { status: answer.status, headers });
}
