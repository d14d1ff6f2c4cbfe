/**
 * @module
 * Words for an explanation: why a condition, route, flag or assignment came out as it did, and
 * the plain-text report that `deno task explain` prints and `GET /_edge/explain?format=text` answers.
 */
import type { CompiledCondition, ConditionField, TargetingContext } from "./targeting.ts";
import type {
  ExperimentExplanation,
  Explanation,
  FlagRuleExplanation,
  RouteExplanation,
} from "./explanation.ts";
import type { CompiledRoute } from "./compile.ts";
import type { CompiledFlagRule, FlagEvaluation } from "./flags.ts";
import type { CompiledExperiment } from "./experiments.ts";
import { getBucketRanges } from "./bucketing.ts";

/**
 * Says why a condition's field did not hold for the visitor.
 *
 * @param field the failing field (from `conditionMismatch`)
 * @param condition the compiled condition
 * @param context what it was evaluated against
 * @returns a sentence naming what the field wants and what the visitor has
 * @example
 * ```ts
 * describeMismatch("region", compileCondition({ region: ["EU"] }), context);
 * // 'when.region wants ["EU"]; the visitor\'s region is "US"'
 * ```
 */
export function describeMismatch(
  field: ConditionField,
  condition: CompiledCondition,
  context: TargetingContext,
): string {
  const list = (values: Iterable<string> | undefined) => JSON.stringify([...(values ?? [])]);
  const value = (v: string | undefined) => v === undefined ? "unknown" : `"${v}"`;
  switch (field) {
    case "region":
      return `when.region wants ${list(condition.regions)}; the visitor's region is ${value(context.region)}`;
    case "country":
      return `when.country wants ${list(condition.countries)}; the visitor's country is ${
        value(context.country)
      }`;
    case "device":
      return `when.device wants ${list(condition.devices)}; the visitor's device is ${value(context.device)}`;
    case "network":
      return `when.network wants ${list(condition.networks)}; the visitor's network is ${
        value(context.network)
      }`;
    case "platform":
      return `when.platform wants ${list(condition.platforms)}; the visitor's platform is ${
        value(context.platform)
      }`;
    case "loggedIn":
      return `when.loggedIn wants ${condition.loggedIn}; the visitor is ${
        context.loggedIn ? "" : "not "
      }logged in`;
    case "segment":
      return `when.segment wants one of ${list(condition.segments)}; the visitor has ${
        context.segments.length ? list(context.segments) : "no segments"
      }`;
    case "path":
      return `when.path wants ${list(condition.paths?.map((glob) => glob.source))}; the path is ${
        value(context.path)
      }`;
    case "variant": {
      for (const [key, accepted] of condition.variants ?? []) {
        const served = context.variants[key];
        if (served === undefined) {
          return `when.variant wants ${key} in ${
            list(accepted)
          }; the visitor is not exposed to "${key}" here`;
        }
        if (!accepted.has(served)) {
          return `when.variant wants ${key} in ${list(accepted)}; the visitor is served "${served}"`;
        }
      }
      return "when.variant does not hold";
    }
  }
}

const MARK = { matched: "✓", missed: "✗", skipped: "·" } as const;

/**
 * Renders an explanation as plain text, one line per fact and rule.
 *
 * @param explanation the explanation
 * @returns the report, ending with a newline
 */
export function formatExplanation(explanation: Explanation): string {
  const out: string[] = [];
  formatVisitor(out, explanation);
  formatSections(out, explanation);
  formatDecision(out, explanation);
  return `${out.join("\n")}\n`;
}

function lineOf(out: string[]): (label: string, text: string) => void {
  return (label, text) => out.push(`  ${label.padEnd(10)} ${text}`);
}

