/**
 * @module
 * Streaming HTML slots: for `text/html` origin responses, replaces `<edge-slot name="…">fallback
 * </edge-slot>` elements and the inner content of elements with `data-edge-slot="…"` by content
 * chosen at the edge, and can inject the edge context as inline JSON. Built on lol-html
 * (WebAssembly build `html-rewriter-wasm`): output is produced as input arrives, so time to first
 * byte does not wait for the whole page. Compressed bodies are decoded with
 * `DecompressionStream`; anything that cannot be handled safely passes through untouched.
 *
 * The WebAssembly module (~1 MB) is loaded by an {@linkcode HtmlRewriterLoader} when the first
 * page is rewritten, not at start-up, and replaced after a page that grew its memory.
 *
 * Rewriting is bounded per page, in bytes and in time spent in the rewriter: lol-html re-scans a
 * tag that is still open on every write, so one huge tag costs time quadratic in its size. Input
 * is fed in slices of {@linkcode HTML_REWRITE_SLICE_BYTES} with the caps checked between slices;
 * past a cap the rewriter is flushed and freed and the rest of the page passes through as it came.
 */
import type { Element, HTMLRewriter } from "html-rewriter-wasm";
import type { HtmlRewriterLease, HtmlRewriterLoader } from "./html_rewriter.ts";
import { DECODED_BY_FETCH } from "./upstream.ts";

/** The `id` of the injected context script. */
export const DEFAULT_CONTEXT_SCRIPT_ID = "edge-context";

/** The most bytes written to the rewriter at once, so the caps are checked often enough. */
export const HTML_REWRITE_SLICE_BYTES = 64 * 1024;

/** Which cap ended a page's rewrite early. */
export type HtmlRewriteCap = "bytes" | "time";

/** What {@linkcode HtmlSlotsOptions.onBailout} is told when a rewrite stops at a cap. */
export interface HtmlRewriteBailout {
  cap: HtmlRewriteCap;
  /** Bytes of (decoded) HTML rewritten before the rest was passed through. */
  bytes: number;
}

/** Options for {@linkcode rewriteHtmlResponse} and {@linkcode rewriteHtmlStream}. */
export interface HtmlSlotsOptions {
  /** Where the page's lol-html instance comes from (one per isolate, so memory is given back). */
  rewriter: HtmlRewriterLoader;
  /**
   * Slot name → HTML inserted as is (not escaped). It must come from the operator's rules, never
   * from request data. When the page is rewritten, every `<edge-slot>` wrapper is removed: a slot
   * without content keeps its fallback, unwrapped.
   */
  slots?: ReadonlyMap<string, string>;
  /**
   * A JSON-serialisable value injected as `<script type="application/json" id="edge-context">`
   * before `</head>`, else at the start of `<body>` (a page with neither gets nothing).
   */
  context?: unknown;
  /** The injected script's `id` (default {@linkcode DEFAULT_CONTEXT_SCRIPT_ID}). */
  contextScriptId?: string;
  /**
   * The response came from Deno's `fetch` with a request `Accept-Encoding` other than exactly
   * `identity`: Deno 2.9 then hands back gzip and br bodies already decoded but keeps their
   * `Content-Encoding` and `Content-Length` (denoland/deno#35124), so those codings must not be
   * decoded again. `deflate` is never decoded by `fetch`. Default `false`: the headers describe
   * the body.
   */
  fetchDecoded?: boolean;
  /** Told when the rewrite fails mid-stream (the response body then errors). */
  onError?: (error: unknown) => void;
  /** Most bytes of decoded HTML rewritten per page; the rest passes through (default unbounded). */
  maxBytes?: number;
  /** Most milliseconds spent in the rewriter per page, waiting for input not counted (default unbounded). */
  maxMs?: number;
  /** Monotonic clock in milliseconds for `maxMs` (default `performance.now`). */
  now?: () => number;
  /** Told once when a cap stops the rewrite (the page itself stays complete). */
  onBailout?: (bailout: HtmlRewriteBailout) => void;
}

