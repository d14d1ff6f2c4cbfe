/**
 * @module
 * Writes `docs/sync_openapi.json` (a test fails when it is out of date); run with
 * `deno run --allow-write=docs/sync_openapi.json tools/sync_openapi.ts`.
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
