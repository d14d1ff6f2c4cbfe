/**
 * @module
 * What exposure delivery costs the service, in CPU time of this process (steadier than wall time
 * on a shared machine), in alternating rounds: the whole app (`createApp`, origin answering at
 * once) serving the scenario request from a new anonymous visitor every time, exposures off
 * against on (posted to the demo backend, a separate process whose verifying is not counted);
 * then the recorder alone on those decided requests — off, events queued but no body made, bodies
 * made and signed but not posted, and posted; then the parts of one 500-event batch.
 *
 * `deno run -A bench/exposures_cpu.ts [--rounds 6] [--requests 4000 (0: skip)] [--only ARM]`;
 * with `--cpu-prof`, `--only` prints when the recorder rounds start, to cut the profile there.
 */
import process from "node:process";
import { createApp } from "../routes/app.ts";
import { makeDeps } from "../tests/support.ts";
import { loadIpGeoDb } from "../lib/pipeline/ip_geo.ts";
import type { ExposureEvent } from "../lib/exposures/events.ts";
import { ExposureSender, OutgoingBatch } from "../lib/exposures/sender.ts";
import { DeadlineSweep } from "../lib/support/deadlines.ts";
import { type ExposureInputs, ExposureRecorder, exposuresFromConfig } from "../lib/exposures/recorder.ts";
import { type BatchSender, ExposureQueue } from "../lib/exposures/queue.ts";
import { parseConfig } from "../lib/app/config.ts";
import { EdgeMetrics } from "../lib/obs/metrics.ts";
import { createLogger } from "../lib/obs/log.ts";
import { distinctVisitorHeaders } from "./load_gen.ts";
import {
  fmt,
  freePort,
  newSyncSecret,
  numberArg,
  Processes,
  readCpuMs,
  SCENARIO_HEADERS,
  SCENARIO_PATH,
  SCENARIO_RULES,
  stringArg,
  table,
  waitForHttp,
} from "./harness.ts";

const ORIGIN = "http://127.0.0.1:9";
const BODY = JSON.stringify({ promotion: "EU", items: Array.from({ length: 8 }, (_, i) => `p${i}`) });
const fakeFetch = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
  new Request(input, init);
  return Promise.resolve(
    new Response(BODY, {
      headers: { "content-type": "application/json", "content-length": String(BODY.length), etag: '"v1"' },
    }),
  );
};

const secret = newSyncSecret();
const processes = new Processes();
const receiverPort = freePort();
const receiver = processes.spawn("exposure receiver", Deno.execPath(), {
  args: [
    "run",
    "--allow-net",
    "--allow-read",
    "tools/demo_backend.ts",
    "--quiet",
    "--port",
    String(receiverPort),
    "--exposures-secret",
    secret,
  ],
});
const receiverUrl = `http://127.0.0.1:${receiverPort}`;
await waitForHttp(`${receiverUrl}/stats`, receiver);

const rules = JSON.parse(await Deno.readTextFile(SCENARIO_RULES));
const ipGeo = await loadIpGeoDb(Deno.readFile);
const env = { TRUSTED_PROXIES: "127.0.0.1/32", LOG_LEVEL: "warn" };
async function app(exposures: boolean) {
  const deps = await makeDeps(ORIGIN, {
    env: exposures
      ? { ...env, EXPOSURES_URL: `${receiverUrl}/edge/exposures`, EXPOSURES_SECRET: secret }
      : env,
    rules,
    ipGeo,
    now: Date.now,
  });
  deps.fetch = fakeFetch as typeof fetch;
  return { app: createApp(deps), deps };
}
const { app: off, deps: offDeps } = await app(false);
const { app: on } = await app(true);

