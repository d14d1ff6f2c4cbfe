import assert from "node:assert/strict";
import { readAtMost } from "../../../lib/http/body.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("readAtMost reads a whole body, refuses one past the limit, and stops when told", async () => {
  const whole = await readAtMost(new Response("hello world").body, { maxBytes: 11 });
  assert.equal(new TextDecoder().decode(whole), "hello world");
  assert.equal(await readAtMost(new Response("hello world").body, { maxBytes: 10 }), undefined);
  assert.deepEqual(await readAtMost(null, { maxBytes: 10 }), new Uint8Array(0));

  // A body that never ends: the signal stops the read, cancels the stream and rejects.
  let cancelledWith: unknown;
  const endless = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes("{"));
    },
    cancel(reason) {
      cancelledWith = reason;
    },
  });
  const stop = new AbortController();
  const reading = readAtMost(endless, { maxBytes: 1024, signal: stop.signal });
  const reason = new Error("too slow");
  setTimeout(() => stop.abort(reason), 20);
  await assert.rejects(reading, (error) => error === reason);
  assert.equal(cancelledWith, reason);
  // An already aborted signal reads nothing.
  await assert.rejects(
    readAtMost(new Response("x").body, { maxBytes: 10, signal: AbortSignal.abort(reason) }),
  );
});
