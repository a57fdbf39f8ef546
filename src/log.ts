/**
 * One line per event that matters: plain text on a TTY (or by choice), JSON lines for machines. Events carry a
 * name and fields; the text form is `time level event key=value…`.
 */
import type { LogFormat, LogLevel } from "./config/types.ts";

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  debug(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
  enabled(level: LogLevel): boolean;
}

function quote(v: unknown): string {
  const s = String(v);
  return /^[\w.:/@+-]*$/.test(s) && s !== "" ? s : JSON.stringify(s);
}

export function createLogger(
  opts: { level: LogLevel; format: LogFormat },
  write: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
): Logger {
  const min = rank[opts.level];
  const emit = (level: LogLevel, event: string, fields: LogFields = {}) => {
    if (rank[level] < min) return;
    const time = new Date().toISOString();
    if (opts.format === "json") {
      write(JSON.stringify({ time, level, event, ...fields }));
      return;
    }
    let line = `${time} ${level.toUpperCase().padEnd(5)} ${event}`;
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${quote(v)}`;
    write(line);
  };
  return {
    debug: (e, f) => emit("debug", e, f),
    info: (e, f) => emit("info", e, f),
    warn: (e, f) => emit("warn", e, f),
    error: (e, f) => emit("error", e, f),
    enabled: (level) => rank[level] >= min,
  };
}

/** A logger that drops everything (tests, library use). */
export const silentLogger: Logger = createLogger({ level: "error", format: "text" }, () => {});
