/**
 * @module
 * Reading a body into memory with a byte limit, for the few places that must (sync pushes,
 * read-through answers): a declared `Content-Length` over the limit is refused unread, and a
 * longer stream is cancelled as soon as it passes the limit.
 */

/**
 * Reads at most `maxBytes` of a body.
 *
 * @param body the body stream (`null` reads as empty)
 * @param options the limit, the declared `Content-Length` if any, a signal that stops the
 *   read (the stream is cancelled, nothing more is read or held, and the read rejects), and
 *   `onRead`, told the bytes read so far after each chunk
 * @returns the bytes, or `undefined` when the body is (or claims to be) larger than the limit
 * @throws the signal's reason when it aborts, or the stream's error
 */
export async function readAtMost(
  body: ReadableStream<Uint8Array> | null,
  options: {
    maxBytes: number;
    contentLength?: string | null;
    signal?: AbortSignal;
    onRead?: (total: number) => void;
  },
): Promise<Uint8Array | undefined> {
  const { signal } = options;
  signal?.throwIfAborted();
  const declared = options.contentLength ? Number(options.contentLength) : NaN;
  if (Number.isFinite(declared) && declared > options.maxBytes) {
    await body?.cancel().catch(() => {});
    return undefined;
  }
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  // Cancelling settles a pending read at once (as done), so the check after each read tells a
  // stopped read from a finished body.
  const stop = () => reader.cancel(signal?.reason).catch(() => {});
  signal?.addEventListener("abort", stop, { once: true });
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      signal?.throwIfAborted();
      if (done) break;
      total += value.byteLength;
      options.onRead?.(total);
      if (total > options.maxBytes) {
        await reader.cancel().catch(() => {});
        return undefined;
      }
      chunks.push(value);
    }
  } finally {
    signal?.removeEventListener("abort", stop);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}
