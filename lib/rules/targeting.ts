/**
 * @module
 * Targeting conditions (`when`): compiled once, evaluated per request without allocating, and
 * named by the inputs they read so the decision can tell caches what the response depended on.
 */
import type { DeviceClass, NetworkClass } from "../pipeline/device.ts";

export const DEVICE_CLASSES = [
  "mobile",
  "tablet",
  "desktop",
  "bot",
] as const satisfies readonly DeviceClass[];

export const NETWORK_CLASSES = ["slow", "fast", "save-data"] as const satisfies readonly NetworkClass[];

/** Bits naming the visitor-dependent inputs a decision read, combined with `|` into a mask. */
export const INPUT = {
  region: 1,
  country: 2,
  device: 4,
  network: 8,
  platform: 16,
  segments: 32,
  loggedIn: 64,
  visitorKey: 128, // bucketing (experiments, rollouts) and sticky assignments
  viewport: 256,
  dpr: 512,
} as const;

export type DecisionInput = keyof typeof INPUT;

const INPUT_NAMES = Object.keys(INPUT) as DecisionInput[];

// The client hints behind each input, as in `device.ts`; the device class also reads `User-Agent`.
const INPUT_HINTS: Readonly<Partial<Record<DecisionInput, readonly string[]>>> = {
  device: ["Sec-CH-UA-Mobile"],
  platform: ["Sec-CH-UA-Platform"],
  network: ["Save-Data", "ECT", "Downlink", "RTT"],
  viewport: ["Sec-CH-Viewport-Width", "Viewport-Width"],
  dpr: ["Sec-CH-DPR", "DPR"],
};

/** A targeting condition as written in the rules; every present field must match (any-of within a list). */
export interface ConditionSpec {
  region?: readonly string[];
  country?: readonly string[];
  device?: readonly DeviceClass[];
  network?: readonly NetworkClass[];
  platform?: readonly string[];
  segment?: readonly string[];
  path?: string | readonly string[];
  loggedIn?: boolean;
  variant?: Readonly<Record<string, readonly string[]>>;
}

export interface CompiledCondition {
  regions: ReadonlySet<string> | undefined;
  countries: ReadonlySet<string> | undefined;
  devices: ReadonlySet<string> | undefined;
  networks: ReadonlySet<string> | undefined;
  platforms: ReadonlySet<string> | undefined; // lower-case
  segments: ReadonlySet<string> | undefined;
  paths: readonly PathGlob[] | undefined;
  loggedIn: boolean | undefined;
  variants: ReadonlyArray<readonly [string, ReadonlySet<string>]> | undefined;
  inputs: number; // the INPUT bits it reads
}

/** What a condition is evaluated against. Unknown (undefined) attributes never match. */
export interface TargetingContext {
  region: string;
  country: string | undefined;
  device: DeviceClass | undefined;
  network: NetworkClass | undefined;
  platform: string | undefined; // lower-case
  segments: readonly string[];
  /** Undefined outside a request (OFREP without `path`). */
  path: string | undefined;
  loggedIn: boolean | undefined;
  variants: Readonly<Record<string, string>>;
}

export function compileCondition(spec: ConditionSpec): CompiledCondition {
  const paths = spec.path === undefined
    ? undefined
    : (typeof spec.path === "string" ? [spec.path] : spec.path);
  const variants = spec.variant
    ? Object.entries(spec.variant).map(([key, values]) => [key, new Set(values)] as const)
    : undefined;
  let inputs = 0;
  if (spec.region) inputs |= INPUT.region;
  if (spec.country) inputs |= INPUT.country;
  if (spec.device) inputs |= INPUT.device;
  if (spec.network) inputs |= INPUT.network;
  if (spec.platform) inputs |= INPUT.platform;
  if (spec.segment) inputs |= INPUT.segments;
  if (spec.loggedIn !== undefined) inputs |= INPUT.loggedIn;
  if (variants) inputs |= INPUT.visitorKey;
  return {
    regions: spec.region ? new Set(spec.region) : undefined,
    countries: spec.country ? new Set(spec.country) : undefined,
    devices: spec.device ? new Set(spec.device) : undefined,
    networks: spec.network ? new Set(spec.network) : undefined,
    platforms: spec.platform ? new Set(spec.platform.map((p) => p.toLowerCase())) : undefined,
    segments: spec.segment ? new Set(spec.segment) : undefined,
    paths: paths?.map(compileGlob),
    loggedIn: spec.loggedIn,
    variants,
    inputs,
  };
}

