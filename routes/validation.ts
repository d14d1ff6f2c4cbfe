/**
 * @module
 * The one validation hook every router uses with `@hono/zod-validator`, and the body it sends
 * (also used by the plain handlers): a failed parse becomes a 400 with the house error body
 * naming each field, never the raw zod result.
 */
import type { Context } from "hono";
import { errorBody } from "../lib/http/errors.ts";

/** The shape `@hono/zod-validator` hands to its hook on failure (only the parts used here). */
interface FailedResult {
  success: false;
  error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] };
}

/**
 * Hook for `zValidator(target, schema, validationHook)`.
 *
 * @param result the validation result
 * @param c the Hono context
 * @returns a 400 response when validation failed, else nothing
 */
export function validationHook(result: { success: true } | FailedResult, c: Context): Response | undefined {
  if (result.success) return undefined;
  c.header("cache-control", "no-store");
  return c.json(invalidRequestBody(result.error.issues), 400);
}

/**
 * The house 400 body for failed validation: `invalid_request`, each field and its problem.
 *
 * @param issues the validation issues (zod's)
 * @returns the error body
 */
export function invalidRequestBody(issues: FailedResult["error"]["issues"]): ReturnType<typeof errorBody> {
  const fields = issues.map((issue) => ({
    field: issue.path.map(String).join(".") || "(root)",
    message: issue.message,
  }));
  const summary = fields.map((f) => `"${f.field}" ${f.message}`).join("; ");
  return errorBody("invalid_request", `Invalid request: ${summary}`, { fields });
}
