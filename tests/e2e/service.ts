/**
 * @module
 * Starts `main.ts` as a real subprocess for end-to-end tests and waits until it is healthy.
 */

/** A running service process. */
export interface ServiceProcess {
  url: string;
  port: number;
  pid: number;
  child: Deno.ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output: () => string;
  /** Peak resident set size of the process, in bytes (Linux). */
  peakRss: () => Promise<number>;
  stop: () => Promise<Deno.CommandStatus>;
}

const ROOT = new URL("../../", import.meta.url);

/** Finds a free TCP port on loopback. */
export function freePort(): number {
  const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Options for {@linkcode startService}. */
export interface StartServiceOptions {
  /** Use `deno serve --parallel` instead of `deno run`. */
  serve?: boolean;
}

/**
 * Starts the service with the given environment on a free port.
 *
 * @param env environment variables (PORT and HOSTNAME are set here)
 * @param options how to start it
 * @returns the running process, once `/_edge/health` answers
 */
export async function startService(
  env: Record<string, string>,
  options: StartServiceOptions = {},
): Promise<ServiceProcess> {
  const port = freePort();
  const permissions = ["--allow-net", "--allow-env", "--allow-read", "--allow-write", "--allow-sys"];
  const args = options.serve
    ? ["serve", "--parallel", ...permissions, "--port", String(port), "--host", "127.0.0.1", "main.ts"]
    : ["run", ...permissions, "main.ts"];
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { PORT: String(port), HOSTNAME: "127.0.0.1", LOG_LEVEL: "warn", NO_COLOR: "1", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk);
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  while (true) {
    try {
      const res = await fetch(`${url}/_edge/health`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      try {
        child.kill("SIGKILL");
      } catch {
        // It exited on its own: the output says why.
      }
      const status = await child.status;
      await drained;
      throw new Error(`Service did not start (exit code ${status.code}): ${text}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url,
    port,
    pid: child.pid,
    child,
    output: () => text,
    peakRss: async () => {
      // Deno asks for --allow-all to read /proc directly; `cat` needs only --allow-run.
      const out = await new Deno.Command("cat", { args: [`/proc/${child.pid}/status`], stdout: "piped" })
        .output();
      const status = new TextDecoder().decode(out.stdout);
      return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
    },
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      // A process that ignores SIGTERM must fail the test, not hang the suite.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const exited = await Promise.race([
        child.status.then(() => true),
        new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 15_000)),
      ]);
      clearTimeout(timer);
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch {
          // Exited meanwhile.
        }
      }
      const status = await child.status;
      await drained;
      if (!exited) throw new Error(`Service did not stop within 15 s of SIGTERM: ${text}`);
      return status;
    },
  };
}

/**
 * Runs `main.ts` expecting it to fail at start-up.
 *
 * @param env the environment
 * @returns exit code and stderr
 */
export async function runServiceExpectingFailure(
  env: Record<string, string>,
): Promise<{ code: number; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "--allow-sys", "main.ts"],
    cwd: ROOT,
    env: { NO_COLOR: "1", PORT: String(freePort()), ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: output.code, stderr: new TextDecoder().decode(output.stderr) };
}