/** A field of a condition as written in the rules. */
export type ConditionField =
  | "region"
  | "country"
  | "device"
  | "network"
  | "platform"
  | "loggedIn"
  | "segment"
  | "path"
  | "variant";

export function matchesCondition(
  condition: CompiledCondition | undefined,
  context: TargetingContext,
): boolean {
  return conditionMismatch(condition, context) === undefined;
}

/** The first field of a condition that does not hold, so an explanation can say why a rule was passed over. */
export function conditionMismatch(
  condition: CompiledCondition | undefined,
  context: TargetingContext,
): ConditionField | undefined {
  if (condition === undefined) return undefined;
  if (condition.regions && !condition.regions.has(context.region)) return "region";
  if (condition.countries && (context.country === undefined || !condition.countries.has(context.country))) {
    return "country";
  }
  if (condition.devices && (context.device === undefined || !condition.devices.has(context.device))) {
    return "device";
  }
  if (condition.networks && (context.network === undefined || !condition.networks.has(context.network))) {
    return "network";
  }
  if (condition.platforms && (context.platform === undefined || !condition.platforms.has(context.platform))) {
    return "platform";
  }
  if (condition.loggedIn !== undefined && context.loggedIn !== condition.loggedIn) return "loggedIn";
  if (condition.segments && !hasAny(condition.segments, context.segments)) return "segment";
  if (condition.paths && (context.path === undefined || !matchesAnyPath(condition.paths, context.path))) {
    return "path";
  }
  if (condition.variants) {
    for (const [key, accepted] of condition.variants) {
      const served = context.variants[key];
      if (served === undefined || !accepted.has(served)) return "variant";
    }
  }
  return undefined;
}

export function matchesAnyPath(patterns: readonly PathGlob[], path: string): boolean {
  for (let i = 0; i < patterns.length; i++) {
    if (patterns[i]!.test(path)) return true;
  }
  return false;
}

/** The names of the inputs in a mask of {@linkcode INPUT} bits, in that order. */
export function inputNames(mask: number): DecisionInput[] {
  const out: DecisionInput[] = [];
  if (mask === 0) return out;
  for (const name of INPUT_NAMES) {
    if (mask & INPUT[name]) out.push(name);
  }
  return out;
}

/** The client-hint headers behind a mask of inputs, for `Accept-CH` and `Vary`. */
export function hintsForInputs(mask: number): string[] {
  const out: string[] = [];
  if (mask === 0) return out;
  for (const name of INPUT_NAMES) {
    if (!(mask & INPUT[name])) continue;
    const hints = INPUT_HINTS[name];
    if (hints) out.push(...hints);
  }
  return out;
}

/**
 * A path glob (`*` matches any run, `/` included; the whole path must match), matched in linear
 * time: a backtracking regular expression takes seconds on a long path a visitor chooses.
 */
export class PathGlob {
  readonly source: string;
  readonly #parts: readonly string[];
  readonly #minLength: number;

  constructor(glob: string) {
    this.source = glob;
    this.#parts = glob.split("*");
    this.#minLength = glob.length - (this.#parts.length - 1);
  }

  test(path: string): boolean {
    return this.#match(path) !== null;
  }

  /** What the first `*` matched, greedily (`""` without one), or `null` when the path does not match. */
  splat(path: string): string | null {
    return this.#match(path);
  }

  #match(path: string): string | null {
    const parts = this.#parts;
    const last = parts.length - 1;
    if (last === 0) return path === parts[0] ? "" : null;
    if (path.length < this.#minLength) return null;
    const prefix = parts[0]!;
    const suffix = parts[last]!;
    if (!path.startsWith(prefix) || !path.endsWith(suffix)) return null;
    // Literals placed as far right as they go: the first star then takes the most it can.
    let end = path.length - suffix.length;
    for (let i = last - 1; i >= 1; i--) {
      const part = parts[i]!;
      const at = path.lastIndexOf(part, end - part.length);
      if (at < prefix.length || at + part.length > end) return null;
      end = at;
    }
    return path.slice(prefix.length, end);
  }
}

export function compileGlob(glob: string): PathGlob {
  return new PathGlob(glob);
}

function hasAny(wanted: ReadonlySet<string>, have: readonly string[]): boolean {
  for (let i = 0; i < have.length; i++) {
    if (wanted.has(have[i]!)) return true;
  }
  return false;
}
