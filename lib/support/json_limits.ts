/**
 * @module
 * Limits on parsed JSON checked before schema validation: zod's recursive schemas (`z.json()`)
 * recurse once per nesting level, so a document nested a few thousand levels deep would
 * overflow the stack (a `RangeError`, answered 500) instead of failing validation.
 */

/** Deepest nesting accepted in rule sets and sync events; real ones stay under ten. */
export const MAX_JSON_DEPTH = 64;

/**
 * Tells whether a value nests objects or arrays more than `maxDepth` levels deep. Iterative, so
 * it cannot overflow the stack itself; a cyclic value counts as too deep.
 * @param maxDepth the deepest accepted nesting (a top-level object or array is level 1)
 * @returns true when the value is nested deeper than `maxDepth`
 */
export function exceedsJsonDepth(value: unknown, maxDepth: number = MAX_JSON_DEPTH): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (item === null || typeof item !== "object") continue;
    if (depth > maxDepth) return true;
    for (const child of Array.isArray(item) ? item : Object.values(item)) stack.push([child, depth + 1]);
  }
  return false;
}

/**
 * The paths of every object key in `names`, anywhere in a value. Iterative, like
 * {@linkcode exceedsJsonDepth} (check the depth first: a cyclic value never ends here).
 * @param names the keys to look for
 * @returns one path (keys and array indices from the top) per key found, the keys of an object
 *   before those nested in it
 */
export function keyPaths(value: unknown, names: ReadonlySet<string>): (string | number)[][] {
  const found: (string | number)[][] = [];
  const stack: [unknown, (string | number)[]][] = [[value, []]];
  while (stack.length > 0) {
    const [item, path] = stack.pop()!;
    if (item === null || typeof item !== "object") continue;
    const children: [string | number, unknown][] = Array.isArray(item)
      ? item.map((child, index) => [index, child])
      : Object.entries(item);
    for (const [key] of children) {
      if (typeof key === "string" && names.has(key)) found.push([...path, key]);
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push([children[i]![1], [...path, children[i]![0]]]);
  }
  return found;
}
