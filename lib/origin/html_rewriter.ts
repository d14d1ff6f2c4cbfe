/**
 * @module
 * Loads lol-html (`html-rewriter-wasm`) on first use and gives its memory back. A WebAssembly
 * memory can only grow, so a page with a huge tag would keep the isolate's resident memory at its
 * peak for good; instead, an instance whose memory grew past a limit stops being handed out when
 * a page using it is done (pages still using it keep it), and the next page gets a new one.
 */
import type * as LolHtml from "html-rewriter-wasm";

/** Linear memory above which an instance is replaced (a fresh one holds about 1.3 MiB, ordinary pages leave it under 2 MiB). */
export const HTML_REWRITER_MEMORY_LIMIT_BYTES = 4 * 1024 * 1024;

type LolHtmlModule = typeof LolHtml & { __wasm?: { memory?: WebAssembly.Memory } };

/** One page's use of an instance: its `HTMLRewriter` class, and `release` when the page is done. */
export interface HtmlRewriterLease {
  HTMLRewriter: typeof LolHtml.HTMLRewriter;
  /** Ends this page's use; idempotent. */
  release(): void;
}

/** Options for {@linkcode HtmlRewriterLoader}. */
export interface HtmlRewriterLoaderOptions {
  /** Memory above which an instance is replaced (default {@linkcode HTML_REWRITER_MEMORY_LIMIT_BYTES}). */
  memoryLimitBytes?: number;
  /** Makes the `require` the package is evaluated with (default `node:module`'s `createRequire`). */
  createRequire?: () => NodeJS.Require;
}

/** The isolate's lol-html instances: one current, plus retired ones until their pages finish. */
export class HtmlRewriterLoader {
  #limit: number;
  #current: LolHtmlModule | undefined;
  #loads = 0;
  #require: NodeJS.Require | undefined;
  #createRequire: (() => NodeJS.Require) | undefined;

  constructor(options: HtmlRewriterLoaderOptions = {}) {
    this.#limit = options.memoryLimitBytes ?? HTML_REWRITER_MEMORY_LIMIT_BYTES;
    this.#createRequire = options.createRequire;
  }

  /**
   * Loads the rewriter if no instance is current, so a caller can fall back to the page as it is
   * before any header is sent rather than send a page whose body then fails.
   *
   * @returns whether the rewriter can be used
   */
  async available(): Promise<boolean> {
    try {
      await this.#instance();
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Takes the current instance for one page, loading a new one if there is none.
   *
   * @returns the lease; call `release` when the page's rewriter is freed
   * @throws when the module cannot be loaded
   */
  async acquire(): Promise<HtmlRewriterLease> {
    const instance = await this.#instance();
    let released = false;
    return {
      HTMLRewriter: instance.HTMLRewriter,
      release: () => {
        if (released) return;
        released = true;
        if (instance === this.#current && memoryOf(instance) > this.#limit) this.#current = undefined;
      },
    };
  }

  /** Linear memory of the current instance in bytes (0 when none is loaded). */
  memoryBytes(): number {
    return this.#current ? memoryOf(this.#current) : 0;
  }

  /** How many instances were loaded so far. */
  get loads(): number {
    return this.#loads;
  }

  async #instance(): Promise<LolHtmlModule> {
    if (this.#current) return this.#current;
    let module: LolHtmlModule;
    try {
      this.#require ??= this.#createRequire?.() ??
        (await import("node:module")).createRequire(import.meta.url);
      // Another page may have loaded one while this awaited the first import.
      if (this.#current) return this.#current;
      module = freshRequire(this.#require, "html-rewriter-wasm") as LolHtmlModule;
    } catch (error) {
      // Where the package cannot be required (a runtime without Node's require cache), the module
      // cache still serves it, only without giving its memory back.
      module = await import("html-rewriter-wasm").catch(() => {
        throw error;
      });
      this.#limit = Infinity;
      if (this.#current) return this.#current;
    }
    this.#loads++;
    this.#current = module;
    return module;
  }
}

function memoryOf(instance: LolHtmlModule): number {
  return instance.__wasm?.memory?.buffer.byteLength ?? 0;
}

/**
 * Evaluates a CommonJS package anew: the package instantiates its WebAssembly module when it is
 * evaluated, so dropping its files from the require cache (and from the parent's `children`, which
 * would otherwise keep the old exports alive) is what makes a new instance and frees the old one.
 */
function freshRequire(require: NodeJS.Require, specifier: string): unknown {
  const main = require.resolve(specifier);
  // Every file of the package's folder: its helper module holds its own reference to the instance.
  const packageDir = main.replace(/[^\\/]*$/, "");
  for (const [path, cached] of Object.entries(require.cache)) {
    if (!path.startsWith(packageDir) || !cached) continue;
    const siblings = cached.parent?.children;
    const index = siblings?.indexOf(cached) ?? -1;
    if (index >= 0) siblings!.splice(index, 1);
    delete require.cache[path];
  }
  return require(specifier);
}
