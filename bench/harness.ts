/**
 * @module
 * Shared machinery of the load benchmarks: starting the demo origin, the bare proxy, the service and
 * nginx as pinned loopback subprocesses, seeding the service through signed sync, the personalized
 * scenario, running `wrk` or the Deno load generator, reading peak RSS, printing tables and writing
 * results. Every process started here is stopped by {@linkcode Processes.stopAll}, and every run has
 * a hard deadline.
 */
import { publish } from "../tools/publisher.ts";
import type { LoadResult } from "./load_gen.ts";

/** The repository root. */
export const ROOT: string = new URL("../", import.meta.url).pathname;

/** The scenario's rules, kept in `bench/` so they can follow the rule language. */
export const SCENARIO_RULES: string = `${ROOT}bench/scenario_rules.json`;
/** The fallback when the service refuses the scenario's rules (an older or newer schema). */
export const FALLBACK_RULES: string = `${ROOT}tools/demo_rules.json`;

/** The personalized request: its path, and what the region rewrite sends to the origin for `EU`. */
export const SCENARIO_PATH = "/api/products/promotions";
/** Where the rules rewrite {@linkcode SCENARIO_PATH} for a visitor in the EU region. */
export const SCENARIO_EU_TARGET = "/api/products/promotions/europe";
/** A German address (Strato, 85.214.0.0/16) for the trusted `X-Forwarded-For`. */
export const SCENARIO_CLIENT_IP = "85.214.132.117";
/** The logged-in user of the scenario. */
export const SCENARIO_USER_ID = "bench-user-1";
/** The session token of that user (the `sid` cookie). */
export const SCENARIO_SESSION_ID = "bench-session-0123456789abcdef";
/** The anonymous id the browser also carries. */
export const SCENARIO_ANON_ID = "benchanon0123456789";

const CHROME_DESKTOP =
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/** Headers of the personalized scenario: a logged-in desktop user behind a trusted proxy, in Germany. */
export const SCENARIO_HEADERS: Readonly<Record<string, string>> = {
  "user-agent": CHROME_DESKTOP,
  accept: "application/json",
  "accept-language": "de-DE,de;q=0.9,en;q=0.8",
  cookie: `sid=${SCENARIO_SESSION_ID}; ep_uid=${SCENARIO_ANON_ID}`,
  "x-forwarded-for": SCENARIO_CLIENT_IP,
};

/** CPU placement: servers under test on one core, load generator and origin on the other. */
export interface CpuLayout {
  server: string | undefined;
  load: string | undefined;
  origin: string | undefined;
  description: string;
}

/**
 * Tells whether a program is on PATH.
 *
 * @param name the program
 * @returns true when `command -v` finds it
 */
