/**
 * @module
 * `deno task push`: publishes NDJSON sync events (a file, or stdin with `-` or no file) to one
 * or more edge endpoints, signed with `EDGE_SYNC_SECRET`, and reports per endpoint and batch
 * what the edge did with it (applied, stale, and the rules now active). Exits 1 when anything
 * failed or a rules, promote or rollback event changed nothing (unless `--allow-stale`), 2 on a
 * usage error.
 *
 * ```sh
 * EDGE_SYNC_SECRET=whsec_… deno task push --to http://localhost:8000 tools/demo_events.ndjson
 * ```
 */
import { parseArgs } from "node:util";
import {
  type AttemptInfo,
  type BatchReport,
  type EndpointReport,
  publish,
  STANDARD_RETRY_SCHEDULE_MS,
} from "./publisher.ts";
import { parseNdjson, PublishInputError, rebaseInstants } from "./publisher_events.ts";
import { webhookSecretProblem } from "../lib/sync/verify.ts";

const USAGE =
  `Usage: deno task push [--to URL]... [--secret whsec_…] [--schedule 0,5,300] [--max-bytes N] [FILE | -]

  --to URL        an edge base URL or its /_edge/sync URL; repeat to fan out (default: EDGE_SYNC_URLS, comma-separated)
  --secret S      the whsec_… signing secret (default: EDGE_SYNC_SECRET); make one with \`deno task secret\`
                  and give the same value to the edge's SYNC_SECRETS
  --schedule L    seconds to wait before each attempt (default: the Standard Webhooks schedule)
  --max-bytes N   largest batch body (default 1048576; match the edge's SYNC_MAX_BYTES)
  --rebase-now    shift every at/expiresAt so the newest "at" is now (for demo and fixture files)
  --allow-stale   exit 0 even when a rules, rules_promote or rules_rollback event changed nothing
  FILE            NDJSON events, one per line; "-" or none reads stdin

Exit status: 0 delivered; 1 a batch was not delivered, or a rule control event was stale; 2 usage or input error.`;

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
      "allow-stale": { type: "boolean" },
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

const secretFrom = args.values.secret !== undefined ? "--secret" : "EDGE_SYNC_SECRET";
const secret = (args.values.secret ?? Deno.env.get("EDGE_SYNC_SECRET") ?? "").trim();
if (secret === "") {
  usage("No signing secret: pass --secret or set EDGE_SYNC_SECRET (make one with `deno task secret`)");
}
const secretProblem = webhookSecretProblem(secret);
if (secretProblem !== undefined) {
  // The secret itself is never echoed.
  usage(`Malformed signing secret in ${secretFrom}: ${secretProblem} (make one with \`deno task secret\`)`);
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
    if (info.outcome !== "delivered") console.error(attemptLine(info));
  },
}).catch((error) => {
  // Bad input or an unusable secret: no retry could fix it.
  if (error instanceof PublishInputError) {
    console.error(error.message);
    Deno.exit(2);
  }
  throw error;
});

let staleRules = 0;
for (const endpoint of report.endpoints) {
  console.log(endpoint.endpoint);
  endpoint.batches.forEach((batch, index) =>
    console.log(`  ${batchLine(batch, index, endpoint.batches.length)}`)
  );
  console.log(`  ${totalsLine(endpoint)}`);
  staleRules += endpoint.batches.filter((batch) => rulesBatch(batch) && staleCount(batch) > 0).length;
}
console.log(JSON.stringify(report));
if (staleRules > 0) {
  console.error(
    `${plural(staleRules, "batch", "batches")} of rule control events changed nothing somewhere (stale): a ` +
      "rules push not newer than what the edge has, or a promote or rollback to a version it does not keep. " +
      "See the rules now active above; pass --allow-stale to accept this",
  );
}
Deno.exit(!report.ok || (staleRules > 0 && !args.values["allow-stale"]) ? 1 : 0);

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

function rulesBatch(batch: BatchReport): boolean {
  return Object.keys(batch.kinds).some((kind) => kind.startsWith("rules"));
}

function staleCount(batch: BatchReport): number {
  return batch.answer && "stale" in batch.answer ? batch.answer.stale : 0;
}

/** `batch 2 of 2 (1 event: rules_rollback): applied 0, stale 1; rules now: active 3, no canary`. */
function batchLine(batch: BatchReport, index: number, count: number): string {
  const kinds = Object.entries(batch.kinds).map(([kind, n]) => `${n} ${kind}`).join(", ");
  const head = `batch ${index + 1} of ${count} (${plural(batch.events, "event", "events")}: ${kinds})`;
  if (!batch.delivered) return `${head}: NOT delivered: ${batch.error}`;
  const answer = batch.answer;
  if (answer === undefined) return `${head}: delivered (the answer did not say what was applied)`;
  if ("duplicate" in answer) return `${head}: already applied (a duplicate webhook-id)`;
  let line = `${head}: applied ${answer.applied}, stale ${answer.stale}`;
  if (answer.rules === null) line += "; rules now: unknown (the edge could not read them)";
  else if (answer.rules) {
    const { active, canary } = answer.rules;
    line += `; rules now: active ${active ?? "none (the start-up rules)"}, ` +
      (canary
        ? `canary ${canary.version} for ${Math.round(canary.share * 1000) / 10} % of visitors`
        : "no canary");
  }
  return line;
}

function totalsLine(endpoint: EndpointReport): string {
  return `delivered ${plural(endpoint.deliveredEvents, "event", "events")} in ` +
    `${plural(endpoint.deliveredBatches, "batch", "batches")}, failed ` +
    `${plural(endpoint.failedEvents, "event", "events")} in ${
      plural(endpoint.failedBatches, "batch", "batches")
    }` +
    (endpoint.gone ? " (the endpoint answered 410 Gone)" : "");
}

/** `…/_edge/sync msg_…: attempt 1 of 8 failed (network error: connection refused); next attempt in 5 s (12:00:05 UTC)`. */
function attemptLine(info: AttemptInfo): string {
  const head = `${info.endpoint} ${info.webhookId}: attempt ${info.attempt} of ${info.attempts}`;
  const what = info.outcome === "gone" ? "endpoint gone" : "failed";
  let next = "";
  if (info.nextAttemptInMs === 0) next = "; next attempt at once";
  else if (info.nextAttemptInMs !== undefined) {
    const at = new Date(Date.now() + info.nextAttemptInMs).toISOString().slice(11, 19);
    next = `; next attempt in ${duration(info.nextAttemptInMs)} (at ${at} UTC)`;
  } else if (info.outcome === "retry") next = "; no attempts left";
  return `${head} ${what} (${info.detail})${next}`;
}

function duration(ms: number): string {
  const seconds = Math.round(ms / 100) / 10;
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 360) / 10} h`;
}
