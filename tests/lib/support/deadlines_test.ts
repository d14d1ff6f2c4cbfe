import assert from "node:assert/strict";
import { DeadlineError, DeadlineSweep } from "../../../lib/support/deadlines.ts";

Deno.test("deadline sweep: fires expired deadlines once, skips cancelled ones, stops when empty", async () => {
  const sweep = new DeadlineSweep(5);
  const fired: string[] = [];
  sweep.arm(10, () => fired.push("short"));
  const cancel = sweep.arm(10, () => fired.push("cancelled"));
  const cancelLong = sweep.arm(60_000, () => fired.push("long"));
  cancel();
  cancel(); // idempotent
  assert.equal(sweep.size, 2);
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.deepEqual(fired, ["short"]);
  assert.equal(sweep.size, 1);
  // Cancelling the last armed deadline stops the interval at the next tick.
  cancelLong();
  assert.equal(sweep.size, 0);
  assert.ok(sweep.running);
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.ok(!sweep.running);
});

Deno.test("deadline sweep: a throwing action does not stop the others", async () => {
  const sweep = new DeadlineSweep(5);
  let fired = 0;
  sweep.arm(1, () => {
    throw new Error("boom");
  });
  sweep.arm(1, () => fired++);
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(fired, 1);
  assert.equal(sweep.size, 0);
});

Deno.test("deadline sweep: within answers as the work does, or with a DeadlineError when it is late", async () => {
  const sweep = new DeadlineSweep(5);
  assert.equal(await sweep.within(Promise.resolve(42), 1000, "fast work"), 42);
  await assert.rejects(
    sweep.within(Promise.reject(new TypeError("broken")), 1000, "failing work"),
    TypeError,
  );
  assert.equal(sweep.size, 0, "settled work disarms its deadline");
  const late = Promise.withResolvers<string>();
  const started = performance.now();
  await assert.rejects(
    sweep.within(late.promise, 20, "KV read"),
    (error: Error) => error instanceof DeadlineError && error.message === "KV read took longer than 20 ms",
  );
  assert.ok(performance.now() - started < 500);
  late.resolve("too late"); // a late answer changes nothing
  assert.equal(sweep.size, 0);
});

Deno.test("deadline sweep: a pending within keeps the process alive until it settles; plain deadlines do not", async () => {
  const module = new URL("../../../lib/support/deadlines.ts", import.meta.url).href;
  const run = async (code: string) => {
    const started = performance.now();
    const { stdout } = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { DeadlineSweep } from "${module}"; const sweep = new DeadlineSweep(5); ${code}`,
      ],
      stdout: "piped",
    }).output();
    return { ms: performance.now() - started, out: new TextDecoder().decode(stdout).trim() };
  };
  // Awaited work that never settles: the process waits for the deadline, then reports it.
  const pending = await run(
    `sweep.within(new Promise(() => {}), 300, "work").catch((e) => console.log(e.name));`,
  );
  assert.equal(pending.out, "DeadlineError");
  // A deadline nobody awaits, or work that settled, does not hold the process.
  const idle = await run(
    `sweep.arm(5000, () => console.log("fired")); await sweep.within(Promise.resolve(1), 5000, "w");`,
  );
  assert.equal(idle.out, "");
  assert.ok(idle.ms < pending.ms + 4000, `idle ${idle.ms} ms`);
});
