/**
 * A fast single-pass SQL lexer following PostgreSQL's lexical rules (docs, "Lexical Structure"): it reduces a
 * statement to its shape — comments dropped, whitespace folded, literals replaced by `?`, unquoted words lowered —
 * so statements that differ only in their constants share one cache entry, and the full parser runs once per
 * shape rather than once per statement. It also collects comment text, where routing hints live.
 *
 * It reads the statement's UTF-8 bytes, as Postgres's own scanner does (every byte ≥ 0x80 is an identifier
 * character there too), so a Query frame is lexed where it arrived. Keys are interned: a shape seen before is recognised by its bytes (a hash and one
 * comparison) and its key string is the one made the first time, so a cache hit makes no string, and the caches
 * keyed by it never hash the key again (the string keeps its hash).
 *
 * It never throws: an unterminated string or comment just ends the shape (the real parser reports the error).
 */

export interface Shape {
  /** The normalized statement text, the cache key. */
  key: string;
  /** Text inside comments, in order (hints are looked for here). */
  comments: readonly string[];
}

import { HotCache } from "./cache.ts";

const SPACE = 1;
const IDENT_START = 2;
const IDENT = 4;
const DIGIT = 8;
/** A–Z: lowered in the key. */
const UPPER = 16;

/** Character classes by byte; bytes ≥ 0x80 (parts of multibyte characters) are identifier characters, as in Postgres. */
const cls = new Uint8Array(256);
for (const c of " \t\n\r\f\v") cls[c.charCodeAt(0)] = SPACE;
for (let c = 0x61; c <= 0x7a; c++) cls[c] = IDENT_START | IDENT;
for (let c = 0x41; c <= 0x5a; c++) cls[c] = IDENT_START | IDENT | UPPER;
cls[0x5f] = IDENT_START | IDENT; // _
for (let c = 0x30; c <= 0x39; c++) cls[c] = IDENT | DIGIT;
cls[0x24] = IDENT; // $ inside identifiers
for (let c = 0x80; c <= 0xff; c++) cls[c] = IDENT_START | IDENT;
/** Each byte as it goes into a key: A–Z lowered, everything else as is. */
const lower = new Uint8Array(256);
for (let c = 0; c < 256; c++) lower[c] = cls[c]! & UPPER ? c | 0x20 : c;

/**
 * Set when the statement holds something lexically invalid (an unterminated quote or comment, a number with junk
 * after it): its key then differs from every valid statement's, so the cache never answers for it with the
 * classification of a statement that parses — the parser reports the error, as `pgroute explain` does.
 */
let invalid = false;

