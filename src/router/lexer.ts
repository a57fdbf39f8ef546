/**
 * A fast single-pass SQL lexer following PostgreSQL's lexical rules (docs, "Lexical Structure"): it reduces a
 * statement to its shape — comments dropped, whitespace folded, literals replaced by `?`, unquoted words lowered —
 * so statements that differ only in their constants share one cache entry, and the full parser runs once per
 * shape rather than once per statement. It also collects comment text, where routing hints live.
 *
 * It never throws: an unterminated string or comment just ends the shape (the real parser reports the error).
 */

export interface Shape {
  /** The normalized statement text, the cache key. */
  key: string;
  /** Text inside comments, in order (hints are looked for here). */
  comments: string[];
}

import { HotCache } from "./cache.ts";

const SPACE = 1;
const IDENT_START = 2;
const IDENT = 4;
const DIGIT = 8;
/** A–Z: lowered in the key. */
const UPPER = 16;

/** Character classes for ASCII; bytes ≥ 0x80 count as identifier characters, as in Postgres. */
const cls = new Uint8Array(128);
for (const c of " \t\n\r\f\v") cls[c.charCodeAt(0)] = SPACE;
for (let c = 0x61; c <= 0x7a; c++) cls[c] = IDENT_START | IDENT;
for (let c = 0x41; c <= 0x5a; c++) cls[c] = IDENT_START | IDENT | UPPER;
cls[0x5f] = IDENT_START | IDENT; // _
for (let c = 0x30; c <= 0x39; c++) cls[c] = IDENT | DIGIT;
cls[0x24] = IDENT; // $ inside identifiers

const classOf = (code: number) => (code >= 128 ? IDENT_START | IDENT : cls[code]!);

/**
 * Set when the statement holds something lexically invalid (an unterminated quote or comment, a number with junk
 * after it): its key then differs from every valid statement's, so the cache never answers for it with the
 * classification of a statement that parses — the parser reports the error, as `pgroute explain` does.
 */
let invalid = false;

/** Index just past the string literal whose opening quote is at `i`; `backslash` for E'' strings. */
function skipString(s: string, i: number, backslash: boolean): number {
  const n = s.length;
  i++;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (backslash && c === 0x5c) {
      i += 2;
      continue;
    }
    if (c === 0x27) {
      if (s.charCodeAt(i + 1) === 0x27) {
        i += 2; // '' is an escaped quote
        continue;
      }
      return i + 1;
    }
    i++;
  }
  invalid = true; // unterminated
  return n;
}

/** If a dollar-quote tag (`$$` or `$tag$`) starts at `i`, its length; else 0. */
function dollarTag(s: string, i: number): number {
  let j = i + 1;
  const first = s.charCodeAt(j);
  if (first === 0x24) return 2;
  if (!(classOf(first) & IDENT_START)) return 0;
  j++;
  while (j < s.length) {
    const c = s.charCodeAt(j);
    if (c === 0x24) return j - i + 1;
    if (!(classOf(c) & IDENT) || c === 0x24) return 0;
    j++;
  }
  return 0;
}

/**
 * Output buffer for the shape, reused across calls (the lexer is synchronous). A key is never longer than its
 * statement — every character of it stands for at least one of the statement's — so one size check per call
 * is enough.
 */
let out = new Uint16Array(4096);
/** `out`'s bytes, for decoding the key natively (UTF-16 code units in the machine's byte order). */
let outBytes = Buffer.from(out.buffer);

/** Typed arrays use the machine's byte order: UTF-16LE decoding of `out` is right on little-endian machines only. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function text(len: number): string {
  // Native decoding costs a third of String.fromCharCode.apply's (a cache hit is mostly this lexer pass).
  if (LITTLE_ENDIAN) return outBytes.toString("utf16le", 0, len * 2);
  let s = "";
  for (let i = 0; i < len; i += 8192) s += String.fromCharCode.apply(null, out.subarray(i, Math.min(len, i + 8192)) as unknown as number[]);
  return s;
}

const Q = 0x3f; // '?'

/**
 * A numeric constant as Postgres's scanner accepts it (scan.l: decinteger, hex/oct/bin integers, numeric, real;
 * `_` separators). Anything else the lexer took as one number — `1abc`, `1.2.3`, `1e`, `0x` — is "trailing junk"
 * or a syntax error to the server.
 */
