/**
 * @module
 * Every shell command shown in README.md and docs/*.md, run as a reader would run it: the curls
 * against one `tools/dev.ts` process (the service `deno task dev` starts, on free ports), the
 * `deno task …` CLIs in the repository. A command that cannot run here is listed in `NOT_RUN`
 * with the reason, so a new command is never silently unchecked.
 */
import assert from "node:assert/strict";
import { freePort } from "./e2e/service.ts";

const ROOT = new URL("../", import.meta.url);
/** The dev service's public demo sync secret (`tools/dev.ts`), for the documented `whsec_…`. */
const DEV_SYNC_SECRET = "whsec_ZGV2LW9ubHktc3luYy1zZWNyZXQtMDAwMDAwMA==";
/** Given to the dev service so that the documented `$METRICS_TOKEN` and `$QA_TOKEN` curls run. */
const METRICS_TOKEN = "docs-test-metrics-token-0000";
const QA_TOKEN = "docs-test-qa-token-00000000";

/** One command of a fenced `sh` block: continuation lines joined, the trailing comment cut. */
interface DocCommand {
  file: string;
  line: number;
  command: string;
}

/** Commands that cannot run in a test, each with why; every pattern must still match one. */
const NOT_RUN: readonly { pattern: RegExp; reason: string }[] = [
  {
    pattern: /^npx -y deno@\S+ task dev$/,
    reason: "starts the long-running dev service: this test starts tools/dev.ts as the task does",
  },
  {
    pattern: /^(npx -y deno@\S+ |deno )task test$|^deno test /,
    reason: "runs the test suite this test is part of",
  },
  { pattern: /^deno deploy\b/, reason: "changes a real Deno Deploy organization (needs an account)" },
  {
    pattern: /^(mkdir -p \S+ && )?ORIGIN_URL=\S+ .*deno task (start|serve)$/,
    reason:
      "starts a long-running service for the reader's own origin; tests/e2e/main_test.ts starts main.ts so",
  },
  { pattern: /^deno task bench:/, reason: "a benchmark: minutes long, never run in the test suite" },
  {
    pattern: /^(sudo |systemd-analyze |journalctl )/,
    reason: "installs or reads the host's system services (root)",
  },
  {
    pattern: /^export DENO_KV_ACCESS_TOKEN=|^docker run /,
    reason: "sets up a denokv server on a KV host (docker)",
  },
  {
    pattern: /^sed .*deploy\/nginx\//,
    reason: "writes the nginx config under /etc (root); tests/e2e/nginx_test.ts renders the template",
  },
  {
    pattern: /\.edge\.example/,
    reason: "publishes the reader's own events to their edges; the same push CLI runs against dev below",
  },
];

