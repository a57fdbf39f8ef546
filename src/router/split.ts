/**
 * Splits a SQL script into statements the way psql does: on semicolons outside quotes, dollar quotes and
 * comments (the real Postgres scanner decides what is what), not inside `BEGIN ATOMIC … END` function bodies, with
 * psql backslash meta-commands set apart. Comments before a statement stay with it, since hints live there.
 */
import { scanSync } from "libpg-query";
import { parseSql } from "./parser.ts";

export type ScriptItem =
  | { kind: "statement"; line: number; sql: string }
  | { kind: "meta"; line: number; command: string };

type Token = { start: number; end: number; text: string; tokenName: string };

/** Tokens of `buf[from, to)` with offsets into `buf`, or the scanner's error message. */
function scanPart(buf: Buffer, from: number, to: number): Token[] | string {
  try {
    return scanSync(buf.subarray(from, to).toString()).tokens.map((t: Token) => ({ ...t, start: t.start + from, end: t.end + from }));
  } catch (err) {
    return String((err as Error).message);
  }
}

/**
 * Tokens of a script the scanner rejects as a whole (a lexical error somewhere): scanned a statement at a time, so
 * that the statements around the bad one are still split and judged. A `;` ends a statement when the text from the
 * statement's start through it scans and ends with it. Psql's rules for the bad statement: an unterminated quote or
 * comment runs to the end of the script, any other lexical error (`1abc`, `""`) ends at the next `;`.
 */
function tokensPiecewise(buf: Buffer): Token[] {
  const tokens: Token[] = [];
  let start = 0;
  outer: while (start < buf.length) {
    for (let semi = buf.indexOf(0x3b, start); semi >= 0; semi = buf.indexOf(0x3b, semi + 1)) {
      const part = scanPart(buf, start, semi + 1);
      if (typeof part !== "string") {
        if (part[part.length - 1]?.start !== semi) continue; // the `;` is inside a comment
        tokens.push(...part);
        start = semi + 1;
        continue outer;
      }
      // The message names the error ("unterminated quoted string…"); libpg-query may garble the rest of it.
      if (!/unterminated/i.test(part)) {
        tokens.push(...badStatement(buf, start, semi), { start: semi, end: semi + 1, text: ";", tokenName: "ASCII_59" });
        start = semi + 1;
        continue outer;
      }
    }
    tokens.push(...badStatement(buf, start, buf.length));
    break;
  }
  return tokens;
}

/**
 * Tokens for a statement the scanner rejects: the leading part that scans (comments, the first words, so the
 * statement's line is right), then one token for the rest. The parser says where the scanner stopped.
 */
function badStatement(buf: Buffer, from: number, to: number): Token[] {
  const text = buf.subarray(from, to).toString();
  const parsed = parseSql(text);
  const at = parsed.ok ? 0 : Buffer.byteLength(text.slice(0, Math.max(0, parsed.position - 1)));
  const head = at > 0 ? scanPart(buf, from, from + at) : [];
  const lead = typeof head === "string" ? [] : head;
  const restFrom = lead.length > 0 ? from + at : from + /^[ \t\n\r\f\v]*/.exec(text)![0].length;
  if (restFrom >= to) return lead;
  return [...lead, { start: restFrom, end: to, text: buf.subarray(restFrom, to).toString(), tokenName: "UNSCANNED" }];
}

/**
 * 1-based line numbers of byte offsets asked for in increasing order (as items are found): counting on from the
 * last answer keeps a long script linear rather than quadratic.
 */
function lineCounter(buf: Buffer): (at: number) => number {
  let pos = 0;
  let line = 1;
  return (at) => {
    for (; pos < at && pos < buf.length; pos++) if (buf[pos] === 0x0a) line++;
    return line;
  };
}

export function splitScript(text: string): ScriptItem[] {
  const buf = Buffer.from(text);
  const lineAt = lineCounter(buf);
  const items: ScriptItem[] = [];
  const whole = scanPart(buf, 0, buf.length);
  // The scanner gives up on the first lexical error; the parser will report it for the statement that has it.
  const tokens = typeof whole === "string" ? tokensPiecewise(buf) : whole;
  let start = 0; // byte offset where the current statement (with its leading comments) begins
  let hasCode = false;
  let codeAt = 0; // byte offset of the statement's first token that is not a comment
  let atomic = 0; // depth of BEGIN ATOMIC bodies
  let prev = "";
  const flush = (end: number) => {
    const sql = buf.subarray(start, end).toString().trim();
    if (hasCode && sql) items.push({ kind: "statement", line: lineAt(codeAt), sql });
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
      items.push({ kind: "meta", line: lineAt(t.start), command: buf.subarray(t.start, end).toString().trim() });
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