function formatVisitor(out: string[], explanation: Explanation): void {
  const { request, facts, identity, context, rules } = explanation;
  const line = lineOf(out);
  out.push(`${request.method} ${request.path}${request.search}`);
  out.push(`Rules       version ${rules.version} (${rules.role}) — ${rules.why}`);
  out.push("Facts");
  line(
    "client",
    `${facts.clientIp} (peer ${facts.peerIp}${facts.peerTrusted ? ", a trusted proxy" : ""}${
      !facts.peerTrusted && facts.geoTrusted ? ", CDN secret presented" : ""
    })`,
  );
  line("country", `${facts.country.value ?? "unknown"} — ${facts.country.why}`);
  line("region", `${facts.region.value} — ${facts.region.why}`);
  line("device", `${facts.device.value} — ${facts.device.why}`);
  line("network", `${facts.network.value} — ${facts.network.why}`);
  if (facts.platform) line("platform", facts.platform);
  if (facts.viewportWidth !== null) {
    line("viewport", `${facts.viewportWidth} CSS px${facts.dpr !== null ? `, DPR ${facts.dpr}` : ""}`);
  }
  line("GPC", facts.gpc ? "yes (Sec-GPC: 1): no behavioural data" : "no");
  line("bot", facts.bot ? "yes" : "no");
  const sticky = Object.entries(identity.sticky).map(([k, v]) => `${k}=${v}`).join(", ");
  out.push(
    `Identity    ${
      identity.loggedIn ? "user" : "anonymous"
    } "${identity.key}" (${identity.source}) — ${identity.why}`,
  );
  if (sticky) out.push(`            sticky cookie: ${sticky}`);
  if (explanation.qa) {
    const qa = explanation.qa;
    const what = [pairs(qa.variants), pairs(qa.flags)].filter(Boolean).join("; ");
    out.push(`QA          ${what || "nothing forced"} — ${qa.why}`);
  }
  out.push(`Context     ${context.source} — ${context.why}`);
  if (context.segments.length || context.attributes.length) {
    out.push(
      `            segments ${JSON.stringify(context.segments)}, attributes ${
        JSON.stringify(context.attributes)
      }, ${context.recentViews} recent views, ${context.cartItems} cart items`,
    );
  }
}

function formatSections(out: string[], explanation: Explanation): void {
  section(out, "Experiments", explanation.experiments, (e) => {
    const forced = e.reason === "forced";
    const mark = forced || (e.matched && e.inExperiment)
      ? MARK.matched
      : e.matched
      ? MARK.skipped
      : MARK.missed;
    const what = forced
      ? `${e.variation} forced`
      : e.variation !== undefined
      ? `${e.variation}${e.inExperiment ? "" : " (not in it)"}`
      : "—";
    const stickyNote = e.sticky
      ? ` [cookie: ${e.sticky.value}${e.sticky.valid ? ", kept" : ", not a variation: ignored"}]`
      : "";
    return `${mark} ${e.key.padEnd(16)} ${what.padEnd(20)} ${e.why}${stickyNote}`;
  });
  section(out, "Routes", explanation.routes, (r) => {
    const mark = r.matched ? MARK.matched : r.considered ? MARK.missed : MARK.skipped;
    return `${mark} #${r.index} ${r.match.padEnd(24)} ${r.why}`;
  });
  section(out, "Images", explanation.images, (i) => {
    const mark = i.matched ? MARK.matched : i.considered ? MARK.missed : MARK.skipped;
    return `${mark} #${i.index} ${i.match.join(", ").padEnd(24)} ${i.why}`;
  });
  section(out, "Flags", explanation.flags, (f) => {
    const rulesText = f.rules.map((rule) => {
      const mark = rule.outcome === "matched" ? MARK.matched : rule.considered ? MARK.missed : MARK.skipped;
      return `\n      ${mark} rule ${rule.index}: ${rule.why}`;
    }).join("");
    return `${f.key.padEnd(18)} = ${JSON.stringify(f.value)} (${f.reason}) — ${f.why}${rulesText}`;
  });
  section(out, "Slots", explanation.slots, (s) => {
    const mark = s.matched ? MARK.matched : s.reason === "taken" ? MARK.skipped : MARK.missed;
    return `${mark} #${s.index} ${s.name.padEnd(16)} ${s.why}`;
  });
}

function formatDecision(out: string[], explanation: Explanation): void {
  const { request, decision } = explanation;
  const line = lineOf(out);
  const action = decision.action.type === "redirect"
    ? `redirect ${decision.action.status} to ${decision.action.location}`
    : `proxy ${decision.action.path}${decision.action.search ?? request.search}`;
  out.push("Decision");
  line("action", action + (decision.matchedRoute ? ` (route "${decision.matchedRoute}")` : " (no route)"));
  line("variants", pairs(decision.variants) || "none");
  line("flags", pairs(decision.flags) || "none");
  line("slots", Object.keys(decision.slots).join(", ") || "none");
  line("sticky", pairs(decision.stickyAssignments) || "none");
  line(
    "cache",
    decision.personalized
      ? `personalized: depends on ${decision.dependsOn.join(", ")}`
      : "not personalized: shared caches may store it",
  );
}

function section<T>(out: string[], title: string, items: readonly T[], render: (item: T) => string): void {
  if (items.length === 0) return;
  out.push(title);
  for (const item of items) out.push(`  ${render(item)}`);
}

function pairs(record: Readonly<Record<string, unknown>>): string {
  return Object.entries(record)
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(", ");
}

/**
 * Words a route's step for an explanation.
 *
 * @param route the compiled route
 * @param entry its explanation so far (step, field, key and target)
 * @param path the path the globs matched
 * @param targeting what conditions were evaluated against
 * @returns the sentence
 */
