import assert from "node:assert/strict";
import { type AttemptInfo, describeFetchError, publish, type PublishOptions } from "../../tools/publisher.ts";
import { batchEvents, parseNdjson, PublishInputError, rebaseInstants } from "../../tools/publisher_events.ts";
import { createWebhookVerifier } from "../../lib/sync/verify.ts";
import { parseRetryAfter } from "../../lib/http/retry_after.ts";
import { startOrigin } from "../support.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const view = (i: number) => ({ kind: "view", userId: `u${i}`, itemId: "p1", at: "2026-11-26T11:59:58Z" });

function publishOptions(
  endpoints: string[],
  sleeps: number[],
  overrides: Partial<PublishOptions> = {},
): PublishOptions {
  let id = 0;
  return {
    endpoints,
    secret: SECRET,
    fetch: globalThis.fetch,
    now: () => NOW,
    sleep: (ms) => {
      sleeps.push(ms);
      return Promise.resolve();
    },
    random: () => 0.5,
    randomId: () => `test-${++id}`,
    scheduleMs: [0, 1000, 2000, 4000],
    ...overrides,
  };
}

Deno.test("parseNdjson names each line that is not JSON or not a valid event", () => {
  assert.equal(parseNdjson(`${JSON.stringify(view(1))}\n\n${JSON.stringify(view(2))}\n`).length, 2);
  try {
    parseNdjson(`${JSON.stringify(view(1))}\n{oops\n{"kind":"view","userId":"u1"}\n`);
    assert.fail("expected an error");
  } catch (error) {
    assert.ok(error instanceof PublishInputError);
    assert.match(error.problems[0]!, /^line 2: not JSON/);
    assert.ok(error.problems.some((p) => p.startsWith('line 3: "itemId"')));
  }
});

Deno.test("batchEvents keeps batches within the event and byte limits", () => {
  const events = Array.from({ length: 2500 }, (_, i) => view(i));
  assert.deepEqual(batchEvents(events).map((b) => b.length), [1000, 1000, 500]);
  const small = batchEvents(events.slice(0, 100), { maxBytes: 2048 });
  assert.ok(small.every((batch) => JSON.stringify({ data: { events: batch } }).length < 2048 - 64));
  assert.equal(small.flat().length, 100);
  assert.throws(() => batchEvents([{ big: "x".repeat(5000) }], { maxBytes: 2048 }), PublishInputError);
});

Deno.test("parseRetryAfter reads seconds and HTTP dates", () => {
  assert.equal(parseRetryAfter("7", NOW), 7000);
  assert.equal(parseRetryAfter(new Date(NOW + 3000).toUTCString(), NOW), 3000);
  assert.equal(parseRetryAfter("soon", NOW), 0);
  assert.equal(parseRetryAfter(null, NOW), 0);
});

Deno.test("publish signs batches that verify, and fans out to every endpoint", async () => {
  const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: () => NOW });
  const received: string[][] = [[], []];
  const origins = [0, 1].map((n) =>
    startOrigin(async (_seen, raw) => {
      const body = new Uint8Array(await raw.arrayBuffer());
      await verifier.verify(body, raw.headers);
      received[n]!.push(raw.headers.get("webhook-id")!);
      return Response.json({ applied: 1, stale: 0 });
    })
  );
  try {
    const report = await publish(
      Array.from({ length: 1500 }, (_, i) => view(i)),
      publishOptions(origins.map((o) => `${o.url}/_edge/sync`), []),
    );
    assert.equal(report.ok, true);
    assert.deepEqual(report.endpoints.map((e) => [e.deliveredEvents, e.deliveredBatches, e.failedBatches]), [
      [1500, 2, 0],
      [1500, 2, 0],
    ]);
    assert.deepEqual(received[0], ["msg_test-1", "msg_test-2"]);
    assert.deepEqual(received[1], received[0], "one webhook-id per batch, the same at every endpoint");
  } finally {
    await Promise.all(origins.map((o) => o.close()));
  }
});

Deno.test("publish retries 5xx on the schedule with jitter and honours 429 Retry-After", async () => {
  let calls = 0;
  const ids = new Set<string>();
  const origin = startOrigin((_seen, raw) => {
    ids.add(raw.headers.get("webhook-id")!);
    calls++;
    if (calls === 1) return new Response("busy", { status: 503 });
    if (calls === 2) return new Response("slow down", { status: 429, headers: { "retry-after": "9" } });
    return Response.json({ applied: 1, stale: 0 });
  });
  try {
    const sleeps: number[] = [];
    const report = await publish([view(1)], publishOptions([origin.url], sleeps, { random: () => 1 }));
    assert.equal(report.ok, true);
    assert.equal(calls, 3);
    assert.deepEqual([...ids], ["msg_test-1"], "a retry keeps the webhook-id");
    assert.deepEqual(sleeps, [1200, 9000], "jittered 1 s, then the 9 s Retry-After over the 2.4 s step");
  } finally {
    await origin.close();
  }
});

