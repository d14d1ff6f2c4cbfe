/**
 * @module
 * `deno task push`: publishes NDJSON sync events (a file, or stdin with `-` or no file) to one
 * or more edge endpoints, signed with `EDGE_SYNC_SECRET`, and reports per endpoint what was
 * delivered. Exits 1 when anything failed, 2 on a usage error.
 *
 * ```sh
 * EDGE_SYNC_SECRET=whsec_… deno task push --to http://localhost:8000 tools/demo_events.ndjson
 * ```
 */
import { parseArgs } from "node:util";
import {
  parseNdjson,
  publish,
  PublishInputError,
  rebaseInstants,
  STANDARD_RETRY_SCHEDULE_MS,
} from "../lib/publisher.ts";

const USAGE =
  `Usage: deno task push [--to URL]... [--secret whsec_…] [--schedule 0,5,300] [--max-bytes N] [FILE | -]

  --to URL        an edge base URL or its /_edge/sync URL; repeat to fan out (default: EDGE_SYNC_URLS, comma-separated)
  --secret S      the whsec_… signing secret (default: EDGE_SYNC_SECRET)
  --schedule L    seconds to wait before each attempt (default: the Standard Webhooks schedule)
  --max-bytes N   largest batch body (default 1048576; match the edge's SYNC_MAX_BYTES)
  --rebase-now    shift every at/expiresAt so the newest "at" is now (for demo and fixture files)
  FILE            NDJSON events, one per line; "-" or none reads stdin`;

function usage(message: string): never {
  console.error(`${message}\n\n${USAGE}`);
  Deno.exit(2);
}

function syncUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    usage(`Invalid URL "${value}"`);
  }
  if (url.pathname === "/" || url.pathname === "") url.pathname = "/_edge/sync";
  return url.href;
}

let args;
try {
  args = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      to: { type: "string", multiple: true },
      secret: { type: "string" },
      schedule: { type: "string" },
      "max-bytes": { type: "string" },
      "rebase-now": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
} catch (error) {
  usage((error as Error).message);
}
if (args.values.help) {
  console.log(USAGE);
  Deno.exit(0);
}

const targets = args.values.to?.length
  ? args.values.to
  : (Deno.env.get("EDGE_SYNC_URLS") ?? "").split(",").map((url) => url.trim()).filter(Boolean);
if (targets.length === 0) usage("No endpoint: pass --to URL or set EDGE_SYNC_URLS");
const endpoints = targets.map(syncUrl);

const secret = args.values.secret ?? Deno.env.get("EDGE_SYNC_SECRET") ?? "";
if (!/^whsec_[A-Za-z0-9+/=]+$/.test(secret)) {
  usage("No signing secret: pass --secret or set EDGE_SYNC_SECRET (whsec_…)");
}

let scheduleMs = STANDARD_RETRY_SCHEDULE_MS;
if (args.values.schedule !== undefined) {
  // Checked as text: `Number("")` is 0, so an empty list or an empty entry would pass as "at once".
  const parts = args.values.schedule.split(",").map((part) => part.trim());
  if (parts.some((part) => !/^\d+(?:\.\d+)?$/.test(part))) {
    usage(`--schedule must be comma-separated non-negative seconds, got "${args.values.schedule}"`);
  }
  scheduleMs = parts.map((seconds) => Number(seconds) * 1000);
}

const maxBytes = args.values["max-bytes"] === undefined ? undefined : Number(args.values["max-bytes"]);
if (maxBytes !== undefined && !(Number.isInteger(maxBytes) && maxBytes > 1024)) {
  usage(`--max-bytes must be a whole number above 1024, got "${args.values["max-bytes"]}"`);
}

const file = args.positionals[0];
const text = file === undefined || file === "-"
  ? await new Response(Deno.stdin.readable).text()
  : await Deno.readTextFile(file).catch((error) => usage(`Cannot read "${file}": ${error.message}`));

let events: unknown[];
try {
  events = parseNdjson(text);
} catch (error) {
  if (error instanceof PublishInputError) {
    console.error(error.message);
    Deno.exit(2);
  }
  throw error;
}

const report = await publish(args.values["rebase-now"] ? rebaseInstants(events, Date.now()) : events, {
  endpoints,
  secret,
  maxBytes,
  scheduleMs,
  fetch: globalThis.fetch,
  now: Date.now,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  random: Math.random,
  randomId: () => crypto.randomUUID(),
  onAttempt: (info) => {
    if (info.outcome !== "delivered") {
      console.error(
        `${info.endpoint} ${info.webhookId} attempt ${info.attempt}: ${info.outcome} (${info.detail})`,
      );
    }
  },
}).catch((error) => {
  // Bad input or an unusable secret: no retry could fix it.
  if (error instanceof PublishInputError) {
    console.error(error.message);
    Deno.exit(2);
  }
  throw error;
});

for (const endpoint of report.endpoints) {
  console.log(
    `${endpoint.endpoint}: delivered ${endpoint.deliveredEvents} events in ${endpoint.deliveredBatches} batches, ` +
      `failed ${endpoint.failedEvents} events in ${endpoint.failedBatches} batches${
        endpoint.gone ? " (gone)" : ""
      }`,
  );
  for (const failure of endpoint.errors) console.log(`  ${failure.webhookId}: ${failure.error}`);
}
console.log(JSON.stringify(report));
Deno.exit(report.ok ? 0 : 1);
