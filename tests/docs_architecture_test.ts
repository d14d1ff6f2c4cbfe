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

Deno.test("lib/ never imports from routes/, and no module in lib/ or routes/ is part of an import cycle", async () => {
  const files = await sourceFiles(new URL("lib/", root), "lib/", new Set());
  await sourceFiles(new URL("routes/", root), "routes/", files);
  const imports = new Map<string, string[]>();
  for (const file of files) {
    const text = await Deno.readTextFile(new URL(file, root));
    const targets = [...text.matchAll(/^(?:import|export)[^;]*?from\s+"(\.[^"]+)"/gms)].map((match) =>
      new URL(match[1]!, new URL(file, root)).href.slice(root.href.length)
    );
    imports.set(file, targets);
    if (file.startsWith("lib/")) {
      assert.deepEqual(
        targets.filter((target) => target.startsWith("routes/")),
        [],
        `${file} imports routes/`,
      );
    }
  }
  // Depth-first search; a module met again while still on the path closes a cycle.
  const done = new Set<string>();
  const visit = (file: string, path: string[]) => {
    if (path.includes(file)) {
      assert.fail(`import cycle: ${[...path.slice(path.indexOf(file)), file].join(" → ")}`);
    }
    if (done.has(file)) return;
    for (const target of imports.get(file) ?? []) visit(target, [...path, file]);
    done.add(file);
  };
  for (const file of files) visit(file, []);
});
