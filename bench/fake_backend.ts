/**
 * @module
 * A stand-in for the central backend's read-through API: `GET /edge/users/{userId}/context`
 * (Bearer token) answers `{ "events": [...] }` in the sync wire format — a few recent views and a
 * profile. `GET /stats` tells how many context calls it served, so a benchmark can see whether
 * the edge called it at all.
 *
 * `deno run --allow-net bench/fake_backend.ts PORT TOKEN`
 */

const port = Number(Deno.args[0] ?? 8090);
const token = Deno.args[1] ?? "bench-token";
let contextCalls = 0;

Deno.serve({ port, hostname: "127.0.0.1", onListen: () => {} }, (request) => {
  const url = new URL(request.url);
  if (url.pathname === "/stats") return Response.json({ contextCalls });
  const match = /^\/edge\/users\/([^/]+)\/context$/.exec(url.pathname);
  if (!match || request.method !== "GET") return Response.json({ error: "not found" }, { status: 404 });
  if (request.headers.get("authorization") !== `Bearer ${token}`) {
    return Response.json({ error: "unauthorized" }, { status: 401 });
  }
  contextCalls++;
  const userId = decodeURIComponent(match[1]!);
  const now = Date.now();
  const at = (ago: number) => new Date(now - ago).toISOString();
  return Response.json({
    events: [
      { kind: "view", userId, itemId: "p1", at: at(60_000) },
      { kind: "view", userId, itemId: "p2", at: at(120_000) },
      { kind: "view", userId, itemId: "p3", at: at(180_000) },
      {
        kind: "profile",
        userId,
        version: 1,
        at: at(0),
        segments: ["returning"],
        attributes: { tier: "silver" },
      },
    ],
  });
});
