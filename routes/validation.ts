/**
 * @module
 * The one validation hook every router uses with `@hono/zod-validator`: a failed parse becomes
 * a 400 with the house error body naming each field, never the raw zod result.
 */
import type { Context } from "hono";
import { errorBody } from "../lib/errors.ts";

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
  const fields = result.error.issues.map((issue) => ({
    field: issue.path.map(String).join(".") || "(root)",
    message: issue.message,
  }));
  const summary = fields.map((f) => `"${f.field}" ${f.message}`).join("; ");
  return c.json(errorBody("invalid_request", `Invalid request: ${summary}`, { fields }), 400);
}
