/**
 * @module
 * `deno task bench:soak`: a bounded soak of the service on loopback — a fixed request rate (open
 * loop: requests are issued on schedule whether or not earlier ones have finished, up to a cap
 * on requests in flight) of personalized, anonymous and echo requests, with signed sync pushes
 * and rule changes at fixed intervals, sampling the service's RSS and open file descriptors.
 * Prints a sample line every `--sample-every` seconds and writes the results JSON under
 * `bench/results/soak-*.json`. Everything stops by itself after `--minutes`.
 *
 * Options: `--minutes M` (default 5), `--rate R` (requests/s, default 200), `--sync-every S`
 * (default 5), `--rules-every S` (default 30), `--sample-every S` (default 10),
 * `--max-in-flight N` (default 256), `--log-level L` (the service's LOG_LEVEL, default warn).
 */
import {
  bound,
  cpuLayout,
  machineInfo,
  numberArg,
  Processes,
  pushEvents,
  readRss,
  SCENARIO_HEADERS,
  SCENARIO_PATH,
  SCENARIO_RULES,
  seedUser,
  sleep,
  startOrigin,
  startService,
  stringArg,
  writeResults,
} from "./harness.ts";

const args = Deno.args;
const minutes = numberArg(args, "minutes", 5);
const rate = numberArg(args, "rate", 200);
const syncEverySec = numberArg(args, "sync-every", 5);
const rulesEverySec = numberArg(args, "rules-every", 30);
const sampleEverySec = numberArg(args, "sample-every", 10);
const maxInFlight = Math.round(numberArg(args, "max-in-flight", 256));
const logLevel = stringArg(args, "log-level") ?? "warn";
const durationMs = minutes * 60_000;

/** One sample of the service process. */
interface Sample {
  atSec: number;
  rssMb: number;
  fds: number;
  requests: number;
  errors: number;
  inFlight: number;
}

async function openFds(pid: number): Promise<number> {
  try {
    const out = await new Deno.Command("ls", { args: [`/proc/${pid}/fd`], stdout: "piped", stderr: "null" })
      .output();
    return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean).length;
  } catch {
    return NaN;
  }
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

const mb = (bytes: number) => Math.round((bytes / (1024 * 1024)) * 10) / 10;

