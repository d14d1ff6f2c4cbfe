import assert from "node:assert/strict";
import { startOrigin } from "../support.ts";
import { startService } from "./service.ts";

Deno.test("with OTEL_DENO=true, pipeline stages are spans of the request's trace, propagated to the origin", async () => {
  const origin = startOrigin();
  const dir = await Deno.makeTempDir();
  const service = await startService({
    ORIGIN_URL: origin.url,
    KV_PATH: `${dir}/edge.kv`,
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_PROTOCOL: "console",
    OTEL_DENO_CONSOLE: "ignore",
  });
  try {
    const res = await fetch(`${service.url}/echo/traced`);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const traceparent = origin.seen.at(-1)!.headers.get("traceparent");
    assert.match(traceparent ?? "", /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    const traceId = traceparent!.split("-")[1]!;
    // Spans are exported in batches; stopping the process flushes them.
    await service.stop();
    const stages = ["edge.facts", "edge.identity", "edge.context", "edge.decide", "edge.act"];
    const output = service.output();
    for (const name of stages) {
      const line = output.split("\n").find((l) => l.includes(name));
      assert.ok(line, `no span ${name} in:\n${output}`);
      assert.ok(line.includes(traceId), `${name} is not in the request's trace ${traceId}: ${line}`);
    }
  } finally {
    await service.stop();
    await origin.close();
    await Deno.remove(dir, { recursive: true });
  }
});
