import assert from "node:assert/strict";
import { parse as parseYaml } from "yaml";
import { startOrigin } from "../support.ts";
import { startService } from "../e2e/service.ts";
import {
  dashboardQueries,
  exportedNames,
  type Exposition,
  findBinary,
  loadDashboard,
  loadRules,
  markdownAnchors,
  OPERATIONS_DOC,
  parseExposition,
  PROMETHEUS_CONFIG,
  RULES_FILE,
  RULES_TEST_FILE,
  type Selector,
  selectorsOf,
} from "./prometheus_support.ts";

const PROMTOOL = await findBinary(["promtool", "/usr/bin/promtool"]);
if (!PROMTOOL) {
  console.warn("promtool not found (apt-get install prometheus): the promtool tests are skipped");
}

const DEMO_RULES = new URL("../../tools/demo_rules.json", import.meta.url).pathname;
const METRICS_TOKEN = "rules-check-metrics-token-0123";
const SYNC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/** Series Prometheus makes itself for every target. */
const PROMETHEUS_OWN_SERIES: readonly string[] = ["up"];

/** Labels the scrape config gives every series; the service never exports them. */
const TARGET_LABELS: readonly string[] = ["job", "instance", "edge_region"];

/**
 * The environment of the checked service: every optional feature on, so that every metric the
 * service can export is exported (read-through, sync, rules, exposure events, the metrics token).
 */
function optionalFeaturesEnv(
  originUrl: string,
  backendUrl: string,
  exposuresUrl: string,
): Record<string, string> {
  return {
    ORIGIN_URL: originUrl,
    ORIGIN_TIMEOUT_MS: "300",
    KV_PATH: ":memory:",
    RULES_PATH: DEMO_RULES,
    BACKEND_URL: backendUrl,
    BACKEND_TOKEN: "rules-check-backend-token-0123",
    SYNC_SECRETS: SYNC_SECRET,
    EXPOSURES_URL: exposuresUrl,
    EXPOSURES_SECRET: SYNC_SECRET,
    METRICS_TOKEN,
  };
}

async function run(cmd: string, args: string[], cwd?: string): Promise<{ success: boolean; output: string }> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { success: out.success, output: decode(out.stdout) + decode(out.stderr) };
}