/** Why a response is or is not rewritten. */
export type HtmlRewritePlan =
  | { rewrite: true; decode: CompressionFormat[] }
  | {
    rewrite: false;
    reason:
      | "no_body"
      | "not_html"
      | "partial"
      | "unsupported_encoding"
      | "unsupported_charset"
      | "nothing_to_do";
  };

const CODINGS: Record<string, CompressionFormat> = {
  gzip: "gzip",
  "x-gzip": "gzip",
  deflate: "deflate",
  br: "brotli",
};
const UTF8_CHARSETS = new Set(["utf-8", "utf8", "us-ascii"]);

/**
 * Decides whether a response can be rewritten and which decoders its body needs.
 *
 * @param response the origin response (its body is not touched)
 * @param options the slots and context to insert
 * @returns `rewrite: true` with the decoding steps (outermost coding first), or the reason not to
 */
export function planHtmlRewrite(
  response: Response,
  options: Omit<HtmlSlotsOptions, "rewriter">,
): HtmlRewritePlan {
  if (!response.body) return { rewrite: false, reason: "no_body" };
  const contentType = response.headers.get("content-type") ?? "";
  const [essence = "", ...params] = contentType.split(";");
  if (essence.trim().toLowerCase() !== "text/html") return { rewrite: false, reason: "not_html" };
  if (response.status === 206) return { rewrite: false, reason: "partial" };
  if ((!options.slots || options.slots.size === 0) && options.context === undefined) {
    return { rewrite: false, reason: "nothing_to_do" };
  }
  for (const param of params) {
    const [name, value = ""] = param.split("=");
    const charset = value.trim().replace(/^"|"$/g, "").toLowerCase();
    if (name?.trim().toLowerCase() === "charset" && !UTF8_CHARSETS.has(charset)) {
      return { rewrite: false, reason: "unsupported_charset" };
    }
  }
  const codings = (response.headers.get("content-encoding") ?? "").split(",").map((c) =>
    c.trim().toLowerCase()
  )
    .filter((c) => c !== "" && c !== "identity");
  const decode: CompressionFormat[] = [];
  // Codings are listed in the order they were applied: undo them from the last.
  for (const coding of codings.reverse()) {
    if (options.fetchDecoded && DECODED_BY_FETCH.has(coding)) continue;
    const format = CODINGS[coding];
    if (!format || !decoderAvailable(format)) return { rewrite: false, reason: "unsupported_encoding" };
    decode.push(format);
  }
  return { rewrite: true, decode };
}

/**
 * Rewrites an HTML response as it streams: slots replaced, context injected. The result has no
 * `Content-Encoding`, `Content-Length` or `ETag` (the body is decoded and personalised; `Deno.serve`
 * compresses it again for clients that accept it). Responses that are not `text/html`, have no
 * body, are partial (206), use a charset other than UTF-8, or an encoding `DecompressionStream`
 * cannot decode are returned unchanged, as are pages when there is nothing to insert.
 *
 * @param response the origin response; its body is consumed when rewritten
 * @param options slot content, context, error callback
 * @returns the rewritten response (same status and other headers), or `response` itself
 * @example
 * ```ts
 * const page = rewriteHtmlResponse(await fetch(originUrl), {
 *   rewriter: new HtmlRewriterLoader(), // one per isolate
 *   slots: new Map([["hero", "<h2>Hello, Europe</h2>"]]),
 *   context: { region: "EU", segments: ["vip"] },
 * });
 * ```
 */
export function rewriteHtmlResponse(response: Response, options: HtmlSlotsOptions): Response {
  const plan = planHtmlRewrite(response, options);
  if (!plan.rewrite || !response.body) return response;
  let body = response.body;
  for (const format of plan.decode) body = decode(body, format);
  const headers = new Headers(response.headers);
  headers.delete("content-encoding");
  headers.delete("content-length");
  headers.delete("etag");
  // Without a validator the browser cannot revalidate into an older personalised copy.
  headers.delete("last-modified");
  return new Response(rewriteHtmlStream(body, options), {
    status: response.status,
    statusText: response.statusText,
    headers,
  });
}

