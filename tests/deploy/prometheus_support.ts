/**
 * @module
 * Test support for the Prometheus and Grafana files under `deploy/`: finding `promtool` and
 * `prometheus`, reading the rule file, the scrape config and the dashboard, naming the metrics a
 * PromQL query selects (with Prometheus's own PromQL grammar), parsing an exposition, and a
 * time-compressed copy of the rules for tests that cannot wait minutes.
 */
import { parser } from "@prometheus-io/lezer-promql";
import { parse as parseYaml } from "yaml";

const ROOT = new URL("../../", import.meta.url);
/** The rule file, its unit tests, the scrape config and the dashboard. */
export const RULES_FILE = new URL("deploy/prometheus/edge-personalizer.rules.yml", ROOT).pathname;
export const RULES_TEST_FILE = new URL("deploy/prometheus/edge-personalizer.rules.test.yml", ROOT).pathname;
export const PROMETHEUS_CONFIG = new URL("deploy/prometheus/prometheus.yml", ROOT).pathname;
export const DASHBOARD_FILE = new URL("deploy/grafana/edge-personalizer.json", ROOT).pathname;
export const OPERATIONS_DOC = new URL("docs/operations.md", ROOT).pathname;

/**
 * Finds an executable by trying to run it with `--version`.
 *
 * @param names candidate names or paths, tried in order
 * @returns the first that runs, or undefined
 */
export async function findBinary(names: readonly string[]): Promise<string | undefined> {
  for (const name of names) {
    try {
      const { success } = await new Deno.Command(name, {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      })
        .output();
      if (success) return name;
    } catch {
      // Not installed under this name.
    }
  }
  return undefined;
}

