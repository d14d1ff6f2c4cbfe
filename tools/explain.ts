/**
 * @module
 * `deno task explain`: what the edge would decide for a request, and why, against a rules file
 * with no service running — the same facts stage, identity stage and traced decision as
 * `GET /_edge/explain`, printed as text (default) or JSON (`--json`). The request arrives through
 * a trusted proxy unless `--untrusted`, so `--country`, `--ip` and `--user` act as a CDN's
 * headers would. QA headers (`x-edge-qa-variants`, `x-edge-qa-flags`, or `--qa-variants` and
 * `--qa-flags`) force as sent, labelled "forced (offline, token not checked)": offline there is
 * no `QA_TOKEN` to check, and no visitor to keep from forcing. Exits 1 when the rules or the
 * request are invalid (an unservable QA entry included), 2 on a usage error.
 *
 * ```sh
 * deno task explain --rules tools/demo_rules.json --path /checkout --country DE --ua "Mozilla/5.0 (iPhone…)"
 * ```
 */
import { parseArgs } from "node:util";
import { type CompiledRules, loadRulesFile, RulesError } from "../lib/rules/compile.ts";
import { RulesStore } from "../lib/rules/store.ts";
import { CidrList } from "../lib/http/net.ts";
import { type Facts, gatherFacts } from "../lib/pipeline/facts.ts";
import { DEFAULT_COUNTRY_HEADERS, REGION_HEADER } from "../lib/pipeline/geo.ts";
import { type Identity, resolveIdentity } from "../lib/pipeline/identity.ts";

/** Offline, the described peer plays the login proxy that names the user (`--user`). */
const USER_HEADER = "x-user-id";
import type { EdgeUserContext } from "../lib/pipeline/context.ts";
import { type IpGeoDb, openIpGeoDb } from "../lib/pipeline/ip_geo.ts";
import { EdgeError } from "../lib/http/errors.ts";
import { ExplainCollector } from "../lib/rules/explain.ts";
import { describedRequest, ExplainRequestSchema } from "../lib/rules/explain_request.ts";
import { formatExplanation } from "../lib/rules/explain_text.ts";
import { explainQa } from "../lib/rules/explain_qa.ts";
import { QA_FLAGS_HEADER, QA_VARIANTS_HEADER } from "../lib/pipeline/qa.ts";

const USAGE = `Usage: deno task explain --rules FILE [options]

  --rules FILE          the rules file (also the first positional argument)
  --canary FILE         a canary rule set, with --canary-share (0 < share < 1)
  --canary-share N      the canary's share of visitors
  --path PATH           the request path, query included (default "/")
  --method M            GET (default), HEAD, POST, PUT, PATCH, DELETE or OPTIONS
  -H, --header "N: V"   a request header (repeatable)
  --cookie "name=value" a cookie (repeatable), e.g. ep_uid=… or ep_exp=hero:b
  --ua TEXT             the User-Agent
  --country CC          the country a CDN names (sent as the x-geo-country header)
  --region NAME         a region a CDN names (x-geo-region)
  --ip ADDR             the client address (X-Forwarded-For), looked up in the IP database
  --user ID             a logged-in user named by the trusted proxy (x-user-id)
  --segment NAME        a profile segment of that user (repeatable)
  --qa-variants LIST    force variations as QA does, e.g. "hero=b,checkout=control"
                        (x-edge-qa-variants; offline the token is not checked)
  --qa-flags LIST       force flag values as QA does, e.g. "new-search=true" (x-edge-qa-flags)
  --untrusted           the request does not come through a trusted proxy
  --json                print the explanation as JSON`;

const PEER = "127.0.0.1";
const SESSION_COOKIE = "session";

function usage(message: string): never {
  console.error(`${message}\n\n${USAGE}`);
  Deno.exit(2);
}

function fail(message: string): never {
  console.error(message);
  Deno.exit(1);
}

async function loadRules(path: string): Promise<CompiledRules> {
  try {
    return await loadRulesFile(path, Deno.readTextFile);
  } catch (error) {
    if (error instanceof RulesError) fail(error.message);
    throw error;
  }
}

