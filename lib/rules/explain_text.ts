/**
 * @module
 * Words for an explanation: why a condition failed, and the plain-text report that
 * `deno task explain` prints and `GET /_edge/explain?format=text` answers.
 */
import type { CompiledCondition, ConditionField, TargetingContext } from "./targeting.ts";
import type { Explanation } from "./explain.ts";

/**
 * Says why a condition's field did not hold for the visitor.
 *
 * @param field the failing field (from `conditionMismatch`)
 * @param condition the compiled condition
 * @param context what it was evaluated against
 * @returns a sentence naming what the field wants and what the visitor has
 * @throws never
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
 * @throws never
 */
export function formatExplanation(explanation: Explanation): string {
  const { request, facts, identity, context, rules, decision } = explanation;
  const out: string[] = [];
  const line = (label: string, text: string) => out.push(`  ${label.padEnd(10)} ${text}`);
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
  return `${out.join("\n")}\n`;
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
