/**
 * @module
 * Structured JSON logging: one line per event, filtered by level. The sink is injectable so
 * tests can read what was logged.
 */
import type { LogLevel } from "../app/config.ts";

/** Fields attached to a log line. Never put secrets or raw session tokens here. */
export type LogFields = Record<string, unknown>;

/** The logger every part of the service receives through `Deps`. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /**
   * Whether a line of this level would be written, so a caller can skip building costly fields.
   * @param level the level of the line
   */
  enabled(level: Exclude<LogLevel, "silent">): boolean;
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Receives each serialised line; defaults to `console.log`. */
  sink?: (line: string) => void;
  /** Clock for the `ts` field, in epoch milliseconds. */
  now: () => number;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

/**
 * Creates a JSON-lines logger.
 * @param level the least severe level that is written
 * @param options the sink and clock
 */
export function createLogger(level: LogLevel, options: LoggerOptions): Logger {
  const sink = options.sink ?? ((line: string) => console.log(line));
  const min = RANK[level];
  const write = (lvl: Exclude<LogLevel, "silent">, message: string, fields?: LogFields) => {
    if (RANK[lvl] < min) return;
    sink(JSON.stringify({ ts: new Date(options.now()).toISOString(), level: lvl, msg: message, ...fields }));
  };
  return {
    debug: (message, fields) => write("debug", message, fields),
    info: (message, fields) => write("info", message, fields),
    warn: (message, fields) => write("warn", message, fields),
    error: (message, fields) => write("error", message, fields),
    enabled: (lvl) => RANK[lvl] >= min,
  };
}