export function routeWhy(
  route: CompiledRoute,
  entry: RouteExplanation,
  path: string,
  targeting: TargetingContext,
): string {
  const { key, target } = entry;
  const action = route.action;
  switch (entry.reason) {
    case "path":
      return `The path "${path}" does not match "${route.match}"`;
    case "when":
      return describeMismatch(entry.field!, route.when!, targeting);
    case "no-target":
      return action.type === "rewrite" && action.by === "experiment" && key === undefined
        ? `The visitor is not exposed to experiment "${action.experiment}" here and the rewrite has no "*"`
        : `The rewrite has no target for ${action.type === "rewrite" ? action.by : "key"} "${key}" nor "*"`;
    case "unsafe-target":
      return `The filled-in target "${target}" is not a safe path, so the route is skipped`;
    case "matched":
      return action.type === "redirect"
        ? `Redirect ${action.status} to "${target}"`
        : `Rewrite to "${target}" (${action.by} ${key === "*" ? 'fallback "*"' : `"${key}"`})`;
    default:
      return entry.why;
  }
}

/**
 * Words a flag rule's outcome for an explanation.
 *
 * @param rule the compiled flag rule
 * @param step its explanation so far (outcome, field, hash)
 * @param targeting what conditions were evaluated against
 * @returns the sentence
 */
export function flagRuleWhy(
  rule: CompiledFlagRule,
  step: FlagRuleExplanation,
  targeting: TargetingContext,
): string {
  switch (step.outcome) {
    case "when":
      return describeMismatch(step.field!, rule.when!, targeting);
    case "rollout":
      return `The visitor's rollout hash ${step.hashValue} is not below ${rule.rollout}`;
    case "key-missing":
      return "The rule needs a visitor key and there is none";
    case "matched":
      return rule.rollout === undefined
        ? "Matched"
        : `Matched: the visitor's rollout hash ${step.hashValue} is below ${rule.rollout}`;
    default:
      return step.why;
  }
}

/**
 * Words why a flag has its value.
 *
 * @param evaluation the flag's result
 * @param rules its rules' explanations
 * @returns the sentence
 */
export function flagWhy(evaluation: FlagEvaluation, rules: readonly FlagRuleExplanation[]): string {
  const matched = rules.find((rule) => rule.outcome === "matched");
  return {
    DISABLED: "The flag is disabled: its default",
    STATIC: "The flag has no rules: its default",
    DEFAULT: "No rule matched: the default",
    ERROR: `Rule ${
      rules.find((rule) => rule.outcome === "key-missing")?.index
    } needs a visitor key: the default`,
    TARGETING_MATCH: `Rule ${matched?.index} matched`,
    SPLIT: `Rule ${matched?.index} matched`,
  }[evaluation.reason];
}

/**
 * The bucket range of each variation of an experiment, rounded for display.
 *
 * @param experiment the compiled experiment
 * @returns variation → `[start, end)`
 */
export function rangesOf(experiment: CompiledExperiment): Record<string, [number, number]> {
  const spec = experiment.spec;
  const ranges = getBucketRanges(spec.numVariations, spec.coverage, spec.weights);
  const out: Record<string, [number, number]> = {};
  experiment.variations.forEach((variation, i) => {
    const range = ranges[i]!;
    out[variation] = [round(range[0]), round(range[1])];
  });
  return out;
}

function round(n: number): number {
  return Number(n.toFixed(6));
}

/**
 * Words how an exposed experiment's assignment went.
 *
 * @param experiment the compiled experiment
 * @param entry its explanation (reason, variation, hashes, ranges)
 * @returns the sentence
 */
export function assignmentWhy(experiment: CompiledExperiment, entry: ExperimentExplanation): string {
  const served = `serves "${entry.variation}"`;
  switch (entry.reason) {
    case "bot":
      return `Bots are served control and are not in the experiment: ${served}`;
    case "sticky":
      return `The sticky cookie's "${entry.variation}" is still a variation: kept`;
    case "no-key":
      return `No visitor key: not in the experiment, ${served}`;
    case "too-few-variations":
      return `Fewer than two variations: not in the experiment, ${served}`;
    case "hash-version":
      return `Unknown hash version: not in the experiment, ${served}`;
    case "namespace": {
      const ns = entry.namespace!;
      return `Namespace hash ${ns.hashValue} is outside "${ns.id}" [${ns.range[0]}, ${ns.range[1]}): ` +
        `not in the experiment, ${served}`;
    }
    case "coverage":
      return `Hash ${entry.hashValue} falls in no variation's range (coverage ${experiment.spec.coverage}): ` +
        `not in the experiment, ${served}`;
    case "bucketed": {
      const range = entry.ranges?.[entry.variation!];
      return `Hash ${entry.hashValue} is in "${entry.variation}" [${range?.[0]}, ${range?.[1]})`;
    }
    default:
      return served;
  }
}
