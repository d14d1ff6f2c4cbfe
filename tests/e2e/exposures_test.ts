/**
 * @module
 * Exposure delivery of the real process: events still queued when SIGTERM comes are sent before
 * it exits, also from every `deno serve --parallel` worker.
 */
import assert from "node:assert/strict";
import { startOrigin } from "../support.ts";
import { startService } from "./service.ts";
import { startExposureReceiver, TEST_EXPOSURES_SECRET } from "../exposure_receiver.ts";

const BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) " +
  "Version/17.4 Safari/605.1.15";

async function withRules<T>(fn: (rulesPath: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir();
  try {
    const rulesPath = `${dir}/rules.json`;
    await Deno.writeTextFile(
      rulesPath,
      JSON.stringify({
        version: 2,
        experiments: [{ key: "hero", variations: ["control", "a"], match: "/*" }],
      }),
    );
    return await fn(rulesPath);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const serve of [false, true]) {
  const how = serve ? "deno serve --parallel" : "deno run";
  Deno.test(`${how}: SIGTERM sends the exposures still queued before the process exits`, async () => {
    const origin = startOrigin();
    const receiver = startExposureReceiver();
    await withRules(async (rulesPath) => {
      const service = await startService({
        ORIGIN_URL: origin.url,
        KV_PATH: ":memory:",
        RULES_PATH: rulesPath,
        EXPOSURES_URL: receiver.url,
        EXPOSURES_SECRET: TEST_EXPOSURES_SECRET,
        // Nothing would go out for ten minutes but for the shutdown.
        EXPOSURES_FLUSH_MS: "600000",
      }, { serve });
      try {
        const visitors = 12;
        for (let i = 0; i < visitors; i++) {
          const res = await fetch(`${service.url}/page/${i}`, { headers: { "user-agent": BROWSER } });
          assert.equal(res.status, 200);
          await res.body?.cancel();
        }
        assert.equal(receiver.attempts.length, 0);
        const status = await service.stop();
        assert.equal(status.code, 0, service.output());
        const exposures = receiver.exposures();
        assert.equal(exposures.length, visitors, service.output());
        assert.deepEqual(
          exposures.map((e) => e.path).sort(),
          Array.from({ length: visitors }, (_, i) => `/page/${i}`).sort(),
        );
        assert.equal(new Set(exposures.map((e) => e.visitor)).size, visitors);
        assert.ok(receiver.attempts.every((attempt) => attempt.verified));
      } finally {
        await service.stop();
        await receiver.close();
        await origin.close();
      }
    });
  });
}