Deno.test("publish stops at an endpoint that answers 410 and reports every batch as failed", async () => {
  let calls = 0;
  const gone = startOrigin(() => {
    calls++;
    return new Response("gone", { status: 410 });
  });
  const fine = startOrigin(() => Response.json({ applied: 1, stale: 0 }));
  try {
    const report = await publish(
      Array.from({ length: 1200 }, (_, i) => view(i)),
      publishOptions([gone.url, fine.url], []),
    );
    assert.equal(report.ok, false);
    assert.equal(calls, 1);
    assert.deepEqual(report.endpoints[0], {
      endpoint: gone.url,
      deliveredBatches: 0,
      deliveredEvents: 0,
      failedBatches: 2,
      failedEvents: 1200,
      gone: true,
      errors: [
        { webhookId: "msg_test-1", error: "HTTP 410: gone" },
        { webhookId: "msg_test-2", error: "endpoint answered 410 Gone" },
      ],
      batches: [
        {
          webhookId: "msg_test-1",
          kinds: { view: 1000 },
          events: 1000,
          delivered: false,
          error: "HTTP 410: gone",
        },
        {
          webhookId: "msg_test-2",
          kinds: { view: 200 },
          events: 200,
          delivered: false,
          error: "endpoint answered 410 Gone",
        },
      ],
    });
    assert.equal(report.endpoints[1]!.deliveredEvents, 1200);
  } finally {
    await gone.close();
    await fine.close();
  }
});

Deno.test("publish does not retry a 400 and gives up after the last scheduled attempt", async () => {
  const bad = startOrigin(() => Response.json({ error: { code: "invalid_events" } }, { status: 400 }));
  const down = startOrigin(() => new Response("down", { status: 502 }));
  try {
    const sleeps: number[] = [];
    const report = await publish([view(1)], publishOptions([bad.url, down.url], sleeps));
    assert.equal(report.ok, false);
    assert.equal(bad.seen.length, 1);
    assert.equal(down.seen.length, 4);
    assert.match(report.endpoints[1]!.errors[0]!.error, /gave up after 4 attempts; last: HTTP 502/);
  } finally {
    await bad.close();
    await down.close();
  }
});

Deno.test("publish gives up a dead endpoint after one batch used up the schedule: the rest fail unsent", async () => {
  // Dead: nothing listens on the port any more (connection refused), or it never answers (timeout).
  const closed = startOrigin();
  const dead = `${closed.url}/_edge/sync`;
  await closed.close();
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const hung = startOrigin(async () => {
    await released;
    return Response.json({ applied: 1000, stale: 0 });
  });
  const fine = startOrigin(() => Response.json({ applied: 1000, stale: 0 }));
  // A batch-specific refusal is not an outage: the endpoint keeps getting the other batches.
  const picky = startOrigin((_seen, raw) =>
    raw.headers.get("webhook-id") === "msg_test-1"
      ? Response.json({ error: { code: "invalid_events" } }, { status: 400 })
      : Response.json({ applied: 1000, stale: 0 })
  );
  const calls = new Map<string, number>();
  try {
    const sleeps: number[] = [];
    const report = await publish(
      Array.from({ length: 2500 }, (_, i) => view(i)),
      publishOptions([dead, hung.url, fine.url, picky.url], sleeps, {
        scheduleMs: [0, 1, 2],
        timeoutMs: 100,
        fetch: ((input: string, init?: RequestInit) => {
          calls.set(input, (calls.get(input) ?? 0) + 1);
          return globalThis.fetch(input, init);
        }) as typeof fetch,
        sleep: (ms) => {
          sleeps.push(ms);
          return new Promise((resolve) => setTimeout(resolve, ms));
        },
      }),
    );
    assert.equal(report.ok, false);
    assert.equal(calls.get(dead), 3, "one schedule for the first batch, nothing for the others");
    assert.equal(calls.get(hung.url), 3, "timeouts too: one schedule, then nothing");
    assert.equal(hung.seen.length, 3);
    assert.deepEqual(sleeps, [1, 2, 1, 2]);
    const notSent =
      "not sent: batch msg_test-1 used up every attempt on this endpoint without an HTTP answer";
    const deadReport = report.endpoints[0]!;
    assert.deepEqual(
      [
        deadReport.deliveredBatches,
        deadReport.deliveredEvents,
        deadReport.failedBatches,
        deadReport.failedEvents,
      ],
      [0, 0, 3, 2500],
    );
    assert.equal(deadReport.gone, false);
    assert.deepEqual(deadReport.errors.map((e) => e.webhookId), ["msg_test-1", "msg_test-2", "msg_test-3"]);
    assert.match(deadReport.errors[0]!.error, /^gave up after 3 attempts; last: network error: /);
    assert.deepEqual(deadReport.errors.slice(1).map((e) => e.error), [notSent, notSent]);
    const hungReport = report.endpoints[1]!;
    assert.deepEqual([hungReport.deliveredBatches, hungReport.failedBatches], [0, 3]);
    assert.match(hungReport.errors[0]!.error, /^gave up after 3 attempts; last: network error: /);
    assert.deepEqual(hungReport.errors.slice(1).map((e) => e.error), [notSent, notSent]);
    assert.deepEqual([report.endpoints[2]!.deliveredBatches, report.endpoints[2]!.deliveredEvents], [
      3,
      2500,
    ]);
    assert.equal(fine.seen.length, 3);
    const pickyReport = report.endpoints[3]!;
    assert.deepEqual(
      [pickyReport.deliveredBatches, pickyReport.failedBatches, pickyReport.errors.map((e) => e.webhookId)],
      [2, 1, ["msg_test-1"]],
    );
    assert.equal(picky.seen.length, 3);
  } finally {
    release();
    await hung.close();
    await fine.close();
    await picky.close();
  }
});