/**
 * Rewrites a stream of (decoded, UTF-8) HTML. Each input chunk is written to the rewriter as it
 * is read and whatever output it yields is passed on, so the consumer's pace (backpressure)
 * drives the reading. Cancelling the output cancels the input. Past `maxBytes` or `maxMs` the
 * rest of the input passes through unrewritten and `onBailout` is told.
 *
 * @param body the HTML bytes
 * @param options slot content, context, caps, error and bail-out callbacks
 * @returns the rewritten HTML bytes
 */
export function rewriteHtmlStream(
  body: ReadableStream<Uint8Array>,
  options: HtmlSlotsOptions,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>(new PageRewrite(body.getReader(), options), { highWaterMark: 0 });
}

/** One page's rewrite as the source of the rewritten stream: rewriting, then past a cap passing through. */
class PageRewrite implements UnderlyingDefaultSource<Uint8Array> {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #options: HtmlSlotsOptions;
  #maxBytes: number;
  #maxMs: number;
  #now: () => number;
  #rewriter: HTMLRewriter | undefined;
  #lease: HtmlRewriterLease | undefined;
  /** Chunks enqueued so far, so a pull can tell it delivered something. */
  #produced = 0;
  #finished = false;
  /** Past a cap: the rewriter is gone and input is passed on as it is read. */
  #passThrough = false;
  #fed = 0;
  #spentMs = 0;

  constructor(reader: ReadableStreamDefaultReader<Uint8Array>, options: HtmlSlotsOptions) {
    this.#reader = reader;
    this.#options = options;
    this.#maxBytes = options.maxBytes ?? Infinity;
    this.#maxMs = options.maxMs ?? Infinity;
    this.#now = options.now ?? (() => performance.now());
  }

  // The stream pulls only once this has resolved.
  async start(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    let lease: HtmlRewriterLease;
    try {
      lease = await this.#options.rewriter.acquire();
    } catch (error) {
      this.#release();
      this.#options.onError?.(error);
      await this.#reader.cancel(error).catch(() => {});
      throw error;
    }
    if (this.#finished) return lease.release();
    this.#lease = lease;
    try {
      this.#rewriter = createRewriter(lease.HTMLRewriter, (chunk) => {
        if (chunk.byteLength === 0) return;
        this.#produced++;
        controller.enqueue(chunk);
      }, this.#options);
    } catch (error) {
      this.#release();
      this.#options.onError?.(error);
      await this.#reader.cancel(error).catch(() => {});
      throw error;
    }
  }

  async pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    const before = this.#produced;
    try {
      // Read until the rewriter yields output, so each pull delivers something.
      while (!this.#finished && this.#produced === before) {
        const { done, value } = await this.#reader.read();
        if (this.#finished || (!this.#passThrough && !this.#rewriter)) return;
        if (done) {
          await this.#rewriter?.end();
          this.#release();
          controller.close();
          return;
        }
        if (this.#passThrough) {
          if (value.byteLength > 0) this.#produced++;
          controller.enqueue(value);
        } else await this.#write(value, controller);
      }
    } catch (error) {
      this.#release();
      this.#options.onError?.(error);
      controller.error(error);
      await this.#reader.cancel(error).catch(() => {});
    }
  }

  async cancel(reason: unknown): Promise<void> {
    this.#release();
    await this.#reader.cancel(reason);
  }