const processes = new Processes();
const cancelDeadline = bound(processes, durationMs / 1000 + 120);
const dir = await Deno.makeTempDir({ prefix: "edge-soak-" });
const secret = `whsec_${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(24))))}`;
try {
  const origin = await startOrigin(processes, undefined);
  const service = await startService(processes, {
    originUrl: origin.url,
    kvPath: `${dir}/edge.kv`,
    syncSecret: secret,
    cpus: undefined,
    logLevel,
  });
  const seeded = await seedUser(service.url, secret);
  if (seeded) throw new Error(`Cannot seed the scenario user: ${seeded}`);
  const baseRules = JSON.parse(await Deno.readTextFile(service.rulesPath));
  const pid = service.proc.pid;
  console.log(
    `soak: ${minutes} min at ${rate} req/s against ${service.url} (pid ${pid}), sync every ${syncEverySec} s, ` +
      `rules every ${rulesEverySec} s; rules ${
        service.rulesPath === SCENARIO_RULES ? "scenario" : "fallback"
      }`,
  );

  const statuses = new Map<number, number>();
  const errorKinds = new Map<string, number>();
  const latencies: number[] = [];
  let issued = 0;
  let completed = 0;
  let errors = 0;
  let skipped = 0;
  let inFlight = 0;
  const syncs = { ok: 0, failed: 0, events: 0 };
  const rules = { pushed: 0, failed: 0, seenByOrigin: 0, lastVersion: Number(baseRules.version ?? 1) };
  const samples: Sample[] = [];
  using client = Deno.createHttpClient({});

  const oneRequest = async (i: number) => {
    const kind = i % 10;
    const [path, headers]: [string, Record<string, string>] = kind < 6
      ? [SCENARIO_PATH, { ...SCENARIO_HEADERS }]
      : kind < 9
      ? ["/api/products", { "x-geo-country": ["DE", "US", "JP"][i % 3]!, "user-agent": "soak" }]
      : [`/echo/soak/${i}`, { "user-agent": "soak" }];
    const started = performance.now();
    inFlight++;
    try {
      const res = await fetch(`${service.url}${path}`, {
        headers,
        client,
        signal: AbortSignal.timeout(10_000),
      });
      await res.arrayBuffer();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status >= 500) errors++;
      latencies.push(performance.now() - started);
    } catch (error) {
      errors++;
      const name = (error as Error).name;
      errorKinds.set(name, (errorKinds.get(name) ?? 0) + 1);
    } finally {
      inFlight--;
      completed++;
    }
  };

  const start = performance.now();
  const elapsed = () => performance.now() - start;
  const pending = new Set<Promise<void>>();

  const load = (async () => {
    // Open loop: at each tick, issue what the schedule says should have been issued by now.
    while (elapsed() < durationMs) {
      const due = Math.floor((elapsed() / 1000) * rate);
      while (issued + skipped < due) {
        if (inFlight >= maxInFlight) {
          skipped++;
          continue;
        }
        const p = oneRequest(issued++);
        pending.add(p);
        p.finally(() => pending.delete(p));
      }
      await sleep(5);
    }
  })();

  const pushes = (async () => {
    let n = 0;
    let nextRules = rulesEverySec * 1000;
    while (elapsed() < durationMs) {
      await sleep(syncEverySec * 1000);
      if (elapsed() >= durationMs) break;
      const now = Date.now();
      const events: unknown[] = Array.from({ length: 50 }, (_, k) => ({
        kind: "view",
        userId: `soak-user-${(n * 50 + k) % 500}`,
        itemId: `p${k % 50}`,
        at: new Date(now - 1000).toISOString(),
      }));
      const error = await pushEvents(service.url, secret, events);
      if (error) syncs.failed++;
      else {
        syncs.ok++;
        syncs.events += events.length;
      }
      n++;
      if (elapsed() >= nextRules) {
        nextRules += rulesEverySec * 1000;
        const version = rules.lastVersion + 1;
        const changed = { ...baseRules, version };
        const rulesError = await pushEvents(service.url, secret, [{
          kind: "rules",
          version,
          rules: changed,
        }]);
        if (rulesError) {
          rules.failed++;
          console.warn(`rules push failed: ${rulesError}`);
        } else {
          rules.pushed++;
          rules.lastVersion = version;
          // The origin's echo shows the version the request path used.
          for (let attempt = 0; attempt < 40; attempt++) {
            const res = await fetch(`${service.url}/echo/rules-check`, { client });
            const text = await res.text();
            if (text.includes(`"x-edge-rules-version":"${version}"`)) {
              rules.seenByOrigin++;
              break;
            }
            await sleep(50);
          }
        }
      }
    }
  })();

  const sampling = (async () => {
    while (true) {
      const sample: Sample = {
        atSec: Math.round(elapsed() / 1000),
        rssMb: mb(await readRss(pid, "VmRSS")),
        fds: await openFds(pid),
        requests: completed,
        errors,
        inFlight,
      };
      samples.push(sample);
      console.log(
        `  t=${
          String(sample.atSec).padStart(4)
        } s  rss ${sample.rssMb} MB  fds ${sample.fds}  requests ${sample.requests}  errors ${sample.errors}  in flight ${sample.inFlight}`,
      );
      if (elapsed() >= durationMs) break;
      await sleep(Math.min(sampleEverySec * 1000, Math.max(0, durationMs - elapsed()) + 50));
    }
  })();

  await Promise.all([load, pushes]);
  await Promise.allSettled([...pending]);
  await sampling;
  // Idle for a moment, then the settled figures.
  await sleep(2000);
  const settled: Sample = {
    atSec: Math.round(elapsed() / 1000),
    rssMb: mb(await readRss(pid, "VmRSS")),
    fds: await openFds(pid),
    requests: completed,
    errors,
    inFlight,
  };
  const peakRssMb = mb(await readRss(pid, "VmHWM"));
  const crashed = service.proc.hasExited();
  const uncaught = /Uncaught|panicked/.test(service.proc.output());
  latencies.sort((a, b) => a - b);
  const results = {
    kind: "soak",
    date: new Date().toISOString(),
    machine: await machineInfo(await cpuLayout()),
    options: { minutes, rate, syncEverySec, rulesEverySec, sampleEverySec, maxInFlight },
    durationSec: Math.round(elapsed() / 1000),
    requests: completed,
    achievedRate: Math.round(completed / (durationMs / 1000)),
    skippedOverCap: skipped,
    errors,
    errorKinds: Object.fromEntries(errorKinds),
    statuses: Object.fromEntries(statuses),
    latencyMs: {
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      max: latencies.at(-1) ?? NaN,
    },
    syncs,
    rules,
    rss: { startMb: samples[0]?.rssMb, endMb: settled.rssMb, peakMb: peakRssMb },
    fds: { start: samples[0]?.fds, end: settled.fds, max: Math.max(...samples.map((s) => s.fds)) },
    crashed,
    uncaught,
    samples: [...samples, settled],
  };
  const path = await writeResults("soak", results);
  console.log(
    `\nsoak: ${results.durationSec} s, ${completed} requests (${results.achievedRate}/s), ${errors} errors, ` +
      `statuses ${JSON.stringify(results.statuses)}, skipped ${skipped}\n` +
      `latency p50 ${results.latencyMs.p50.toFixed(2)} ms, p99 ${results.latencyMs.p99.toFixed(2)} ms\n` +
      `syncs ${syncs.ok} ok / ${syncs.failed} failed (${syncs.events} events); rules changes ${rules.pushed} pushed, ` +
      `${rules.seenByOrigin} seen by the origin, ${rules.failed} failed\n` +
      `RSS ${results.rss.startMb} → ${results.rss.endMb} MB (peak ${peakRssMb} MB); fds ${results.fds.start} → ${results.fds.end} ` +
      `(max ${results.fds.max}); crashed ${crashed}; uncaught ${uncaught}\nresults: ${path}`,
  );
  if (crashed || uncaught) Deno.exitCode = 1;
} finally {
  cancelDeadline();
  await processes.stopAll();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
