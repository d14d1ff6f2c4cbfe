import assert from "node:assert/strict";
import { DeadlineSweep } from "../../../lib/support/deadlines.ts";
import type { ExposureEvent } from "../../../lib/exposures/events.ts";
import { ExposureQueue } from "../../../lib/exposures/queue.ts";
import { EXPOSURES_EVENT_TYPE, ExposureSender, RETRY_MAX_MS } from "../../../lib/exposures/sender.ts";
import { createLogger } from "../../../lib/obs/log.ts";
import { BackgroundTasks } from "../../../lib/support/background.ts";
import { startExposureReceiver, TEST_EXPOSURES_SECRET } from "../../exposure_receiver.ts";

function event(i: number): ExposureEvent {
  return {
    experiment: "hero",
    variation: i % 2 ? "a" : "control",
    visitor: `visitor-${String(i).padStart(16, "0")}`,
    rulesVersion: 1,
    at: new Date().toISOString(),
    requestId: `req-${i}`,
    region: "EU",
    device: "desktop",
    path: "/",
  };
}

interface Harness {
  queue: ExposureQueue;
  results: Record<string, number>;
  lines: string[];
  delays: number[];
  background: BackgroundTasks;
  deadlines: DeadlineSweep;
}

function harness(
  url: string,
  bounds: { batchMax: number; flushMs: number; bufferMax: number },
  options: { fetch?: typeof fetch; attemptTimeoutMs?: number } = {},
): Harness {
  const results: Record<string, number> = {};
  const lines: string[] = [];
  const delays: number[] = [];
  const deadlines = new DeadlineSweep(5);
  const background = new BackgroundTasks();
  const log = createLogger("debug", { now: Date.now, sink: (line) => lines.push(line) });
  let id = 0;
  const onResult = (result: string, n: number) => results[result] = (results[result] ?? 0) + n;
  const realWithin = deadlines.within.bind(deadlines);
  // Records the retry waits the sender asks for (and keeps them short for the test).
  deadlines.within = <T>(work: Promise<T>, ms: number, what: string) => {
    if (what === "Exposure retry wait") delays.push(ms);
    return realWithin(work, what === "Exposure retry wait" ? Math.min(ms, 30) : ms, what);
  };
  const sender = new ExposureSender({
    url: new URL(url),
    secret: TEST_EXPOSURES_SECRET,
    fetch: options.fetch ?? fetch,
    now: Date.now,
    randomId: () => String(++id),
    random: () => 0.5,
    deadlines,
    log,
    onResult,
    retryBaseMs: 10,
    attemptTimeoutMs: options.attemptTimeoutMs,
  });
  const queue = new ExposureQueue({
    ...bounds,
    sender,
    deadlines,
    mono: () => performance.now(),
    waitUntil: (work) => background.waitUntil(work),
    onResult,
    onFull: () => log.warn("full", {}),
  });
  return { queue, results, lines, delays, background, deadlines };
}

Deno.test("a full batch goes out at once, signed as one edge.exposures message", async () => {
  const receiver = startExposureReceiver();
  try {
    const { queue, results, background } = harness(receiver.url, {
      batchMax: 3,
      flushMs: 60_000,
      bufferMax: 100,
    });
    for (let i = 0; i < 3; i++) queue.push(event(i));
    await receiver.until(() => receiver.batches.length === 1);
    assert.equal(receiver.batches[0]!.type, EXPOSURES_EVENT_TYPE);
    assert.deepEqual(receiver.exposures().map((e) => e.requestId), ["req-0", "req-1", "req-2"]);
    assert.ok(receiver.attempts.every((attempt) => attempt.verified));
    await background.drain();
    assert.deepEqual(results, { queued: 3, sent: 3 });
    assert.equal(queue.size, 0);
  } finally {
    await receiver.close();
  }
});

