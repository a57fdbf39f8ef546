/**
 * Splits a SQL script into statements the way psql does: on semicolons outside quotes, dollar quotes and
 * comments (the real Postgres scanner decides what is what), not inside `BEGIN ATOMIC … END` function bodies, with
 * psql backslash meta-commands set apart. Comments before a statement stay with it, since hints live there.
 */
import { scanSync } from "libpg-query";

export type ScriptItem =
  | { kind: "statement"; line: number; sql: string }
  | { kind: "meta"; line: number; command: string };

/** 1-based line of byte offset `at`. */
function lineAt(buf: Buffer, at: number): number {
  let line = 1;
  for (let i = 0; i < at && i < buf.length; i++) if (buf[i] === 0x0a) line++;
  return line;
}

export function splitScript(text: string): ScriptItem[] {
  const buf = Buffer.from(text);
  const items: ScriptItem[] = [];
  let tokens: { start: number; end: number; text: string; tokenName: string }[];
  try {
    tokens = scanSync(text).tokens;
  } catch {
    // The scanner gives up only on input the parser would reject anyway: one statement, reported as such.
    return text.trim() ? [{ kind: "statement", line: 1, sql: text.trim() }] : [];
  }
  let start = 0; // byte offset where the current statement (with its leading comments) begins
  let hasCode = false;
  let codeAt = 0; // byte offset of the statement's first token that is not a comment
  let atomic = 0; // depth of BEGIN ATOMIC bodies
  let prev = "";
  const flush = (end: number) => {
    const sql = buf.subarray(start, end).toString().trim();
    if (hasCode && sql) items.push({ kind: "statement", line: lineAt(buf, codeAt), sql });
    hasCode = false;
  };
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.tokenName === "C_COMMENT" || t.tokenName === "SQL_COMMENT") continue;
    if (t.text === "\\") {
      // A psql meta-command: runs to the end of its line; whatever SQL came before it is a statement of its own.
      flush(t.start);
      const eol = buf.indexOf(0x0a, t.start);
      const end = eol < 0 ? buf.length : eol;
      items.push({ kind: "meta", line: lineAt(buf, t.start), command: buf.subarray(t.start, end).toString().trim() });
      while (i + 1 < tokens.length && tokens[i + 1]!.start < end) i++;
      start = end;
      continue;
    }
    const word = t.text.toUpperCase();
    if (word === "ATOMIC" && prev === "BEGIN") atomic++;
    else if (atomic > 0 && word === "END") atomic--;
    else if (atomic > 0 && word === "CASE") atomic++; // CASE … END inside an atomic body
    prev = word;
    if (t.text === ";" && atomic === 0) {
      flush(t.end);
      start = t.end;
      continue;
    }
    if (!hasCode) codeAt = t.start;
    hasCode = true;
  }
  flush(buf.length);
  return items;
}
