/**
 * @module
 * Process lifecycle: listen (or let `deno serve` / Deno Deploy do it), and on SIGINT/SIGTERM
 * drain in-flight requests and background work, then close and exit.
 */
import type { Config } from "./config.ts";
import type { Logger } from "../obs/log.ts";
import { DeadlineError, DeadlineSweep } from "../support/deadlines.ts";

/** What a graceful stop needs from the running service. */
export interface Lifecycle {
  config: Config;
  log: Logger;
  deadlines: DeadlineSweep;
  /** Work the responses did not wait for (exposure batches, KV writes). */
  drainBackground: () => Promise<void>;
  /** Sends queued work out now rather than when its batch would have filled. */
  flush: () => void;
  /** For the "deadline passed" warning. */
  undone: () => Record<string, number>;
  close: () => Promise<void>;
}

/** Signals this close together are one (a Ctrl-C the process group and `deno task` both pass on). */
const SAME_SIGNAL_MS = 1000;

/** Where to listen before the full configuration is parsed. */
export interface EarlyListen {
  port: number;
  hostname: string;
  onDeploy: boolean;
  /** `SHUTDOWN_TIMEOUT_MS`, for a signal that arrives before the configuration is parsed. */
  shutdownTimeoutMs: number;
}

type Signal = "SIGINT" | "SIGTERM";
type Stop = (signal: Signal | "worker") => void;

/**
 * Serves `handler` the way this process was started. Under `deno serve` the runtime calls
 * `Deno.serve` before any timer fires, and no API tells the two apart (denoland/deno#25179): so
 * `Deno.serve` is observed until the first timer, and this process listens only when nobody did.
 * A signal before `ready` drains what the listener holds (warm-up answers) and exits 0.
 */
export function serve(
  handler: Deno.ServeHandler,
  early: EarlyListen | undefined,
  ready: Promise<Lifecycle>,
): void {
  ready.catch(() => {});
  if (early?.onDeploy) return;
  const denoServe = Deno.serve;
  const servers: Deno.HttpServer[] = [];
  Deno.serve = ((...args: Parameters<typeof Deno.serve>) => {
    const server = denoServe(...args);
    servers.push(server);
    return server;
  }) as typeof Deno.serve;
  setTimeout(() => {
    Deno.serve = denoServe;
    if (servers.length) {
      ready.then((lifecycle) => onSignals(stopper(servers, lifecycle, "serve")), () => {});
      return;
    }
    if (!early) {
      ready.then((lifecycle) => {
        if (!lifecycle.config.onDeploy) {
          onSignals(stopper([listen(handler, lifecycle.config, ready)], lifecycle));
        }
      }, () => {});
      return;
    }
    const listening = listen(handler, early, ready);
    let afterReady: Stop | undefined;
    // Whichever stop the first signal starts also takes the later ones (a second signal exits).
    let stopping: Stop | undefined;
    const beforeReady = stopperBeforeReady(listening, early.shutdownTimeoutMs, ready);
    onSignals((signal) => (stopping ??= afterReady ?? beforeReady)(signal));
    ready.then((lifecycle) => afterReady = stopper([listening], lifecycle), () => {});
  }, 0);
}

// The "listening" line waits for readiness: it tells operators (and tests) the service is up.
function listen(
  handler: Deno.ServeHandler,
  where: { port: number; hostname: string },
  ready: Promise<Lifecycle>,
): Deno.HttpServer {
  try {
    return Deno.serve({
      port: where.port,
      hostname: where.hostname,
      onListen: ({ hostname, port }) => {
        ready.then(({ log, config }) => {
          log.info("listening", { url: `http://${hostname}:${port}/`, origin: config.originUrl.origin });
        }, () => {});
      },
    }, handler);
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      const { hostname } = where;
      const host = hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname;
      console.error(
        `Cannot listen on "${host}:${where.port}": the address is already in use; set PORT to a free port`,
      );
      Deno.exit(1);
    }
    throw error;
  }
}

/**
 * The stop on SIGINT/SIGTERM: drain for up to `SHUTDOWN_TIMEOUT_MS`, close, exit 0; what is still
 * open then is cut by the exit. A second signal exits at once, with 128 + the signal's number.
 */
function stopper(servers: Deno.HttpServer[], lifecycle: Lifecycle, mode?: "serve"): Stop {
  const { log } = lifecycle;
  const workers = mode === "serve" ? new WorkerDrain() : undefined;
  let stopping = false;
  const repeat = repeatedSignal((signal) =>
    log.warn("second signal: exiting without waiting any longer", { signal })
  );
  const stop = async (signal: Signal | "worker") => {
    if (signal !== "worker" && repeat(signal)) return;
    if (stopping) return;
    stopping = true;
    const startedAt = performance.now();
    log.info("shutting down", { signal, mode, timeoutMs: lifecycle.config.shutdownTimeoutMs });
    workers?.announceDraining();
    const cut = !(await drain(servers, lifecycle));
    await lifecycle.close();
    log.info("stopped", {});
    if (workers && !cut) await workers.finish(startedAt, lifecycle);
    Deno.exit(0);
  };
  workers?.listen(() => stop("worker"));
  return stop;
}

