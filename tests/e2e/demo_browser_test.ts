/**
 * @module
 * The demo shop in a real browser: `deno task dev` started as a newcomer starts it, and the page
 * loaded in headless Chromium (Debian's `chromium`; the test is skipped when it is absent) with a
 * desktop User-Agent through the dev front. The edge panel, rendered by the page's script from
 * the injected context, shows the region the edge looked up for an `X-Forwarded-For` in Germany
 * (dev trusts loopback as a proxy), and switching the pretend country changes it. A screenshot is
 * written to the test's temporary directory (kept with `KEEP_SCREENSHOT=1`).
 */
import assert from "node:assert/strict";
import { freePort } from "./service.ts";
import { PRETEND_PATH } from "../../tools/dev_front.ts";

const ROOT = new URL("../../", import.meta.url);
const DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 " +
  "Safari/537.36";
/** Headless, and nothing that would reach out of this machine. */
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // Time for the panel's own fetch (recommendations) before the DOM or screenshot is taken.
  "--virtual-time-budget=3000",
];

async function findChromium(): Promise<string | undefined> {
  for (const name of [Deno.env.get("CHROMIUM"), "chromium", "chromium-browser"]) {
    if (!name) continue;
    try {
      const { success } = await new Deno.Command(name, {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      })
        .output();
      if (success) return name;
    } catch {
      // Not installed under this name.
    }
  }
  return undefined;
}

const chromium = await findChromium();
/** Lets the test load a page as a QA tester would, forcing a variation. */
const QA_TOKEN = "qa-token-for-the-demo-browser-test";
if (!chromium) {
  console.warn("chromium not found (apt-get install chromium): the demo browser test is skipped");
}

/** Runs `tools/dev.ts` until `fn` is done, and gives it the dev front's URL from the banner. */
async function withDev(fn: (frontUrl: string) => Promise<void>): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-sys",
      "tools/dev.ts",
    ],
    cwd: ROOT,
    env: {
      NO_COLOR: "1",
      PORT: String(freePort()),
      DEMO_ORIGIN_PORT: "0",
      DEMO_FRONT_PORT: "0",
      KV_PATH: ":memory:",
      LOG_LEVEL: "warn",
      QA_TOKEN,
    },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  try {
    const deadline = Date.now() + 30_000;
    let front: RegExpExecArray | null;
    while (
      !(front = /browser {6}(http:\/\/127\.0\.0\.1:\d+)\//.exec(text)) || !text.includes("Push the demo")
    ) {
      if (Date.now() > deadline) throw new Error(`dev never printed its banner:\n${text}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    await fn(front[1]!);
  } finally {
    child.kill("SIGINT");
    await child.status;
    await drained;
  }
}

/** Loads `url` in headless Chromium with the profile in `dir`; returns the DOM after scripts ran. */
async function browse(dir: string, url: string, extra: string[] = ["--dump-dom"]): Promise<string> {
  const output = await new Deno.Command(chromium!, {
    args: [...CHROMIUM_FLAGS, `--user-data-dir=${dir}/profile`, `--user-agent=${DESKTOP}`, ...extra, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  assert.ok(output.success, `chromium failed on ${url}:\n${new TextDecoder().decode(output.stderr)}`);
  return stdout;
}

function panelValue(dom: string, id: string): string {
  const match = new RegExp(`<dd id="${id}">([^<]*)</dd>`).exec(dom);
  assert.ok(match, `no #${id} in the page's edge panel:\n${dom.slice(0, 2000)}`);
  return match[1]!;
}

Deno.test({
  name:
    "the demo page in headless Chromium shows the region of a German address, the pretend switch changes it, and a QA-forced page says so",
  ignore: chromium === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "demo_browser_" });
    try {
      await withDev(async (front) => {
        // The pretend switch, as the panel's form submits it: the front then sends the edge an
        // X-Forwarded-For from Germany, which the edge (loopback trusted in dev) looks up.
        const de = await browse(dir, `${front}${PRETEND_PATH}?country=DE&back=/`);
        assert.match(de, new RegExp(`<form id="pretend" method="get" action="${PRETEND_PATH}">`));
        assert.equal(
          panelValue(de, "panel-region"),
          "EU: country DE looked up by client address in the IP database",
        );
        assert.match(panelValue(de, "panel-device"), /^desktop, network /, "the desktop User-Agent counts");
        assert.match(de, /<strong>Winter sale across Europe: 20% off<\/strong>/);
        assert.match(de, /data-product="p7"><s>€120<\/s> <strong>€96<\/strong>/);
        assert.match(panelValue(de, "panel-variants"), /^hero = "(control|a|b)"$/);

        const jp = await browse(dir, `${front}${PRETEND_PATH}?country=JP&user=u1&back=/`);
        assert.equal(
          panelValue(jp, "panel-region"),
          "APAC: country JP looked up by client address in the IP database",
        );
        assert.equal(panelValue(jp, "panel-visitor"), "user u1");
        assert.equal(panelValue(jp, "panel-views"), "Rain shell jacket, Trail running shoe");
        assert.match(panelValue(jp, "panel-recommendations"), /^Merino wool socks \(because you viewed /);
        assert.match(jp, /<strong>Lunar new year picks: 15% off<\/strong>/);

        const screenshot = `${dir}/demo_de.png`;
        await browse(dir, `${front}${PRETEND_PATH}?country=DE&back=/`, [
          "--window-size=1280,1100",
          `--screenshot=${screenshot}`,
        ]);
        const png = await Deno.readFile(screenshot);
        assert.deepEqual([...png.slice(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "a PNG");
        assert.ok(png.byteLength > 20_000, `a rendered page, not a blank one (${png.byteLength} bytes)`);
        console.log(`screenshot: ${screenshot}`);

        // A QA tester's page (the front passes the QA headers on; Chromium cannot send them, so
        // it renders the page as saved): the panel says the variation is forced.
        assert.doesNotMatch(de, /id="panel-qa"/);
        const forced = await fetch(`${front}/`, {
          headers: { "user-agent": DESKTOP, "x-edge-qa": QA_TOKEN, "x-edge-qa-variants": "hero=b" },
        });
        assert.equal(forced.headers.get("cache-control"), "private, no-store");
        await Deno.writeTextFile(`${dir}/qa.html`, await forced.text());
        const qa = await browse(dir, `file://${dir}/qa.html`);
        assert.equal(panelValue(qa, "panel-variants"), 'hero = "b"');
        assert.equal(
          panelValue(qa, "panel-qa"),
          "variations and flags forced by x-edge-qa: never sticky, no exposure, not cached",
        );
      });
    } finally {
      if (!Deno.env.get("KEEP_SCREENSHOT")) await Deno.remove(dir, { recursive: true });
    }
  },
});
