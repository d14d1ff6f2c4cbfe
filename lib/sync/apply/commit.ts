/**
 * @module
 * The driver of an apply: waves of disjoint units, read together with strong consistency,
 * decided, and committed in atomics packed up to KV's limits. Every read key is checked by
 * versionstamp at commit, so a unit that lost a race is read and decided again.
 */
import { getManyChunked, KV_COMMIT_LIMITS, kvKeyBytes } from "../../data/store.ts";
import { type Entry, keyId, type Outcome, type Plan, type Read, type Unit } from "./unit.ts";

/**
 * Keys read together before deciding; their units are disjoint, so their plans can be split
 * over several atomic commits (each within the limits) and committed in parallel.
 */
const MAX_WAVE_KEYS = 2000;

/** A unit kept conflicting with concurrent writers; the batch may be retried as a whole. */
export class ApplyConflictError extends Error {
  constructor() {
    super("Sync apply kept conflicting with concurrent writers");
    this.name = "ApplyConflictError";
  }
}

interface Commit {
  units: Unit[];
  plans: Plan[];
  op: Deno.AtomicOperation;
  checks: number;
  mutations: number;
  keyBytes: number;
  bytes: number;
}

/** What one wave shares: the attempt budget, the outcome so far, and the units left for later. */
interface Wave {
  maxAttempts: number;
  outcome: Outcome;
  later: Unit[];
}

/**
 * Runs units to completion, wave after wave. Adds to `outcome` as commits succeed, so that a
 * caller sees what committed even on a throw.
 * @param units the units to run
 * @param maxAttempts how often a conflicting unit is retried
 * @param outcome where committed counts, users and compactions are added
 * @throws {ApplyConflictError} when a unit runs out of attempts
 */
export async function runUnits(
  kv: Deno.Kv,
  units: Unit[],
  maxAttempts: number,
  outcome: Outcome,
): Promise<void> {
  let pending = units;
  while (pending.length) {
    const later: Unit[] = [];
    const wave = takeWave(pending, later);
    const read = await readWave(kv, wave);
    const run: Wave = { maxAttempts, outcome, later };
    const commits = packCommits(kv, wave, read, run);
    await commitAll(commits, run);
    pending = later;
  }
}

/** Takes the units whose keys are disjoint and fit in one wave; the others go to `later`. */
function takeWave(pending: readonly Unit[], later: Unit[]): Unit[] {
  const wave: Unit[] = [];
  const waveKeys = new Set<string>();
  for (const unit of pending) {
    const ids = [...unit.keys, ...(unit.assumedAbsent ?? [])].map(keyId);
    if (waveKeys.size + ids.length > MAX_WAVE_KEYS || ids.some((id) => waveKeys.has(id))) {
      later.push(unit);
      continue;
    }
    wave.push(unit);
    for (const id of ids) waveKeys.add(id);
  }
  if (wave.length === 0) throw new Error("A sync unit reads more keys than one wave may hold");
  return wave;
}

async function readWave(kv: Deno.Kv, wave: readonly Unit[]): Promise<Read> {
  const waveKeyList = wave.flatMap((unit) => unit.keys);
  const entries = await getManyChunked(kv, waveKeyList, { consistency: "strong" });
  const byId = new Map<string, Entry>(waveKeyList.map((key, index) => [keyId(key), entries[index]!]));
  for (const unit of wave) {
    for (const key of unit.assumedAbsent ?? []) {
      byId.set(keyId(key), { key, value: null, versionstamp: null });
    }
  }
  return (key) => {
    const entry = byId.get(keyId(key));
    if (!entry) throw new Error(`Sync unit read an undeclared key ${keyId(key)}`);
    return entry;
  };
}

function settle(plan: Plan, unit: Unit, run: Wave): void {
  const { outcome } = run;
  plan.committed?.();
  outcome.applied += plan.applied;
  outcome.stale += plan.stale;
  for (const user of plan.users) outcome.users.add(user);
  if (plan.compact) {
    const { userId, erasedAt } = plan.compact;
    outcome.compact.set(userId, Math.max(erasedAt, outcome.compact.get(userId) ?? -Infinity));
  }
  if (plan.again) {
    // Progress was made, so the unit's conflict budget starts afresh.
    unit.attempts = 0;
    run.later.push(unit);
  }
}