function parseFlags() {
  try {
    return parseArgs({
      args: Deno.args,
      allowPositionals: true,
      options: {
        rules: { type: "string" },
        canary: { type: "string" },
        "canary-share": { type: "string" },
        path: { type: "string" },
        method: { type: "string" },
        header: { type: "string", short: "H", multiple: true },
        cookie: { type: "string", multiple: true },
        ua: { type: "string" },
        country: { type: "string" },
        region: { type: "string" },
        ip: { type: "string" },
        user: { type: "string" },
        segment: { type: "string", multiple: true },
        "qa-variants": { type: "string" },
        "qa-flags": { type: "string" },
        untrusted: { type: "boolean" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    usage((error as Error).message);
  }
}

/** The request the flags describe, as `/_edge/explain` would take it in JSON. */
type Flags = ReturnType<typeof parseFlags>["values"];

function description(values: Flags): Record<string, unknown> {
  const headers: Record<string, string> = {};
  for (const entry of values.header ?? []) {
    const at = entry.indexOf(":");
    if (at <= 0) usage(`Invalid header "${entry}": use "Name: value"`);
    headers[entry.slice(0, at).trim()] = entry.slice(at + 1).trim();
  }
  if (values.ua !== undefined) headers["user-agent"] = values.ua;
  if (values.country !== undefined) headers["x-geo-country"] = values.country;
  if (values.region !== undefined) headers[REGION_HEADER] = values.region;
  if (values.ip !== undefined) headers["x-forwarded-for"] = values.ip;
  if (values.user !== undefined) headers[USER_HEADER] = values.user;
  if (values["qa-variants"] !== undefined) headers[QA_VARIANTS_HEADER] = values["qa-variants"];
  if (values["qa-flags"] !== undefined) headers[QA_FLAGS_HEADER] = values["qa-flags"];
  const cookies: Record<string, string> = {};
  for (const entry of values.cookie ?? []) {
    const at = entry.indexOf("=");
    if (at <= 0) usage(`Invalid cookie "${entry}": use "name=value"`);
    cookies[entry.slice(0, at).trim()] = entry.slice(at + 1).trim();
  }
  return {
    path: values.path ?? "/",
    method: (values.method ?? "GET").toUpperCase(),
    headers,
    ...(Object.keys(cookies).length ? { cookies } : {}),
  };
}

async function main(): Promise<void> {
  const { values, positionals } = parseFlags();
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const rulesPath = values.rules ?? positionals[0];
  if (!rulesPath) usage("No rules file: pass --rules FILE");
  const store = await rulesStoreFor(rulesPath, values);
  const parsed = ExplainRequestSchema.safeParse(description(values));
  if (!parsed.success) {
    usage(parsed.error.issues.map((issue) => `"${issue.path.join(".")}" ${issue.message}`).join("; "));
  }
  const { request, peer } = describedRequest(parsed.data, {
    url: "http://localhost/",
    headers: new Headers(),
    peer: PEER,
  });
  const ipGeo = values.ip === undefined ? undefined : openGeo();
  const trace = new ExplainCollector();
  const facts = factsFor(request, peer, { untrusted: values.untrusted === true, ipGeo, trace });
  // No store: a session cookie names nobody, as an unknown session would.
  const kv = await Deno.openKv(":memory:");
  try {
    const identity = await resolveIdentity(request.headers, {
      kv,
      now: Date.now(),
      sessionCookie: SESSION_COOKIE,
      userIdHeader: facts.peerTrusted ? USER_HEADER : undefined,
      randomId: () => crypto.randomUUID(),
    });
    const { context, contextWhy } = offlineContext(identity, facts, values.segment);
    const qa = explainQa(request.headers, {
      token: undefined,
      rules: store.rulesFor(identity.key),
      offline: true,
    });
    // The service would answer 400: the trace of a request it never decides is no help.
    if (qa.error) fail(`The edge would answer ${qa.error.status} ${qa.error.code}: ${qa.error.message}`);
    const { explanation } = trace.explain({
      qa,
      request,
      facts,
      identity,
      context,
      rules: store,
      sessionCookie: SESSION_COOKIE,
      ipGeoLoaded: ipGeo !== undefined,
      contextWhy,
    });
    const text = values.json ? `${JSON.stringify(explanation, null, 2)}\n` : formatExplanation(explanation);
    await Deno.stdout.write(new TextEncoder().encode(text));
  } finally {
    kv.close();
  }
}

/** The request's facts, or the error answer the edge would give instead. */
function factsFor(
  request: Request,
  peer: string,
  options: { untrusted: boolean; ipGeo: IpGeoDb | undefined; trace: ExplainCollector },
): Facts {
  try {
    return gatherFacts(request, peer, {
      trustedProxies: new CidrList(options.untrusted ? [] : [`${PEER}/32`]),
      cdnSecret: undefined,
      countryHeaders: DEFAULT_COUNTRY_HEADERS,
      requestId: "explain",
      ipGeo: options.ipGeo,
      trace: options.trace,
    });
  } catch (error) {
    if (error instanceof EdgeError) {
      fail(`The edge would answer ${error.status} ${error.code}: ${error.message}`);
    }
    throw error;
  }
}

/** The rules to explain against, with `--canary` running beside them. */
async function rulesStoreFor(rulesPath: string, values: Flags): Promise<RulesStore> {
  const store = new RulesStore(await loadRules(rulesPath));
  if (values.canary !== undefined) {
    const share = Number(values["canary-share"]);
    if (!(share > 0 && share < 1)) usage('--canary needs --canary-share between 0 and 1, e.g. "0.1"');
    const canary = await loadRules(values.canary);
    store.set({ active: store.current, canary: { rules: canary, share } });
  } else if (values["canary-share"] !== undefined) usage("--canary-share needs --canary FILE");
  return store;
}

// Only worth opening for an address that is not the (private) peer.
function openGeo(): IpGeoDb | undefined {
  try {
    return openIpGeoDb(Deno.openSync);
  } catch (error) {
    console.error(`${(error as Error).message}; countries come from --country only`);
    return undefined;
  }
}

/** The context an offline explanation uses (segments from `--segment`), and why. */
function offlineContext(
  identity: Identity,
  facts: Facts,
  segmentFlag: string[] | undefined,
): { context: EdgeUserContext; contextWhy: string } {
  const segments = identity.userId !== undefined && !facts.gpc ? segmentFlag ?? [] : [];
  const context: EdgeUserContext = {
    recentViews: [],
    cartItemIds: [],
    segments,
    attributes: {},
    source: "none",
    outcome: {
      cache: "bypass",
      kv: "skipped",
      backend: "skipped",
      stale: false,
      ...(identity.userId === undefined
        ? { reason: "anonymous" as const }
        : facts.gpc
        ? { reason: "gpc" as const }
        : {}),
    },
  };
  const contextWhy = identity.userId === undefined
    ? `None: the visitor is anonymous${segmentFlag?.length ? " (--segment needs --user)" : ""}`
    : facts.gpc
    ? "None: the visitor sent Sec-GPC: 1 (no behavioural data is used)"
    : `Offline: segments from --segment ${JSON.stringify(segments)}`;
  return { context, contextWhy };
}

if (import.meta.main) await main();
