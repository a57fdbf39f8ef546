/**
 * Query results pgroute answers itself (`SHOW pgroute.target`, the admin console): RowDescription ('T'), one
 * DataRow ('D') per row and CommandComplete ('C'), every value in text format (protocol "Message Formats").
 */
import { B } from "./codes.ts";
import { MessageWriter } from "./encode.ts";

/** Column types by their PostgreSQL type OID, so clients (psql) align and parse them as they would a server's. */
const OID = { text: 25, int8: 20, float8: 701, bool: 16 } as const;

export type ColumnType = keyof typeof OID;

export interface Column {
  readonly name: string;
  readonly type: ColumnType;
}

/** One value; null is SQL NULL. Numbers are written as Postgres would print them, booleans as `t`/`f`. */
export type Cell = string | number | boolean | null;

const enc = new TextEncoder();

function text(v: Exclude<Cell, null>): string {
  if (typeof v === "boolean") return v ? "t" : "f";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
  return v;
}

/** Appends a RowDescription, the rows and a CommandComplete with `tag`. */
export function writeResult(w: MessageWriter, columns: readonly Column[], rows: readonly (readonly Cell[])[], tag: string): MessageWriter {
  w.begin(B.RowDescription).int16(columns.length);
  // name, table OID 0, column 0, type OID, size (-1: variable), type modifier -1, format 0 (text)
  for (const c of columns) w.cstring(c.name).int32(0).int16(0).int32(OID[c.type]).int16(c.type === "text" ? -1 : c.type === "bool" ? 1 : 8).int32(-1).int16(0);
  w.end();
  for (const row of rows) {
    w.begin(B.DataRow).int16(columns.length);
    for (let i = 0; i < columns.length; i++) {
      const v = row[i] ?? null;
      if (v === null) {
        w.int32(-1);
        continue;
      }
      const bytes = enc.encode(text(v));
      w.int32(bytes.length).bytes(bytes);
    }
    w.end();
  }
  return w.begin(B.CommandComplete).cstring(tag).end();
}

/** A whole result: RowDescription, DataRows, CommandComplete (`tag`, default `SELECT n`). */
export function resultSet(columns: readonly Column[], rows: readonly (readonly Cell[])[], tag = `SELECT ${rows.length}`): Uint8Array {
  return writeResult(new MessageWriter(256), columns, rows, tag).done();
}

/** CommandComplete ('C') with `tag`. */
export function commandComplete(tag: string): Uint8Array {
  return new MessageWriter(32).begin(B.CommandComplete).cstring(tag).end().done();
}

/** The reply Postgres gives a SHOW of one text setting. */
export function showReply(name: string, value: string): Uint8Array {
  return resultSet([{ name, type: "text" }], [[value]], "SHOW");
}

/** EmptyQueryResponse ('I'): the reply to a query string with no statement in it. */
export function emptyQueryResponse(): Uint8Array {
  return Uint8Array.of(B.EmptyQueryResponse, 0, 0, 0, 4);
}