/** Decides every unit of the wave and packs the plans with writes into atomic commits. */
function packCommits(kv: Deno.Kv, wave: readonly Unit[], read: Read, run: Wave): Commit[] {
  const commits: Commit[] = [];
  for (const unit of wave) {
    const readKeys = [...unit.keys, ...(unit.assumedAbsent ?? [])];
    const step = unit.step(read);
    if ("needKeys" in step) {
      if (++unit.attempts >= run.maxAttempts * 2) throw new ApplyConflictError();
      const known = new Set(unit.keys.map(keyId));
      for (const key of step.needKeys) {
        if (!known.has(keyId(key))) {
          unit.keys.push(key);
          known.add(keyId(key));
        }
      }
      run.later.push(unit);
      continue;
    }
    const plan = step.plan;
    if (plan.mutations.length === 0) {
      settle(plan, unit, run);
      continue;
    }
    addToCommit(commits, kv, { unit, plan, readKeys, read });
  }
  return commits;
}

function addToCommit(
  commits: Commit[],
  kv: Deno.Kv,
  { unit, plan, readKeys, read }: { unit: Unit; plan: Plan; readKeys: Deno.KvKey[]; read: Read },
): void {
  const keyBytes = plan.mutations.reduce((sum, mutation) => sum + kvKeyBytes(mutation.key), 0) +
    readKeys.reduce((sum, key) => sum + kvKeyBytes(key), 0);
  const bytes = plan.mutations.reduce((sum, mutation) => sum + estimateBytes(mutation), 0) +
    readKeys.reduce((sum, key) => sum + kvKeyBytes(key) + 32, 0);
  let commit = commits.at(-1);
  if (
    !commit || commit.checks + readKeys.length > KV_COMMIT_LIMITS.checks ||
    commit.mutations + plan.mutations.length > KV_COMMIT_LIMITS.mutations ||
    commit.keyBytes + keyBytes > KV_COMMIT_LIMITS.keyBytes ||
    commit.bytes + bytes > KV_COMMIT_LIMITS.bytes
  ) {
    commit = { units: [], plans: [], op: kv.atomic(), checks: 0, mutations: 0, keyBytes: 0, bytes: 0 };
    commits.push(commit);
  }
  commit.units.push(unit);
  commit.plans.push(plan);
  commit.checks += readKeys.length;
  commit.mutations += plan.mutations.length;
  commit.keyBytes += keyBytes;
  commit.bytes += bytes;
  for (const key of readKeys) commit.op.check({ key, versionstamp: read(key).versionstamp });
  for (const mutation of plan.mutations) {
    if (mutation.value === undefined) commit.op.delete(mutation.key);
    else {commit.op.set(
        mutation.key,
        mutation.value,
        mutation.expireIn ? { expireIn: mutation.expireIn } : {},
      );}
  }
}

function estimateBytes(mutation: Plan["mutations"][number]): number {
  // The key as KV encodes it; the value generously (UTF-16 worst case) plus per-entry overhead.
  return kvKeyBytes(mutation.key) +
    (mutation.value === undefined ? 0 : JSON.stringify(mutation.value).length * 2) + 64;
}

async function commitAll(commits: readonly Commit[], run: Wave): Promise<void> {
  const results = await Promise.allSettled(commits.map((commit) => commit.op.commit()));
  // Settle every commit before giving up on one: units that did commit must still be counted
  // and their users reported (cache invalidation), whichever commit failed or ran out of attempts.
  let exhausted = false;
  let failure: { reason: unknown } | undefined;
  results.forEach((settled, index) => {
    const commit = commits[index]!;
    if (settled.status === "rejected") {
      failure ??= { reason: settled.reason };
      return;
    }
    const result = settled.value;
    commit.units.forEach((unit, i) => {
      if (result.ok) {
        settle(commit.plans[i]!, unit, run);
        return;
      }
      unit.attempts++;
      if (unit.attempts >= run.maxAttempts) exhausted = true;
      if (unit.assumedAbsent) {
        unit.keys.push(...unit.assumedAbsent);
        unit.assumedAbsent = undefined;
      }
      run.later.push(unit);
    });
  });
  if (failure) throw failure.reason;
  if (exhausted) throw new ApplyConflictError();
}
