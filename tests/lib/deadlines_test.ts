import assert from "node:assert/strict";
import { DeadlineSweep } from "../../lib/deadlines.ts";

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
  // Cancelling the last armed deadline stops the interval (the test's sanitizer checks it).
  cancelLong();
  assert.equal(sweep.size, 0);
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
