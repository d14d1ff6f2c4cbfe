/**
 * @module
 * The one bounded body reader, for the few places that read a body into memory (sync pushes,
 * OFREP and explain requests, read-through answers): a declared `Content-Length` over the limit
 * is refused unread, and a longer stream is cancelled as soon as it passes the limit.
 */
import { ClientClosedError, EdgeError } from "./errors.ts";

/**
 * Reads at most `maxBytes` of a body.
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

/** The request body is larger than allowed. */
export class PayloadTooLargeError extends EdgeError {
  /** @param maxBytes the limit */
  constructor(maxBytes: number) {
    super(413, "payload_too_large", `The body must be at most ${maxBytes} bytes`, { maxBytes });
    this.name = "PayloadTooLargeError";
  }
}

/**
 * Reads a request body into memory, refusing more than `maxBytes`: a declared
 * `Content-Length` above the limit is refused before reading, and a stream that turns out
 * longer is cancelled as soon as it passes the limit (the rest is never read).
 * @param body the body stream (`null` reads as empty)
 * @param options the limit, the declared `Content-Length` header if any, a signal that
 *   stops the read (the stream is cancelled), and `onRead`, told the bytes read so far
 * @returns the body bytes
 * @throws {PayloadTooLargeError} when the body is or claims to be larger than the limit
 * @throws {ClientClosedError} when the body stream fails (the sender went away mid-body)
 * @throws the signal's reason when it aborted the read
 */
export async function readLimitedBody(
  body: ReadableStream<Uint8Array> | null,
  options: {
    maxBytes: number;
    contentLength?: string | null;
    signal?: AbortSignal;
    onRead?: (total: number) => void;
  },
): Promise<Uint8Array> {
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readAtMost(body, options);
  } catch (error) {
    if (options.signal?.aborted) throw error;
    // The body stream only fails when the sender went away mid-body: not a server error.
    throw new ClientClosedError();
  }
  if (bytes === undefined) throw new PayloadTooLargeError(options.maxBytes);
  return bytes;
}
