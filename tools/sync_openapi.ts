/**
 * @module
 * Writes `docs/sync_openapi.json`, the OpenAPI document of `POST /_edge/sync` that the edge also
 * serves at `/_edge/openapi.json`. Run with
 * `deno run --allow-write=docs/sync_openapi.json tools/sync_openapi.ts`; a test fails when the
 * committed file is out of date.
 */
import { SYNC_OPENAPI } from "../lib/sync/openapi.ts";

if (import.meta.main) {
  const path = "docs/sync_openapi.json";
  await Deno.writeTextFile(
    new URL(`../${path}`, import.meta.url),
    `${JSON.stringify(SYNC_OPENAPI, null, 2)}\n`,
  );
  console.log(`Wrote ${path}`);
}
