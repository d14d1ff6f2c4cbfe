/**
 * @module
 * Writes `docs/rules.schema.json`, the JSON Schema of the rule set generated from its zod schema,
 * for editors (`"$schema": "./docs/rules.schema.json"` in a rules file). Run with
 * `deno task rules:schema`; a test fails when the committed file is out of date.
 */
import { rulesJsonSchema } from "../lib/rules/schema.ts";

/** Where the schema is written, relative to the repository root. */
export const RULES_SCHEMA_PATH = "docs/rules.schema.json";

/**
 * The text of `docs/rules.schema.json`: the generated schema, pretty-printed, with a final newline.
 *
 * @returns the file content
 */
export function rulesSchemaText(): string {
  return `${JSON.stringify(rulesJsonSchema(), null, 2)}\n`;
}

if (import.meta.main) {
  const target = new URL(`../${RULES_SCHEMA_PATH}`, import.meta.url);
  await Deno.writeTextFile(target, rulesSchemaText());
  console.log(`Wrote ${RULES_SCHEMA_PATH}`);
}
