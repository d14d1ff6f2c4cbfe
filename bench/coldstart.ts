/**
 * @module
 * `deno task bench:coldstart`: time from spawning the process to the first successful
 * response, for `deno run main.ts` against a bare `Deno.serve` hello-world: under the default
 * `WARMUP=wait` the first personalized one (the region-rewritten scenario request, answered 200
 * with the EU promotion), under `WARMUP=passthrough` the first answer at all (the origin's
 * default until the service is ready). Median of `--starts N` (default 10) starts each,
 * interleaved, after one unmeasured start of each to warm the module cache and page cache.
 * Also reports the CPU time each process had used by then (all its threads, Linux only): on a
 * shared machine it varies far less than the wall time.
 */
import {
  bound,
  cpuLayout,
  fmt,
  freePort,
  machineInfo,
  median,
  newSyncSecret,
  numberArg,
  Processes,
  relative,
  SCENARIO_HEADERS,
  SCENARIO_PATH,
  seedUser,
  SERVICE_FLAGS,
  serviceEnv,
  sleep,
  startOrigin,
  startService,
  table,
  writeResults,
} from "./harness.ts";

const starts = Math.max(10, Math.round(numberArg(Deno.args, "starts", 10)));
const pollMs = numberArg(Deno.args, "poll-ms", 2);
const layout = await cpuLayout();
const processes = new Processes();
const cancelDeadline = bound(processes, 120 + starts * 2 * 25);
const tempDir = await Deno.makeTempDir({ prefix: "edge-bench-coldstart-" });

// Keep this process (the poller) off the server's CPU.
if (layout.load !== undefined) {
  await new Deno.Command("taskset", {
    args: ["-a", "-p", "-c", layout.load, String(Deno.pid)],
    stdout: "null",
  })
    .output();
}

/** One measured start. */
interface StartTiming {
  /** Milliseconds from spawn to the first accepted response. */
  wallMs: number;
  /** CPU milliseconds the process had used by then (NaN where unknown). */
  cpuMs: number;
}

/**
 * CPU time used so far by every thread of a process, from `/proc/<pid>/task/<tid>/schedstat`
 * (nanoseconds, unlike the 10 ms ticks of `/proc/<pid>/stat`). Read through `cat`, as the
 * harness does: Deno lets only `--allow-all` read `/proc` itself.
 *
 * @param pid the process
 * @returns milliseconds, or NaN where `/proc` is not available
 */
async function threadsCpuMs(pid: number): Promise<number> {
  try {
    const out = await new Deno.Command("sh", {
      args: ["-c", `cat /proc/${pid}/task/*/schedstat`],
      stdout: "piped",
      stderr: "null",
    }).output();
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n").filter(Boolean);
    if (lines.length === 0) return NaN;
    return lines.reduce((sum, line) => sum + Number(line.split(" ")[0]), 0) / 1e6;
  } catch {
    return NaN;
  }
}

/**
 * Spawns a process and polls until `ready` accepts a response.
 *
 * @returns the time from spawn to the first accepted response, and the CPU it took
 */
async function timeStart(
  name: string,
  args: string[],
  env: Record<string, string>,
  url: string,
  headers: Record<string, string>,
  ready: (status: number, body: string) => boolean,
): Promise<StartTiming> {
  const t0 = performance.now();
  const proc = processes.spawn(name, Deno.execPath(), { args, env, cpus: layout.server });
  try {
    const deadline = t0 + 30_000;
    while (performance.now() < deadline) {
      if (proc.hasExited()) throw new Error(`${name} exited during start:\n${proc.output()}`);
      try {
        const res = await fetch(url, { headers, signal: AbortSignal.timeout(5000) });
        const body = await res.text();
        if (ready(res.status, body)) {
          const wallMs = performance.now() - t0;
          // `taskset` execs the program, so the pid is the program's.
          return { wallMs, cpuMs: await threadsCpuMs(proc.pid) };
        }
      } catch {
        // Not listening yet.
      }
      await sleep(pollMs);
    }
    throw new Error(`${name} gave no successful response within 30 s:\n${proc.output()}`);
  } finally {
    await processes.stop(proc);
  }
}

const results: Record<string, unknown> = { benchmark: "coldstart", machine: await machineInfo(layout) };

