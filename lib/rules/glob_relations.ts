/** @module What one path glob provably says about another, for the linter: "no" unless provable. */
import { PathGlob } from "./targeting.ts";

/** @returns true when `outer` provably matches every path `inner` matches */
export function globCovers(outer: string, inner: string): boolean {
  if (outer === "*" || outer === inner) return true;
  if (!inner.includes("*")) return new PathGlob(outer).test(inner);
  const parts = outer.split("*");
  if (parts.length !== 2) return false;
  const [prefix, suffix] = parts as [string, string];
  return literalPrefix(inner).startsWith(prefix) && literalSuffix(inner).endsWith(suffix);
}

/** @returns true when the two globs provably match no common path */
export function globsDisjoint(a: string, b: string): boolean {
  if (a === "*" || b === "*") return false;
  if (!a.includes("*")) return !new PathGlob(b).test(a);
  if (!b.includes("*")) return !new PathGlob(a).test(b);
  const pa = literalPrefix(a), pb = literalPrefix(b);
  if (!pa.startsWith(pb) && !pb.startsWith(pa)) return true;
  const sa = literalSuffix(a), sb = literalSuffix(b);
  return !sa.endsWith(sb) && !sb.endsWith(sa);
}

/** @returns the literal text of a glob before its first `*` (all of it without one) */
export function literalPrefix(glob: string): string {
  const star = glob.indexOf("*");
  return star < 0 ? glob : glob.slice(0, star);
}

function literalSuffix(glob: string): string {
  const star = glob.lastIndexOf("*");
  return star < 0 ? glob : glob.slice(star + 1);
}
