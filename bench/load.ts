/**
 * @module
 * `deno task bench:load`: the personalized proxy path of the service against a bare Deno fetch
 * proxy, the hand-written peer (`bench/peer.ts`) and nginx (when installed), same origin, same
 * load, same run; and with `--mode context`
 * (`deno task bench:context`), `GET /_edge/context` against a bare `Deno.serve` JSON response;
 * with `--mode exposures` (`deno task bench:exposures`), the same proxied request from a new
 * visitor every time, with exposure events sent to a receiver on loopback against exposures off.
 * Everything listens on 127.0.0.1 and stops by itself.
 *
 * Options: `--duration S` (measured seconds per target per round, default 10), `--rounds N`
 * (default 3, target order rotated each round), `--warmup S` (default 3), `--connections N`
 * (default 32), `--generator auto|wrk|deno`, `--mode proxy|context|exposures|all`, `--no-nginx`,
 * `--log-level L` (the service's LOG_LEVEL, default warn).
 */
import {
  bound,
  cpuLayout,
  fmt,
  freePort,
  hasCommand,
  machineInfo,
  median,
  newSyncSecret,
  numberArg,
  Processes,
  readCpuMs,
  readRss,
  relative,
  runGenerator,
  SCENARIO_HEADERS,
  SCENARIO_PATH,
  seedUser,
  startBareProxy,
  startBareServer,
  startExposureReceiver,
  startNginx,
  startOrigin,
  startService,
  stringArg,
  table,
  type Target,
  waitForHttp,
  writeResults,
} from "./harness.ts";
import type { LoadResult } from "./load_gen.ts";

const args = Deno.args;
const durationSec = numberArg(args, "duration", 10);
const rounds = Math.round(numberArg(args, "rounds", 3));
const warmupSec = numberArg(args, "warmup", 3);
const connections = Math.round(numberArg(args, "connections", 32));
const mode = stringArg(args, "mode") ?? "proxy";
const generatorArg = stringArg(args, "generator") ?? "auto";
const logLevel = stringArg(args, "log-level") ?? "warn";
const withNginx = !args.includes("--no-nginx");
if (!["proxy", "context", "exposures", "all"].includes(mode)) {
  throw new Error(`--mode must be proxy, context, exposures or all`);
}
if (!["auto", "wrk", "deno"].includes(generatorArg)) throw new Error(`--generator must be auto, wrk or deno`);

const hasWrk = await hasCommand("wrk");
if (generatorArg === "wrk" && !hasWrk) throw new Error("--generator wrk: wrk is not installed");
const generator: "wrk" | "deno" = generatorArg === "deno" ? "deno" : hasWrk ? "wrk" : "deno";
const hasNginx = withNginx && await hasCommand("nginx");
const layout = await cpuLayout();

const processes = new Processes();
const maxTargets = 4 + 2 + 2;
const cancelDeadline = bound(processes, 180 + maxTargets * (warmupSec + rounds * (durationSec + 3)));
const tempDir = await Deno.makeTempDir({ prefix: "edge-bench-load-" });

/** One target's measurements. */
interface Measured {
  target: Target;
  /** The path loaded. */
  path: string;
  /** What the target was checked to answer before the run. */
  check: string;
  rounds: Round[];
}

/** One measured round, with CPU time per request of the server under test and of the origin. */
interface Round extends LoadResult {
  serverCpuUsPerRequest: number;
  originCpuUsPerRequest: number;
}

interface Summary {
  name: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  peakRssMb: number;
  serverCpuUsPerRequest: number;
  originCpuUsPerRequest: number;
  rounds: Round[];
  check: string;
}

