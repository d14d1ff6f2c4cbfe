import assert from "node:assert/strict";
import { DeadlineError, DeadlineSweep } from "../../lib/deadlines.ts";

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
