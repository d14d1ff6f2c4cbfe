import assert from "node:assert/strict";
import {
  countryFromHeaders,
  DEFAULT_COUNTRY_HEADERS,
  regionSource,
  resolveRegion,
} from "../../../lib/pipeline/geo.ts";
import { parseRules } from "../../../lib/rules/compile.ts";
import { REGIONS } from "../rules/rules_fixtures.ts";

const rules = parseRules({ version: 1, defaultRegion: "GLOBAL", regions: REGIONS });

Deno.test("resolveRegion takes a known region hint, else the country's region, else the default, as regionSource says", () => {
  const cases: [string | undefined, string | undefined, string, string][] = [
    ["DE", "APAC", "APAC", "hint"],
    ["DE", "Mars", "EU", "country"],
    ["DE", undefined, "EU", "country"],
    ["BR", undefined, "GLOBAL", "default"],
    [undefined, undefined, "GLOBAL", "default"],
    [undefined, "US", "US", "hint"],
  ];
  for (const [country, hint, region, source] of cases) {
    assert.equal(resolveRegion(rules, country, hint), region, `${country} ${hint}`);
    assert.equal(regionSource(rules, country, hint), source, `${country} ${hint}`);
  }
});

Deno.test("countryFromHeaders tells its trace which header decided, also when it names no country", () => {
  const decided = (init: Record<string, string>) => {
    const names: string[] = [];
    const country = countryFromHeaders(new Headers(init), DEFAULT_COUNTRY_HEADERS, {
      countryHeader: (name) => names.push(name),
    });
    return [country, names];
  };
  assert.deepEqual(decided({ "x-geo-country": "fr", "cf-ipcountry": "DE" }), ["DE", ["cf-ipcountry"]]);
  assert.deepEqual(decided({ "cf-ipcountry": "XX", "x-geo-country": "FR" }), [undefined, ["cf-ipcountry"]]);
  assert.deepEqual(decided({}), [undefined, []]);
});