  async #write(chunk: Uint8Array, controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    for (let offset = 0; offset < chunk.byteLength; offset += HTML_REWRITE_SLICE_BYTES) {
      const slice = chunk.subarray(offset, offset + HTML_REWRITE_SLICE_BYTES);
      const cap = this.#fed + slice.byteLength > this.#maxBytes
        ? "bytes"
        : this.#spentMs >= this.#maxMs
        ? "time"
        : undefined;
      if (cap) return await this.#bailOut(cap, chunk.subarray(offset), controller);
      const started = this.#now();
      await this.#rewriter!.write(slice);
      // Cancelled while that slice was written: the rewriter is gone.
      if (this.#finished) return;
      this.#spentMs += this.#now() - started;
      this.#fed += slice.byteLength;
    }
  }

  async #bailOut(
    cap: HtmlRewriteCap,
    rest: Uint8Array,
    controller: ReadableStreamDefaultController<Uint8Array>,
  ): Promise<void> {
    // Ending the document flushes what the rewriter still holds (an open tag) verbatim, so the
    // output so far plus the rest of the input is the complete page.
    await this.#rewriter!.end();
    this.#freeRewriter();
    this.#passThrough = true;
    this.#options.onBailout?.({ cap, bytes: this.#fed });
    if (rest.byteLength > 0) {
      this.#produced++;
      controller.enqueue(rest);
    }
  }

  #freeRewriter(): void {
    this.#rewriter?.free();
    this.#rewriter = undefined;
    // Dropped too, so the rest of a page passed through does not keep a replaced instance alive.
    this.#lease?.release();
    this.#lease = undefined;
  }

  #release(): void {
    this.#finished = true;
    this.#freeRewriter();
  }
}

/**
 * Serialises a value as JSON that is safe inside an HTML `<script>` element: `<`, `>`, `&` and
 * the line separators U+2028/U+2029 are written as `\u` escapes, so `</script>` or `<!--` in
 * a string cannot end or confuse the element. `JSON.parse` reads it back unchanged.
 *
 * @param value a JSON-serialisable value
 * @returns the escaped JSON text (`null` for `undefined`)
 */
export function serializeJsonForScript(value: unknown): string {
  return (JSON.stringify(value) ?? "null").replace(
    /[<>&\u2028\u2029]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

function createRewriter(
  Rewriter: typeof HTMLRewriter,
  sink: (chunk: Uint8Array) => void,
  options: HtmlSlotsOptions,
): HTMLRewriter {
  const rewriter = new Rewriter(sink);
  const slots = options.slots;
  if (slots) {
    rewriter.on("edge-slot", {
      element(element: Element) {
        const content = slots.get(element.getAttribute("name") ?? "");
        if (content !== undefined) element.replace(content, { html: true });
        // No content: the fallback stays, without the wrapper, as the replaced slot would be.
        else element.removeAndKeepContent();
      },
    });
    rewriter.on("[data-edge-slot]", {
      element(element: Element) {
        const content = slots.get(element.getAttribute("data-edge-slot") ?? "");
        if (content !== undefined) element.setInnerContent(content, { html: true });
      },
    });
  }
  if (options.context !== undefined) {
    const id = (options.contextScriptId ?? DEFAULT_CONTEXT_SCRIPT_ID).replace(/[^A-Za-z0-9_-]/g, "");
    const script = `<script type="application/json" id="${id}">${
      serializeJsonForScript(options.context)
    }</script>`;
    let injected = false;
    rewriter.on("head", {
      element(element: Element) {
        if (injected) return;
        injected = true;
        element.append(script, { html: true });
      },
    });
    rewriter.on("body", {
      element(element: Element) {
        if (injected) return;
        injected = true;
        element.prepend(script, { html: true });
      },
    });
  }
  return rewriter;
}

function decode(
  body: ReadableStream<Uint8Array<ArrayBuffer>>,
  format: CompressionFormat,
): ReadableStream<Uint8Array<ArrayBuffer>> {
  const decoder = new DecompressionStream(format);
  // Errors surface on `decoder.readable` (and so in the rewritten body); cancelling it cancels `body`.
  body.pipeTo(decoder.writable).catch(() => {});
  return decoder.readable;
}

function decoderAvailable(format: CompressionFormat): boolean {
  try {
    // Only the formats this runtime supports construct; the check costs one allocation.
    new DecompressionStream(format);
    return true;
  } catch {
    return false;
  }
}