/**
 * The stop for a signal that arrives while the service is still loading: only the listener
 * exists, so it drains the warm-up answers it holds (bounded) and exits 0.
 */
function stopperBeforeReady(server: Deno.HttpServer, timeoutMs: number, ready: Promise<Lifecycle>): Stop {
  const repeat = repeatedSignal(() => {});
  let stopping = false;
  let lifecycle: Lifecycle | undefined;
  ready.then((ready) => lifecycle = ready, () => {});
  return async (signal) => {
    if (signal !== "worker" && repeat(signal)) return;
    if (stopping) return;
    stopping = true;
    const deadlines = new DeadlineSweep();
    const startedAt = performance.now();
    // No logger exists yet: the line has the logger's shape.
    console.log(
      JSON.stringify({
        ts: new Date().toISOString(),
        level: "info",
        msg: "shutting down before ready",
        signal,
      }),
    );
    await deadlines.within(server.shutdown(), timeoutMs, "Shutdown").catch(() => {});
    // Held requests the service answered once it became ready during the drain may have left
    // background work (exposures, KV writes): it gets the rest of the deadline, then KV closes.
    if (lifecycle) {
      lifecycle.flush();
      const left = Math.max(0, timeoutMs - (performance.now() - startedAt));
      await deadlines.within(lifecycle.drainBackground(), left, "Shutdown").catch(() => {});
      await lifecycle.close().catch(() => {});
    }
    Deno.exit(0);
  };
}

/**
 * Tells a repeat of a signal from a second one. One Ctrl-C can arrive twice (the terminal
 * signals the whole process group, and `deno task` forwards it too): a repeat within a second is
 * the same signal and is ignored; a later one exits at once.
 *
 * @returns a check that is true when the signal is to be ignored
 */
function repeatedSignal(onSecond: (signal: Signal) => void): (signal: Signal) => boolean {
  let signalledAt: number | undefined;
  return (signal) => {
    if (signalledAt === undefined) {
      signalledAt = performance.now();
      return false;
    }
    if (performance.now() - signalledAt < SAME_SIGNAL_MS) return true;
    onSecond(signal);
    Deno.exit(signal === "SIGINT" ? 130 : 143);
  };
}

function onSignals(stop: Stop): void {
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}

/** Drains servers and background work within the deadline; false when the deadline cut it. */
async function drain(servers: Deno.HttpServer[], lifecycle: Lifecycle): Promise<boolean> {
  const { log, deadlines } = lifecycle;
  const timeoutMs = lifecycle.config.shutdownTimeoutMs;
  // Past the deadline nothing cuts open requests here (aborting a server's signal once
  // `shutdown()` runs throws): exiting does.
  const work = (async () => {
    await Promise.all(servers.map((server) => server.shutdown()));
    lifecycle.flush();
    await lifecycle.drainBackground();
  })();
  try {
    await deadlines.within(work, timeoutMs, "Shutdown");
    return true;
  } catch (error) {
    if (!(error instanceof DeadlineError)) {
      log.error("shutdown drain failed", { error: (error as Error).message });
      return true;
    }
    log.warn("shutdown deadline passed: cutting the requests still open", {
      timeoutMs,
      ...lifecycle.undone(),
    });
    return false;
  }
}

/**
 * Under `deno serve --parallel` every worker drains its own server, and `Deno.exit` in one ends
 * them all: the workers tell each other when they start and finish draining, and the process exits
 * once every worker that started has finished (or at the deadline). A worker told by another
 * starts too, so one that missed the signal does not keep the process up.
 */
class WorkerDrain {
  #channel = new BroadcastChannel("edge-personalizer-shutdown");
  #id = crypto.randomUUID();
  #draining = new Set<string>();
  #drained = new Set<string>();
  #allDrained: (() => void) | undefined;

  listen(onOtherDraining: () => void): void {
    this.#channel.onmessage = (event: MessageEvent<{ type: string; id: string }>) => {
      const { type, id } = event.data;
      if (type === "draining") {
        this.#draining.add(id);
        onOtherDraining();
      } else if (type === "drained") {
        this.#drained.add(id);
        this.#check();
      }
    };
  }

  announceDraining(): void {
    this.#draining.add(this.#id);
    this.#channel.postMessage({ type: "draining", id: this.#id });
  }

  /** Says this worker is done, then waits (up to the shared deadline) for the others. */
  async finish(startedAt: number, { config, deadlines }: Lifecycle): Promise<void> {
    this.#drained.add(this.#id);
    this.#channel.postMessage({ type: "drained", id: this.#id });
    // The other workers got the same signal: give their "draining" time to arrive, also from a
    // worker that was busy when the signal came.
    await new Promise((resolve) => setTimeout(resolve, 250));
    const left = Math.max(0, startedAt + config.shutdownTimeoutMs - performance.now());
    await deadlines.within(
      new Promise<void>((resolve) => {
        this.#allDrained = resolve;
        this.#check();
      }),
      left,
      "Shutdown of the other workers",
    ).catch(() => {});
  }

  #check(): void {
    if ([...this.#draining].every((id) => this.#drained.has(id))) this.#allDrained?.();
  }
}