/** What a documented command's output must show, beyond its exit status 0. */
const EXPECTED: readonly { pattern: RegExp; output: RegExp }[] = [
  { pattern: /x-geo-country: DE.*\/api\/products\/promotions/, output: /"region":\s*"EU"/ },
  { pattern: /curl -s \S+\/echo\/anything/, output: /x-edge-region/ },
  { pattern: /x-forwarded-for: 130\.149\.7\.201/, output: /"country":\s*"DE"/ },
  { pattern: /x-user-id: u1.*\/_edge\/context/, output: /"userId":\s*"u1"[\s\S]*"recentViews":\s*\["/ },
  { pattern: /x-geo-country:%20JP.*format=text/, output: /region +APAC/ },
  { pattern: /cf-ipcountry:%20DE.*format=text/, output: /region +EU/ },
  { pattern: /\/_edge\/explain$/, output: /"device":\s*\{[^}]*"mobile"/ },
  { pattern: /\/_edge\/metrics/, output: /^edge_requests_total/m },
  { pattern: /\/_edge\/rules/, output: /"active"/ },
  { pattern: /\/_edge\/experiments/, output: /"hero"/ },
  {
    pattern: /x-edge-qa:.*\/_edge\/explain/,
    output: /^QA +hero=b; new-search=true — Forced: the QA token holds/m,
  },
  { pattern: /x-edge-qa:/, output: /x-edge-variants[^\n]*hero=b/ },
  { pattern: /task secret/, output: /^whsec_[A-Za-z0-9+/]+={0,2}\n$/ },
  { pattern: /task push/, output: /delivered \d+ events? in \d+ batch(es)?, failed 0 events in 0 batches/ },
  { pattern: /task explain .*--json/, output: /^\{[\s\S]*"decision"[\s\S]*\}\s*$/ },
  {
    pattern: /task explain .*--qa-variants hero=b/,
    output: /^QA +hero=b; new-search=true — Forced \(offline/m,
  },
  { pattern: /task explain .*--canary /, output: /canary hash/ },
  { pattern: /task explain .*--country DE/, output: /region +EU/ },
  {
    pattern: /task explain .*--ip 85\.214\.132\.117/,
    output: /IP database maps 85\.214\.132\.117 to DE[\s\S]*w=/,
  },
  { pattern: /task rules:check tools\/demo_rules\.json/, output: /tools\/demo_rules\.json: valid/ },
  { pattern: /task rules:diff /, output: /^version \d+ → \d+/m },
];

const CLI = /^(?:[A-Z_]+=\S+ )*(?:npx -y deno@\S+|deno) task (push|secret|explain|rules:check|rules:diff)\b/;

async function documentedCommands(): Promise<DocCommand[]> {
  const files = ["README.md"];
  for await (const entry of Deno.readDir(new URL("docs/", ROOT))) {
    if (entry.isFile && entry.name.endsWith(".md")) files.push(`docs/${entry.name}`);
  }
  const commands: DocCommand[] = [];
  for (const file of files.sort()) {
    const text = await Deno.readTextFile(new URL(file, ROOT));
    for (const block of text.matchAll(/^```(?:sh|bash|shell)\n([\s\S]*?)^```/gm)) {
      const firstLine = text.slice(0, block.index).split("\n").length + 1;
      let pending = "";
      let pendingLine = 0;
      block[1]!.split("\n").forEach((raw, index) => {
        const line = raw.trim();
        if (!pending) pendingLine = firstLine + index;
        if (line.endsWith("\\")) {
          pending += `${line.slice(0, -1).trim()} `;
          return;
        }
        const command = `${pending}${line}`.replace(/\s+#\s.*$/, "").trim();
        pending = "";
        if (command && !command.startsWith("#")) commands.push({ file, line: pendingLine, command });
      });
    }
  }
  return commands;
}

/** A running `tools/dev.ts` with its output (the service's included). */
function startDev(port: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tools/dev.ts"],
    cwd: ROOT,
    env: {
      NO_COLOR: "1",
      PORT: String(port),
      DEMO_ORIGIN_PORT: "0",
      DEMO_FRONT_PORT: "0",
      KV_PATH: ":memory:",
      METRICS_TOKEN,
      QA_TOKEN,
      // Quieter: the decision log of every request is not what this test reads.
      LOG_LEVEL: "warn",
    },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  let ended = false;
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  };
  const finished = Promise.all([child.status, drain(child.stdout), drain(child.stderr)]).finally(() => {
    ended = true;
  });
  const waitFor = async (wanted: string, ms: number) => {
    const deadline = Date.now() + ms;
    while (!text.includes(wanted)) {
      if (ended || Date.now() > deadline) throw new Error(`dev never printed "${wanted}":\n${text}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  };
  return { child, finished, waitFor, output: () => text };
}

async function run(command: string, env: Record<string, string>) {
  const output = await new Deno.Command("sh", {
    args: ["-c", command],
    cwd: ROOT,
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

/** The command as it runs here: the dev service for the documented hosts, this deno, the dev secret. */
function localize(command: string, base: string): string {
  return command
    .replace(/https?:\/\/(?:localhost|127\.0\.0\.1):8000/g, base)
    .replace(/https:\/\/(?:edge|shop)\.example/g, base)
    .replace(/npx -y deno@\S+ task /g, '"$DENO" task ')
    .replace(/(^|\s)deno task /g, '$1"$DENO" task ')
    .replace(/whsec_…/g, DEV_SYNC_SECRET);
}

function expectedOutput(command: string): RegExp | undefined {
  return EXPECTED.find(({ pattern }) => pattern.test(command))?.output;
}

Deno.test("every fenced command in README.md and docs/ is run, or listed with why it cannot be", async (t) => {
  const commands = await documentedCommands();
  assert.ok(commands.length > 20, `only ${commands.length} commands found: is the extraction broken?`);
  // The two set-up commands are part of the README's promise to a newcomer.
  for (const wanted of ["npx -y deno@2.9.6 task dev", "npx -y deno@2.9.6 task test"]) {
    assert.ok(commands.some((c) => c.file === "README.md" && c.command === wanted), wanted);
  }
  for (const { pattern, reason } of NOT_RUN) {
    assert.ok(
      commands.some(({ command }) => pattern.test(command)),
      `NOT_RUN entry matches nothing: ${reason}`,
    );
  }
  const runnable = commands.filter(({ command }) => !NOT_RUN.some(({ pattern }) => pattern.test(command)));
  const unknown = runnable.filter(({ command }) => !command.startsWith("curl ") && !CLI.test(command));
  assert.deepEqual(
    unknown.map(({ file, line, command }) => `${file}:${line}: ${command}`),
    [],
    "commands neither run here nor listed in NOT_RUN",
  );

  const port = freePort();
  const base = `http://127.0.0.1:${port}`;
  const dev = startDev(port);
  try {
    await dev.waitFor("Push the demo activity again", 30_000);
    const token = dev.output().match(/rules token +(\S+)/)?.[1];
    assert.ok(token, "the banner prints the dev rules token");
    const env = {
      ...Deno.env.toObject(),
      DENO: Deno.execPath(),
      RULES_TOKEN: token,
      METRICS_TOKEN,
      QA_TOKEN,
    };
    for (const { file, line, command } of runnable) {
      await t.step(`${file}:${line}: ${command.slice(0, 90)}`, async () => {
        const local = localize(command, base);
        const isCurl = command.startsWith("curl ");
        if (isCurl) {
          assert.ok(local.includes(base), `a curl against a host the test does not know: ${command}`);
        }
        const result = await run(isCurl ? `${local} -w '\\n[http %{http_code}]'` : local, env);
        const shown = `${local}\nexit ${result.code}\n${result.stdout}\n${result.stderr}`;
        assert.equal(result.code, 0, shown);
        let body = result.stdout;
        if (isCurl) {
          const status = body.match(/\n\[http (\d{3})\]$/);
          assert.ok(status, shown);
          assert.ok(Number(status[1]) < 400, `HTTP ${status[1]}: ${shown}`);
          body = body.slice(0, status.index);
        }
        assert.ok(body.trim().length > 0, `no output: ${shown}`);
        const wanted = expectedOutput(command);
        assert.ok(wanted, `no expectation for this command in EXPECTED: ${command}`);
        assert.match(body, wanted, shown);
      });
    }
    // The banner's own commands too: a newcomer copies them before reading any doc.
    const banner = dev.output().slice(dev.output().indexOf("Edge Personalizer (dev)"));
    const bannerCommands = banner.split("\n").map((line) => line.replace(/\s+#\s.*$/, "").trim())
      .filter((line) => line.startsWith("curl ") || CLI.test(line));
    assert.ok(bannerCommands.length >= 10, `too few commands in the banner:\n${banner}`);
    for (const command of bannerCommands) {
      await t.step(`banner: ${command.slice(0, 100)}`, async () => {
        const isCurl = command.startsWith("curl ");
        assert.ok(!isCurl || command.includes(base), `a banner curl not aimed at the service: ${command}`);
        const local = localize(command, base);
        const result = await run(isCurl ? `${local} -w '\\n[http %{http_code}]'` : local, env);
        const shown = `${local}\nexit ${result.code}\n${result.stdout}\n${result.stderr}`;
        assert.equal(result.code, 0, shown);
        if (isCurl) {
          const status = result.stdout.match(/\n\[http (\d{3})\]$/);
          assert.ok(status && Number(status[1]) < 400, shown);
          assert.ok(result.stdout.slice(0, status.index).trim().length > 0, `no output: ${shown}`);
        } else {
          assert.match(result.stdout, /delivered \d+ events? in \d+ batch(es)?, failed 0 events/, shown);
        }
      });
    }
  } finally {
    try {
      dev.child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    await dev.finished;
  }
});