export async function hasCommand(name: string): Promise<boolean> {
  try {
    const out = await new Deno.Command("sh", {
      args: ["-c", `command -v ${name}`],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * Chooses where processes run: with `taskset` and at least two CPUs, the server under test gets
 * CPU 0 alone and the load generator shares CPU 1 with the origin (the same origin cost for every
 * target); otherwise nothing is pinned.
 *
 * @returns the layout
 */
export async function cpuLayout(): Promise<CpuLayout> {
  const cpus = navigator.hardwareConcurrency;
  if (cpus >= 2 && await hasCommand("taskset")) {
    return {
      server: "0",
      load: "1",
      origin: "1",
      description: `taskset: server under test on CPU 0, load generator and origin on CPU 1 (${cpus} CPUs)`,
    };
  }
  return { server: undefined, load: undefined, origin: undefined, description: `not pinned (${cpus} CPUs)` };
}

/** Finds a free TCP port on loopback. */
export function freePort(): number {
  const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A started subprocess. */
export interface Proc {
  name: string;
  pid: number;
  child: Deno.ChildProcess;
  /** The last 64 KiB of what it wrote to stdout and stderr. */
  output: () => string;
  /** Resolves when it has exited. */
  exited: Promise<Deno.CommandStatus>;
  /** Whether it has exited. */
  hasExited: () => boolean;
}

/** Options for {@linkcode Processes.spawn}. */
export interface SpawnOptions {
  args: string[];
  env?: Record<string, string>;
  /** Pin to these CPUs with `taskset -c` (when set). */
  cpus?: string;
  cwd?: string;
}

const PASS_ENV = ["HOME", "PATH", "DENO_DIR", "XDG_CACHE_HOME", "TMPDIR", "NPM_CONFIG_REGISTRY"];

/** Owns every subprocess a benchmark starts, so that all of them are stopped in the end. */
export class Processes {
  #procs: Proc[] = [];

  /**
   * Starts a program, pinned when asked, with a minimal environment plus `env`.
   *
   * @param name a label for messages
   * @param command the program
   * @param options arguments, environment, CPUs
   * @returns the process
   */
  spawn(name: string, command: string, options: SpawnOptions): Proc {
    const base: Record<string, string> = { NO_COLOR: "1" };
    for (const key of PASS_ENV) {
      const value = Deno.env.get(key);
      if (value !== undefined) base[key] = value;
    }
    const [cmd, args] = options.cpus !== undefined
      ? ["taskset", ["-c", options.cpus, command, ...options.args]]
      : [command, options.args];
    const child = new Deno.Command(cmd, {
      args,
      cwd: options.cwd ?? ROOT,
      env: { ...base, ...options.env },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let text = "";
    let exited = false;
    const decoder = new TextDecoder();
    const drain = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) {
        text += decoder.decode(chunk, { stream: true });
        if (text.length > 65536) text = text.slice(-65536);
      }
    };
    const drained = Promise.all([drain(child.stdout), drain(child.stderr)]).catch(() => {});
    const status = child.status.then(async (s) => {
      exited = true;
      await drained;
      return s;
    });
    const proc: Proc = {
      name,
      pid: child.pid,
      child,
      output: () => text,
      exited: status,
      hasExited: () => exited,
    };
    this.#procs.push(proc);
    return proc;
  }

  /**
   * Stops one process: SIGTERM, then SIGKILL after `graceMs`.
   *
   * @param proc the process
   * @param graceMs how long to wait for a clean exit
   */
  async stop(proc: Proc, graceMs = 3000): Promise<void> {
    this.#procs = this.#procs.filter((p) => p !== proc);
    if (proc.hasExited()) return;
    try {
      proc.child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    const timer = setTimeout(() => {
      try {
        proc.child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, graceMs);
    await proc.exited;
    clearTimeout(timer);
  }

  /** Stops every process still running, newest first. */
  async stopAll(): Promise<void> {
    for (const proc of [...this.#procs].reverse()) await this.stop(proc);
  }

  /** Kills everything at once, without waiting (for the deadline and signals). */
  killAll(): void {
    for (const proc of this.#procs) {
      try {
        proc.child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
}

/**
 * Guarantees the run ends: after `seconds`, kills every process and exits with status 3; on
 * SIGINT/SIGTERM does the same with status 130.
 *
 * @param processes the processes to kill
 * @param seconds the deadline
 * @returns a function that cancels the deadline
 */
export function bound(processes: Processes, seconds: number): () => void {
  const timer = setTimeout(() => {
    console.error(`Benchmark exceeded its ${Math.round(seconds)} s deadline; stopping everything`);
    processes.killAll();
    Deno.exit(3);
  }, seconds * 1000);
  const onSignal = () => {
    processes.killAll();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  return () => {
    clearTimeout(timer);
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  };
}

/**
 * Polls `url` until it answers 2xx, the process exits, or the timeout passes.
 *
 * @param url the URL
 * @param proc the process that should serve it
 * @param timeoutMs how long to wait
 * @throws {Error} with the process's output when it exited or never answered
 */
export async function waitForHttp(url: string, proc: Proc, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    if (proc.hasExited()) {
      throw new Error(`${proc.name} exited before answering ${url}:\n${proc.output().trim()}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.body?.cancel();
      if (res.ok) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      throw new Error(`${proc.name} did not answer ${url}:\n${proc.output().trim()}`);
    }
    await sleep(25);
  }
}

/**
 * Waits until something accepts TCP connections on a loopback port.
 *
 * @param port the port
 * @param proc the process that should listen
 * @param timeoutMs how long to wait
 * @throws {Error} when it exited or never listened
 */
export async function waitForPort(port: number, proc: Proc, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    if (proc.hasExited()) throw new Error(`${proc.name} exited before listening:\n${proc.output().trim()}`);
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      throw new Error(`${proc.name} did not listen on ${port}:\n${proc.output().trim()}`);
    }
    await sleep(25);
  }
}

/**
 * Sleeps.
 *
 * @param ms milliseconds
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Reads `VmHWM` (peak RSS) or `VmRSS` of a process through `cat` (Deno wants --allow-all to read
 * /proc itself).
 *
 * @param pid the process id
 * @param field `VmHWM` or `VmRSS`
 * @returns bytes, or 0 when unreadable
 */
export async function readRss(
  pid: number,
  field: "VmHWM" | "VmRSS" | "RssAnon" = "VmHWM",
): Promise<number> {
  try {
    const out = await new Deno.Command("cat", {
      args: [`/proc/${pid}/status`],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    const status = new TextDecoder().decode(out.stdout);
    return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/**
 * CPU time (user + system) a process has used so far, through `cat /proc/<pid>/stat`.
 *
 * @param pid the process id
 * @returns milliseconds (10 ms resolution at the usual 100 Hz clock), or NaN when unreadable
 */
export async function readCpuMs(pid: number): Promise<number> {
  try {
    const out = await new Deno.Command("cat", {
      args: [`/proc/${pid}/stat`],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    const text = new TextDecoder().decode(out.stdout);
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

const CLOCK_TICKS = 100;

/**
 * The children of a process (for nginx, whose workers hold the memory).
 *
 * @param pid the parent
 * @returns child pids
 */
export async function childPids(pid: number): Promise<number[]> {
  try {
    const out = await new Deno.Command("cat", {
      args: [`/proc/${pid}/task/${pid}/children`],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(out.stdout).trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** A server under test. */
export interface Target {
  name: string;
  url: string;
  proc: Proc;
  /** Peak RSS of everything serving (nginx: master and workers; taskset execs, so the pid is the server). */
  peakRss: () => Promise<number>;
  /** CPU time used so far by everything serving, in ms. */
  cpuMs: () => Promise<number>;
}

/**
 * Starts the demo origin.
 *
 * @param processes the owner
 * @param cpus where to pin it
 * @returns its base URL and process
 */
export async function startOrigin(processes: Processes, cpus: string | undefined): Promise<Target> {
  const port = freePort();
  const proc = processes.spawn("demo origin", Deno.execPath(), {
    args: ["run", "--allow-net", "tools/demo_origin.ts", String(port)],
    cpus,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/api/products`, proc);
  return { name: "origin", url, proc, peakRss: () => readRss(proc.pid), cpuMs: () => readCpuMs(proc.pid) };
}

/**
 * Starts the bare Deno fetch proxy in front of `originUrl`.
 *
 * @param processes the owner
 * @param originUrl the origin
 * @param cpus where to pin it
 * @returns the target
 */
export async function startBareProxy(
  processes: Processes,
  originUrl: string,
  cpus: string | undefined,
): Promise<Target> {
  const port = freePort();
  const proc = processes.spawn("bare proxy", Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "tools/bare_proxy.ts",
      "--origin",
      originUrl,
      "--port",
      String(port),
      "--alias",
      `${SCENARIO_PATH}=${SCENARIO_EU_TARGET}`,
    ],
    cpus,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/api/products`, proc);
  return { name: "bare", url, proc, peakRss: () => readRss(proc.pid), cpuMs: () => readCpuMs(proc.pid) };
}

/**
 * Starts a bare `Deno.serve` (`hello` or `json`).
 *
 * @param processes the owner
 * @param mode what it answers
 * @param cpus where to pin it
 * @returns the target
 */
export async function startBareServer(
  processes: Processes,
  mode: "hello" | "json",
  cpus: string | undefined,
): Promise<Target> {
  const port = freePort();
  const proc = processes.spawn(`bare ${mode}`, Deno.execPath(), {
    args: ["run", "--allow-net", "bench/bare_server.ts", mode, String(port)],
    cpus,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(url, proc);
  return {
    name: `bare-${mode}`,
    url,
    proc,
    peakRss: () => readRss(proc.pid),
    cpuMs: () => readCpuMs(proc.pid),
  };
}

/** A started exposure receiver (the demo backend, quiet). */
export interface ReceiverTarget extends Target {
  /** `EXPOSURES_URL` for a service that sends to it. */
  exposuresUrl: string;
  /** What it has received so far (`GET /stats` of `tools/demo_backend.ts`). */
  stats: () => Promise<{ batches: number; exposures: number; rejected: number }>;
}

/**
 * Starts `tools/demo_backend.ts --quiet` as the receiver of exposure batches.
 *
 * @param processes the owner
 * @param secret the `whsec_…` secret the service signs with
 * @param cpus where to pin it
 * @returns the receiver
 */
export async function startExposureReceiver(
  processes: Processes,
  secret: string,
  cpus: string | undefined,
): Promise<ReceiverTarget> {
  const port = freePort();
  const proc = processes.spawn("exposure receiver", Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "tools/demo_backend.ts",
      "--quiet",
      "--port",
      String(port),
      "--exposures-secret",
      secret,
    ],
    cpus,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/stats`, proc);
  return {
    name: "receiver",
    url,
    proc,
    exposuresUrl: `${url}/edge/exposures`,
    stats: async () => await (await fetch(`${url}/stats`)).json(),
    peakRss: () => readRss(proc.pid),
    cpuMs: () => readCpuMs(proc.pid),
  };
}

/** A freshly generated Standard Webhooks secret. */
export function newSyncSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return `whsec_${btoa(String.fromCharCode(...bytes))}`;
}

/**
 * The flags `deno task start` runs `main.ts` with (permissions and V8 heap settings), read from
 * `deno.json` so that every benchmark measures the service as production starts it.
 */
export const SERVICE_FLAGS: readonly string[] = await startTaskFlags();

async function startTaskFlags(): Promise<string[]> {
  const task: unknown = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks?.start;
  const tokens = typeof task === "string" ? task.trim().split(/\s+/) : [];
  const run = tokens.indexOf("run");
  const main = tokens.indexOf("main.ts");
  if (tokens[0] !== "deno" || run !== 1 || main < run) {
    throw new Error(`deno.json: tasks.start is not "deno run <flags> main.ts": ${String(task)}`);
  }
  return tokens.slice(run + 1, main);
}

/** Options for {@linkcode startService}. */
export interface StartServiceOptions {
  originUrl: string;
  kvPath: string;
  syncSecret: string;
  cpus: string | undefined;
  /** Rules file to try first (default {@linkcode SCENARIO_RULES}). */
  rulesPath?: string;
  logLevel?: string;
  /** Extra environment (e.g. BACKEND_URL). */
  env?: Record<string, string>;
  port?: number;
}

/** A started service, and which rules file it accepted. */
export interface ServiceTarget extends Target {
  rulesPath: string;
  /** Why the scenario's rules were not used, when they were not. */
  rulesFallback?: string;
}

/**
 * The environment of a service process for the scenario.
 *
 * @param options the service options
 * @param rulesPath the rules file
 * @param port its port
 * @returns the environment
 */
export function serviceEnv(
  options: StartServiceOptions,
  rulesPath: string,
  port: number,
): Record<string, string> {
  return {
    ORIGIN_URL: options.originUrl,
    PORT: String(port),
    HOSTNAME: "127.0.0.1",
    KV_PATH: options.kvPath,
    RULES_PATH: rulesPath,
    TRUSTED_PROXIES: "127.0.0.1/32",
    SYNC_SECRETS: options.syncSecret,
    LOG_LEVEL: options.logLevel ?? "warn",
    ...options.env,
  };
}

/**
 * Starts `deno run main.ts` with the scenario's rules; when the service refuses them (for
 * instance because the rule language changed), starts it again with `tools/demo_rules.json`.
 *
 * @param processes the owner
 * @param options origin, KV file, secret, CPUs
 * @returns the target
 * @throws {Error} when the service starts with neither rules file
 */
export async function startService(
  processes: Processes,
  options: StartServiceOptions,
): Promise<ServiceTarget> {
  const first = options.rulesPath ?? SCENARIO_RULES;
  let fallback: string | undefined;
  for (const rulesPath of first === FALLBACK_RULES ? [first] : [first, FALLBACK_RULES]) {
    const port = options.port ?? freePort();
    const proc = processes.spawn("service", Deno.execPath(), {
      args: ["run", ...SERVICE_FLAGS, "main.ts"],
      env: serviceEnv(options, rulesPath, port),
      cpus: options.cpus,
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitForHttp(`${url}/_edge/health`, proc);
      return {
        name: "service",
        url,
        proc,
        peakRss: () => readRss(proc.pid),
        cpuMs: () => readCpuMs(proc.pid),
        rulesPath,
        rulesFallback: fallback,
      };
    } catch (error) {
      await processes.stop(proc);
      if (rulesPath === FALLBACK_RULES) throw error;
      fallback = `the service refused ${relative(rulesPath)}: ${
        lastLines((error as Error).message, 3)
      }; using ${relative(FALLBACK_RULES)}`;
      console.warn(`warning: ${fallback}`);
    }
  }
  throw new Error("unreachable");
}

/**
 * Pushes the scenario user's session, recent views, cart and profile through signed sync.
 *
 * @param serviceUrl the service
 * @param secret the sync secret
 * @param userId the user (default {@linkcode SCENARIO_USER_ID})
 * @param sessionId the session token (default {@linkcode SCENARIO_SESSION_ID})
 * @returns null when seeded, else why not
 */
export async function seedUser(
  serviceUrl: string,
  secret: string,
  userId = SCENARIO_USER_ID,
  sessionId = SCENARIO_SESSION_ID,
): Promise<string | null> {
  const now = Date.now();
  const iso = (ms: number) => new Date(ms).toISOString();
  const events: unknown[] = [
    { kind: "session", sessionId, userId, expiresAt: iso(now + 86_400_000), at: iso(now) },
    ...["p1", "p2", "p3", "p42", "p7", "p13", "p8", "p9"].map((itemId, i) => ({
      kind: "view",
      userId,
      itemId,
      at: iso(now - (i + 1) * 60_000),
    })),
    { kind: "cart", userId, version: 1, at: iso(now), items: [{ itemId: "p42", qty: 1 }] },
    {
      kind: "profile",
      userId,
      version: 1,
      at: iso(now),
      segments: ["returning", "outdoor"],
      attributes: { tier: "gold" },
    },
  ];
  return await pushEvents(serviceUrl, secret, events);
}

/**
 * Publishes events to the service's sync endpoint once (no retries).
 *
 * @param serviceUrl the service
 * @param secret the sync secret
 * @param events sync events
 * @returns null when delivered, else the error
 */
export async function pushEvents(
  serviceUrl: string,
  secret: string,
  events: unknown[],
): Promise<string | null> {
  try {
    const report = await publish(events, {
      endpoints: [`${serviceUrl}/_edge/sync`],
      secret,
      fetch: globalThis.fetch,
      now: Date.now,
      sleep,
      random: Math.random,
      randomId: () => crypto.randomUUID(),
      scheduleMs: [0],
      timeoutMs: 10_000,
    });
    return report.ok ? null : report.endpoints.flatMap((e) => e.errors.map((x) => x.error)).join("; ");
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * Starts nginx as a reverse proxy in front of `originUrl` (one worker, keep-alive upstream, no
 * access log), with its configuration, logs and temp files in a temp dir.
 *
 * @param processes the owner
 * @param originUrl the origin
 * @param tempDir where to put its files
 * @param cpus where to pin it
 * @returns the target
 */
export async function startNginx(
  processes: Processes,
  originUrl: string,
  tempDir: string,
  cpus: string | undefined,
): Promise<Target> {
  const port = freePort();
  const dir = `${tempDir}/nginx`;
  await Deno.mkdir(dir, { recursive: true });
  // The worker runs as an unprivileged user when nginx is started as root.
  await Deno.chmod(tempDir, 0o755);
  await Deno.chmod(dir, 0o777);
  const origin = new URL(originUrl);
  const conf = `worker_processes 1;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream origin {
    server ${origin.host};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location = ${SCENARIO_PATH} { proxy_pass http://origin${SCENARIO_EU_TARGET}; }
    location / { proxy_pass http://origin; }
  }
}
`;
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const proc = processes.spawn("nginx", "nginx", {
    args: ["-p", dir, "-e", `${dir}/error.log`, "-c", `${dir}/nginx.conf`],
    cpus,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/api/products`, proc, 10_000);
  return {
    name: "nginx",
    url,
    proc,
    peakRss: async () => {
      const pids = [proc.pid, ...await childPids(proc.pid)];
      const values = await Promise.all(pids.map((pid) => readRss(pid)));
      return values.reduce((a, b) => a + b, 0);
    },
    cpuMs: async () => {
      const pids = [proc.pid, ...await childPids(proc.pid)];
      const values = await Promise.all(pids.map((pid) => readCpuMs(pid)));
      return values.reduce((a, b) => a + b, 0);
    },
  };
}

/** Options for {@linkcode runGenerator}. */
export interface GeneratorOptions {
  connections: number;
  durationSec?: number;
  requests?: number;
  headers: Readonly<Record<string, string>>;
  cpus: string | undefined;
  distinct?: boolean;
  /** With `distinct`: the number of the first visitor (so that runs need not repeat visitors). */
  distinctFrom?: number;
  /** Request `i` carries the session cookie `sid=<prefix><i>` (Deno generator only). */
  sessionPrefix?: string;
}

/**
 * Runs one load measurement in a separate, pinned process: `wrk` (when `kind` is `wrk`) or
 * `bench/load_gen.ts`.
 *
 * @param kind the generator
 * @param url the URL to load
 * @param options load shape
 * @returns the measurement
 */
export async function runGenerator(
  kind: "wrk" | "deno",
  url: string,
  options: GeneratorOptions,
): Promise<LoadResult> {
  const headerArgs = Object.entries(options.headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]);
  let command: string;
  let args: string[];
  if (kind === "wrk") {
    if (options.durationSec === undefined || options.distinct || options.sessionPrefix) {
      throw new Error("wrk runs by duration only");
    }
    command = "wrk";
    args = [
      "-t1",
      `-c${options.connections}`,
      `-d${Math.max(1, Math.round(options.durationSec))}s`,
      "--timeout",
      "5s",
      "--latency",
      ...headerArgs,
      url,
    ];
  } else {
    command = Deno.execPath();
    args = [
      "run",
      "--allow-net",
      "bench/load_gen.ts",
      "--url",
      url,
      "-c",
      String(options.connections),
      ...(options.durationSec !== undefined ? ["-d", String(options.durationSec)] : []),
      ...(options.requests !== undefined ? ["-n", String(options.requests)] : []),
      ...(options.distinct ? ["--distinct", "--distinct-from", String(options.distinctFrom ?? 0)] : []),
      ...(options.sessionPrefix !== undefined ? ["--distinct-sessions", options.sessionPrefix] : []),
      ...headerArgs,
    ];
  }
  const [cmd, fullArgs] = options.cpus !== undefined
    ? ["taskset", ["-c", options.cpus, command, ...args]]
    : [command, args];
  const out = await new Deno.Command(cmd, { args: fullArgs, cwd: ROOT, stdout: "piped", stderr: "piped" })
    .output();
  const stdout = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${kind} failed: ${stdout}${new TextDecoder().decode(out.stderr)}`);
  }
  return kind === "wrk" ? parseWrk(stdout) : JSON.parse(stdout.trim().split("\n").at(-1)!) as LoadResult;
}

/**
 * Parses `wrk --latency` output.
 *
 * @param text wrk's stdout
 * @returns the measurement (p95 is interpolated between wrk's 90% and 99%)
 */
export function parseWrk(text: string): LoadResult {
  const toMs = (value: string, unit: string) =>
    Number(value) * ({ us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit] ?? 1);
  const pct = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m|h)\\s*$`, "m").exec(text);
    return m ? toMs(m[1]!, m[2]!) : NaN;
  };
  const requests = Number(/(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(text)?.[1] ?? 0);
  const secondsMatch = /\d+ requests in ([\d.]+)(us|ms|s|m)/.exec(text);
  const seconds = secondsMatch ? toMs(secondsMatch[1]!, secondsMatch[2]!) / 1000 : 0;
  const maxMatch = /Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m)/.exec(text);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const p90 = pct("90");
  const p99 = pct("99");
  return {
    generator: "wrk",
    requests,
    seconds,
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? 0),
    p50Ms: pct("50"),
    p95Ms: p90 + (p99 - p90) * (5 / 9),
    p99Ms: p99,
    maxMs: maxMatch ? toMs(maxMatch[1]!, maxMatch[2]!) : NaN,
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0),
    socketErrors: socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
  };
}

/**
 * The median of some numbers.
 *
 * @param values the numbers
 * @returns their median (NaN when empty)
 */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Renders rows as an aligned text table.
 *
 * @param header column titles
 * @param rows cells
 * @returns the table
 */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/**
 * Formats a number with fixed digits, or "—" when it is not finite.
 *
 * @param value the number
 * @param digits decimals
 * @returns the text
 */
export function fmt(value: number | undefined, digits = 2): string {
  return value === undefined || !Number.isFinite(value) ? "—" : value.toFixed(digits);
}

/**
 * Writes a results document to `bench/results/<name>-<timestamp>.json` (through a `.tmp` file, so a
 * half-written file is never left under a final name).
 *
 * @param name the benchmark
 * @param data what to write
 * @returns the path written
 */
export async function writeResults(name: string, data: unknown): Promise<string> {
  const dir = `${ROOT}bench/results`;
  await Deno.mkdir(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const path = `${dir}/${name}-${stamp}.json`;
  await Deno.writeTextFile(`${path}.tmp`, JSON.stringify(data, null, 2) + "\n");
  await Deno.rename(`${path}.tmp`, path);
  return relative(path);
}

/**
 * Facts about the machine and toolchain, for results files.
 *
 * @param layout the CPU layout used
 * @returns a description
 */
export async function machineInfo(layout: CpuLayout): Promise<Record<string, unknown>> {
  let cpuModel = "unknown";
  try {
    const out = await new Deno.Command("cat", { args: ["/proc/cpuinfo"], stdout: "piped", stderr: "null" })
      .output();
    cpuModel = /model name\s*:\s*(.+)/.exec(new TextDecoder().decode(out.stdout))?.[1] ?? cpuModel;
  } catch {
    // Not Linux.
  }
  let gitCommit = "unknown";
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "--short", "HEAD"],
      cwd: ROOT,
      stdout: "piped",
    })
      .output();
    gitCommit = new TextDecoder().decode(out.stdout).trim() || gitCommit;
  } catch {
    // No git.
  }
  return {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    cpus: navigator.hardwareConcurrency,
    cpuModel,
    loadavg: Deno.loadavg(),
    pinning: layout.description,
    gitCommit,
  };
}

/**
 * A path relative to the repository root, for messages.
 *
 * @param path an absolute path
 * @returns the relative path
 */
export function relative(path: string): string {
  return path.startsWith(ROOT) ? path.slice(ROOT.length) : path;
}

function lastLines(text: string, n: number): string {
  return text.trim().split("\n").slice(-n).join(" | ");
}

/**
 * Reads a numeric `--name value` / `--name=value` option.
 *
 * @param args the arguments
 * @param name the option name without dashes
 * @param fallback the default
 * @returns the value
 * @throws {Error} when the value is not a positive number
 */
export function numberArg(args: string[], name: string, fallback: number): number {
  const value = stringArg(args, name);
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got "${value}"`);
  return n;
}

/**
 * Reads a string `--name value` / `--name=value` option.
 *
 * @param args the arguments
 * @param name the option name without dashes
 * @returns the value, if given
 */
export function stringArg(args: string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === `--${name}`) return args[i + 1];
    if (arg.startsWith(`--${name}=`)) return arg.slice(name.length + 3);
  }
  return undefined;
}
