/**
 * @module
 * `docs/configuration.md` against the code: every variable the service (`CONFIG_VARIABLES`),
 * `main.ts` or a tool reads is documented there, and nothing documented there is read by nobody.
 */
import assert from "node:assert/strict";
import { CONFIG_VARIABLES } from "../lib/app/config_schema.ts";

const ROOT = new URL("../", import.meta.url);

/** The variable names in the first column of the page's tables (one or several per row). */
function documentedVariables(markdown: string): Set<string> {
  const names = new Set<string>();
  for (const line of markdown.split("\n")) {
    const cells = line.split("|");
    if (!line.startsWith("|") || cells.length < 3) continue;
    for (const match of cells[1]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)) names.add(match[1]!);
  }
  return names;
}

/**
 * How a variable is read: directly, or (tools/dev.ts) through `listen(what, "VARIABLE", …)`,
 * which reads the port its second argument names.
 */
const ENV_READS = [
  /Deno\.env\.get\(\s*"([A-Z][A-Z0-9_]*)"\s*\)/g,
  /\blisten\(\s*"[^"]*",\s*"([A-Z][A-Z0-9_]*)"/g,
];

/** Names read in the TypeScript files at `path` (a file, or a folder searched recursively). */
async function envReads(path: string): Promise<Set<string>> {
  const names = new Set<string>();
  const url = new URL(path, ROOT);
  const files: URL[] = [];
  const collect = async (dir: URL) => {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) await collect(new URL(`${entry.name}/`, dir));
      else if (entry.isFile && entry.name.endsWith(".ts")) files.push(new URL(entry.name, dir));
    }
  };
  if ((await Deno.stat(url)).isDirectory) await collect(new URL(`${url.href}/`));
  else files.push(url);
  for (const file of files) {
    const text = await Deno.readTextFile(file);
    for (const pattern of ENV_READS) {
      for (const match of text.matchAll(pattern)) names.add(match[1]!);
    }
  }
  return names;
}

async function readVariables(): Promise<Set<string>> {
  const read = new Set(CONFIG_VARIABLES);
  for (const path of ["main.ts", "tools", "routes", "lib"]) {
    for (const name of await envReads(path)) read.add(name);
  }
  return read;
}

Deno.test("every variable the service and its tools read is in docs/configuration.md", async () => {
  const documented = documentedVariables(await Deno.readTextFile(new URL("docs/configuration.md", ROOT)));
  const missing = [...await readVariables()].filter((name) => !documented.has(name));
  assert.deepEqual(missing, [], `not documented in docs/configuration.md: ${missing.join(", ")}`);
});

Deno.test("docs/configuration.md documents no variable that nothing reads", async () => {
  const documented = documentedVariables(await Deno.readTextFile(new URL("docs/configuration.md", ROOT)));
  const read = await readVariables();
  const unknown = [...documented].filter((name) => !read.has(name));
  assert.deepEqual(unknown, [], `documented but read by nothing: ${unknown.join(", ")}`);
});

Deno.test("the README no longer carries the configuration table but links to the reference", async () => {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  assert.match(readme, /\(docs\/configuration\.md\)/);
  const rows = readme.split("\n").filter((line) => /^\| `[A-Z][A-Z0-9_]+`/.test(line));
  assert.deepEqual(rows, [], "configuration rows belong in docs/configuration.md");
});
