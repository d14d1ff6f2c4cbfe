import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

async function sourceFiles(dir: URL, prefix: string, out: Set<string>): Promise<Set<string>> {
  for await (const entry of Deno.readDir(dir)) {
    const path = `${prefix}${entry.name}`;
    if (entry.isDirectory) await sourceFiles(new URL(`${entry.name}/`, dir), `${path}/`, out);
    else if (entry.name.endsWith(".ts")) out.add(path);
  }
  return out;
}

Deno.test("docs/architecture.md names only files that exist, so its map cannot drift from the code", async () => {
  const text = await Deno.readTextFile(new URL("docs/architecture.md", root));
  const files = new Set<string>(["main.ts"]);
  for (const dir of ["lib", "routes", "tools"]) await sourceFiles(new URL(`${dir}/`, root), `${dir}/`, files);
  const basenames = new Set([...files].map((path) => path.slice(path.lastIndexOf("/") + 1)));
  const named = [...text.matchAll(/(?<![\w/.-])((?:[\w-]+\/)*[\w-]+\.ts)\b/g)].map((match) => match[1]!);
  assert.ok(named.length > 20, "the map names the files it describes");
  const missing = named.filter((name) => name.includes("/") ? !files.has(name) : !basenames.has(name));
  assert.deepEqual(missing, [], "files named in docs/architecture.md that do not exist");
});
