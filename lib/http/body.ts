/**
 * @module
 * The one bounded body reader (sync, OFREP, explain, read-through): a declared `Content-Length` over
 * the limit is refused unread, and a longer stream is cancelled as soon as it passes the limit.
 */
import { ClientClosedError, EdgeError } from "./errors.ts";

/** Options for {@linkcode readAtMost} and {@linkcode readLimitedBody}. */
export interface ReadBodyOptions {
  maxBytes: number;
  contentLength?: string | null;
  /** Stops the read: the stream is cancelled, nothing more is read or held, and the read rejects. */
  signal?: AbortSignal;
  /** Told the bytes read so far after each chunk. */
  onRead?: (total: number) => void;
}

/**
 * Reads at most `maxBytes` of a body (`null` reads as empty).
 * @returns the bytes, or `undefined` when the body is (or claims to be) larger than the limit
 * @throws the signal's reason when it aborts, or the stream's error
 */
export async function readAtMost(
  body: ReadableStream<Uint8Array> | null,
  options: ReadBodyOptions,
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
  // Cancelling settles a pending read as done, so the check after each read tells stopped from finished.
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

export class PayloadTooLargeError extends EdgeError {
  constructor(maxBytes: number) {
    super(413, "payload_too_large", `The body must be at most ${maxBytes} bytes`, { maxBytes });
    this.name = "PayloadTooLargeError";
  }
}

/**
 * Reads a body as {@linkcode readAtMost} does, refusing with {@linkcode PayloadTooLargeError} (413),
 * or {@linkcode ClientClosedError} when the stream fails: the sender went away, not a server error.
 */
export async function readLimitedBody(
  body: ReadableStream<Uint8Array> | null,
  options: ReadBodyOptions,
): Promise<Uint8Array> {
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readAtMost(body, options);
  } catch (error) {
    if (options.signal?.aborted) throw error;
    throw new ClientClosedError();
  }
  if (bytes === undefined) throw new PayloadTooLargeError(options.maxBytes);
  return bytes;
}
