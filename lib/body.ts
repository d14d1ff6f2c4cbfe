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
 * @param options the limit and the declared `Content-Length`, if any
 * @returns the bytes, or `undefined` when the body is (or claims to be) larger than the limit
 */
export async function readAtMost(
  body: ReadableStream<Uint8Array> | null,
  options: { maxBytes: number; contentLength?: string | null },
): Promise<Uint8Array | undefined> {
  const declared = options.contentLength ? Number(options.contentLength) : NaN;
  if (Number.isFinite(declared) && declared > options.maxBytes) {
    await body?.cancel().catch(() => {});
    return undefined;
  }
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > options.maxBytes) {
      await reader.cancel().catch(() => {});
      return undefined;
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}
