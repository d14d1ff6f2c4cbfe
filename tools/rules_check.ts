/**
 * @module
 * `deno task rules:check FILE…`: validates each rules file exactly as the service does at
 * start-up and on a push (the same zod schema and cross-field checks, `loadRulesFile`), then
 * lints the valid ones (`lib/rules/lint.ts`). Prints every problem; exits 1 when a file is
 * invalid, 0 otherwise (warnings and notes listed), 2 on a usage error. `--json` prints one
 * report object per file instead.
 *
 * ```sh
 * deno task rules:check tools/demo_rules.json
 * ```
 */
import { parseArgs } from "node:util";
import { loadRulesFile, RulesError } from "../lib/rules/compile.ts";
import { type LintFinding, lintRules } from "../lib/rules/lint.ts";

const USAGE = `Usage: deno task rules:check [--json] FILE...

  Validates each rules file as the edge does, then lints it.
  Exit status: 1 when a file is invalid, else 0 (warnings are listed).`;

/** What `rules:check` found in one file. */
interface FileReport {
  file: string;
  valid: boolean;
  version?: number;
  errors: string[];
  findings: LintFinding[];
}

async function check(file: string): Promise<FileReport> {
  try {
    const rules = await loadRulesFile(file, Deno.readTextFile);
    return { file, valid: true, version: rules.version, errors: [], findings: lintRules(rules) };
  } catch (error) {
    if (!(error instanceof RulesError)) throw error;
    // A file that cannot be read or parsed as JSON has no field problems: its message says it all.
    return {
      file,
      valid: false,
      errors: error.problems.length ? error.problems : [error.message],
      findings: [],
    };
  }
}

function render(report: FileReport): string {
  const lines: string[] = [];
  if (!report.valid) {
    lines.push(`${report.file}: invalid`);
    for (const error of report.errors) lines.push(`  error    ${error}`);
    return lines.join("\n");
  }
  const warnings = report.findings.filter((f) => f.severity === "warning").length;
  const notes = report.findings.length - warnings;
  const counts = [
    `${warnings} warning${warnings === 1 ? "" : "s"}`,
    `${notes} note${notes === 1 ? "" : "s"}`,
  ];
  lines.push(`${report.file}: valid (version ${report.version}), ${counts.join(", ")}`);
  for (const finding of report.findings) {
    lines.push(`  ${finding.severity.padEnd(8)} ${finding.path}: ${finding.message} [${finding.code}]`);
  }
  return lines.join("\n");
}

if (import.meta.main) {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      allowPositionals: true,
      options: { json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  if (parsed.values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  if (parsed.positionals.length === 0) {
    console.error(`No rules file given\n\n${USAGE}`);
    Deno.exit(2);
  }
  const reports: FileReport[] = [];
  for (const file of parsed.positionals) reports.push(await check(file));
  console.log(parsed.values.json ? JSON.stringify(reports, null, 2) : reports.map(render).join("\n"));
  Deno.exit(reports.every((report) => report.valid) ? 0 : 1);
}
