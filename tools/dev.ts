/**
 * @module
 * `deno task dev`: runs the demo origin and the service on embedded defaults (a local KV file
 * under `.data/`, the demo rules, loopback trusted so curl can play a CDN), and prints URLs and
 * curl commands that show the personalization working. Any variable already set in the
 * environment wins over these defaults.
 */
import { demoOriginHandler } from "./demo_origin.ts";

const originPort = Number(Deno.env.get("DEMO_ORIGIN_PORT") ?? 8080);
const origin = Deno.serve({ port: originPort, hostname: "127.0.0.1", onListen: () => {} }, demoOriginHandler);

await Deno.mkdir(".data", { recursive: true });
const defaults: Record<string, string> = {
  ORIGIN_URL: `http://127.0.0.1:${originPort}`,
  KV_PATH: ".data/dev.kv",
  RULES_PATH: "tools/demo_rules.json",
  TRUSTED_PROXIES: "127.0.0.1/32,::1/128",
  LOG_LEVEL: "info",
};
const env = { ...defaults, ...Deno.env.toObject() };
const port = env.PORT ?? "8000";

const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "--allow-sys", "main.ts"],
  env,
  clearEnv: true,
  stdout: "inherit",
  stderr: "inherit",
}).spawn();

const base = `http://localhost:${port}`;
console.log(`
Edge Personalizer (dev)
  service      ${base}/            → demo origin ${env.ORIGIN_URL}
  health       ${base}/_edge/health
  readiness    ${base}/_edge/ready
  rules        ${env.RULES_PATH}, KV at ${env.KV_PATH}

Try:
  curl -s ${base}/api/products/promotions                            # default region → global promotion
  curl -s -H 'x-geo-country: DE' ${base}/api/products/promotions     # trusted geo header → EU promotion
  curl -s -H 'x-geo-country: JP' ${base}/api/products/promotions     # → APAC promotion
  curl -si ${base}/old-sale                                          # 302 to /sale, answered at the edge
  curl -s -H 'x-edge-region: EU' ${base}/echo/anything               # forged x-edge-* never reaches the origin
`);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
  });
}
const status = await child.status;
await origin.shutdown();
Deno.exit(status.code);