const info = { remoteAddr: { hostname: "127.0.0.1" } };
const baseHeaders: Record<string, string> = { ...SCENARIO_HEADERS, host: "127.0.0.1:8000" };
delete baseHeaders["cookie"];
let visitor = 0;
function request(): Request {
  const headers = new Headers(baseHeaders);
  for (const line of distinctVisitorHeaders(visitor++).split("\r\n")) {
    const at = line.indexOf(":");
    if (at > 0) headers.set(line.slice(0, at), line.slice(at + 1).trim());
  }
  return new Request(`http://127.0.0.1:8000${SCENARIO_PATH}`, { headers });
}
for (const served of [off, on]) {
  const check = await served.fetch(request(), info);
  if (check.status !== 200 || !(await check.text()).includes("EU")) throw new Error("scenario not served");
}

// `unsent`: batches are made and signed, but the POST answers 200 at once without a network.
const unsent = () => Promise.resolve(new Response(null, { status: 200 }));

// One full batch of the scenario's events, as the queue hands it to the sender.
const at = new Date().toISOString();
const events: ExposureEvent[] = Array.from({ length: 500 }, (_, i) => ({
  experiment: i % 2 ? "checkout" : "hero",
  variation: i % 2 ? "one-page" : "control",
  visitor: `bench${i.toString(36).padStart(12, "0")}`,
  rulesVersion: 1,
  at,
  requestId: crypto.randomUUID(),
  region: "EU",
  device: "desktop",
  path: SCENARIO_PATH,
}));
const senderOptions = {
  url: new URL(`${receiverUrl}/edge/exposures`),
  secret,
  fetch,
  now: Date.now,
  randomId: () => crypto.randomUUID(),
  random: Math.random,
  deadlines: new DeadlineSweep(),
  log: createLogger("warn", { now: Date.now, sink: () => {} }),
};
const sender = new ExposureSender(senderOptions);
const unsentSender = new ExposureSender({ ...senderOptions, fetch: unsent });
const batch = sender.batch(events);

// Decided requests of new visitors, captured from the app with exposures off.
const decided: ExposureInputs[] = [];
const observe = offDeps.exposures.observe.bind(offDeps.exposures);
offDeps.exposures.observe = (inputs) => {
  if (decided.length < 8000) decided.push(inputs);
  observe(inputs);
};
for (let i = 0; i < 8000; i++) await (await off.fetch(request(), info)).arrayBuffer();
type Arm = "off" | "queued" | "unsent" | "on";
// `queued`: events are queued and taken out in batches, but no body is made nor sent.
const dropBatches: BatchSender = {
  batch: (events) => new OutgoingBatch({ id: "msg_unsent", body: new Uint8Array(0), size: events.length }),
  deliver: () => Promise.resolve(),
};
function recorderFor(arm: Arm) {
  if (arm === "queued") {
    const queue = new ExposureQueue({
      batchMax: 500,
      flushMs: 1000,
      bufferMax: 10_000,
      sender: dropBatches,
      deadlines: offDeps.deadlines,
      mono: () => performance.now(),
      waitUntil: () => {},
    });
    return new ExposureRecorder({ metrics: new EdgeMetrics(), now: Date.now, queue });
  }
  const config = parseConfig({
    ORIGIN_URL: ORIGIN,
    ...(arm !== "off" ? { EXPOSURES_URL: `${receiverUrl}/edge/exposures`, EXPOSURES_SECRET: secret } : {}),
  });
  return exposuresFromConfig(config, {
    metrics: new EdgeMetrics(),
    fetch: arm === "unsent" ? unsent : fetch,
    now: Date.now,
    mono: () => performance.now(),
    randomId: () => crypto.randomUUID(),
    random: Math.random,
    deadlines: offDeps.deadlines,
    log: offDeps.log,
    waitUntil: () => {},
    rules: () => offDeps.rules.current,
  });
}

const receiverStats = async (): Promise<{ batches: number; exposures: number }> =>
  await (await fetch(`${receiverUrl}/stats`)).json();
const cpuUs = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};
/** CPU µs of this process per call of `work`, over `n` calls, `concurrency` at a time. */
async function cpuPer(n: number, concurrency: number, work: () => Promise<unknown>): Promise<number> {
  const start = cpuUs();
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < n) await work();
  }));
  return (cpuUs() - start) / n;
}