const NUMBER = /^(?:(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?|0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+)$/;

/**
 * Reduces `sql` to its {@link Shape}. One pass; a cache hit on a long statement is mostly this loop, so it writes
 * straight into the output buffer (locals, no helper calls for the common tokens: words, spaces, punctuation).
 */
export function shape(sql: string): Shape {
  const n = sql.length;
  if (out.length < n + 2) {
    out = new Uint16Array(Math.max(n + 2, out.length * 2));
    outBytes = Buffer.from(out.buffer);
  }
  const o = out;
  const comments: string[] = [];
  let l = 0;
  /** Whether a space must separate the next token from the previous one. */
  let sp = false;
  invalid = false;
  let i = 0;
  while (i < n) {
    const c = sql.charCodeAt(i);
    const k = c >= 128 ? IDENT_START | IDENT : cls[c]!;
    if (k & SPACE) {
      sp = true;
      i++;
      continue;
    }
    // The space before a token (none at the start); a comment only adds to it (handled below).
    if (sp && !((c === 0x2d && sql.charCodeAt(i + 1) === 0x2d) || (c === 0x2f && sql.charCodeAt(i + 1) === 0x2a))) {
      sp = false;
      if (l > 0) o[l++] = 0x20;
    }
    if (k & IDENT_START) {
      // A word, lowered as it is copied.
      const from = l;
      o[l++] = k & UPPER ? c | 0x20 : c;
      let j = i + 1;
      while (j < n) {
        const d = sql.charCodeAt(j);
        if (d < 128) {
          const kd = cls[d]!;
          if (!(kd & IDENT)) break;
          o[l++] = kd & UPPER ? d | 0x20 : d;
        } else o[l++] = d;
        j++;
      }
      // E'…', B'…', X'…', N'…' and U&'…' are literals with a prefix.
      if (j - i === 1) {
        const next = sql.charCodeAt(j);
        const p = c | 0x20;
        if (next === 0x27 && (p === 0x65 || p === 0x62 || p === 0x78 || p === 0x6e)) {
          l = from;
          o[l++] = Q;
          i = skipString(sql, j, p === 0x65);
          continue;
        }
        if (p === 0x75 && next === 0x26 && sql.charCodeAt(j + 1) === 0x27) {
          l = from;
          o[l++] = Q;
          i = skipString(sql, j + 1, false);
          continue;
        }
      }
      i = j;
      continue;
    }
    // -- line comment, which ends at a carriage return as well as a newline (scan.l: non_newline is [^\n\r]);
    // reading past a lone \r would hide the code after it from the key.
    if (c === 0x2d && sql.charCodeAt(i + 1) === 0x2d) {
      let end = i + 2;
      while (end < n && sql.charCodeAt(end) !== 0x0a && sql.charCodeAt(end) !== 0x0d) end++;
      comments.push(sql.slice(i + 2, end));
      i = end;
      sp = true;
      continue;
    }
    // /* block comment */, which nests in Postgres
    if (c === 0x2f && sql.charCodeAt(i + 1) === 0x2a) {
      let depth = 1;
      let j = i + 2;
      while (j < n && depth > 0) {
        if (sql.charCodeAt(j) === 0x2f && sql.charCodeAt(j + 1) === 0x2a) {
          depth++;
          j += 2;
        } else if (sql.charCodeAt(j) === 0x2a && sql.charCodeAt(j + 1) === 0x2f) {
          depth--;
          j += 2;
        } else j++;
      }
      comments.push(sql.slice(i + 2, depth === 0 ? j - 2 : n));
      if (depth > 0) invalid = true;
      i = j;
      sp = true;
      continue;
    }
    if (c === 0x27) {
      o[l++] = Q;
      i = skipString(sql, i, false);
      continue;
    }
    if (c === 0x22) {
      // "quoted identifier": kept verbatim, case and all ("" escapes a quote).
      let j = i + 1;
      let closed = false;
      while (j < n) {
        if (sql.charCodeAt(j) === 0x22) {
          if (sql.charCodeAt(j + 1) === 0x22) {
            j += 2;
            continue;
          }
          j++;
          closed = true;
          break;
        }
        j++;
      }
      if (!closed) invalid = true;
      for (let m = i; m < j; m++) o[l++] = sql.charCodeAt(m);
      i = j;
      continue;
    }
    if (c === 0x24) {
      const d = sql.charCodeAt(i + 1);
      if (d >= 0x30 && d <= 0x39) {
        // $1: a parameter, part of the shape.
        o[l++] = c;
        let j = i + 1;
        while (j < n && classOf(sql.charCodeAt(j)) & DIGIT) o[l++] = sql.charCodeAt(j++);
        i = j;
        continue;
      }
      const t = dollarTag(sql, i);
      if (t > 0) {
        const tag = sql.slice(i, i + t);
        const end = sql.indexOf(tag, i + t);
        if (end < 0) invalid = true;
        o[l++] = Q;
        i = end < 0 ? n : end + t;
        continue;
      }
      o[l++] = c;
      i++;
      continue;
    }
    if (k & DIGIT || (c === 0x2e && classOf(sql.charCodeAt(i + 1)) & DIGIT)) {
      // Numeric constant: digits, '.', exponent, hex/octal/binary prefixes and '_' separators (PG 16+).
      let j = i + 1;
      // In 0x1e+5 the `e` is a hex digit and `+` an operator: only a decimal number has an exponent sign.
      const hex = c === 0x30 && (sql.charCodeAt(i + 1) | 0x20) === 0x78;
      while (j < n) {
        const d = sql.charCodeAt(j);
        if (classOf(d) & IDENT || d === 0x2e) j++;
        else if ((d === 0x2b || d === 0x2d) && !hex && (sql.charCodeAt(j - 1) | 0x20) === 0x65) j++;
        else break;
      }
      let plain = true;
      for (let m = i; m < j && plain; m++) plain = classOf(sql.charCodeAt(m)) === (IDENT | DIGIT);
      if (!plain && !NUMBER.test(sql.slice(i, j))) invalid = true;
      o[l++] = Q;
      i = j;
      continue;
    }
    // Operators and punctuation, one character at a time.
    o[l++] = c;
    i++;
  }
  // NUL cannot occur in a query's text (the protocol sends it as a C string), so no valid statement has this key.
  return { key: invalid ? `${text(l)}\0` : text(l), comments };
}

/**
 * Statements at least this long are remembered by their exact text: hashing a string costs about a tenth of
 * lexing it, so a statement sent again verbatim (an ORM's parameterized query, a prepared statement's text at
 * every Execute) skips the lexer. Shorter ones are cheap to lex, and remembering each distinct one (literals
 * inlined) would only churn the cache.
 */
const REMEMBER_FROM = 200;
/** Beyond this a statement is not remembered: the cache stays within a few MB whatever clients send. */
const REMEMBER_UP_TO = 8192;
const remembered = new HotCache<string, Shape>(512);

/**
 * {@link shape}, remembered for long statements by their exact text. The result is shared: callers must not
 * change it.
 */
export function shapeOf(sql: string): Shape {
  if (sql.length < REMEMBER_FROM || sql.length > REMEMBER_UP_TO) return shape(sql);
  let s = remembered.get(sql);
  if (s === undefined) {
    s = shape(sql);
    remembered.set(sql, s);
  }
  return s;
}
