import assert from "node:assert/strict";

const LINT = "tests/fixtures/rules/lint";

/** Runs a rules tool as its task does (read permission only). */
async function run(tool: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", tool, ...args],
    cwd: new URL("../..", import.meta.url),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

Deno.test("rules:check exits 0 and lists the warnings of valid files", async () => {
  const { code, stdout, stderr } = await run("tools/rules_check.ts", [
    `${LINT}/unreachable_routes.json`,
    `${LINT}/flags_slots.json`,
    "tools/demo_rules.json",
  ]);
  assert.equal(code, 0, stderr);
  const lines = stdout.split("\n");
  assert.equal(lines[0], `${LINT}/unreachable_routes.json: valid (version 1), 4 warnings, 0 notes`);
  assert.ok(
    lines.includes(
      '  warning  routes.1: Route "/shop/sale" is never reached: routes.0 ("/shop/*") answers every path it ' +
        "matches [unreachable-route]",
    ),
    stdout,
  );
  assert.ok(lines.includes("tools/demo_rules.json: valid (version 1), 0 warnings, 1 note"), stdout);
  assert.match(stdout, /warning {2}flags\.0\.variants\.spring: .* \[unused-flag-variant\]/);
});

Deno.test("rules:check exits 1 for an invalid file with the service's own messages, still checking the rest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/broken.json`, "{ not json");
    const { code, stdout } = await run("tools/rules_check.ts", [
      `${LINT}/invalid.json`,
      `${dir}/broken.json`,
      `${dir}/missing.json`,
      `${LINT}/experiments.json`,
    ]);
    assert.equal(code, 1);
    assert.match(
      stdout,
      /invalid\.json: invalid\n {2}error {4}"experiments\.0\.weights" must sum to 1, got 1\.1\n/,
    );
    assert.match(stdout, /"routes\.0\.experiment" names unknown experiment "nope"/);
    assert.match(stdout, /broken\.json: invalid\n {2}error {4}Cannot parse rules file ".*broken\.json"/);
    assert.match(stdout, /missing\.json: invalid\n {2}error {4}Cannot read rules file/);
    assert.match(stdout, /experiments\.json: valid \(version 2\), 7 warnings, 4 notes/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rules:check --json gives one report per file; no file is a usage error", async () => {
  const { code, stdout } = await run("tools/rules_check.ts", ["--json", `${LINT}/flags_slots.json`]);
  assert.equal(code, 0);
  const [report] = JSON.parse(stdout);
  assert.equal(report.valid, true);
  assert.equal(report.findings.length, 6);
  assert.deepEqual(Object.keys(report.findings[0]).sort(), ["code", "message", "path", "severity"]);
  const none = await run("tools/rules_check.ts", []);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /No rules file given/);
});

Deno.test("rules:diff shows what pushing NEW over OLD changes, as text and JSON", async () => {
  const text = await run("tools/rules_diff.ts", [
    "tests/fixtures/rules/diff/old.json",
    "tests/fixtures/rules/diff/new.json",
  ]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(
    text.stdout,
    /^version 12 → 13\n~ htmlContext: false → true\n\+ region APAC\n~ region EU: \+ES -GB\n/,
  );
  assert.match(
    text.stdout,
    /\n~ experiment hero \(#0\)\n {4}variations: \["control","a","b"\] → \["control","a"\]\n/,
  );
  assert.match(text.stdout, /\n\+ route \/deals \(#2\)\n- route \/home \(was #2\)\n/);
  const json = await run("tools/rules_diff.ts", [
    "--json",
    "tests/fixtures/rules/diff/old.json",
    "tests/fixtures/rules/diff/new.json",
  ]);
  assert.equal(json.code, 0);
  assert.deepEqual(JSON.parse(json.stdout).experiments.added, [{ id: "pricing", index: 2 }]);
  const invalid = await run("tools/rules_diff.ts", [
    "tests/fixtures/rules/diff/old.json",
    `${LINT}/invalid.json`,
  ]);
  assert.equal(invalid.code, 1);
  assert.match(invalid.stderr, /must sum to 1/);
  const usage = await run("tools/rules_diff.ts", ["only-one.json"]);
  assert.equal(usage.code, 2);
});