const rounds = numberArg(Deno.args, "rounds", 6);
const requests = Number(stringArg(Deno.args, "requests") ?? 4000);
const only = stringArg(Deno.args, "only");
const median = (values: number[]) => values.toSorted((a, b) => a - b)[Math.floor(values.length / 2)]!;
const serve = (served: typeof on) => async () => await (await served.fetch(request(), info)).arrayBuffer();
// A round's tail covers the flush interval, so the last partial batch is delivered within it.
const tail = () => new Promise((resolve) => setTimeout(resolve, 1200));
try {
  const perRequest: Record<"off" | "on", number[]> = { off: [], on: [] };
  const receiverBefore = { cpuMs: await readCpuMs(receiver.pid), ...await receiverStats() };
  await cpuPer(requests, 16, serve(off));
  await cpuPer(requests, 16, serve(on));
  await tail();
  for (let round = 0; round < (requests ? rounds : 0); round++) {
    for (const name of round % 2 ? ["on", "off"] as const : ["off", "on"] as const) {
      if (only !== undefined && only !== name) continue;
      const start = cpuUs();
      await cpuPer(requests, 16, serve(name === "on" ? on : off));
      await tail();
      perRequest[name].push((cpuUs() - start) / requests);
    }
  }
  const received = await receiverStats();
  const receiverMs = await readCpuMs(receiver.pid) - receiverBefore.cpuMs;
  const receivedBatches = received.batches - receiverBefore.batches;
  console.log(`CPU µs per request (median of ${rounds} rounds of ${requests}, 16 at a time, 1.2 s tail)`);
  console.log(table(["exposures", "µs/request", "rounds"], [
    ["off", fmt(median(perRequest.off), 1), perRequest.off.map((v) => fmt(v, 0)).join(" ")],
    ["on", fmt(median(perRequest.on), 1), perRequest.on.map((v) => fmt(v, 0)).join(" ")],
  ]));
  console.log(
    `receiver: ${received.exposures - receiverBefore.exposures} exposures in ${receivedBatches} batches, ` +
      `${fmt(receiverMs / receivedBatches, 2)} ms CPU per batch\n`,
  );

  // The recorder alone: the decided requests above, replayed into a fresh recorder per round.
  const perObserve: Record<Arm, number[]> = { off: [], queued: [], unsent: [], on: [] };
  if (only) console.log(`observe rounds from ${fmt(performance.now(), 0)} ms`);
  for (let round = 0; round < rounds; round++) {
    const arms: Arm[] = ["off", "queued", "unsent", "on"];
    for (const name of round % 2 ? arms.toReversed() : arms) {
      if (only !== undefined && only !== name) continue;
      const recorder = recorderFor(name);
      const start = cpuUs();
      for (let i = 0; i < decided.length; i++) {
        recorder.observe(decided[i]!);
        // Lets delivery run between requests, as it does under load.
        if (i % 16 === 15) await new Promise((resolve) => setTimeout(resolve, 0));
      }
      await tail();
      perObserve[name].push((cpuUs() - start) / decided.length);
    }
  }
  console.log(`CPU µs per observe (median of ${rounds} rounds of ${decided.length}, 1.2 s tail)`);
  console.log(table(
    ["exposures", "µs/observe", "rounds"],
    (["off", "queued", "unsent", "on"] as const).map((arm) => [
      { off: "off", queued: "queued, no body made", unsent: "on, POST not sent", on: "on" }[arm],
      fmt(median(perObserve[arm]), 1),
      perObserve[arm].map((v) => fmt(v, 1)).join(" "),
    ]),
  ));
  console.log();
  if (only) Deno.exit(0);
  const parts: [string, number][] = [
    ["JSON body of 500 events", await cpuPer(200, 1, () => Promise.resolve(sender.batch(events)))],
    ["delivery, POST not sent (signing)", await cpuPer(200, 1, () => unsentSender.deliver(batch))],
    ["delivery (sign and POST)", await cpuPer(200, 1, () => sender.deliver(batch))],
  ];
  console.log(table(["one 500-event batch", "CPU µs"], parts.map(([name, us]) => [name, fmt(us, 0)])));
} finally {
  await processes.stopAll();
}
