/**
 * @module
 * `deno task bench:regions`: why personalize at the edge. A central backend and the origin are
 * put `--rtt-ms` (default 150) away with delay proxies on loopback, and the latency a visitor
 * sees is measured for:
 *
 * - (a) central: the personalization runs next to the origin, far from the visitor — every
 *   request crosses the distance (a service instance behind a delay proxy; once with keep-alive,
 *   once with a new connection per request, which pays the TCP handshake too);
 * - (b) edge with data: the edge answers from what it has in KV — `GET /_edge/context` when it
 *   exists, else the edge-served redirect `/old-sale` as a stand-in for an edge-decided response;
 *   also, for reference, the edge proxying a personalized page to the far origin;
 * - (c) edge on a cache miss: a logged-in user the edge knows nothing about, so it reads through
 *   to the far backend (`BACKEND_URL`) — "not available" when the service does not call it.
 *
 * Prints p50/p95/p99 per scenario. Options: `--requests N` (default 200 per scenario),
 * `--connections N` (default 4), `--rtt-ms N`.
 */
import {
  bound,
  cpuLayout,
  fmt,
  freePort,
  machineInfo,
  newSyncSecret,
  numberArg,
  type Proc,
  Processes,
  pushEvents,
  relative,
  runGenerator,
  SCENARIO_HEADERS,
  SCENARIO_PATH,
  seedUser,
  startOrigin,
  startService,
  table,
  waitForHttp,
  waitForPort,
  writeResults,
} from "./harness.ts";
import type { LoadResult } from "./load_gen.ts";

const requests = Math.round(numberArg(Deno.args, "requests", 200));
const connections = Math.round(numberArg(Deno.args, "connections", 4));
const rttMs = numberArg(Deno.args, "rtt-ms", 150);
const layout = await cpuLayout();
const processes = new Processes();
const farSeconds = (requests / connections) * (rttMs / 1000) * 2;
const cancelDeadline = bound(processes, 180 + farSeconds * 5);
const tempDir = await Deno.makeTempDir({ prefix: "edge-bench-regions-" });
const BACKEND_TOKEN = "bench-backend-token-0123456789";
const READ_THROUGH_SESSION = "rt-session-";

async function startDelayProxy(name: string, to: string): Promise<{ url: string; proc: Proc }> {
  const port = freePort();
  const proc = processes.spawn(name, Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "bench/delay_proxy.ts",
      "--port",
      String(port),
      "--to",
      to,
      "--rtt-ms",
      String(rttMs),
    ],
    cpus: layout.origin,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForPort(port, proc);
  return { url, proc };
}

/** Measures one scenario after a short warm-up. */
function scenario(url: string, headers: Record<string, string>, extra: { sessionPrefix?: string } = {}) {
  return async (): Promise<LoadResult> => {
    if (extra.sessionPrefix === undefined) {
      await runGenerator("deno", url, { connections, requests: connections * 4, headers, cpus: layout.load });
    }
    return await runGenerator("deno", url, {
      connections,
      requests,
      headers,
      cpus: layout.load,
      sessionPrefix: extra.sessionPrefix,
    });
  };
}

const results: Record<string, unknown> = {
  benchmark: "regions",
  machine: await machineInfo(layout),
  settings: { requests, connections, rttMs },
};