Deno.test("a partial batch goes out after the flush interval", async () => {
  const receiver = startExposureReceiver();
  try {
    const { queue, background } = harness(receiver.url, { batchMax: 500, flushMs: 50, bufferMax: 1000 });
    queue.push(event(1));
    queue.push(event(2));
    assert.equal(receiver.attempts.length, 0);
    assert.equal(queue.size, 2);
    await background.drain();
    assert.equal(receiver.batches.length, 1);
    assert.equal(receiver.batches[0]!.exposures.length, 2);
  } finally {
    await receiver.close();
  }
});

Deno.test("a receiver answering 503 for a while loses nothing: retried with the same webhook-id", async () => {
  const receiver = startExposureReceiver({ status: (attempt) => (attempt <= 3 ? 503 : 200) });
  try {
    const { queue, results, delays, background } = harness(receiver.url, {
      batchMax: 5,
      flushMs: 10,
      bufferMax: 100,
    });
    for (let i = 0; i < 12; i++) queue.push(event(i));
    await background.drain();
    assert.deepEqual(receiver.attempts.slice(0, 4).map((a) => [a.id, a.status]), [
      ["msg_1", 503],
      ["msg_1", 503],
      ["msg_1", 503],
      ["msg_1", 200],
    ]);
    assert.ok(receiver.attempts.every((attempt) => attempt.verified));
    assert.deepEqual(
      receiver.exposures().map((e) => e.requestId),
      Array.from({ length: 12 }, (_, i) => `req-${i}`),
    );
    assert.deepEqual(results, { queued: 12, retried: 15, sent: 12 });
    // Exponential: 10, 20, 40 ms before jitter, with random() = 0.5 → three quarters of each.
    assert.deepEqual(delays, [7.5, 15, 30]);
  } finally {
    await receiver.close();
  }
});