/** One rule of the rule file, as far as the tests look at it. */
export interface Rule {
  group: string;
  record?: string;
  alert?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** The rule file's YAML, as parsed. */
export interface RuleFile {
  groups: Array<{ name: string; interval?: string; rules: Array<Omit<Rule, "group">> }>;
}

/**
 * Reads the rule file.
 *
 * @param path the file (default: the shipped rule file)
 * @returns every rule with its group's name
 */
export async function loadRules(path: string = RULES_FILE): Promise<Rule[]> {
  const file = parseYaml(await Deno.readTextFile(path)) as RuleFile;
  return file.groups.flatMap((group) => group.rules.map((rule) => ({ group: group.name, ...rule })));
}

/** A label matcher of a selector: `label op "value"`. */
export interface Matcher {
  label: string;
  op: "=" | "!=" | "=~" | "!~";
  value: string;
}

/** A vector selector of a query: the metric name and its matchers. */
export interface Selector {
  name: string;
  matchers: Matcher[];
}

/**
 * Parses a PromQL query with Prometheus's own grammar and returns its vector selectors.
 *
 * @param query a PromQL expression
 * @returns the selectors, in order
 * @throws {Error} when the query does not parse, or selects by something other than a name
 */
export function selectorsOf(query: string): Selector[] {
  const tree = parser.parse(query);
  const selectors: Selector[] = [];
  const text = (from: number, to: number) => query.slice(from, to);
  tree.iterate({
    enter(ref) {
      if (ref.type.isError) {
        throw new Error(
          `Cannot parse PromQL at ${ref.from}: ${JSON.stringify(query.slice(ref.from, ref.from + 40))}`,
        );
      }
      if (ref.name !== "VectorSelector") return;
      const node = ref.node;
      const matchers: Matcher[] = [];
      for (const matcher of node.getChild("LabelMatchers")?.getChildren("UnquotedLabelMatcher") ?? []) {
        const label = matcher.getChild("LabelName");
        const op = matcher.getChild("MatchOp");
        const value = matcher.getChild("StringLiteral");
        if (!label || !op || !value) throw new Error(`Cannot read matcher ${text(matcher.from, matcher.to)}`);
        matchers.push({
          label: text(label.from, label.to),
          op: text(op.from, op.to) as Matcher["op"],
          value: JSON.parse(text(value.from, value.to).replace(/^'(.*)'$/, '"$1"')) as string,
        });
      }
      const identifier = node.getChild("Identifier");
      const byName = matchers.find((m) => m.label === "__name__" && m.op === "=");
      const name = identifier ? text(identifier.from, identifier.to) : byName?.value;
      if (!name) throw new Error(`Selector without a metric name: ${text(node.from, node.to)}`);
      selectors.push({ name, matchers: matchers.filter((m) => m.label !== "__name__") });
    },
  });
  return selectors;
}

/** One query of the dashboard, with where it is. */
export interface DashboardQuery {
  where: string;
  expr: string;
}

/** Grafana's variables as the tests substitute them: a range and match-anything regexes. */
const GRAFANA_VARIABLES: Record<string, string> = {
  __rate_interval: "5m",
  __interval: "1m",
  __range: "1h",
  job: ".*",
  instance: ".*",
};

/**
 * Replaces Grafana's `$variables` with values that make a plain PromQL query.
 *
 * @param expr a dashboard query
 * @returns the query with every variable substituted
 * @throws {Error} for a variable the tests do not know
 */
export function substituteGrafanaVariables(expr: string): string {
  return expr.replace(/\$\{?(\w+)\}?/g, (_, name: string) => {
    const value = GRAFANA_VARIABLES[name];
    if (value === undefined) throw new Error(`Unknown dashboard variable "$${name}" in ${expr}`);
    return value;
  });
}

interface GrafanaPanel {
  id?: number;
  type: string;
  title?: string;
  targets?: Array<{ expr?: string }>;
  panels?: GrafanaPanel[];
}

/** The dashboard's JSON, as far as the tests look at it. */
export interface Dashboard {
  panels: GrafanaPanel[];
  templating: { list: Array<{ name: string; type: string; definition?: string }> };
}

/**
 * Reads the dashboard.
 *
 * @returns the parsed JSON
 */
export async function loadDashboard(): Promise<Dashboard> {
  return JSON.parse(await Deno.readTextFile(DASHBOARD_FILE)) as Dashboard;
}

/**
 * Every PromQL query of the dashboard (panel targets and the metric of each `label_values`
 * variable), variables substituted.
 *
 * @param dashboard the dashboard
 * @returns the queries with where they are
 */
export function dashboardQueries(dashboard: Dashboard): DashboardQuery[] {
  const queries: DashboardQuery[] = [];
  const walk = (panels: GrafanaPanel[]) => {
    for (const panel of panels) {
      for (const [i, target] of (panel.targets ?? []).entries()) {
        if (target.expr) {
          queries.push({
            where: `panel "${panel.title}" target ${i}`,
            expr: substituteGrafanaVariables(target.expr),
          });
        }
      }
      walk(panel.panels ?? []);
    }
  };
  walk(dashboard.panels);
  for (const variable of dashboard.templating.list) {
    if (variable.type !== "query" || !variable.definition) continue;
    const m = /^label_values\((.+),\s*\w+\)$/.exec(variable.definition);
    if (!m) {
      throw new Error(`Variable "${variable.name}" is not a label_values() query: ${variable.definition}`);
    }
    queries.push({ where: `variable "${variable.name}"`, expr: substituteGrafanaVariables(m[1]!) });
  }
  return queries;
}

/** One sample line of an exposition. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
}

/** A parsed exposition: the declared families and the samples. */
export interface Exposition {
  /** Family name → type (`counter`, `gauge`, `histogram`, …). */
  types: Map<string, string>;
  samples: Sample[];
}

/**
 * Parses the Prometheus text format (0.0.4) far enough to know the families and the labels of
 * each sample.
 *
 * @param text the exposition
 * @returns families and samples
 */
export function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/.exec(line);
    if (!m) throw new Error(`Cannot parse sample line ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const lm of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: m[1]!, labels });
  }
  return { types, samples };
}

/**
 * The sample names a family of each type is queried by: a histogram's `_bucket`, `_sum` and
 * `_count`, a summary's quantiles, `_sum` and `_count`, the name itself otherwise.
 *
 * @param exposition a parsed exposition
 * @returns every name a query may select
 */
export function exportedNames(exposition: Exposition): Set<string> {
  const names = new Set<string>();
  for (const [family, type] of exposition.types) {
    if (type === "histogram") {
      for (const suffix of ["_bucket", "_sum", "_count"]) names.add(family + suffix);
    } else if (type === "summary") {
      for (const suffix of ["", "_sum", "_count"]) names.add(family + suffix);
    } else names.add(family);
  }
  return names;
}

const DURATION = /^(\d+)(ms|s|m|h|d|w|y)$/;
const SECONDS: Record<string, number> = {
  ms: 0.001,
  s: 1,
  m: 60,
  h: 3600,
  d: 86_400,
  w: 604_800,
  y: 31_536_000,
};

function compressDuration(duration: string, factor: number, minimumSeconds: number): string {
  const m = DURATION.exec(duration);
  if (!m) throw new Error(`Cannot compress the duration "${duration}"`);
  const seconds = Math.max(minimumSeconds, Math.round((Number(m[1]) * SECONDS[m[2]!]!) / factor));
  return `${seconds}s`;
}

/**
 * The rule file with every `for` and every range selector divided by `factor` (a minute becomes
 * a second at 60), for a real Prometheus that scrapes and evaluates every second: the same
 * expressions and thresholds, on a clock that runs faster. Ranges keep at least a few seconds so
 * that `rate()` has samples to work with.
 *
 * @param text the rule file's YAML
 * @param options how much faster, and the shortest range kept (seconds)
 * @returns the compressed rule file's YAML
 */
export function compressRules(
  text: string,
  options: { factor: number; minimumRangeSeconds?: number },
): string {
  const file = parseYaml(text) as RuleFile;
  const minimumRange = options.minimumRangeSeconds ?? 3;
  for (const group of file.groups) {
    for (const rule of group.rules) {
      if (rule.for) rule.for = compressDuration(rule.for, options.factor, 0);
      rule.expr = rule.expr.replace(
        /\[(\w+)\]/g,
        (_, range: string) => `[${compressDuration(range, options.factor, minimumRange)}]`,
      );
    }
  }
  return JSON.stringify(file);
}

/**
 * Headings of a Markdown file as GitHub anchors (lower case, punctuation dropped, spaces to
 * hyphens).
 *
 * @param markdown the document
 * @returns the anchors
 */
export function markdownAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  for (const m of markdown.matchAll(/^#{1,6} (.+)$/gm)) {
    anchors.add(
      m[1]!.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-"),
    );
  }
  return anchors;
}
