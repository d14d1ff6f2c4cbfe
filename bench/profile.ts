/**
 * @module
 * Where the service's time goes: runs the personalized load scenario against the service started
 * with `--cpu-prof` (V8's sampling profiler, written when the process exits), prints the top
 * functions by self time and the time per package/file over the `--duration S` (default 10) of
 * measured load only, and leaves the `.cpuprofile` (openable in Chrome DevTools) in a temp dir.
 * Not through `--inspect`: an attached inspector's network bridge costs ~20 % of the CPU and
 * would show up as the service's own.
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
  const profileDir = await Deno.makeTempDir({ prefix: "edge-profile-" });
  const syncSecret = newSyncSecret();
  const spawned = performance.now();
  const proc = processes.spawn("service", Deno.execPath(), {
    args: ["run", "--cpu-prof", `--cpu-prof-dir=${profileDir}`, ...SERVICE_FLAGS, "main.ts"],
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
  // The measured window, in ms since the spawn (the profile starts with the process).
  const windowStart = performance.now() - spawned;
  const result = await load(durationSec);
  const windowEnd = performance.now() - spawned;
  // The service writes its profile when it exits (SIGINT: the graceful shutdown).
  await processes.stop(proc);
  const file = [...Deno.readDirSync(profileDir)].find((entry) => entry.name.endsWith(".cpuprofile"));
  if (!file) throw new Error(`the service wrote no profile to ${profileDir}`);
  const out = `${profileDir}/${file.name}`;
  const profile = JSON.parse(await Deno.readTextFile(out)) as CpuProfile;

  // Only the samples of the measured load (start-up and warm-up left out).
  const selfMs = new Map<number, number>();
  let at = 0;
  profile.samples.forEach((id, i) => {
    const delta = (profile.timeDeltas[i] ?? 0) / 1000;
    at += delta;
    if (at >= windowStart && at <= windowEnd) selfMs.set(id, (selfMs.get(id) ?? 0) + delta);
  });
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
  console.log(`(shares of the measured window; "(idle)" is time the service waited)\n`);
  console.log(table(["self time by file / package", "%"], top(byFile, 20)));
  console.log();
  console.log(table(["self time by function", "%"], top(byFunction, 30)));
  // Outside the repository: profiles are large and not results to commit.
  console.log(`\nprofile (open in Chrome DevTools → Performance): ${out}`);
} finally {
  await processes.stopAll();
  cancelDeadline();
  await Deno.remove(tempDir, { recursive: true }).catch(() => {});
}
