import assert from "node:assert/strict";
import { rawRequest, startOrigin } from "../support.ts";
import { freePort, startService } from "./service.ts";

const TEMPLATE = new URL("../../deploy/nginx/edge.conf", import.meta.url);
const RULES = new URL("../../tools/demo_rules.json", import.meta.url).pathname;
const CDN_SECRET = "nginx-cdn-secret-0123456789";
const PUBLIC_HOST = "shop.example";

async function findNginx(): Promise<string | undefined> {
  for (const candidate of ["nginx", "/usr/sbin/nginx"]) {
    try {
      const { success } = await new Deno.Command(candidate, { args: ["-v"], stdout: "null", stderr: "null" })
        .output();
      if (success) return candidate;
    } catch {
      // Not installed under this name.
    }
  }
  return undefined;
}

const NGINX = await findNginx();

interface Nginx {
  url: string;
  port: number;
  log: () => Promise<string>;
  stop: () => Promise<void>;
}

async function startNginx(binary: string, upstreamPort: number): Promise<Nginx> {
  const dir = await Deno.makeTempDir({ prefix: "edge-nginx-" });
  // nginx's workers drop root privileges; they must still reach their temp directories here.
  await Deno.chmod(dir, 0o755);
  const port = freePort();
  const config = (await Deno.readTextFile(TEMPLATE))
    .replaceAll("{{RUNTIME_DIR}}", dir)
    .replaceAll("{{LISTEN}}", `127.0.0.1:${port}`)
    .replaceAll("{{UPSTREAM}}", `127.0.0.1:${upstreamPort}`)
    .replaceAll("{{CDN_SECRET}}", CDN_SECRET)
    .replaceAll("{{PUBLIC_HOST}}", PUBLIC_HOST);
  assert.doesNotMatch(config, /\{\{[A-Z_]+\}\}/, "every placeholder is filled");
  await Deno.writeTextFile(`${dir}/nginx.conf`, config);
  const child = new Deno.Command(binary, {
    args: ["-p", `${dir}/`, "-e", `${dir}/error.log`, "-c", `${dir}/nginx.conf`, "-g", "daemon off;"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const log = async () => {
    const file = await Deno.readTextFile(`${dir}/error.log`).catch(() => "");
    return file;
  };
  const stop = async () => {
    try {
      child.kill("SIGQUIT");
    } catch {
      // Already exited.
    }
    await child.status;
    await stderr;
    await Deno.remove(dir, { recursive: true });
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  while (true) {
    try {
      const res = await fetch(`${url}/_edge/health`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      const text = await log();
      await stop();
      throw new Error(`nginx did not start: ${text}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { url, port, log, stop };
}

Deno.test({
  name: "nginx in front sets the country from the client address and the service trusts it",
  ignore: NGINX === undefined,
  fn: async () => {
    const origin = startOrigin();
    const service = await startService({
      ORIGIN_URL: origin.url,
      KV_PATH: ":memory:",
      RULES_PATH: RULES,
      CDN_SECRET,
    });
    let nginx: Nginx | undefined;
    try {
      nginx = await startNginx(NGINX!, service.port);

      // Through nginx: 127.0.0.1 is DE in its geo block → region EU → the EU promotion. Every geo,
      // secret and user header the client forges is replaced or removed by nginx.
      const res = await fetch(`${nginx.url}/api/products/promotions?x=1`, {
        headers: {
          "x-geo-country": "US",
          "cf-ipcountry": "US",
          "x-geo-region": "US",
          "x-edge-cdn-secret": "forged-secret-0123456789",
          "x-user-id": "mallory",
          "x-request-id": "client-chosen-id",
        },
      });
      assert.equal(res.status, 200, await nginx.log());
      await res.body?.cancel();
      const seen = origin.seen.at(-1)!;
      assert.equal(seen.path, "/api/products/promotions/europe");
      assert.equal(seen.search, "?x=1");
      assert.equal(seen.headers.get("x-edge-country"), "DE");
      assert.equal(seen.headers.get("x-edge-region"), "EU");
      assert.equal(seen.headers.get("x-edge-client-ip"), "127.0.0.1");
      assert.equal(seen.headers.get("x-edge-cdn-secret"), null);
      assert.equal(seen.headers.get("x-user-id"), null);
      // nginx's $request_id is the id the edge answers with and forwards.
      const requestId = res.headers.get("x-request-id");
      assert.match(requestId ?? "", /^[0-9a-f]{32}$/);
      assert.equal(seen.headers.get("x-request-id"), requestId);

      // The host the client asks for never reaches the origin, nor a Forwarded, client-address
      // or override header it forged: nginx sends its one public name, the edge rebuilds the rest.
      const forged = await rawRequest(
        nginx.port,
        "GET /echo/host HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\n" +
          "Forwarded: for=6.6.6.6;host=evil.example;proto=https\r\nX-Real-IP: 6.6.6.6\r\n" +
          "True-Client-IP: 6.6.6.6\r\nX-Original-URL: /admin\r\nX-Host: evil.example\r\n" +
          "x_edge_user: alice\r\nConnection: close\r\n\r\n",
      );
      assert.equal(forged.status, 200, forged.head);
      const host = origin.seen.at(-1)!;
      assert.equal(host.path, "/echo/host");
      assert.equal(host.headers.get("x-forwarded-host"), PUBLIC_HOST);
      assert.equal(host.headers.get("forwarded"), `for=127.0.0.1;host="${PUBLIC_HOST}";proto=http`);
      assert.equal(host.headers.get("x-real-ip"), "127.0.0.1");
      for (const name of ["true-client-ip", "x-original-url", "x-host", "x_edge_user", "x-edge-user"]) {
        assert.equal(host.headers.get(name), null, name);
      }

      // Metrics are for the host itself: through nginx (on loopback, but forwarding for anyone)
      // they are refused, straight to the service from loopback they are served.
      const viaNginx = await fetch(`${nginx.url}/_edge/metrics`);
      assert.equal(viaNginx.status, 401);
      assert.equal((await viaNginx.json()).error.code, "unauthorized");
      const local = await fetch(`${service.url}/_edge/metrics`);
      assert.equal(local.status, 200);
      await local.body?.cancel();

      // Bodies stream through both proxies.
      const upload = await fetch(`${nginx.url}/upload`, {
        method: "POST",
        body: new Uint8Array(1024 * 1024),
      });
      assert.equal(upload.status, 200);
      await upload.body?.cancel();
      assert.equal(origin.seen.at(-1)!.bodyBytes, 1024 * 1024);

      // Straight to the service, without nginx's secret, the same country header is not trusted.
      const direct = await fetch(`${service.url}/api/products/promotions`, {
        headers: { "x-geo-country": "DE" },
      });
      await direct.body?.cancel();
      assert.equal(origin.seen.at(-1)!.path, "/api/products/promotions/global");
      assert.equal(origin.seen.at(-1)!.headers.get("x-edge-country"), null);
    } finally {
      await nginx?.stop();
      const status = await service.stop();
      await origin.close();
      assert.equal(status.code, 0, service.output());
    }
  },
});
