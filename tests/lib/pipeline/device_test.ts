import assert from "node:assert/strict";
import {
  acceptChValue,
  classifyDevice,
  CLIENT_HINT_HEADERS,
  MAX_UA_LENGTH,
  parseUserAgent,
  UaCache,
} from "../../../lib/pipeline/device.ts";

const UA = {
  iphone:
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  ipad:
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  androidPhone:
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  androidTablet:
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  windows:
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  mac:
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  googlebot: "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
  googlebotSmartphone:
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.60 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
  bingbot: "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
};

function classify(init: Record<string, string>, uaCache?: UaCache) {
  return classifyDevice(new Headers(init), { uaCache });
}

Deno.test("the User-Agent alone classifies phones, tablets and desktops", () => {
  assert.equal(classify({ "user-agent": UA.iphone }).device, "mobile");
  assert.equal(classify({ "user-agent": UA.androidPhone }).device, "mobile");
  assert.equal(classify({ "user-agent": UA.ipad }).device, "tablet");
  assert.equal(classify({ "user-agent": UA.androidTablet }).device, "tablet");
  assert.equal(classify({ "user-agent": UA.windows }).device, "desktop");
  assert.equal(classify({ "user-agent": UA.mac }).device, "desktop");
  assert.equal(classify({}).device, "desktop");
});

Deno.test("the User-Agent gives the platform when the hint is absent", () => {
  assert.equal(classify({ "user-agent": UA.iphone }).platform, "iOS");
  assert.equal(classify({ "user-agent": UA.windows }).platform, "Windows");
  assert.equal(classify({}).platform, undefined);
});

Deno.test("bots are detected and classed as bot, whatever the hints say", () => {
  for (const ua of [UA.googlebot, UA.googlebotSmartphone, UA.bingbot]) {
    const info = classify({ "user-agent": ua, "sec-ch-ua-mobile": "?1" });
    assert.equal(info.device, "bot", ua);
    assert.equal(info.isBot, true, ua);
  }
  assert.equal(classify({ "user-agent": UA.iphone }).isBot, false);
});

Deno.test("Sec-CH-UA-Mobile decides mobile, and ?0 keeps tablets apart from desktops", () => {
  assert.equal(classify({ "user-agent": UA.windows, "sec-ch-ua-mobile": "?1" }).device, "mobile");
  assert.equal(classify({ "user-agent": UA.androidTablet, "sec-ch-ua-mobile": "?0" }).device, "tablet");
  assert.equal(classify({ "user-agent": UA.androidPhone, "sec-ch-ua-mobile": "?0" }).device, "desktop");
  assert.equal(classify({ "sec-ch-ua-mobile": "?1" }).device, "mobile");
  assert.equal(classify({ "user-agent": UA.iphone, "sec-ch-ua-mobile": "maybe" }).device, "mobile");
});

Deno.test("Sec-CH-UA-Platform wins over the User-Agent and must be a quoted string", () => {
  assert.equal(classify({ "user-agent": UA.windows, "sec-ch-ua-platform": '"Linux"' }).platform, "Linux");
  assert.equal(classify({ "user-agent": UA.windows, "sec-ch-ua-platform": "Linux" }).platform, "Windows");
  assert.equal(classify({ "sec-ch-ua-platform": '"Unknown"' }).platform, undefined);
  assert.equal(classify({ "sec-ch-ua-platform": `"${"x".repeat(100)}"` }).platform, undefined);
});

Deno.test("viewport, DPR and device memory come from modern or legacy hints", () => {
  const modern = classify({
    "sec-ch-viewport-width": "412",
    "sec-ch-dpr": "2.625",
    "sec-ch-device-memory": "4",
  });
  assert.equal(modern.viewportWidth, 412);
  assert.equal(modern.dpr, 2.625);
  assert.equal(modern.deviceMemory, 4);
  const legacy = classify({ "viewport-width": "1280", dpr: "1", "device-memory": "0.5" });
  assert.equal(legacy.viewportWidth, 1280);
  assert.equal(legacy.dpr, 1);
  assert.equal(legacy.deviceMemory, 0.5);
});

Deno.test("malformed, negative, zero and huge hint values are ignored", () => {
  const bad = ["-1", "0", "1e3", "abc", "12px", "99999999", "NaN", "Infinity", "0x10", "", " ", "1.2.3"];
  for (const value of bad) {
    const info = classify({ "sec-ch-viewport-width": value, "sec-ch-dpr": value, "device-memory": value });
    assert.equal(info.viewportWidth, undefined, `viewport ${JSON.stringify(value)}`);
    assert.equal(info.dpr, undefined, `dpr ${JSON.stringify(value)}`);
    assert.equal(info.deviceMemory, undefined, `memory ${JSON.stringify(value)}`);
  }
  assert.equal(classify({ "sec-ch-viewport-width": "20000" }).viewportWidth, undefined);
  assert.equal(classify({ "sec-ch-dpr": "17" }).dpr, undefined);
});

Deno.test("classifyDevice never throws on arbitrary header bytes", () => {
  let seed = 42;
  const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  for (let i = 0; i < 500; i++) {
    let value = "";
    const length = next() % 80;
    // Header values are ByteStrings; Latin-1 covers every byte except the ones Headers rejects.
    for (let j = 0; j < length; j++) {
      const byte = next() % 256;
      if (byte !== 0 && byte !== 10 && byte !== 13) value += String.fromCharCode(byte);
    }
    const headers = new Headers();
    for (const name of [...CLIENT_HINT_HEADERS, "User-Agent"]) headers.set(name, value);
    const info = classifyDevice(headers);
    assert.ok(["mobile", "tablet", "desktop", "bot"].includes(info.device));
  }
});

