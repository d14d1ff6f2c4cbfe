/**
 * @module
 * Controllable fault servers for end-to-end fault injection on loopback: a raw-TCP origin whose
 * request path picks the fault (hangs, resets, dribbles, malformed heads), which can also stop
 * listening to refuse connections and listen again on the same port; and a read-through backend
 * whose mode (down, slow, garbage, ok) the test switches.
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What the fault origin saw of one request. */
export interface FaultSeen {
  path: string;
  headers: Record<string, string>;
}

/** A running fault origin. */
export interface FaultOrigin {
  url: string;
  port: number;
  seen: FaultSeen[];
  /** Stops listening, so new connections are refused (open ones are closed too). */
  refuse(): void;
  /** Listens again on the same port. */
  accept(): void;
  close(): Promise<void>;
}

/** How long the dribbling modes wait between bytes, in ms. */
export const DRIBBLE_GAP_MS = 15;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts the fault origin on 127.0.0.1, port 0. Every answer carries `connection: close`.
 *
 * | path                  | fault                                                              |
 * | --------------------- | ------------------------------------------------------------------ |
 * | `/echo…`              | 200 JSON of the request headers (healthy)                          |
 * | `/hang-headers`       | reads the request, never answers (until the edge gives up)         |
 * | `/hang-body`          | headers and 7 of 100 000 bytes, then silence                       |
 * | `/hang-small-body`    | headers and 7 of 100 bytes, then silence                           |
 * | `/truncate-body`      | headers and 7 of 100 000 bytes, then FIN                           |
 * | `/reset-before-head`  | closes with the request body unread (RST) before any answer        |
 * | `/reset-body`         | headers and 7 bytes, then closes with the request body unread (RST) |
 * | `/slow-head`          | the head one byte at a time, slower overall than the edge's timeout |
 * | `/slow-body`          | quick head, then an unsized body one byte at a time (gaps short)    |
 * | `/status-500`, `-503` | that status with a small text body                                 |
 * | `/malformed-header`   | a header line without a colon                                      |
 * | `/malformed-status`   | a status line that is not HTTP                                     |
 * | `/status-600`         | a well-formed status line with a status no `Response` can carry    |
 * | `/control-header`     | a header value with a NUL byte                                     |
 * | `/huge-head`          | 2000 headers of 1 KiB each                                         |
 *
 * @returns the running origin
 */