Deno.test({
  name: "promtool accepts the rule file and the scrape config, and the rules' unit tests pass",
  ignore: PROMTOOL === undefined,
  fn: async () => {
    const check = await run(PROMTOOL!, ["check", "rules", "--lint=all", "--lint-fatal", RULES_FILE]);
    assert.ok(check.success, check.output);
    assert.match(check.output, /SUCCESS: \d+ rules found/);

    const unit = await run(PROMTOOL!, ["test", "rules", RULES_TEST_FILE]);
    assert.ok(unit.success, unit.output);
    assert.match(unit.output, /SUCCESS/);

    // The full check (not just its syntax) needs the token file and the rule file where the config
    // names them: a copy in a temporary directory.
    const dir = await Deno.makeTempDir({ prefix: "edge-prom-config-" });
    try {
      const config = parseYaml(await Deno.readTextFile(PROMETHEUS_CONFIG)) as {
        rule_files: string[];
        scrape_configs: Array<{ authorization: { credentials_file: string } }>;
      };
      await Deno.writeTextFile(`${dir}/token`, `${METRICS_TOKEN}\n`);
      config.rule_files = [RULES_FILE];
      for (const scrape of config.scrape_configs) scrape.authorization.credentials_file = `${dir}/token`;
      await Deno.writeTextFile(`${dir}/prometheus.yml`, JSON.stringify(config));
      const full = await run(PROMTOOL!, [
        "check",
        "config",
        "--lint=all",
        "--lint-fatal",
        `${dir}/prometheus.yml`,
      ]);
      assert.ok(full.success, full.output);
      assert.match(full.output, /SUCCESS: \d+ rules found/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("every alert has a for, a severity, a summary naming instance and region, and a runbook that exists", async () => {
  const rules = await loadRules();
  const alerts = rules.filter((rule) => rule.alert);
  const anchors = markdownAnchors(await Deno.readTextFile(OPERATIONS_DOC));
  assert.ok(alerts.length >= 20, `${alerts.length} alerts`);
  for (const alert of alerts) {
    const name = alert.alert!;
    assert.match(alert.for ?? "", /^\d+[smh]$/, `${name} has a for`);
    assert.ok(
      ["page", "ticket"].includes(alert.labels?.severity ?? ""),
      `${name} has severity page or ticket`,
    );
    const summary = alert.annotations?.summary ?? "";
    // A job-wide alert says so instead of naming one instance.
    assert.match(
      summary,
      /\{\{ \$labels\.instance \}\}|any instance/,
      `${name}'s summary names the instance`,
    );
    assert.match(
      summary,
      /\{\{ \$labels\.edge_region \}\}|any edge region/,
      `${name}'s summary names the region`,
    );
    assert.equal(alert.annotations?.runbook_url, `docs/operations.md#${name.toLowerCase()}`, name);
    assert.ok(anchors.has(name.toLowerCase()), `docs/operations.md has a runbook heading "${name}"`);
  }
  // And every alert the documentation lists is in the rule file.
  const documented = new Set(alerts.map((alert) => alert.alert!.toLowerCase()));
  for (const anchor of anchors) {
    if (/^edge[a-z]+$/.test(anchor)) assert.ok(documented.has(anchor), `runbook "${anchor}" has an alert`);
  }
});

Deno.test("the unit tests show every alert firing and every alert quiet", async () => {
  const alerts = (await loadRules()).filter((rule) => rule.alert).map((rule) => rule.alert!);
  const tests = parseYaml(await Deno.readTextFile(RULES_TEST_FILE)) as {
    tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }>;
  };
  const cases = tests.tests.flatMap((test) => test.alert_rule_test ?? []);
  for (const alert of alerts) {
    const own = cases.filter((c) => c.alertname === alert);
    assert.ok(own.some((c) => c.exp_alerts.length > 0), `${alert} is shown firing`);
    assert.ok(own.some((c) => c.exp_alerts.length === 0), `${alert} is shown quiet`);
  }
});

/** What the metric-name check compares the queries with. */
interface Known {
  exposition: Exposition;
  exported: Set<string>;
  recorded: Set<string>;
  jobName: string;
}

function literalValues(matcher: { op: string; value: string }): string[] {
  if (matcher.value === "") return [];
  if (matcher.op === "=" || matcher.op === "!=") return [matcher.value];
  // A regex that is a plain alternation names its values; anything fancier is not checked.
  return /^[\w.+-]+(\|[\w.+-]+)*$/.test(matcher.value) ? matcher.value.split("|") : [];
}

function problemsOf(selector: Selector, where: string, known: Known): string[] {
  const problems: string[] = [];
  for (const matcher of selector.matchers) {
    if (matcher.label === "job" && matcher.op === "=" && matcher.value !== known.jobName) {
      problems.push(`${where}: job="${matcher.value}" is not the scrape config's job "${known.jobName}"`);
    }
  }
  const name = selector.name;
  if (known.recorded.has(name) || PROMETHEUS_OWN_SERIES.includes(name)) return problems;
  if (!known.exported.has(name)) return [...problems, `${where}: ${name} is not exported by /_edge/metrics`];
  const samples = known.exposition.samples.filter((sample) => sample.name === name);
  for (const matcher of selector.matchers) {
    if (TARGET_LABELS.includes(matcher.label)) continue;
    if (samples.length === 0) {
      problems.push(
        `${where}: no sample of ${name} to check {${matcher.label}} against: drive traffic that makes one`,
      );
      continue;
    }
    const seen = new Set(
      samples.map((sample) => sample.labels[matcher.label]).filter((v) => v !== undefined),
    );
    if (seen.size === 0) {
      problems.push(`${where}: ${name} has no label "${matcher.label}"`);
      continue;
    }
    for (const value of literalValues(matcher)) {
      if (!seen.has(value)) {
        problems.push(
          `${where}: ${name}{${matcher.label}="${value}"} is never exported (seen: ${[...seen].join(", ")})`,
        );
      }
    }
  }
  return problems;
}

async function scrapeUntil(url: string, ready: (text: string) => boolean): Promise<string> {
  const deadline = Date.now() + 10_000;
  while (true) {
    const res = await fetch(url, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    assert.equal(res.status, 200);
    const text = await res.text();
    if (ready(text) || Date.now() > deadline) return text;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

Deno.test("every metric a rule or dashboard query names is one the running service exports", async () => {
  // The origin answers at once, except /slow, which outlasts ORIGIN_TIMEOUT_MS (a 504, and an
  // origin duration with status class "error").
  const origin = startOrigin(async (req) => {
    if (req.path === "/slow") await new Promise((resolve) => setTimeout(resolve, 1000));
    return new Response("ok");
  });
  const backend = startOrigin(() =>
    Response.json({ error: { code: "not_found", message: "unknown" } }, { status: 404 })
  );
  const exposures = startOrigin(() => new Response(null, { status: 204 }));
  const service = await startService(optionalFeaturesEnv(origin.url, backend.url, exposures.url));
  try {
    for (
      const [path, headers] of [
        ["/", {}],
        ["/", { cookie: "sid=metrics-check-session" }],
        ["/slow", {}],
      ] as const
    ) {
      const res = await fetch(`${service.url}${path}`, { headers });
      await res.body?.cancel();
    }
    // V8's heap limit is reported a moment after start.
    const text = await scrapeUntil(`${service.url}/_edge/metrics`, (t) => t.includes('area="heap_limit"'));
    const exposition = parseExposition(text);
    const exported = exportedNames(exposition);
    const rules = await loadRules();
    const config = parseYaml(await Deno.readTextFile(PROMETHEUS_CONFIG)) as {
      scrape_configs: Array<{ job_name: string }>;
    };
    const known: Known = {
      exposition,
      exported,
      recorded: new Set(rules.flatMap((rule) => rule.record ? [rule.record] : [])),
      jobName: config.scrape_configs[0]!.job_name,
    };

    const queries = [
      ...rules.map((rule) => ({ where: `rule ${rule.record ?? rule.alert}`, expr: rule.expr })),
      ...dashboardQueries(await loadDashboard()),
    ];
    const problems: string[] = [];
    const named = new Set<string>();
    for (const query of queries) {
      let selectors: Selector[];
      try {
        selectors = selectorsOf(query.expr);
      } catch (error) {
        problems.push(`${query.where}: ${(error as Error).message}`);
        continue;
      }
      assert.ok(selectors.length > 0, `${query.where} selects something`);
      for (const selector of selectors) {
        named.add(selector.name);
        problems.push(...problemsOf(selector, query.where, known));
      }
    }
    assert.deepEqual(problems, []);

    // A recording rule nobody reads is dead weight; each feeds an alert or a panel.
    for (const record of known.recorded) assert.ok(named.has(record), `${record} is used`);
  } finally {
    await service.stop();
    await exposures.close();
    await backend.close();
    await origin.close();
  }
});

Deno.test("a renamed metric or label value fails the metric-name check", () => {
  const exposition = parseExposition([
    "# TYPE edge_origin_errors_total counter",
    'edge_origin_errors_total{kind="timeout"} 0',
    'edge_origin_errors_total{kind="unavailable"} 0',
    "# TYPE edge_sync_lag_seconds histogram",
    'edge_sync_lag_seconds_bucket{le="+Inf"} 0',
    "edge_sync_lag_seconds_count 0",
    "edge_sync_lag_seconds_sum 0",
  ].join("\n"));
  const known: Known = {
    exposition,
    exported: exportedNames(exposition),
    recorded: new Set(["instance:edge_origin_unreachable:rate5m"]),
    jobName: "edge-personalizer",
  };
  const check = (expr: string) => selectorsOf(expr).flatMap((selector) => problemsOf(selector, "q", known));
  assert.deepEqual(
    check('rate(edge_origin_errors_total{kind=~"timeout|unavailable",job="edge-personalizer"}[5m])'),
    [],
  );
  assert.deepEqual(
    check("rate(edge_sync_lag_seconds_count[5m]) + instance:edge_origin_unreachable:rate5m"),
    [],
  );
  assert.deepEqual(check("edge_sync_lag_seconds_bucket + up"), []);
  assert.deepEqual(check("rate(edge_origin_error_total[5m])"), [
    "q: edge_origin_error_total is not exported by /_edge/metrics",
  ]);
  assert.deepEqual(check("edge_sync_lag_seconds"), [
    "q: edge_sync_lag_seconds is not exported by /_edge/metrics",
  ]);
  assert.deepEqual(check('edge_origin_errors_total{kind=~"timeout|refused"}'), [
    'q: edge_origin_errors_total{kind="refused"} is never exported (seen: timeout, unavailable)',
  ]);
  assert.deepEqual(check('edge_origin_errors_total{reason="timeout"}'), [
    'q: edge_origin_errors_total has no label "reason"',
  ]);
  assert.deepEqual(check('up{job="edge"}'), [
    'q: job="edge" is not the scrape config\'s job "edge-personalizer"',
  ]);
  assert.throws(() => selectorsOf("sum(rate(edge_origin_errors_total[5m])"), /Cannot parse PromQL/);
  assert.deepEqual(check('rate(edge_exposure_events_total{result="dropped"}[5m])'), [
    "q: edge_exposure_events_total is not exported by /_edge/metrics",
  ]);
});
