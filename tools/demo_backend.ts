/**
 * @module
 * The demo central backend of `deno task dev`: the two endpoints the edge calls.
 * - `POST /edge/exposures` receives exposure batches, verifies each with the `standardwebhooks`
 *   library (as a backend in any language would with its own), drops repeated `webhook-id`s and
 *   prints one line per exposure.
 * - `GET /edge/users/{userId}/context` (Bearer token) is the read-through: the demo activity of
 *   that user in the sync wire format, times moved to now, or 404 for a user it does not know.
 * `GET /stats` counts what it received (for benchmarks).
 *
 * Run alone: `deno run --allow-net --allow-read tools/demo_backend.ts --port 8090
 * --exposures-secret whsec_… --token … [--quiet]`.
 */
import { parseArgs } from "node:util";
import { Webhook } from "standardwebhooks";
import { readAtMost } from "../lib/http/body.ts";
import { parseNdjson, rebaseInstants } from "./publisher_events.ts";

/** Largest exposure batch read (a 10 000-event batch is about 3 MB). */
const MAX_BATCH_BYTES = 8 * 1024 * 1024;
/** Batch ids remembered for deduplication. */
const SEEN_IDS_MAX = 10_000;
/** Read-through event kinds: a user's own activity (sessions and erasures come by sync). */
const USER_KINDS = new Set(["view", "cart", "profile"]);

/** Options for {@linkcode demoBackendHandler}. */
export interface DemoBackendOptions {
  /** The `whsec_…` secret the edge signs exposure batches with (`EXPOSURES_SECRET`). */
  exposuresSecret: string;
  /** The Bearer token the edge sends on read-through (`BACKEND_TOKEN`). */
  token: string;
  /** Events in the sync wire format the read-through answers from (already rebased). */
  events: readonly unknown[];
  /** Where each exposure line goes (default: nowhere). */
  print?: (line: string) => void;
}

/** What the demo backend has received. */
export interface DemoBackendStats {
  batches: number;
  duplicates: number;
  rejected: number;
  exposures: number;
  contextCalls: number;
}

/**
 * The demo backend's request handler. A factory longer than ~60 lines because its two named
 * handlers share the counters and the replay set; each is short.
 *
 * @param options the secret, the token, the read-through data and the printer
 * @returns the handler and its counters
 */
export function demoBackendHandler(
  options: DemoBackendOptions,
): { handler: (request: Request) => Promise<Response>; stats: DemoBackendStats } {
  const webhook = new Webhook(options.exposuresSecret);
  const print = options.print ?? (() => {});
  const stats: DemoBackendStats = { batches: 0, duplicates: 0, rejected: 0, exposures: 0, contextCalls: 0 };
  const seen = new Set<string>();
  const remember = (id: string) => {
    seen.add(id);
    if (seen.size > SEEN_IDS_MAX) seen.delete(seen.values().next().value!);
  };

  async function receiveExposures(request: Request): Promise<Response> {
    const bytes = await readAtMost(request.body, {
      maxBytes: MAX_BATCH_BYTES,
      contentLength: request.headers.get("content-length"),
    });
    if (bytes === undefined) return error(413, "payload_too_large", "The batch is too large");
    let payload: unknown;
    try {
      payload = webhook.verify(new TextDecoder().decode(bytes), Object.fromEntries(request.headers));
    } catch {
      stats.rejected++;
      print("exposure batch rejected: the signature does not verify");
      return error(401, "invalid_signature", "No valid signature");
    }
    const id = request.headers.get("webhook-id")!;
    if (seen.has(id)) {
      stats.duplicates++;
      print(`exposure batch ${id} received again: ignored`);
      return Response.json({ duplicate: true });
    }
    const exposures = exposuresOf(payload);
    if (exposures === undefined) return error(400, "invalid_payload", 'Expected an "edge.exposures" batch');
    remember(id);
    stats.batches++;
    stats.exposures += exposures.length;
    for (const exposure of exposures) print(exposureLine(exposure));
    return Response.json({ received: exposures.length });
  }

  function readThrough(request: Request, userId: string): Response {
    if (request.headers.get("authorization") !== `Bearer ${options.token}`) {
      return error(401, "unauthorized", "A valid backend token is required");
    }
    stats.contextCalls++;
    const events = options.events.filter((event) =>
      isRecord(event) && event.userId === userId && USER_KINDS.has(String(event.kind))
    );
    if (events.length === 0) return error(404, "not_found", "No such user");
    return Response.json({ events });
  }

  return {
    stats,
    handler: (request) => {
      const { pathname } = new URL(request.url);
      if (pathname === "/edge/exposures" && request.method === "POST") return receiveExposures(request);
      const user = /^\/edge\/users\/([^/]+)\/context$/.exec(pathname);
      if (user && request.method === "GET") {
        let userId: string;
        try {
          userId = decodeURIComponent(user[1]!);
        } catch {
          return Promise.resolve(error(404, "not_found", "No such user"));
        }
        return Promise.resolve(readThrough(request, userId));
      }
      if (pathname === "/stats" && request.method === "GET") return Promise.resolve(Response.json(stats));
      return Promise.resolve(error(404, "not_found", `Nothing at "${pathname}"`));
    },
  };
}

