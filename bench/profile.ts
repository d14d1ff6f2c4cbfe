/**
 * @module
 * Where the service's time goes: runs the personalized load scenario against the service started
 * with `--inspect`, records a V8 CPU profile through the inspector protocol for `--duration S`
 * (default 10), prints the top functions by self time and the time per package/file, and writes
 * the `.cpuprofile` (openable in Chrome DevTools) to a temp dir.
 *
 * `deno run -A bench/profile.ts [--duration 10] [--path /api/products/promotions]`
 */
import {
  bound,
  cpuLayout,
  fmt,
  freePort,
  hasCommand,
  newSyncSecret,
  numberArg,
  Processes,
  ROOT,
  runGenerator,
  SCENARIO_HEADERS,
  SCENARIO_PATH,
  SCENARIO_RULES,
  seedUser,
  SERVICE_FLAGS,
  serviceEnv,
  sleep,
  startOrigin,
  stringArg,
  table,
  waitForHttp,
} from "./harness.ts";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const durationSec = numberArg(Deno.args, "duration", 10);
const path = stringArg(Deno.args, "path") ?? SCENARIO_PATH;
const layout = await cpuLayout();
const processes = new Processes();
const cancelDeadline = bound(processes, 120 + durationSec * 2);
const tempDir = await Deno.makeTempDir({ prefix: "edge-bench-profile-" });

/** A minimal Chrome DevTools Protocol client over the inspector WebSocket. */
function cdp(
  wsUrl: string,
): Promise<{ send: (method: string, params?: object) => Promise<unknown>; close: () => void }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    let nextId = 1;
    const pending = new Map<number, (value: unknown) => void>();
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data as string);
      if (message.id !== undefined) pending.get(message.id)?.(message.result);
    };
    ws.onerror = () => reject(new Error(`Cannot connect to the inspector at ${wsUrl}`));
    ws.onopen = () =>
      resolve({
        send: (method, params = {}) =>
          new Promise((done) => {
            const id = nextId++;
            pending.set(id, done);
            ws.send(JSON.stringify({ id, method, params }));
          }),
        close: () => ws.close(),
      });
  });
}

function shortUrl(url: string): string {
  if (!url) return "(native)";
  const npm = /\/npm\/registry\.npmjs\.org\/([^/]+(?:\/[^/]+)?)\//.exec(url) ??
    /node_modules\/([^/]+)/.exec(url);
  if (npm) return `npm:${npm[1]}`;
  if (url.startsWith(`file://${ROOT}`)) return url.slice(`file://${ROOT}`.length);
  return url.replace(/^ext:/, "deno:");
}

try {
  const origin = await startOrigin(processes, layout.origin);
  const port = freePort();
  const inspectPort = freePort();
  const syncSecret = newSyncSecret();
  const proc = processes.spawn("service", Deno.execPath(), {
    args: ["run", `--inspect=127.0.0.1:${inspectPort}`, ...SERVICE_FLAGS, "main.ts"],
    env: serviceEnv(
      { originUrl: origin.url, kvPath: `${tempDir}/kv.sqlite`, syncSecret, cpus: layout.server },
      SCENARIO_RULES,
      port,
    ),
    cpus: layout.server,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/_edge/health`, proc);
  await seedUser(url, syncSecret);
  const generator = await hasCommand("wrk") ? "wrk" : "deno";
  const load = (seconds: number) =>
    runGenerator(generator, `${url}${path}`, {
      connections: 32,
      durationSec: seconds,
      headers: { ...SCENARIO_HEADERS },
      cpus: layout.load,
    });
  await load(3);
  const targets = await (await fetch(`http://127.0.0.1:${inspectPort}/json/list`)).json() as {
    webSocketDebuggerUrl: string;
  }[];
  const client = await cdp(targets[0]!.webSocketDebuggerUrl);
  await client.send("Profiler.enable");
  await client.send("Profiler.setSamplingInterval", { interval: 200 });
  await client.send("Profiler.start");
  const result = await load(durationSec);
  const { profile } = await client.send("Profiler.stop") as { profile: CpuProfile };
  client.close();
  await sleep(100);

  const selfMs = new Map<number, number>();
  profile.samples.forEach((id, i) =>
    selfMs.set(id, (selfMs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000)
  );
  const total = [...selfMs.values()].reduce((a, b) => a + b, 0);
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const node of profile.nodes) {
    const ms = selfMs.get(node.id) ?? 0;
    if (!ms) continue;
    const file = shortUrl(node.callFrame.url);
    const fn = `${node.callFrame.functionName || "(anonymous)"} ${file}:${node.callFrame.lineNumber + 1}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + ms);
    byFile.set(file, (byFile.get(file) ?? 0) + ms);
  }
  const top = (map: Map<string, number>, n: number) =>
    [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map((
      [k, v],
    ) => [k, fmt((100 * v) / total, 1)]);
  console.log(
    `profile of GET ${path} under load: ${fmt(result.rps, 0)} req/s, p50 ${fmt(result.p50Ms, 3)} ms`,
  );
  console.log(`(the inspector costs throughput; compare shares, not absolute numbers)\n`);
  console.log(table(["self time by file / package", "%"], top(byFile, 20)));
  console.log();
  console.log(table(["self time by function", "%"], top(byFunction, 30)));
  // Outside the repository: profiles are large and not results to commit.
  const out = `${await Deno.makeTempDir({ prefix: "edge-profile-" })}/service.cpuprofile`;
  await Deno.writeTextFile(out, JSON.stringify(profile));
  console.log(`\nprofile (open in Chrome DevTools → Performance): ${out}`);
} finally {
  await processes.stopAll();
  cancelDeadline();
  await Deno.remove(tempDir, { recursive: true }).catch(() => {});
}
