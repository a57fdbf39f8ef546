/**
 * The real PostgreSQL parser (libpg-query, compiled to WASM), loaded once per process. Everything that needs a
 * parse tree goes through `parseSql`, which never throws: a syntax error comes back as a value.
 */
import { loadModule, parseSync, type ParseResult } from "libpg-query";

let loaded: Promise<void> | null = null;
let ready = false;

/** Loads the WASM parser; call once at startup (idempotent). */
export function loadParser(): Promise<void> {
  loaded ??= loadModule().then(() => {
    ready = true;
  });
  return loaded;
}

export type Parsed =
  | { ok: true; tree: ParseResult }
  | { ok: false; message: string; position: number };

/** The last statement parsed and its result: see {@link parseSql}. */
let lastSql: string | null = null;
let lastParsed: Parsed | null = null;

/**
 * Parses `sql`; the parser must have been loaded. A statement met for the first time is looked at by several
 * readers in turn (session effects, policies, the classifier), each wanting its tree: the last result is kept, so
 * the parse — the costly part of a cache miss — runs once. The result is shared: callers must not change it.
 */
export function parseSql(sql: string): Parsed {
  if (!ready) throw new Error("the SQL parser is not loaded (call loadParser() at startup)");
  if (sql === lastSql) return lastParsed!;
  let parsed: Parsed;
  try {
    parsed = { ok: true, tree: parseSync(sql) };
  } catch (err) {
    const e = err as { message?: string; sqlDetails?: { cursorPosition?: number } };
    // 1-based, as Postgres reports positions.
    parsed = { ok: false, message: e.message ?? String(err), position: (e.sqlDetails?.cursorPosition ?? 0) + 1 };
  }
  lastSql = sql;
  lastParsed = parsed;
  return parsed;
}
