/**
 * @module
 * The one mapping of a failed zod parse of a request to the house 400 body, naming each field,
 * so no route sends the raw zod result.
 */
import { errorBody } from "../lib/http/errors.ts";

/** A validation issue, as zod reports it (only the parts used here). */
interface Issue {
  path: readonly PropertyKey[];
  message: string;
}

/**
 * The house 400 body for failed validation: `invalid_request`, each field and its problem.
 *
 * @param issues the validation issues (zod's)
 * @returns the error body
 */
export function invalidRequestBody(issues: readonly Issue[]): ReturnType<typeof errorBody> {
  const fields = issues.map((issue) => ({
    field: issue.path.map(String).join(".") || "(root)",
    message: issue.message,
  }));
  const summary = fields.map((f) => `"${f.field}" ${f.message}`).join("; ");
  return errorBody("invalid_request", `Invalid request: ${summary}`, { fields });
}