/** Index just past the string literal whose opening quote is at `i`; `backslash` for E'' strings. */
function skipString(s: Uint8Array, i: number, n: number, backslash: boolean): number {
  i++;
  while (i < n) {
    const c = s[i]!;
    if (backslash && c === 0x5c) {
      i += 2;
      continue;
    }
    if (c === 0x27) {
      if (i + 1 < n && s[i + 1] === 0x27) {
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
function dollarTag(s: Uint8Array, i: number, n: number): number {
  let j = i + 1;
  if (j >= n) return 0;
  const first = s[j]!;
  if (first === 0x24) return 2;
  if (!(cls[first]! & IDENT_START)) return 0;
  j++;
  while (j < n) {
    const c = s[j]!;
    if (c === 0x24) return j - i + 1;
    if (!(cls[c]! & IDENT)) return 0;
    j++;
  }
  return 0;
}

/** Where the dollar quote whose tag (`t` bytes) starts at `i` ends: the index past its closing tag, or -1. */
function closingTag(s: Uint8Array, i: number, t: number, n: number): number {
  const last = n - t;
  for (let j = i + t; j <= last; j++) {
    if (s[j] !== 0x24) continue;
    let m = 1;
    while (m < t && s[j + m] === s[i + m]) m++;
    if (m === t) return j + t;
  }
  return -1;
}

/**
 * Output buffer for the shape, reused across calls (the lexer is synchronous). A key is never longer than its
 * statement — every byte of it stands for at least one of the statement's — plus the invalid marker, so one size
 * check per call is enough.
 */
let out = Buffer.alloc(4096);
/** A string statement's UTF-8 bytes, reused likewise. */
let input = Buffer.alloc(4096);
/**
 * The reused buffers are kept up to this size; a larger statement (a Query may be up to `max_message_size`) gets
 * buffers of its own for that call, so one huge statement does not pin its size in memory for good.
 */
const KEEP_BUFFER = 1 << 20;
/** Keys longer than this are not interned (the table's memory stays bounded by entries, not by their size). */
const MAX_INTERNED = 8192;

const Q = 0x3f; // '?'

/**
 * A numeric constant as Postgres's scanner accepts it (scan.l: decinteger, hex/oct/bin integers, numeric, real;
 * `_` separators). Anything else the lexer took as one number — `1abc`, `1.2.3`, `1e`, `0x` — is "trailing junk"
 * or a syntax error to the server.
 */
const NUMBER = /^(?:(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?|0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+)$/;

const NO_COMMENTS: readonly string[] = Object.freeze([]);

/** Comment bounds of the statement being lexed, as [from, to) pairs: decoded only when there are any. */
const commentAt: number[] = [];

/**
 * Lexes `sql[from, to)` (UTF-8) into `out`; returns the key's length. One pass; a cache hit on a long statement
 * is mostly this loop, so it writes straight into the output buffer (locals, no helper calls for the common
 * tokens: words, spaces, punctuation).
 */
function lex(sql: Uint8Array, from: number, n: number): number {
  if (out.length < n - from + 2) out = Buffer.alloc(Math.max(n - from + 2, out.length * 2));
  const o = out;
  let l = 0;
  /** Whether a space must separate the next token from the previous one. */
  let sp = false;
  invalid = false;
  commentAt.length = 0;
  let i = from;
  while (i < n) {
    const c = sql[i]!;
    const k = cls[c]!;
    if (k & SPACE) {
      sp = true;
      i++;
      while (i < n && cls[sql[i]!]! & SPACE) i++;
      continue;
    }
    if (k & IDENT_START) {
      // A word, lowered as it is copied, after the space before it (none at the start).
      if (sp) {
        sp = false;
        if (l > 0) o[l++] = 0x20;
      }
      const start = l;
      o[l++] = lower[c]!;
      let j = i + 1;
      while (j < n) {
        const d = sql[j]!;
        if (!(cls[d]! & IDENT)) break;
        o[l++] = lower[d]!;
        j++;
      }
      // E'…', B'…', X'…', N'…' and U&'…' are literals with a prefix.
      if (j - i === 1 && j < n) {
        const after = sql[j]!;
        const p = c | 0x20;
        if (after === 0x27 && (p === 0x65 || p === 0x62 || p === 0x78 || p === 0x6e)) {
          l = start;
          o[l++] = Q;
          i = skipString(sql, j, n, p === 0x65);
          continue;
        }
        if (p === 0x75 && after === 0x26 && j + 1 < n && sql[j + 1] === 0x27) {
          l = start;
          o[l++] = Q;
          i = skipString(sql, j + 1, n, false);
          continue;
        }
      }
      i = j;
      continue;
    }
    const next = i + 1 < n ? sql[i + 1]! : 0;
    // The space before any other token; a comment only adds to it (handled below).
    if (sp && !((c === 0x2d && next === 0x2d) || (c === 0x2f && next === 0x2a))) {
      sp = false;
      if (l > 0) o[l++] = 0x20;
    }
    // -- line comment, which ends at a carriage return as well as a newline (scan.l: non_newline is [^\n\r]);
    // reading past a lone \r would hide the code after it from the key.
    if (c === 0x2d && next === 0x2d) {
      let end = i + 2;
      while (end < n && sql[end] !== 0x0a && sql[end] !== 0x0d) end++;
      commentAt.push(i + 2, end);
      i = end;
      sp = true;
      continue;
    }
    // /* block comment */, which nests in Postgres
    if (c === 0x2f && next === 0x2a) {
      let depth = 1;
      let j = i + 2;
      while (j < n && depth > 0) {
        const d = sql[j]!;
        if (d === 0x2f && j + 1 < n && sql[j + 1] === 0x2a) {
          depth++;
          j += 2;
        } else if (d === 0x2a && j + 1 < n && sql[j + 1] === 0x2f) {
          depth--;
          j += 2;
        } else j++;
      }
      commentAt.push(i + 2, depth === 0 ? j - 2 : n);
      if (depth > 0) invalid = true;
      i = j;
      sp = true;
      continue;
    }
    if (c === 0x27) {
      o[l++] = Q;
      i = skipString(sql, i, n, false);
      continue;
    }
    if (c === 0x22) {
      // "quoted identifier": kept verbatim, case and all ("" escapes a quote).
      let j = i + 1;
      let closed = false;
      while (j < n) {
        if (sql[j] === 0x22) {
          if (j + 1 < n && sql[j + 1] === 0x22) {
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
      for (let m = i; m < j; m++) o[l++] = sql[m]!;
      i = j;
      continue;
    }
    if (c === 0x24) {
      if (cls[next]! & DIGIT) {
        // $1: a parameter, part of the shape.
        o[l++] = c;
        let j = i + 1;
        while (j < n && cls[sql[j]!]! & DIGIT) o[l++] = sql[j++]!;
        i = j;
        continue;
      }
      const t = dollarTag(sql, i, n);
      if (t > 0) {
        const end = closingTag(sql, i, t, n);
        if (end < 0) invalid = true;
        o[l++] = Q;
        i = end < 0 ? n : end;
        continue;
      }
      o[l++] = c;
      i++;
      continue;
    }
    if (k & DIGIT || (c === 0x2e && cls[next]! & DIGIT)) {
      // Numeric constant: digits, '.', exponent, hex/octal/binary prefixes and '_' separators (PG 16+).
      let j = i + 1;
      // In 0x1e+5 the `e` is a hex digit and `+` an operator: only a decimal number has an exponent sign.
      const hex = c === 0x30 && (next | 0x20) === 0x78;
      let plain = k === (IDENT | DIGIT);
      while (j < n) {
        const d = sql[j]!;
        const kd = cls[d]!;
        if (kd & IDENT || d === 0x2e) {
          if (kd !== (IDENT | DIGIT)) plain = false;
          j++;
        } else if ((d === 0x2b || d === 0x2d) && !hex && (sql[j - 1]! | 0x20) === 0x65) {
          plain = false;
          j++;
        } else break;
      }
      if (!plain && !NUMBER.test(Buffer.from(sql.buffer, sql.byteOffset + i, j - i).toString("latin1"))) invalid = true;
      o[l++] = Q;
      i = j;
      continue;
    }
    // Operators and punctuation, one byte at a time.
    o[l++] = c;
    i++;
  }
  // NUL cannot occur in a query's text (the protocol sends it as a C string), so no valid statement has this key.
  if (invalid) o[l++] = 0;
  return l;
}

/** Keys up to this many bytes are hashed (FNV-1a) and compared in JavaScript, longer ones natively (CRC-32). */
const SHORT_KEY = 64;
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** Whether `bytes` is the key `out[0, l)` (`view` is that key as a view, for long keys). */
function sameKey(bytes: Buffer, l: number, view: Buffer | undefined): boolean {
  if (bytes.length !== l) return false;
  if (view !== undefined) return bytes.equals(view);
  for (let i = 0; i < l; i++) if (bytes[i] !== out[i]) return false;
  return true;
}

/** A shape met before, by its key's bytes; `next` chains keys whose hashes collide. */
interface Interned {
  bytes: Buffer;
  shape: Shape;
  next: Interned | undefined;
}

/**
 * Interned shapes, bounded in bytes: two generations, the older dropped when the young one fills (a shape in
 * steady use is promoted on its next hit), so memory stays within a few MB whatever clients send.
 */
class Interner {
  private young = new Map<number, Interned>();
  private old = new Map<number, Interned>();
  private youngBytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** The shape whose key is `out[0, l)`. */
  shape(l: number): Shape {
    if (l > MAX_INTERNED) return { key: out.toString("utf8", 0, l), comments: NO_COMMENTS };
    // A short key is hashed and compared in JavaScript (cheaper than two calls into the runtime and a view);
    // a long one natively.
    let view: Buffer | undefined;
    let h = FNV_OFFSET;
    if (l <= SHORT_KEY) for (let i = 0; i < l; i++) h = Math.imul(h ^ out[i]!, FNV_PRIME);
    else h = Bun.hash.crc32((view = out.subarray(0, l)));
    for (let e = this.young.get(h); e !== undefined; e = e.next) if (sameKey(e.bytes, l, view)) return e.shape;
    for (let e = this.old.get(h); e !== undefined; e = e.next) if (sameKey(e.bytes, l, view)) return this.add(h, e.bytes, e.shape);
    const bytes = Buffer.from(out.subarray(0, l));
    return this.add(h, bytes, { key: bytes.toString("utf8"), comments: NO_COMMENTS });
  }

  private add(h: number, bytes: Buffer, shape: Shape): Shape {
    if (this.youngBytes >= this.maxBytes) {
      this.old = this.young;
      this.young = new Map();
      this.youngBytes = 0;
    }
    // Key bytes plus the key string (one byte a character for ASCII) and the entry itself.
    this.youngBytes += 2 * bytes.length + 64;
    this.young.set(h, { bytes, shape, next: this.young.get(h) });
    return shape;
  }
}

const interned = new Interner(2 << 20);

function shapeBytes(sql: Uint8Array, from: number, to: number): Shape {
  const l = lex(sql, from, to);
  const sh = interned.shape(l);
  if (out.length > KEEP_BUFFER) out = Buffer.alloc(4096);
  if (commentAt.length === 0) return sh;
  const comments: string[] = [];
  const b = Buffer.isBuffer(sql) ? sql : Buffer.from(sql.buffer, sql.byteOffset, sql.byteLength);
  for (let m = 0; m < commentAt.length; m += 2) comments.push(b.toString("utf8", commentAt[m], commentAt[m + 1]));
  return { key: sh.key, comments };
}

/** Reduces `sql` to its {@link Shape}. The result may be shared: callers must not change it. */
export function shape(sql: string): Shape {
  // UTF-8 takes at most 3 bytes per UTF-16 code unit.
  if (3 * sql.length > KEEP_BUFFER) {
    const bytes = Buffer.from(sql, "utf8");
    return shapeBytes(bytes, 0, bytes.length);
  }
  if (input.length < 3 * sql.length) input = Buffer.alloc(Math.min(KEEP_BUFFER, Math.max(3 * sql.length, 2 * input.length)));
  const n = input.write(sql, 0, "utf8");
  return shapeBytes(input, 0, n);
}

/**
 * Statements at least this long are remembered by their exact text: hashing a string costs less than lexing it,
 * so a statement sent again verbatim (an ORM's parameterized query, a prepared statement's text at every Execute)
 * skips the lexer. Shorter ones are cheap to lex, and remembering each distinct one (literals inlined) would only
 * churn the cache.
 */
const REMEMBER_FROM = 200;
/** Beyond this a statement is not remembered: the cache stays within a few MB whatever clients send. */
const REMEMBER_UP_TO = 8192;
const remembered = new HotCache<string, Shape>(512);

/**
 * {@link shape}, remembered for long statements by their exact text. `utf8[from, to)`, when given, is the
 * statement's own bytes (a Query frame's), which spares encoding it again. The result is shared: callers must
 * not change it.
 */
export function shapeOf(sql: string, utf8?: Uint8Array, from = 0, to = utf8?.length ?? 0): Shape {
  const remember = sql.length >= REMEMBER_FROM && sql.length <= REMEMBER_UP_TO;
  let s = remember ? remembered.get(sql) : undefined;
  if (s === undefined) {
    s = utf8 === undefined ? shape(sql) : shapeBytes(utf8, from, to);
    if (remember) remembered.set(sql, s);
  }
  return s;
}