/** Starts the hand-written peer (`bench/peer.ts`) in front of `originUrl`. */
async function startPeer(originUrl: string, cpus: string | undefined): Promise<Target> {
  const port = freePort();
  const proc = processes.spawn("peer", Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "bench/peer.ts",
      "--origin",
      originUrl,
      "--port",
      String(port),
      "--kv",
      `${tempDir}/kv-peer.sqlite`,
    ],
    cpus,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/api/products`, proc);
  return { name: "peer", url, proc, peakRss: () => readRss(proc.pid), cpuMs: () => readCpuMs(proc.pid) };
}

/** Numbers the distinct visitors across runs, so that no run repeats another's. */
let nextVisitor = 0;

async function measure(
  measured: Measured[],
  headers: Record<string, string>,
  origin: Target,
  options: { distinct?: boolean } = {},
): Promise<Summary[]> {
  const load = (m: Measured, seconds: number) => {
    const distinctFrom = nextVisitor;
    nextVisitor += 50_000_000;
    // Only the Deno generator gives each request its own visitor.
    return runGenerator(options.distinct ? "deno" : generator, `${m.target.url}${m.path}`, {
      connections,
      durationSec: seconds,
      headers,
      cpus: layout.load,
      distinct: options.distinct,
      distinctFrom,
    });
  };
  for (const m of measured) {
    console.log(`  warming up ${m.target.name} for ${warmupSec} s`);
    await load(m, warmupSec);
  }
  for (let round = 0; round < rounds; round++) {
    // Rotate the order each round so that drift on a shared machine does not favour one target.
    const order = measured.map((_, i) => measured[(i + round) % measured.length]!);
    for (const m of order) {
      const [server0, origin0] = [await m.target.cpuMs(), await origin.cpuMs()];
      const loaded = await load(m, durationSec);
      const [server1, origin1] = [await m.target.cpuMs(), await origin.cpuMs()];
      const result: Round = {
        ...loaded,
        serverCpuUsPerRequest: ((server1 - server0) * 1000) / loaded.requests,
        originCpuUsPerRequest: m.path.startsWith("/_edge") || m.target.name.startsWith("bare-")
          ? 0
          : ((origin1 - origin0) * 1000) / loaded.requests,
      };
      m.rounds.push(result);
      console.log(
        `  round ${round + 1}/${rounds} ${m.target.name.padEnd(8)} ${fmt(result.rps, 0)} req/s  p50 ${
          fmt(result.p50Ms, 3)
        } ms  p99 ${fmt(result.p99Ms, 3)} ms  errors ${result.non2xx + result.socketErrors}  server CPU ${
          fmt(result.serverCpuUsPerRequest, 0)
        } µs/req`,
      );
    }
  }
  const summaries: Summary[] = [];
  for (const m of measured) {
    summaries.push({
      name: m.target.name,
      rps: median(m.rounds.map((r) => r.rps)),
      p50Ms: median(m.rounds.map((r) => r.p50Ms)),
      p99Ms: median(m.rounds.map((r) => r.p99Ms)),
      errors: m.rounds.reduce((sum, r) => sum + r.non2xx + r.socketErrors, 0),
      peakRssMb: (await m.target.peakRss()) / 1048576,
      serverCpuUsPerRequest: median(m.rounds.map((r) => r.serverCpuUsPerRequest)),
      originCpuUsPerRequest: median(m.rounds.map((r) => r.originCpuUsPerRequest)),
      rounds: m.rounds,
      check: m.check,
    });
  }
  return summaries;
}

function printSummary(title: string, summaries: Summary[], subject: string, baselines: string[]): object {
  console.log(`\n${title}`);
  console.log(table(
    ["target", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MB", "server CPU µs/req"],
    summaries.map((s) => [
      s.name,
      fmt(s.rps, 0),
      fmt(s.p50Ms, 3),
      fmt(s.p99Ms, 3),
      String(s.errors),
      fmt(s.peakRssMb, 1),
      fmt(s.serverCpuUsPerRequest, 0),
    ]),
  ));
  const subjectSummary = summaries.find((s) => s.name === subject);
  const ratios: Record<string, unknown> = {};
  for (const base of baselines) {
    const b = summaries.find((s) => s.name === base);
    if (!subjectSummary || !b) {
      console.log(`${subject}/${base}: not available`);
      continue;
    }
    const rpsRatio = subjectSummary.rps / b.rps;
    const p50Delta = subjectSummary.p50Ms - b.p50Ms;
    const cpuRatio = subjectSummary.serverCpuUsPerRequest / b.serverCpuUsPerRequest;
    ratios[`${subject}/${base}`] = {
      rps: rpsRatio,
      serverCpuPerRequest: cpuRatio,
      p50DeltaMs: p50Delta,
      p99DeltaMs: subjectSummary.p99Ms - b.p99Ms,
    };
    console.log(
      `${subject}/${base}: ${fmt(rpsRatio, 3)}× req/s, p50 ${p50Delta >= 0 ? "+" : ""}${
        fmt(p50Delta, 3)
      } ms, p99 ${subjectSummary.p99Ms - b.p99Ms >= 0 ? "+" : ""}${
        fmt(subjectSummary.p99Ms - b.p99Ms, 3)
      } ms, ${fmt(cpuRatio, 2)}× server CPU per request`,
    );
  }
  return { summaries, ratios };
}

async function check(target: Target, path: string, headers: Record<string, string>): Promise<string> {
  const res = await fetch(`${target.url}${path}`, { headers, redirect: "manual" });
  const text = await res.text();
  if (!res.ok) throw new Error(`${target.name} answered ${res.status} to ${path}: ${text.slice(0, 300)}`);
  return text;
}

const results: Record<string, unknown> = {
  benchmark: "load",
  machine: await machineInfo(layout),
  settings: { durationSec, rounds, warmupSec, connections, generator, logLevel, mode },
};

/**
 * The proxied scenario from a new anonymous visitor on every request (every one an exposure of
 * the scenario's experiments), against a service with exposure events sent to a receiver on
 * loopback and the same service without.
 */
async function measureExposures(off: Target, origin: Target, syncSecret: string): Promise<object> {
  const receiver = await startExposureReceiver(processes, syncSecret, layout.origin);
  const on = await startService(processes, {
    originUrl: origin.url,
    kvPath: `${tempDir}/kv-exposures.sqlite`,
    syncSecret,
    cpus: layout.server,
    logLevel,
    env: { EXPOSURES_URL: receiver.exposuresUrl, EXPOSURES_SECRET: syncSecret },
  });
  const headers = { ...SCENARIO_HEADERS };
  const measured: Measured[] = [
    { target: { ...off, name: "exposures-off" }, path: SCENARIO_PATH, check: "200", rounds: [] },
    { target: { ...on, name: "exposures-on" }, path: SCENARIO_PATH, check: "200", rounds: [] },
  ];
  for (const m of measured) await check(m.target, SCENARIO_PATH, headers);
  console.log(`\nexposures: GET ${SCENARIO_PATH}, a new anonymous visitor every request (Deno generator)`);
  const summaries = await measure(measured, headers, origin, { distinct: true });
  const summary = printSummary("exposures on vs off", summaries, "exposures-on", ["exposures-off"]);
  // Whatever is still queued goes out within the flush interval.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const metrics = await (await fetch(`${on.url}/_edge/metrics`)).text();
  const events = Object.fromEntries(
    ["queued", "sent", "retried", "dropped"].map((result) => [
      result,
      Number(
        new RegExp(`^edge_exposure_events_total\\{result="${result}"\\} (\\S+)$`, "m").exec(metrics)?.[1] ??
          NaN,
      ),
    ]),
  );
  const received = await receiver.stats();
  console.log(
    `exposure events: ${events.queued} queued, ${events.sent} sent, ${events.retried} retried, ` +
      `${events.dropped} dropped; the receiver verified ${received.exposures} in ${received.batches} batches` +
      (received.rejected ? `, rejected ${received.rejected}` : ""),
  );
  await processes.stop(on.proc);
  await processes.stop(receiver.proc);
  return { ...summary, events, received };
}

try {
  console.log(
    `load benchmark: ${generator} generator, ${connections} connections, ${rounds} × ${durationSec} s per target`,
  );
  console.log(`  ${layout.description}${hasNginx ? "" : "; nginx not installed or disabled"}`);
  const origin = await startOrigin(processes, layout.origin);
  const syncSecret = newSyncSecret();
  const service = await startService(processes, {
    originUrl: origin.url,
    kvPath: `${tempDir}/kv.sqlite`,
    syncSecret,
    cpus: layout.server,
    logLevel,
  });
  const seedError = await seedUser(service.url, syncSecret);
  if (seedError) console.warn(`warning: could not seed the scenario user through sync: ${seedError}`);
  results.service = {
    rules: relative(service.rulesPath),
    rulesFallback: service.rulesFallback,
    seeded: !seedError,
  };

  if (mode === "proxy" || mode === "all") {
    const bare = await startBareProxy(processes, origin.url, layout.server);
    const peer = await startPeer(origin.url, layout.server);
    const targets: Target[] = [bare, peer, service];
    if (hasNginx) targets.push(await startNginx(processes, origin.url, tempDir, layout.server));
    const measured: Measured[] = [];
    for (const target of targets) {
      const body = await check(target, SCENARIO_PATH, { ...SCENARIO_HEADERS });
      let summary = "200";
      try {
        const json = JSON.parse(body);
        summary = `200, promotion for ${json.promotion?.region}${
          json.edge?.region ? `, origin saw x-edge-region ${json.edge.region}` : ""
        }`;
      } catch {
        // Not JSON: keep "200".
      }
      measured.push({ target, path: SCENARIO_PATH, check: summary, rounds: [] });
    }
    console.log(
      `\npersonalized proxy: GET ${SCENARIO_PATH} (logged-in, X-Forwarded-For in DE, region rewrite)`,
    );
    for (const m of measured) console.log(`  ${m.target.name}: ${m.check}`);
    const summaries = await measure(measured, { ...SCENARIO_HEADERS }, origin);
    results.proxy = printSummary("personalized proxy", summaries, "service", ["bare", "peer", "nginx"]);
    await processes.stop(bare.proc);
    await processes.stop(peer.proc);
  }

  if (mode === "context" || mode === "all") {
    const res = await fetch(`${service.url}/_edge/context`, { headers: { ...SCENARIO_HEADERS } });
    const text = await res.text();
    if (!res.ok || !(res.headers.get("content-type") ?? "").includes("json")) {
      console.log(`\n/_edge/context: not available (the service answered ${res.status})`);
      results.context = { available: false, status: res.status };
    } else {
      const bareJson = await startBareServer(processes, "json", layout.server);
      const measured: Measured[] = [
        { target: { ...bareJson, name: "bare-json" }, path: "/", check: "200", rounds: [] },
        {
          target: { ...service, name: "context" },
          path: "/_edge/context",
          check: `200, ${text.length} bytes`,
          rounds: [],
        },
      ];
      console.log(`\n/_edge/context vs a bare Deno.serve JSON response`);
      const summaries = await measure(measured, { ...SCENARIO_HEADERS }, origin);
      results.context = {
        available: true,
        ...printSummary("edge context", summaries, "context", ["bare-json"]),
      };
    }
  }
  if (mode === "exposures" || mode === "all") {
    results.exposures = await measureExposures(service, origin, syncSecret);
  }
  console.log(`\nresults: ${await writeResults("load", results)}`);
} finally {
  await processes.stopAll();
  cancelDeadline();
  await Deno.remove(tempDir, { recursive: true }).catch(() => {});
}