Deno.test("429 and 408 are retried, honouring Retry-After up to the 5 s cap", async () => {
  const answers = [429, 408, 200];
  const retryAfter = "120";
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
    await request.body?.cancel();
    const status = answers.shift() ?? 200;
    return new Response(null, { status, headers: status === 429 ? { "retry-after": retryAfter } : {} });
  });
  try {
    const url = `http://127.0.0.1:${server.addr.port}/`;
    const { queue, results, delays, background } = harness(url, { batchMax: 1, flushMs: 10, bufferMax: 10 });
    queue.push(event(1));
    await background.drain();
    assert.deepEqual(results, { queued: 1, retried: 2, sent: 1 });
    assert.deepEqual(delays, [RETRY_MAX_MS, 15]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("a 4xx answer drops the batch with an error log, and delivery goes on", async () => {
  const receiver = startExposureReceiver({ status: (attempt) => (attempt === 1 ? 400 : 200) });
  try {
    const { queue, results, lines, background } = harness(receiver.url, {
      batchMax: 2,
      flushMs: 10,
      bufferMax: 10,
    });
    for (let i = 0; i < 4; i++) queue.push(event(i));
    await background.drain();
    assert.deepEqual(receiver.attempts.map((a) => [a.id, a.status]), [["msg_1", 400], ["msg_2", 200]]);
    assert.deepEqual(results, { queued: 4, dropped: 2, sent: 2 });
    const error = lines.map((line) => JSON.parse(line)).find((line) => line.level === "error");
    assert.equal(error?.msg, "exposure batch refused by the backend; dropped");
    assert.equal(error?.status, 400);
    assert.equal(error?.webhookId, "msg_1");
  } finally {
    await receiver.close();
  }
});

Deno.test("network errors and timeouts are retried", async () => {
  const receiver = startExposureReceiver();
  let calls = 0;
  // The first attempt goes nowhere (a closed port), the second hangs past the attempt timeout.
  const flaky: typeof fetch = (input, init) => {
    calls++;
    if (calls === 1) return fetch("http://127.0.0.1:1/", init);
    if (calls === 2) {
      return new Promise((_, reject) =>
        init?.signal?.addEventListener("abort", () => reject(init.signal!.reason))
      );
    }
    return fetch(input, init);
  };
  try {
    const { queue, results, lines, background } = harness(receiver.url, {
      batchMax: 1,
      flushMs: 10,
      bufferMax: 10,
    }, {
      fetch: flaky,
      attemptTimeoutMs: 50,
    });
    queue.push(event(1));
    await background.drain();
    assert.equal(receiver.batches.length, 1);
    assert.deepEqual(results, { queued: 1, retried: 2, sent: 1 });
    const warnings = lines.map((line) => JSON.parse(line)).filter((line) => line.level === "warn");
    assert.match(warnings[0].error, /^network error/);
    assert.equal(warnings[1].error, "timed out");
  } finally {
    await receiver.close();
  }
});

Deno.test("a full buffer drops the oldest queued events and counts them", async () => {
  let open = false;
  const receiver = startExposureReceiver({ status: () => (open ? 200 : 503) });
  try {
    const { queue, results, lines, background } = harness(receiver.url, {
      batchMax: 5,
      flushMs: 60_000,
      bufferMax: 10,
    });
    // Pushed in one go: the queue holds 10, so events 0 and 1 make room for 10 and 11.
    for (let i = 0; i < 12; i++) queue.push(event(i));
    assert.equal(results.dropped, 2);
    assert.equal(queue.size, 10);
    assert.ok(lines.some((line) => JSON.parse(line).msg === "full"));
    open = true;
    await background.drain();
    assert.deepEqual(
      receiver.exposures().map((e) => e.requestId),
      Array.from({ length: 10 }, (_, i) => `req-${i + 2}`),
    );
    assert.equal(results.sent, 10);
  } finally {
    await receiver.close();
  }
});

Deno.test("when full while a batch is being retried, that batch (the oldest) is given up whole", async () => {
  let open = false;
  const receiver = startExposureReceiver({ status: () => (open ? 200 : 503) });
  try {
    const { queue, results, lines, background } = harness(receiver.url, {
      batchMax: 4,
      flushMs: 10,
      bufferMax: 8,
    });
    for (let i = 0; i < 4; i++) queue.push(event(i));
    await receiver.until(() => receiver.attempts.length >= 1);
    for (let i = 4; i < 12; i++) queue.push(event(i));
    assert.equal(queue.size, 8);
    open = true;
    await background.drain();
    assert.deepEqual(
      receiver.exposures().map((e) => e.requestId),
      Array.from({ length: 8 }, (_, i) => `req-${i + 4}`),
    );
    assert.equal(results.dropped, 4);
    assert.equal(results.sent, 8);
    assert.ok(
      lines.some((line) => JSON.parse(line).msg === "exposure buffer full: undelivered batch dropped"),
    );
  } finally {
    await receiver.close();
  }
});

Deno.test("close sends what is queued without waiting for the flush interval", async () => {
  const receiver = startExposureReceiver();
  try {
    const { queue, deadlines } = harness(receiver.url, { batchMax: 500, flushMs: 600_000, bufferMax: 1000 });
    queue.push(event(1));
    await deadlines.within(queue.close(), 2000, "close");
    assert.equal(receiver.exposures().length, 1);
    // Pushed after close: sent at once too.
    queue.push(event(2));
    await deadlines.within(queue.close(), 2000, "close");
    assert.equal(receiver.exposures().length, 2);
  } finally {
    await receiver.close();
  }
});

Deno.test("queue bounds are checked", () => {
  const sender = { batch: () => assert.fail(), deliver: () => Promise.resolve() };
  const base = {
    sender,
    deadlines: new DeadlineSweep(),
    mono: () => 0,
    waitUntil: () => {},
  };
  assert.throws(() => new ExposureQueue({ ...base, batchMax: 0, flushMs: 1, bufferMax: 1 }), RangeError);
  assert.throws(() => new ExposureQueue({ ...base, batchMax: 5, flushMs: 1, bufferMax: 4 }), /bufferMax/);
});
