/**
 * @module
 * The one mapping of a failed zod parse of a request to the house 400 body, naming each field.
 */
import { errorBody } from "../lib/http/errors.ts";

interface Issue {
  path: readonly PropertyKey[];
  message: string;
}

/** The house 400 body for zod's issues: each field and its problem, never the raw zod result. */
export function invalidRequestBody(issues: readonly Issue[]): ReturnType<typeof errorBody> {
  const fields = issues.map((issue) => ({
    field: issue.path.map(String).join(".") || "(root)",
    message: issue.message,
  }));
  const summary = fields.map((f) => `"${f.field}" ${f.message}`).join("; ");
  return errorBody("invalid_request", `Invalid request: ${summary}`, { fields });
}
