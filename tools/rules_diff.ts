/**
 * @module
 * `deno task rules:diff OLD NEW`: what pushing the rules file NEW over OLD would change. Both are
 * validated as the service does; prints the changes as text, or JSON with `--json`. Exits 1 when
 * a file is invalid, 2 on a usage error, else 0.
 *
 * ```sh
 * deno task rules:diff rules/v12.json rules/v13.json
 * ```
 */
import { parseArgs } from "node:util";
import { type CompiledRules, loadRulesFile, RulesError } from "../lib/rules/compile.ts";
import { diffRules, formatRulesDiff } from "../lib/rules/diff.ts";

const USAGE = `Usage: deno task rules:diff [--json] OLD NEW

  Shows what pushing the rules file NEW over OLD would change.`;

async function load(path: string): Promise<CompiledRules> {
  try {
    return await loadRulesFile(path, Deno.readTextFile);
  } catch (error) {
    if (!(error instanceof RulesError)) throw error;
    console.error(error.message);
    Deno.exit(1);
  }
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
  if (parsed.positionals.length !== 2) {
    console.error(`Expected two rules files, got ${parsed.positionals.length}\n\n${USAGE}`);
    Deno.exit(2);
  }
  const [oldPath, newPath] = parsed.positionals as [string, string];
  const diff = diffRules((await load(oldPath)).source, (await load(newPath)).source);
  const text = parsed.values.json ? `${JSON.stringify(diff, null, 2)}\n` : formatRulesDiff(diff);
  await Deno.stdout.write(new TextEncoder().encode(text));
}
