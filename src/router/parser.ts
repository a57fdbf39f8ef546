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

/** Parses `sql`; the parser must have been loaded. */
export function parseSql(sql: string): Parsed {
  if (!ready) throw new Error("the SQL parser is not loaded (call loadParser() at startup)");
  try {
    return { ok: true, tree: parseSync(sql) };
  } catch (err) {
    const e = err as { message?: string; sqlDetails?: { cursorPosition?: number } };
    // 1-based, as Postgres reports positions.
    return { ok: false, message: e.message ?? String(err), position: (e.sqlDetails?.cursorPosition ?? 0) + 1 };
  }
}