Deno.test("Save-Data: on wins the network class", () => {
  assert.equal(classify({ "save-data": "on", ect: "4g" }).network, "save-data");
  assert.equal(classify({ "save-data": "ON" }).network, "save-data");
  assert.equal(classify({ "save-data": "off" }).network, "fast");
});

Deno.test("slow ECT, low Downlink or high RTT make the network slow", () => {
  for (const ect of ["slow-2g", "2g", "3g"]) assert.equal(classify({ ect }).network, "slow", ect);
  assert.equal(classify({ ect: "4g" }).network, "fast");
  assert.equal(classify({ downlink: "0.4" }).network, "slow");
  assert.equal(classify({ downlink: "10" }).network, "fast");
  assert.equal(classify({ rtt: "450" }).network, "slow");
  assert.equal(classify({ rtt: "50" }).network, "fast");
  assert.equal(classify({ rtt: "-5", downlink: "lots" }).network, "fast");
  assert.equal(classify({}).network, "fast");
});

Deno.test("network thresholds can be tuned", () => {
  const headers = new Headers({ downlink: "2", rtt: "200" });
  assert.equal(classifyDevice(headers).network, "fast");
  assert.equal(classifyDevice(headers, { slowDownlinkMbps: 3 }).network, "slow");
  assert.equal(classifyDevice(headers, { slowRttMs: 150 }).network, "slow");
});

Deno.test("UaCache returns the cached parse and evicts the least recently used entry", () => {
  const cache = new UaCache(2);
  classify({ "user-agent": UA.iphone }, cache);
  classify({ "user-agent": UA.windows }, cache);
  assert.equal(cache.size, 2);
  const cached = cache.get(UA.iphone);
  assert.deepEqual(cached, parseUserAgent(UA.iphone));
  // The iPhone entry was just used, so the Windows one is the oldest.
  classify({ "user-agent": UA.ipad }, cache);
  assert.equal(cache.size, 2);
  assert.equal(cache.get(UA.windows), undefined);
  assert.ok(cache.get(UA.iphone));
  assert.ok(cache.get(UA.ipad));
  assert.equal(classify({ "user-agent": UA.iphone }, cache).device, "mobile");
});

Deno.test("cached results are frozen so one request cannot change another's", () => {
  const cache = new UaCache();
  classify({ "user-agent": UA.iphone }, cache);
  const info = cache.get(UA.iphone)!;
  assert.throws(() => {
    (info as { device: string }).device = "desktop";
  }, TypeError);
});

Deno.test("UaCache rejects a size that is not a positive integer", () => {
  assert.throws(() => new UaCache(0), RangeError);
  assert.throws(() => new UaCache(1.5), RangeError);
});

Deno.test("very long User-Agents are cut before parsing and caching", () => {
  const cache = new UaCache(10);
  const long = UA.iphone + " ".repeat(10_000) + "x";
  assert.equal(classify({ "user-agent": long }, cache).device, "mobile");
  assert.equal(cache.size, 1);
  assert.ok(cache.get(long.slice(0, MAX_UA_LENGTH)));
});

Deno.test("acceptChValue lists known hints canonically, in order, once", () => {
  assert.equal(
    acceptChValue(["dpr", "Sec-CH-Viewport-Width", "x-nope", "DPR"]),
    "Sec-CH-Viewport-Width, DPR",
  );
  assert.equal(
    acceptChValue(new Set(["ect", "rtt", "downlink", "save-data"])),
    "Save-Data, ECT, Downlink, RTT",
  );
  assert.equal(acceptChValue([]), "");
  assert.equal(acceptChValue(CLIENT_HINT_HEADERS), CLIENT_HINT_HEADERS.join(", "));
});

Deno.test("classifyDevice tells its trace why it chose each class", () => {
  const reasons = (init: Record<string, string>) => {
    const seen: string[] = [];
    const info = classifyDevice(new Headers(init), {
      trace: { device: (reason) => seen.push(reason), network: (reason) => seen.push(reason) },
    });
    return [info.device, info.network, ...seen];
  };
  assert.deepEqual(reasons({ "user-agent": UA.googlebot, "sec-ch-ua-mobile": "?1" }), [
    "bot",
    "fast",
    "bot-user-agent",
    "no-slow-hint",
  ]);
  assert.deepEqual(reasons({ "user-agent": UA.windows, "sec-ch-ua-mobile": "?1", "save-data": "on" }), [
    "mobile",
    "save-data",
    "mobile-hint",
    "save-data",
  ]);
  assert.deepEqual(reasons({ "user-agent": UA.androidTablet, "sec-ch-ua-mobile": "?0", ect: "2g" }), [
    "tablet",
    "slow",
    "mobile-hint-tablet-ua",
    "ect",
  ]);
  assert.deepEqual(reasons({ "user-agent": UA.windows, "sec-ch-ua-mobile": "?0", downlink: "0.5" }), [
    "desktop",
    "slow",
    "mobile-hint-desktop",
    "downlink",
  ]);
  assert.deepEqual(reasons({ "user-agent": UA.iphone, rtt: "900" }), ["mobile", "slow", "user-agent", "rtt"]);
});
