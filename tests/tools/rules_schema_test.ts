import assert from "node:assert/strict";
import { RULES_SCHEMA_PATH, rulesSchemaText } from "../../tools/rules_schema.ts";

Deno.test("docs/rules.schema.json is identical to the schema generated from the zod rules schema", async () => {
  const committed = await Deno.readTextFile(new URL(`../../${RULES_SCHEMA_PATH}`, import.meta.url));
  assert.equal(committed, rulesSchemaText(), "run `deno task rules:schema` and commit the result");
});

Deno.test("the generated rules schema describes the rule language for editors", () => {
  const schema = JSON.parse(rulesSchemaText());
  assert.equal(schema.$schema, "https://json-schema.org/draft/2020-12/schema");
  assert.deepEqual(schema.required, ["version"]);
  for (const field of ["regions", "routes", "experiments", "flags", "images"]) {
    assert.ok(field in schema.properties, field);
  }
  assert.equal(schema.$defs.Condition.additionalProperties, false);
  // The top level is strict like every nested object: a misspelt key is an editor error too.
  assert.equal(schema.additionalProperties, false);
  for (const field of ["slots", "htmlContext", "$schema", "defaultRegion", "version"]) {
    assert.ok(field in schema.properties, field);
  }
});

Deno.test("docs/rules.md's top-level table lists every top-level field of the schema", async () => {
  const doc = await Deno.readTextFile(new URL("../../docs/rules.md", import.meta.url));
  const section = doc.slice(
    doc.indexOf("\n## Top level\n"),
    doc.indexOf("\n## ", doc.indexOf("\n## Top level\n") + 1),
  );
  const documented = [...section.matchAll(/^\| `([^`]+)` +\|/gm)].map((match) => match[1]).sort();
  assert.deepEqual(documented, Object.keys(JSON.parse(rulesSchemaText()).properties).sort());
});
