import assert from "node:assert/strict";
import { heapHeadroomProblem } from "../../../lib/data/caches.ts";
import { parseConfig } from "../../../lib/app/config.ts";

const MiB = 1024 * 1024;

/** The `--v8-flags=…` of a task in deno.json. */
async function taskV8Flags(task: string): Promise<string> {
  const tasks = JSON.parse(await Deno.readTextFile(new URL("../../../deno.json", import.meta.url))).tasks;
  const flag = String(tasks[task]).split(/\s+/).find((token) => token.startsWith("--v8-flags="));
  assert.ok(flag, `deno.json: tasks.${task} sets --v8-flags`);
  return flag;
}

Deno.test("heap headroom: the default cache bounds fit the heap that deno task start and serve give V8", async () => {
  for (const task of ["start", "serve"]) {
    const flag = await taskV8Flags(task);
    const { stdout, success } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", flag, 'import v8 from "node:v8"; console.log(v8.getHeapStatistics().heap_size_limit)'],
      stdout: "piped",
    }).output();
    assert.ok(success);
    const limit = Number(new TextDecoder().decode(stdout).trim());
    assert.ok(limit > 64 * MiB && limit < 1024 * MiB, `${task}: heap limit ${limit}`);
    const defaults = parseConfig({
      ORIGIN_URL: "http://127.0.0.1:1",
      BACKEND_URL: "http://127.0.0.1:2",
      BACKEND_TOKEN: "backend-token-0123456789",
    });
    assert.equal(heapHeadroomProblem(defaults, limit, MiB), undefined, task);
  }
});

Deno.test("heap headroom: cache bounds beyond half the heap are named, with the flag to raise", () => {
  const config = parseConfig({
    ORIGIN_URL: "http://127.0.0.1:1",
    CONTEXT_CACHE_MAX_BYTES: String(64 * MiB),
  });
  const problem = heapHeadroomProblem(config, 108 * MiB, MiB);
  assert.match(problem ?? "", /CONTEXT_CACHE_MAX_BYTES/);
  assert.match(problem ?? "", /--max-old-space-size to at least \d+/);
  // The same bounds fit a bigger heap.
  assert.equal(heapHeadroomProblem(config, 1024 * MiB, MiB), undefined);
});

Deno.test("heap headroom: bodies that concurrent pushes and read-throughs may parse count too", () => {
  const config = parseConfig({ ORIGIN_URL: "http://127.0.0.1:1", SYNC_MAX_CONCURRENT: "64" });
  const problem = heapHeadroomProblem(config, 280 * MiB, MiB);
  assert.match(problem ?? "", /SYNC_MAX_CONCURRENT/);
  assert.equal(heapHeadroomProblem({ ...config, syncMaxConcurrent: 4 }, 280 * MiB, MiB), undefined);
});

Deno.test("heap headroom: a large exposure buffer counts when exposure events are on", () => {
  const env = { ORIGIN_URL: "http://127.0.0.1:1", EXPOSURES_BUFFER_MAX: "500000" };
  // Off: the buffer never fills.
  assert.equal(heapHeadroomProblem(parseConfig(env), 512 * MiB, MiB), undefined);
  const on = parseConfig({
    ...env,
    EXPOSURES_URL: "http://127.0.0.1:2/edge/exposures",
    EXPOSURES_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  });
  assert.match(
    heapHeadroomProblem(on, 512 * MiB, MiB) ?? "",
    /EXPOSURES_BUFFER_MAX ~\d+ MB of exposure events/,
  );
});