try {
  console.log(
    `regions: origin and central backend ${rttMs} ms RTT away; ${requests} requests per scenario, ${connections} connections`,
  );
  const origin = await startOrigin(processes, layout.origin);
  const syncSecret = newSyncSecret();

  // (a) The central deployment: personalization next to the origin, far from the visitor.
  const central = await startService(processes, {
    originUrl: origin.url,
    kvPath: `${tempDir}/central.sqlite`,
    syncSecret,
    cpus: layout.server,
  });
  const centralSeed = await seedUser(central.url, syncSecret);
  if (centralSeed) console.warn(`warning: could not seed the central service: ${centralSeed}`);
  const centralFar = await startDelayProxy("delay → central", new URL(central.url).host);

  // The edge: near the visitor, the origin and the backend far away.
  const originFar = await startDelayProxy("delay → origin", new URL(origin.url).host);
  const backendPort = freePort();
  const backend = processes.spawn("fake backend", Deno.execPath(), {
    args: ["run", "--allow-net", "bench/fake_backend.ts", String(backendPort), BACKEND_TOKEN],
    cpus: layout.origin,
  });
  await waitForHttp(`http://127.0.0.1:${backendPort}/stats`, backend);
  const backendFar = await startDelayProxy("delay → backend", `127.0.0.1:${backendPort}`);
  const edge = await startService(processes, {
    originUrl: originFar.url,
    kvPath: `${tempDir}/edge.sqlite`,
    syncSecret,
    cpus: layout.server,
    env: {
      BACKEND_URL: backendFar.url,
      BACKEND_TOKEN,
      // The default (300 ms) is below a new connection's cost at this distance (2 RTT).
      BACKEND_TIMEOUT_MS: String(Math.max(1000, rttMs * 4)),
    },
  });
  const edgeSeed = await seedUser(edge.url, syncSecret);
  if (edgeSeed) console.warn(`warning: could not seed the edge: ${edgeSeed}`);
  // Sessions only (no views, no profile) for the read-through users: known users, unknown context.
  const now = Date.now();
  const sessions = Array.from({ length: requests + 1 }, (_, i) => ({
    kind: "session",
    sessionId: `${READ_THROUGH_SESSION}${i}`,
    userId: `rt-user-${i}`,
    expiresAt: new Date(now + 86_400_000).toISOString(),
    at: new Date(now).toISOString(),
  }));
  const sessionSeed = await pushEvents(edge.url, syncSecret, sessions);
  if (sessionSeed) console.warn(`warning: could not seed read-through sessions: ${sessionSeed}`);

  const contextRes = await fetch(`${edge.url}/_edge/context`, { headers: { ...SCENARIO_HEADERS } });
  await contextRes.body?.cancel();
  const hasContext = contextRes.ok && (contextRes.headers.get("content-type") ?? "").includes("json");
  const edgePath = hasContext ? "/_edge/context" : "/old-sale";

  // Does the edge read through? Ask about the last seeded user and see whether the backend was called.
  const calls = async () =>
    ((await (await fetch(`http://127.0.0.1:${backendPort}/stats`)).json()) as { contextCalls: number })
      .contextCalls;
  const before = await calls();
  const probe = await fetch(`${edge.url}${hasContext ? "/_edge/context" : SCENARIO_PATH}`, {
    headers: { ...SCENARIO_HEADERS, cookie: `sid=${READ_THROUGH_SESSION}${requests}` },
  });
  await probe.body?.cancel();
  const readThrough = (await calls()) > before;

  const { cookie: _cookie, ...noCookie } = SCENARIO_HEADERS;
  const rows: { key: string; label: string; run?: () => Promise<LoadResult>; note?: string }[] = [
    {
      key: "central",
      label: `(a) central, keep-alive: GET ${SCENARIO_PATH}`,
      run: scenario(`${centralFar.url}${SCENARIO_PATH}`, { ...SCENARIO_HEADERS }),
    },
    {
      key: "centralNewConnection",
      label: "(a) central, new connection per request",
      run: scenario(`${centralFar.url}${SCENARIO_PATH}`, { ...SCENARIO_HEADERS, connection: "close" }),
    },
    {
      key: "edgeWithData",
      label: `(b) edge with data: GET ${edgePath}${
        hasContext ? "" : " (edge redirect; no /_edge/context yet)"
      }`,
      run: scenario(`${edge.url}${edgePath}`, { ...SCENARIO_HEADERS }),
    },
    {
      key: "edgeToFarOrigin",
      label: `(b) edge, page from the far origin: GET ${SCENARIO_PATH}`,
      run: scenario(`${edge.url}${SCENARIO_PATH}`, { ...SCENARIO_HEADERS }),
    },
    readThrough
      ? {
        key: "edgeReadThrough",
        label: `(c) edge, cache miss + read-through: GET ${hasContext ? "/_edge/context" : SCENARIO_PATH}`,
        run: scenario(`${edge.url}${hasContext ? "/_edge/context" : SCENARIO_PATH}`, noCookie, {
          sessionPrefix: READ_THROUGH_SESSION,
        }),
      }
      : {
        key: "edgeReadThrough",
        label: "(c) edge, cache miss + read-through",
        note: "not available (the edge did not call BACKEND_URL)",
      },
  ];

  const measured: Record<string, unknown> = {};
  const tableRows: string[][] = [];
  for (const row of rows) {
    if (!row.run) {
      console.log(`  ${row.label}: ${row.note}`);
      measured[row.key] = { label: row.label, available: false, note: row.note };
      tableRows.push([row.label, "—", "—", "—", "—", "n/a"]);
      continue;
    }
    const result = await row.run();
    console.log(`  ${row.label}: p50 ${fmt(result.p50Ms, 1)} ms, p99 ${fmt(result.p99Ms, 1)} ms`);
    measured[row.key] = { label: row.label, available: true, ...result };
    tableRows.push([
      row.label,
      String(result.requests),
      fmt(result.p50Ms, 2),
      fmt(result.p95Ms, 2),
      fmt(result.p99Ms, 2),
      String(result.non2xx + result.socketErrors),
    ]);
  }
  console.log();
  console.log(table(["scenario", "requests", "p50 ms", "p95 ms", "p99 ms", "errors"], tableRows));
  for (const row of rows) if (!row.run) console.log(`${row.label}: ${row.note}`);
  console.log("targets: edge with data p50 < 5 ms and p99 < 20 ms; central ≥ 300 ms");
  Object.assign(results, {
    rules: relative(edge.rulesPath),
    contextEndpoint: hasContext,
    readThrough,
    scenarios: measured,
  });
  console.log(`\nresults: ${await writeResults("regions", results)}`);
} finally {
  await processes.stopAll();
  cancelDeadline();
  await Deno.remove(tempDir, { recursive: true }).catch(() => {});
}
