/**
 * @module
 * `deno task secret`: prints a fresh Standard Webhooks signing secret (`whsec_…`, 24 random
 * bytes) for the edge's `SYNC_SECRETS` and the publisher's `EDGE_SYNC_SECRET`.
 *
 * ```sh
 * deno task secret
 * ```
 */
import { generateWebhookSecret } from "../lib/sync/verify.ts";

if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
  console.log(`Usage: deno task secret

Prints a fresh signing secret. Give the same value to the edge (SYNC_SECRETS, comma-separated with
the old one while rotating) and to the publisher (EDGE_SYNC_SECRET or deno task push --secret).`);
  Deno.exit(0);
}
console.log(generateWebhookSecret((n) => crypto.getRandomValues(new Uint8Array(n))));
