/**
 * @module
 * `deno task bench:memory`: resident memory of the service before and after `--requests N`
 * (default 100 000) requests from N distinct anonymous visitors — each its own `ep_uid` cookie
 * and its own German address in a trusted `X-Forwarded-For` — on the personalized scenario
 * path. Per-visitor state that is not bounded (caches, maps) shows up as growth here.
 *
 * RSS is read from the OS (`VmRSS`, `VmHWM`); beside it the V8 heap (`heap_total`, `heap_used`)
 * and external (ArrayBuffer) figures the service reports on `/_edge/metrics` show how much of
 * the RSS is JavaScript heap and how much is native memory (allocator, runtime, code).
 */
import {
  bound,
  cpuLayout,
  fmt,
  machineInfo,
  newSyncSecret,
  numberArg,
  Processes,
  readRss,
  relative,
  runGenerator,
  SCENARIO_HEADERS,
  SCENARIO_PATH,
  sleep,
  startOrigin,
  startService,
  table,
  writeResults,
} from "./harness.ts";

const requests = Math.round(numberArg(Deno.args, "requests", 100_000));
const connections = Math.round(numberArg(Deno.args, "connections", 32));
const layout = await cpuLayout();
const processes = new Processes();
// Bounded even on a slow service: 100 000 requests at 500/s is 200 s.
const cancelDeadline = bound(processes, 120 + requests / 500);
const tempDir = await Deno.makeTempDir({ prefix: "edge-bench-memory-" });
const mb = (bytes: number) => bytes / 1048576;

/** The `edge_process_memory_bytes` gauges of the service, in bytes (empty when not reported). */
async function heapFigures(serviceUrl: string): Promise<Record<string, number>> {
  try {
    const text = await (await fetch(`${serviceUrl}/_edge/metrics`)).text();
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/process_memory_bytes\{area="(\w+)"\} (\d+)/g)) out[m[1]!] = Number(m[2]);
    return out;
  } catch {
    return {};
  }
}

const results: Record<string, unknown> = {
  benchmark: "memory",
  machine: await machineInfo(layout),
  requests,
};

try {
  const origin = await startOrigin(processes, layout.origin);
  const service = await startService(processes, {
    originUrl: origin.url,
    kvPath: `${tempDir}/kv.sqlite`,
    syncSecret: newSyncSecret(),
    cpus: layout.server,
  });
  // A few requests so that lazily initialised parts are in the start figure too.
  const { cookie: _cookie, ...anonymousHeaders } = SCENARIO_HEADERS;
  await runGenerator("deno", `${service.url}${SCENARIO_PATH}`, {
    connections: 4,
    requests: 200,
    headers: anonymousHeaders,
    cpus: layout.load,
  });
  await sleep(500);
  const startRss = await readRss(service.proc.pid, "VmRSS");
  const startHeap = await heapFigures(service.url);
  console.log(
    `memory: ${requests} requests from ${requests} distinct anonymous visitors, ${connections} connections`,
  );
  console.log(`  start RSS ${fmt(mb(startRss), 1)} MB`);
  const load = await runGenerator("deno", `${service.url}${SCENARIO_PATH}`, {
    connections,
    requests,
    headers: anonymousHeaders,
    cpus: layout.load,
    distinct: true,
  });
  const endRss = await readRss(service.proc.pid, "VmRSS");
  await sleep(2000);
  const settledRss = await readRss(service.proc.pid, "VmRSS");
  const peakRss = await readRss(service.proc.pid, "VmHWM");
  const settledHeap = await heapFigures(service.url);
  console.log();
  console.log(table(
    ["start RSS MB", "end RSS MB", "after 2 s MB", "peak RSS MB", "requests", "req/s", "errors"],
    [[
      fmt(mb(startRss), 1),
      fmt(mb(endRss), 1),
      fmt(mb(settledRss), 1),
      fmt(mb(peakRss), 1),
      String(load.requests),
      fmt(load.rps, 0),
      String(load.non2xx + load.socketErrors),
    ]],
  ));
  console.log();
  console.log(table(
    ["V8 heap MB", "heap total", "heap used", "external", "RSS − heap total"],
    [startHeap, settledHeap].map((heap, i) => [
      i === 0 ? "start" : "after 2 s",
      fmt(mb(heap.heap_total ?? NaN), 1),
      fmt(mb(heap.heap_used ?? NaN), 1),
      fmt(mb(heap.external ?? NaN), 1),
      fmt(mb((i === 0 ? startRss : settledRss) - (heap.heap_total ?? NaN)), 1),
    ]),
  ));
  console.log(
    `growth ${fmt(mb(endRss - startRss), 1)} MB; target: RSS ≤ 150 MB after 100 000 distinct users`,
  );
  Object.assign(results, {
    rules: relative(service.rulesPath),
    startRssBytes: startRss,
    endRssBytes: endRss,
    settledRssBytes: settledRss,
    peakRssBytes: peakRss,
    startHeapBytes: startHeap,
    settledHeapBytes: settledHeap,
    load,
  });
  console.log(`\nresults: ${await writeResults("memory", results)}`);
} finally {
  await processes.stopAll();
  cancelDeadline();
  await Deno.remove(tempDir, { recursive: true }).catch(() => {});
}