/**
 * The demo activity the read-through answers from: `tools/demo_events.ndjson` with its times
 * moved to now, and one user (`u4`) whose activity only the backend has, so that a request as
 * that user shows a read-through at work.
 *
 * @param readTextFile reads the events file
 * @param now the current time, epoch ms
 * @returns the events
 */
export async function demoBackendEvents(
  readTextFile: (path: string) => Promise<string>,
  now: number,
): Promise<unknown[]> {
  const demo = parseNdjson(await readTextFile("tools/demo_events.ndjson"));
  const backendOnly = [
    { kind: "view", userId: "u4", itemId: "p13", at: "2026-11-26T11:59:00Z" },
    { kind: "view", userId: "u4", itemId: "p42", at: "2026-11-26T11:58:00Z" },
    {
      kind: "profile",
      userId: "u4",
      version: 1,
      at: "2026-11-26T11:00:00Z",
      segments: ["returning"],
      attributes: { locale: "fr-FR" },
    },
  ];
  return rebaseInstants([...demo, ...backendOnly], now);
}

function exposuresOf(payload: unknown): Record<string, unknown>[] | undefined {
  if (!isRecord(payload) || payload.type !== "edge.exposures" || !isRecord(payload.data)) return undefined;
  const exposures = payload.data.exposures;
  return Array.isArray(exposures) && exposures.every(isRecord) ? exposures : undefined;
}

function exposureLine(exposure: Record<string, unknown>): string {
  const text = (value: unknown) => String(value ?? "-").replace(/[^\x20-\x7e]/g, "?").slice(0, 128);
  const who = exposure.userId === undefined
    ? `visitor ${text(exposure.visitor)}`
    : `user ${text(exposure.userId)}`;
  return `exposure: ${text(exposure.experiment)}=${text(exposure.variation)}  ${who}  ` +
    `${text(exposure.region)}/${text(exposure.device)}  ${text(exposure.path)}  rules v${
      text(exposure.rulesVersion)
    }`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function error(status: number, code: string, message: string): Response {
  return Response.json({ error: { code, message } }, { status });
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string", default: "8090" },
      "exposures-secret": { type: "string" },
      token: { type: "string", default: "dev-only-backend-token-0000" },
      quiet: { type: "boolean", default: false },
    },
  });
  const secret = values["exposures-secret"];
  if (!secret) {
    console.error("Usage: demo_backend.ts --exposures-secret whsec_… [--port 8090] [--token T] [--quiet]");
    Deno.exit(2);
  }
  const { handler } = demoBackendHandler({
    exposuresSecret: secret,
    token: values.token,
    events: await demoBackendEvents(Deno.readTextFile, Date.now()),
    print: values.quiet ? undefined : (line) => console.log(line),
  });
  Deno.serve({ port: Number(values.port), hostname: "127.0.0.1", onListen: () => {} }, handler);
}
