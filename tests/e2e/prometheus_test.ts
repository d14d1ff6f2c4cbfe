import assert from "node:assert/strict";
import { parse as parseYaml } from "yaml";
import { freePort, startService } from "./service.ts";
import {
  compressRules,
  dashboardQueries,
  findBinary,
  loadDashboard,
  loadRules,
  PROMETHEUS_CONFIG,
  RULES_FILE,
  selectorsOf,
} from "../deploy/prometheus_support.ts";

const PROMETHEUS = await findBinary(["prometheus", "/usr/bin/prometheus"]);
if (!PROMETHEUS) {
  console.warn("prometheus not found (apt-get install prometheus): its end-to-end test is skipped");
}

const METRICS_TOKEN = "e2e-prometheus-metrics-token-01";
/** The test's Prometheus runs 60 times faster than production: a minute of the rules is a second. */
const TIME_FACTOR = 60;
const TARGET_LABELS = ["job", "instance", "edge_region"];

interface PromAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: "pending" | "firing";
}

interface PromVector {
  metric: Record<string, string>;
  value: [number, string];
}

/** A Prometheus process on loopback with its own data directory. */
interface Prometheus {
  url: string;
  output: () => string;
  stop: () => Promise<void>;
}

async function startPrometheus(binary: string, dir: string, configPath: string): Promise<Prometheus> {
  const port = freePort();
  const child = new Deno.Command(binary, {
    args: [
      `--config.file=${configPath}`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk);
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      child.status.then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 10_000)),
    ]);
    clearTimeout(timer);
    if (!exited) child.kill("SIGKILL");
    await child.status;
    await drained;
  };
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitFor("Prometheus ready", 20_000, async () => {
      const res = await fetch(`${url}/-/ready`).catch(() => undefined);
      await res?.body?.cancel();
      return res?.ok === true;
    });
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}: ${text}`);
  }
  return { url, output: () => text, stop };
}

async function waitFor<T>(what: string, ms: number, probe: () => Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + ms;
  while (true) {
    const result = await probe();
    if (result !== undefined && result !== false) return result;
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function api<T>(prometheus: Prometheus, path: string): Promise<T> {
  const res = await fetch(`${prometheus.url}${path}`);
  const body = await res.json() as { status: string; data: T; error?: string };
  assert.equal(body.status, "success", `${path}: ${body.error}`);
  return body.data;
}

async function query(prometheus: Prometheus, expr: string): Promise<PromVector[]> {
  const data = await api<{ resultType: string; result: PromVector[] }>(
    prometheus,
    `/api/v1/query?query=${encodeURIComponent(expr)}`,
  );
  return data.resultType === "vector" ? data.result : [];
}

async function originAlerts(prometheus: Prometheus): Promise<PromAlert[]> {
  const data = await api<{ alerts: PromAlert[] }>(prometheus, "/api/v1/alerts");
  return data.alerts.filter((alert) => alert.labels.alertname === "EdgeOriginUnreachable");
}

/** The shipped scrape config, pointed at the test's service, token file and compressed rules. */
async function testConfig(dir: string, servicePort: number): Promise<string> {
  const config = parseYaml(await Deno.readTextFile(PROMETHEUS_CONFIG)) as {
    global: Record<string, string>;
    rule_files: string[];
    alerting?: unknown;
    scrape_configs: Array<Record<string, unknown> & { authorization: { credentials_file: string } }>;
  };
  await Deno.writeTextFile(`${dir}/token`, `${METRICS_TOKEN}\n`);
  await Deno.writeTextFile(
    `${dir}/rules.yml`,
    compressRules(await Deno.readTextFile(RULES_FILE), { factor: TIME_FACTOR }),
  );
  config.global = { scrape_interval: "1s", evaluation_interval: "1s" };
  config.rule_files = [`${dir}/rules.yml`];
  delete config.alerting;
  assert.equal(config.scrape_configs.length, 1);
  const scrape = config.scrape_configs[0]!;
  scrape.scrape_timeout = "1s";
  scrape.authorization.credentials_file = `${dir}/token`;
  scrape.static_configs = [{ targets: [`127.0.0.1:${servicePort}`], labels: { edge_region: "test" } }];
  await Deno.writeTextFile(`${dir}/prometheus.yml`, JSON.stringify(config));
  return `${dir}/prometheus.yml`;
}

function serveOrigin(port: number): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ port, hostname: "127.0.0.1", onListen: () => {} }, () => new Response("shop"));
}

/** Keeps proxied requests flowing (with a session cookie, so KV is read too) until stopped. */
function startTraffic(url: string): { statuses: Map<number, number>; stop: () => Promise<void> } {
  const statuses = new Map<number, number>();
  let running = true;
  const worker = async () => {
    while (running) {
      try {
        const res = await fetch(`${url}/products`, { headers: { cookie: "sid=prometheus-e2e-session" } });
        await res.body?.cancel();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      } catch {
        // The service is stopping.
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const workers = [worker(), worker()];
  return {
    statuses,
    stop: async () => {
      running = false;
      await Promise.all(workers);
    },
  };
}

// The rules are loaded with every `for` and range divided by TIME_FACTOR (compressRules): the same
// expressions and thresholds on a faster clock, so that a 5-minute alert fires in 5 seconds.
Deno.test({
  name:
    "a real Prometheus scraping the service fires EdgeOriginUnreachable when the origin stops, and resolves it",
  ignore: PROMETHEUS === undefined,
  fn: async () => {
    let origin = serveOrigin(0);
    const originPort = origin.addr.port;
    let originUp = true;
    const service = await startService({
      ORIGIN_URL: `http://127.0.0.1:${originPort}`,
      KV_PATH: ":memory:",
      METRICS_TOKEN,
    });
    const dir = await Deno.makeTempDir({ prefix: "edge-prometheus-" });
    let prometheus: Prometheus | undefined;
    let traffic: ReturnType<typeof startTraffic> | undefined;
    try {
      prometheus = await startPrometheus(PROMETHEUS!, dir, await testConfig(dir, service.port));
      const prom = prometheus;

      // The shipped relabelling names the instance by host, and the token file opens the endpoint.
      const up = await waitFor("the target scraped", 20_000, async () => {
        const result = await query(prom, 'up{job="edge-personalizer"}');
        return result.find((sample) => sample.value[1] === "1");
      });
      assert.deepEqual(
        { instance: up.metric.instance, edge_region: up.metric.edge_region },
        { instance: "127.0.0.1", edge_region: "test" },
      );

      traffic = startTraffic(service.url);
      await waitFor("recorded request rates", 20_000, async () => {
        const rates = await query(
          prom,
          'instance_route_class_region:edge_requests:rate5m{route_class="proxy"} > 0',
        );
        return rates.length > 0;
      });
      assert.deepEqual(await originAlerts(prom), [], "quiet while the origin answers");
      assert.ok((traffic.statuses.get(200) ?? 0) > 0, "the origin answered");

      await checkQueriesOnRealData(prom);

      await origin.shutdown();
      originUp = false;
      const firing = await waitFor("EdgeOriginUnreachable firing", 30_000, async () => {
        const alerts = await originAlerts(prom);
        return alerts.find((alert) => alert.state === "firing");
      });
      assert.equal(firing.labels.instance, "127.0.0.1");
      assert.equal(firing.labels.edge_region, "test");
      assert.equal(firing.labels.job, "edge-personalizer");
      assert.equal(firing.labels.severity, "page");
      assert.match(
        firing.annotations.summary ?? "",
        /^The origin is unreachable from 127\.0\.0\.1 \(edge region test\): /,
      );
      assert.equal(firing.annotations.runbook_url, "docs/operations.md#edgeoriginunreachable");
      assert.ok((traffic.statuses.get(502) ?? 0) > 0, "visitors got 502 meanwhile");

      origin = serveOrigin(originPort);
      originUp = true;
      const okBefore = traffic.statuses.get(200) ?? 0;
      await waitFor(
        "EdgeOriginUnreachable resolved",
        30_000,
        async () => (await originAlerts(prom)).length === 0,
      );
      assert.ok((traffic.statuses.get(200) ?? 0) > okBefore, "the origin answers again");
    } catch (error) {
      throw new Error(`${(error as Error).message}\nprometheus: ${prometheus?.output() ?? ""}`, {
        cause: error,
      });
    } finally {
      await traffic?.stop();
      await prometheus?.stop();
      await service.stop();
      if (originUp) await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * On the scraped data: every recording rule produces series, every label value a query selects a
 * recorded series by is one of them, and every dashboard query is accepted by Prometheus.
 */
async function checkQueriesOnRealData(prometheus: Prometheus): Promise<void> {
  const rules = await loadRules();
  const records = rules.flatMap((rule) => rule.record ? [rule.record] : []);
  const seen = new Map<string, PromVector[]>();
  await waitFor("every recording rule evaluated", 20_000, async () => {
    for (const record of records) {
      if (!seen.get(record)?.length) seen.set(record, await query(prometheus, record));
    }
    return records.every((record) => seen.get(record)!.length > 0);
  }).catch((error) => {
    const missing = records.filter((record) => !seen.get(record)?.length);
    throw new Error(`${(error as Error).message}: no series of ${missing.join(", ")}`);
  });

  const problems: string[] = [];
  const queries = [
    ...rules.map((rule) => ({ where: `rule ${rule.record ?? rule.alert}`, expr: rule.expr })),
    ...dashboardQueries(await loadDashboard()),
  ];
  for (const { where, expr } of queries) {
    for (const selector of selectorsOf(expr)) {
      const series = seen.get(selector.name);
      if (!series) continue;
      for (const matcher of selector.matchers) {
        if (TARGET_LABELS.includes(matcher.label) || matcher.op.includes("~")) continue;
        const values = new Set(series.map((sample) => sample.metric[matcher.label]));
        if (!values.has(matcher.value)) {
          problems.push(
            `${where}: ${selector.name}{${matcher.label}="${matcher.value}"} matches no recorded series`,
          );
        }
      }
    }
  }
  assert.deepEqual(problems, []);

  for (const { where, expr } of dashboardQueries(await loadDashboard())) {
    const res = await fetch(`${prometheus.url}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = await res.json() as { status: string; error?: string };
    assert.equal(body.status, "success", `${where}: ${body.error}`);
  }
}
