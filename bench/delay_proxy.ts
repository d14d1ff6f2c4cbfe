/**
 * @module
 * A TCP proxy on loopback that makes its target look far away: every byte is delivered
 * `RTT/2` later in each direction, and opening a connection costs one extra RTT (the TCP
 * handshake across the distance). Used by `bench/regions.ts` to put a backend or an origin
 * "150 ms away" without `tc netem`.
 *
 * `deno run --allow-net bench/delay_proxy.ts --port 9000 --to 127.0.0.1:8080 --rtt-ms 150`
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "0" },
    to: { type: "string" },
    "rtt-ms": { type: "string", default: "150" },
  },
});
if (!values.to) {
  console.error("Usage: delay_proxy.ts --port N --to HOST:PORT [--rtt-ms 150]");
  Deno.exit(2);
}
const [toHost, toPort] = values.to.split(":") as [string, string];
const rttMs = Number(values["rtt-ms"]);
const oneWayMs = rttMs / 2;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Copies `from` to `to`, delivering each chunk `oneWayMs` after it arrived, in order. */
async function pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  let chain = Promise.resolve();
  try {
    for await (const chunk of from.readable) {
      const due = performance.now() + oneWayMs;
      chain = chain.then(async () => {
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        let offset = 0;
        while (offset < chunk.length) offset += await to.write(chunk.subarray(offset));
      });
    }
    await chain;
    await to.closeWrite();
  } catch {
    try {
      to.close();
    } catch {
      // Already closed.
    }
  }
}

async function handle(client: Deno.Conn): Promise<void> {
  let upstream: Deno.Conn;
  try {
    await sleep(rttMs);
    upstream = await Deno.connect({ hostname: toHost, port: Number(toPort) });
  } catch {
    client.close();
    return;
  }
  await Promise.allSettled([pipe(client, upstream), pipe(upstream, client)]);
  for (const conn of [client, upstream]) {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(values.port) });
console.log(
  `delay proxy on 127.0.0.1:${(listener.addr as Deno.NetAddr).port} → ${values.to}, RTT ${rttMs} ms`,
);
for await (const conn of listener) {
  (conn as Deno.TcpConn).setNoDelay(true);
  handle(conn);
}
