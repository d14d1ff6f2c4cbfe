/**
 * @module
 * Writes `docs/exposure.schema.json` (the JSON Schema of one exposure event) and
 * `docs/exposures_openapi.json` (the OpenAPI description of the outbound webhook), for backends
 * that receive exposure events. Run with `deno task exposures:schema`; a test fails when the
 * committed files are out of date.
 */
import { EXPOSURE_EVENT_SCHEMA } from "../lib/exposures/events.ts";
import { EXPOSURES_OPENAPI } from "../lib/exposures/openapi.ts";

/** Each generated file, relative to the repository root, and its content. */
export function exposureDocs(): { path: string; text: string }[] {
  return [
    { path: "docs/exposure.schema.json", text: `${JSON.stringify(EXPOSURE_EVENT_SCHEMA, null, 2)}\n` },
    { path: "docs/exposures_openapi.json", text: `${JSON.stringify(EXPOSURES_OPENAPI, null, 2)}\n` },
  ];
}

if (import.meta.main) {
  for (const { path, text } of exposureDocs()) {
    await Deno.writeTextFile(new URL(`../${path}`, import.meta.url), text);
    console.log(`Wrote ${path}`);
  }
}