Deno.test("publish keeps sending to an endpoint that answers even when one batch used up the schedule", async () => {
  // One batch always gets 503 (e.g. too large to apply within SYNC_STORE_TIMEOUT_MS): the others go through.
  const oneBatch = startOrigin((_seen, raw) =>
    raw.headers.get("webhook-id") === "msg_test-1"
      ? Response.json({ error: { code: "store_unavailable" } }, { status: 503 })
      : Response.json({ applied: 1, stale: 0 })
  );
  // Answers 503 to everything, sometimes after a refused connection: it answered, so each batch is tried.
  let attempts = 0;
  const alwaysBusy = startOrigin(() => new Response("unavailable", { status: 503 }));
  try {
    const report = await publish(
      Array.from({ length: 5 }, (_, i) => view(i)),
      publishOptions([oneBatch.url, alwaysBusy.url], [], {
        scheduleMs: [0, 1000, 2000],
        maxEvents: 1,
        fetch: ((input: string, init?: RequestInit) => {
          if (input === alwaysBusy.url && attempts++ % 3 === 0) {
            return Promise.reject(new TypeError("connection refused"));
          }
          return globalThis.fetch(input, init);
        }) as typeof fetch,
      }),
    );
    assert.equal(report.ok, false);
    const first = report.endpoints[0]!;
    assert.deepEqual(
      [first.deliveredBatches, first.deliveredEvents, first.failedBatches, first.failedEvents],
      [4, 4, 1, 1],
    );
    assert.deepEqual(first.errors, [{
      webhookId: "msg_test-1",
      error: 'gave up after 3 attempts; last: HTTP 503: {"error":{"code":"store_unavailable"}}',
    }]);
    assert.equal(oneBatch.seen.length, 3 + 4);
    const busy = report.endpoints[1]!;
    assert.deepEqual([busy.deliveredBatches, busy.failedBatches], [0, 5]);
    assert.ok(busy.errors.every((e) => e.error.startsWith("gave up after 3 attempts; last: HTTP 503")));
    assert.equal(attempts, 15, "every batch used its own schedule");
    assert.equal(alwaysBusy.seen.length, 10);
  } finally {
    await oneBatch.close();
    await alwaysBusy.close();
  }
});

Deno.test("publish refuses invalid events before sending anything", async () => {
  await assert.rejects(
    publish([view(1), { kind: "cart", userId: "u1" }], publishOptions(["http://127.0.0.1:9/"], [])),
    PublishInputError,
  );
});

Deno.test("publish refuses a secret it cannot sign with before sending anything, instead of retrying", async () => {
  const sent: string[] = [];
  const options = publishOptions(["http://127.0.0.1:9/"], []);
  for (const secret of ["whsec_a", "whsec_"]) { // not base64; base64 of nothing (no HMAC key)
    await assert.rejects(
      publish([view(1)], {
        ...options,
        secret,
        fetch: ((input: string) => {
          sent.push(input);
          return Promise.resolve(new Response(null, { status: 204 }));
        }) as typeof fetch,
      }),
      (error: Error) => error instanceof PublishInputError && /Cannot sign/.test(error.message),
    );
  }
  assert.deepEqual(sent, []);
});