try {
  const origin = await startOrigin(processes, layout.origin);
  const kvPath = `${tempDir}/kv.sqlite`;
  const syncSecret = newSyncSecret();
  // One start to find which rules file the service accepts and to seed the user into the KV file.
  const seeded = await startService(processes, {
    originUrl: origin.url,
    kvPath,
    syncSecret,
    cpus: layout.server,
  });
  const seedError = await seedUser(seeded.url, syncSecret);
  if (seedError) console.warn(`warning: could not seed the scenario user: ${seedError}`);
  await processes.stop(seeded.proc);
  const rulesPath = seeded.rulesPath;

  const service = (warmup: "wait" | "passthrough") => {
    const port = freePort();
    const env = { originUrl: origin.url, kvPath, syncSecret, cpus: layout.server, env: { WARMUP: warmup } };
    return timeStart(
      `service (${warmup})`,
      ["run", ...SERVICE_FLAGS, "main.ts"],
      serviceEnv(env, rulesPath, port),
      `http://127.0.0.1:${port}${SCENARIO_PATH}`,
      { ...SCENARIO_HEADERS },
      warmup === "wait"
        ? (status, body) => status === 200 && body.includes('"region":"EU"')
        // The origin's default for the unrewritten path (the demo origin knows only regional ones).
        : (status) => status < 500,
    );
  };
  const bare = () => {
    const port = freePort();
    return timeStart(
      "bare hello",
      ["run", "--allow-net", "bench/bare_server.ts", "hello", String(port)],
      {},
      `http://127.0.0.1:${port}/`,
      {},
      (status) => status === 200,
    );
  };

  console.log(`cold start: ${starts} starts each, interleaved; ${layout.description}`);
  await service("wait");
  await service("passthrough");
  await bare();
  const serviceMs: number[] = [];
  const passMs: number[] = [];
  const bareMs: number[] = [];
  const serviceCpuMs: number[] = [];
  const bareCpuMs: number[] = [];
  for (let i = 0; i < starts; i++) {
    const s = await service("wait");
    const b = await bare();
    const p = await service("passthrough");
    serviceMs.push(s.wallMs);
    passMs.push(p.wallMs);
    bareMs.push(b.wallMs);
    serviceCpuMs.push(s.cpuMs);
    bareCpuMs.push(b.cpuMs);
    console.log(
      `  start ${i + 1}/${starts}: service ${fmt(s.wallMs, 1)} ms (cpu ${fmt(s.cpuMs, 1)}), ` +
        `bare ${fmt(b.wallMs, 1)} ms (cpu ${fmt(b.cpuMs, 1)}), passthrough first answer ${
          fmt(p.wallMs, 1)
        } ms`,
    );
  }
  const row = (name: string, xs: number[]) => {
    const sorted = [...xs].sort((a, b) => a - b);
    return [name, fmt(median(xs), 1), fmt(sorted[0], 1), fmt(sorted.at(-1), 1)];
  };
  console.log();
  console.log(
    table(["process", "median ms", "min ms", "max ms"], [
      row("service (wait)", serviceMs),
      row("passthrough", passMs),
      row("bare", bareMs),
      row("service cpu", serviceCpuMs),
      row("bare cpu", bareCpuMs),
    ]),
  );
  const ratio = median(serviceMs) / median(bareMs);
  const cpuRatio = median(serviceCpuMs) / median(bareCpuMs);
  const passRatio = median(passMs) / median(bareMs);
  console.log(
    `service/bare: ${fmt(ratio, 2)}× (target ≤ 3×); CPU time to that response: ${fmt(cpuRatio, 2)}×`,
  );
  console.log(`passthrough first answer/bare: ${fmt(passRatio, 2)}× (target ≤ 1.5×)`);
  results.rules = relative(rulesPath);
  results.serviceMs = serviceMs;
  results.bareMs = bareMs;
  results.medianServiceMs = median(serviceMs);
  results.medianBareMs = median(bareMs);
  results.ratio = ratio;
  results.passthroughMs = passMs;
  results.medianPassthroughMs = median(passMs);
  results.passthroughRatio = passRatio;
  results.serviceCpuMs = serviceCpuMs;
  results.bareCpuMs = bareCpuMs;
  results.cpuRatio = cpuRatio;
  console.log(`\nresults: ${await writeResults("coldstart", results)}`);
} finally {
  await processes.stopAll();
  cancelDeadline();
  await Deno.remove(tempDir, { recursive: true }).catch(() => {});
}