export function startFaultOrigin(): FaultOrigin {
  const seen: FaultSeen[] = [];
  const open = new Set<Deno.Conn>();
  let listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let serving = serve(listener);
  let closed = false;

  async function serve(l: Deno.Listener): Promise<void> {
    const handlers: Promise<void>[] = [];
    try {
      for await (const conn of l) {
        open.add(conn);
        handlers.push(
          handle(conn).catch(() => {}).finally(() => {
            open.delete(conn);
            try {
              conn.close();
            } catch {
              // Already closed.
            }
          }),
        );
      }
    } catch {
      // The listener was closed.
    }
    await Promise.all(handlers);
  }

  async function handle(conn: Deno.Conn): Promise<void> {
    const head = await readHead(conn);
    if (!head) return;
    const [requestLine = "", ...lines] = head.split("\r\n");
    const path = requestLine.split(" ")[1] ?? "/";
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    seen.push({ path, headers });
    const write = (text: string | Uint8Array) =>
      writeAll(conn, typeof text === "string" ? encoder.encode(text) : text);
    const partial = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n" +
      "connection: close\r\n\r\npartial";
    if (path.startsWith("/echo")) {
      const body = JSON.stringify({ path, headers });
      await write(
        `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${
          encoder.encode(body).byteLength
        }\r\nconnection: close\r\n\r\n${body}`,
      );
    } else if (path === "/hang-headers") {
      await untilPeerCloses(conn);
    } else if (path === "/hang-body") {
      await write(partial);
      await untilPeerCloses(conn);
    } else if (path === "/hang-small-body") {
      await write(partial.replace("content-length: 100000", "content-length: 100"));
      await untilPeerCloses(conn);
    } else if (path === "/truncate-body") {
      await write(partial);
    } else if (path === "/reset-before-head") {
      // Returning closes the connection with the request body unread: the kernel sends RST.
    } else if (path === "/reset-body") {
      await write(partial);
    } else if (path === "/slow-head") {
      const text = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n" +
        "x-padding: " + "p".repeat(40) + "\r\nconnection: close\r\n\r\nslow";
      for (const byte of encoder.encode(text)) {
        await write(new Uint8Array([byte]));
        await sleep(DRIBBLE_GAP_MS);
      }
    } else if (path === "/slow-body") {
      const body = "0123456789abcdefghijklmnopqrstuvwxyz";
      // Delimited by the close, not sized: the idle limit (not the total one of small sized
      // bodies) applies.
      await write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n`);
      for (const byte of encoder.encode(body)) {
        await sleep(DRIBBLE_GAP_MS);
        await write(new Uint8Array([byte]));
      }
    } else if (path === "/status-500" || path === "/status-503") {
      await write(
        `HTTP/1.1 ${
          path.slice(-3)
        } Oops\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nconnection: close\r\n\r\norigin`,
      );
    } else if (path === "/malformed-header") {
      await write("HTTP/1.1 200 OK\r\nthis line is not a header\r\ncontent-length: 2\r\n\r\nok");
    } else if (path === "/status-600") {
      await write("HTTP/1.1 600 Weird\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    } else if (path === "/malformed-status") {
      await write("HTTP/1.1 abc Nonsense\r\ncontent-length: 2\r\n\r\nok");
    } else if (path === "/control-header") {
      await write("HTTP/1.1 200 OK\r\nx-bad: a\x00b\r\ncontent-length: 2\r\n\r\nok");
    } else if (path === "/huge-head") {
      let text = "HTTP/1.1 200 OK\r\n";
      for (let i = 0; i < 2000; i++) text += `x-h${i}: ${"v".repeat(1024)}\r\n`;
      await write(`${text}content-length: 2\r\nconnection: close\r\n\r\nok`);
    } else {
      await write("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    }
  }

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    refuse() {
      listener.close();
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
    },
    accept() {
      listener = Deno.listen({ hostname: "127.0.0.1", port });
      serving = serve(listener);
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        listener.close();
      } catch {
        // Already refusing.
      }
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await serving;
    },
  };
}

/** Reads up to the end of the request head (at most 64 KiB); the body, if any, stays unread. */
async function readHead(conn: Deno.Conn): Promise<string | undefined> {
  const buffer = new Uint8Array(65536);
  let text = "";
  while (text.length < 65536) {
    const n = await conn.read(buffer);
    if (n === null) return undefined;
    text += decoder.decode(buffer.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    if (end !== -1) return text.slice(0, end);
  }
  return undefined;
}

async function untilPeerCloses(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(4096);
  try {
    while ((await conn.read(buffer)) !== null) {
      // Discard: the point is to wait for the edge to give up.
    }
  } catch {
    // Reset by the edge, or closed by `close()`.
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.byteLength) offset += await conn.write(bytes.subarray(offset));
}

/** Modes of the fault backend. */
export type BackendMode = "ok" | "slow" | "garbage" | "wrong_shape" | "error" | "down";

/** A running read-through backend whose behaviour the test switches. */
export interface FaultBackend {
  url: string;
  /** Requests received (mode `down` receives none). */
  calls: number;
  mode: BackendMode;
  close(): Promise<void>;
}

/** How long mode `slow` waits before answering, in ms. */
export const BACKEND_SLOW_MS = 800;

/**
 * Starts the fault backend on 127.0.0.1, port 0. Mode `down` stops listening (refused
 * connections); any other mode listens again on the same port. Mode `ok` answers a profile with
 * segment `vip` for whichever user is asked for.
 *
 * @param token the bearer token it expects (401 otherwise)
 * @returns the backend
 */
export function startFaultBackend(token: string): FaultBackend {
  let server: Deno.HttpServer<Deno.NetAddr> | undefined;
  let currentMode: BackendMode = "ok";
  const state = { calls: 0 };
  const start = (port: number) =>
    Deno.serve({ port, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
      state.calls++;
      if (request.headers.get("authorization") !== `Bearer ${token}`) {
        return new Response("unauthorized", { status: 401 });
      }
      const userId = decodeURIComponent(new URL(request.url).pathname.split("/").at(-2) ?? "");
      switch (currentMode) {
        case "slow":
          await sleep(BACKEND_SLOW_MS);
          return Response.json({ events: [] });
        case "garbage":
          return new Response("<html>not json{", { headers: { "content-type": "application/json" } });
        case "wrong_shape":
          return Response.json({ events: [{ kind: "cart", userId, version: "seven" }] });
        case "error":
          return new Response("boom", { status: 500 });
        default:
          return Response.json({
            events: [{
              kind: "profile",
              userId,
              version: 1,
              at: "2026-11-26T11:00:00Z",
              segments: ["vip"],
              attributes: {},
            }],
          });
      }
    });
  server = start(0);
  const port = server.addr.port;
  return {
    url: `http://127.0.0.1:${port}`,
    get calls() {
      return state.calls;
    },
    get mode() {
      return currentMode;
    },
    set mode(next: BackendMode) {
      if (next === "down" && server) {
        const stopping = server;
        server = undefined;
        // Refuse at once; in-flight handlers are not waited for.
        stopping.shutdown().catch(() => {});
      } else if (next !== "down" && !server) {
        server = start(port);
      }
      currentMode = next;
    },
    async close() {
      await server?.shutdown();
      server = undefined;
    },
  };
}