Deno.test("rebaseInstants moves the newest at to now and shifts every instant alike", () => {
  const events = [
    { kind: "view", userId: "u", itemId: "p", at: "2026-01-01T00:00:00Z" },
    {
      kind: "session",
      sessionId: "s",
      userId: "u",
      at: "2026-01-01T00:00:10Z",
      expiresAt: "2026-01-02T00:00:10Z",
    },
    { kind: "related", itemId: "p", version: 1, related: [] },
  ];
  const now = Date.UTC(2030, 5, 1);
  const [view, session, related] = rebaseInstants(events, now) as Record<string, unknown>[];
  assert.equal(session!.at, new Date(now).toISOString());
  assert.equal(view!.at, new Date(now - 10_000).toISOString());
  assert.equal(session!.expiresAt, new Date(now + 86_400_000).toISOString());
  assert.deepEqual(related, events[2]);
  assert.equal(events[0]!.at, "2026-01-01T00:00:00Z", "the input is not changed");
});

Deno.test("publish sends rule control events in batches of their own and keeps each batch's answer", async () => {
  const batches: string[][] = [];
  const origin = startOrigin(async (_seen, raw) => {
    const kinds = (await raw.json()).data.events.map((event: { kind: string }) => event.kind);
    batches.push(kinds);
    return kinds[0] === "rules_rollback"
      ? Response.json({ applied: 0, stale: 1, rules: { active: 3, canary: null } })
      : Response.json({ applied: kinds.length, stale: 0 });
  });
  try {
    const rollback = { kind: "rules_rollback", version: 2, at: "2026-11-26T11:59:58Z" };
    const report = await publish([view(1), rollback, view(2)], publishOptions([origin.url], []));
    assert.deepEqual(batches, [["view", "view"], ["rules_rollback"]]);
    assert.deepEqual(report.endpoints[0]!.batches, [
      {
        webhookId: "msg_test-1",
        kinds: { view: 2 },
        events: 2,
        delivered: true,
        answer: { applied: 2, stale: 0 },
      },
      {
        webhookId: "msg_test-2",
        kinds: { rules_rollback: 1 },
        events: 1,
        delivered: true,
        answer: { applied: 0, stale: 1, rules: { active: 3, canary: null } },
      },
    ]);
  } finally {
    await origin.close();
  }
});

Deno.test("publish names the cause of a network failure and when the next attempt is", async () => {
  const closed = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const port = closed.addr.port;
  closed.close();
  const attempts: AttemptInfo[] = [];
  const report = await publish(
    [view(1)],
    publishOptions([`http://127.0.0.1:${port}/_edge/sync`], [], {
      scheduleMs: [0, 5000, 300_000],
      onAttempt: (info) => attempts.push(info),
    }),
  );
  assert.equal(report.ok, false);
  assert.deepEqual(
    attempts.map((a) => [a.attempt, a.attempts, a.detail, a.nextAttemptInMs]),
    [
      [1, 3, "network error: connection refused", 5000],
      [2, 3, "network error: connection refused", 300_000],
      [3, 3, "network error: connection refused", undefined],
    ],
  );
  assert.equal(
    report.endpoints[0]!.errors[0]!.error,
    "gave up after 3 attempts; last: network error: connection refused",
  );
});

Deno.test("describeFetchError reads a timeout, an unknown host and a reset from Deno's error causes", () => {
  const timeout = new DOMException("The operation was aborted due to timeout", "TimeoutError");
  assert.equal(describeFetchError(timeout, 30_000), "no answer within 30 s");
  // The shape Deno's fetch throws: "fetch failed", the reason in `cause`.
  const failed = (cause: string) => new TypeError("fetch failed", { cause: new Error(cause) });
  assert.equal(
    describeFetchError(
      failed(
        "error sending request for url (http://edge.example/): client error (Connect): dns error: " +
          "failed to lookup address information: Name or service not known",
      ),
      30_000,
    ),
    "host not found (DNS)",
  );
  assert.equal(
    describeFetchError(
      failed(
        "error sending request from 127.0.0.1:1 for http://127.0.0.1:2/: connection closed before message completed",
      ),
      30_000,
    ),
    "connection closed by the endpoint",
  );
  assert.equal(
    describeFetchError(failed("error sending request for url (x): something new"), 30_000),
    "something new",
  );
});
