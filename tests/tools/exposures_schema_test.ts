import assert from "node:assert/strict";
import { exposureDocs } from "../../tools/exposures_schema.ts";

Deno.test("docs/exposure.schema.json and docs/exposures_openapi.json match the code", async () => {
  for (const { path, text } of exposureDocs()) {
    const committed = await Deno.readTextFile(new URL(`../../${path}`, import.meta.url));
    assert.equal(committed, text, `run \`deno task exposures:schema\` and commit ${path}`);
  }
});

Deno.test("the webhook document describes the signed batch and the event", () => {
  const [, openapi] = exposureDocs();
  const doc = JSON.parse(openapi!.text);
  assert.equal(doc.openapi, "3.1.0");
  const post = doc.webhooks.exposures.post;
  assert.deepEqual(post.parameters.map((p: { name: string }) => p.name), [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
  ]);
  assert.equal(doc.components.schemas.ExposureBatch.properties.type.const, "edge.exposures");
  assert.equal(doc.components.schemas.Exposure.additionalProperties, false);
  assert.ok(doc.components.schemas.Exposure.required.includes("visitor"));
});
