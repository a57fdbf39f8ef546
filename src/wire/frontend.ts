/**
 * Decoders for the frontend messages pgroute looks inside during authentication (PostgreSQL docs, "Message
 * Formats": PasswordMessage, SASLInitialResponse, SASLResponse — all type 'p'). Bodies as `buf[start..end)`.
 */
import { DecodeError } from "./backend.ts";

const dec = new TextDecoder();

/** PasswordMessage: a NUL-terminated password (cleartext or md5 hash). */
export function decodePassword(buf: Uint8Array, start: number, end: number): string {
  const z = buf.indexOf(0, start);
  if (z < 0 || z !== end - 1) throw new DecodeError("invalid password packet");
  return dec.decode(buf.subarray(start, z));
}

/** SASLInitialResponse: mechanism name, then Int32 length (-1 for none) and that many bytes. */
export function decodeSaslInitial(buf: Uint8Array, start: number, end: number): { mechanism: string; data: string } {
  const z = buf.indexOf(0, start);
  if (z < 0 || z + 5 > end) throw new DecodeError("invalid SASLInitialResponse");
  const mechanism = dec.decode(buf.subarray(start, z));
  const len = new DataView(buf.buffer, buf.byteOffset + z + 1, 4).getInt32(0);
  const from = z + 5;
  if (len === -1) return { mechanism, data: "" };
  if (len < 0 || from + len !== end) throw new DecodeError("invalid SASLInitialResponse length");
  return { mechanism, data: dec.decode(buf.subarray(from, end)) };
}

/** SASLResponse: the rest of the message is the mechanism's data. */
export function decodeSaslResponse(buf: Uint8Array, start: number, end: number): string {
  return dec.decode(buf.subarray(start, end));
}

/** Offset just past the NUL-terminated string at `at` (the string is `buf[at..next-1)`). */
function cstringEnd(buf: Uint8Array, at: number, end: number): number {
  // Names (statements, portals) are short: a loop finds their NUL sooner than a call into the runtime.
  const near = Math.min(end, at + SHORT);
  for (let i = at; i < near; i++) if (buf[i] === 0) return i + 1;
  if (near === end) throw new DecodeError("missing string terminator");
  const z = buf.indexOf(0, near);
  if (z < 0 || z >= end) throw new DecodeError("missing string terminator");
  return z + 1;
}

/** Strings up to this many bytes are looked for by a loop and decoded through {@link names}. */
const SHORT = 64;

/**
 * Short strings met before (statement and portal names: a prepared statement's name comes with every Bind), by
 * their bytes: hashed (FNV-1a) and compared in JavaScript, which costs less than decoding them again. Bounded:
 * emptied when full.
 */
const names = new Map<number, { bytes: Uint8Array; text: string }>();
const NAMES_MAX = 4096;

function shortText(buf: Uint8Array, from: number, to: number): string {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) h = Math.imul(h ^ buf[i]!, 0x01000193);
  const known = names.get(h);
  if (known !== undefined && known.bytes.length === to - from) {
    const b = known.bytes;
    let i = 0;
    while (i < b.length && b[i] === buf[from + i]) i++;
    if (i === b.length) return known.text;
  }
  const text = decode(buf, from, to);
  if (names.size >= NAMES_MAX) names.clear();
  // A colliding name replaces the one before it (both stay correct: the bytes are compared).
  names.set(h, { bytes: buf.slice(from, to), text });
  return text;
}

function decode(buf: Uint8Array, from: number, to: number): string {
  return Buffer.isBuffer(buf) ? buf.toString("utf8", from, to) : dec.decode(buf.subarray(from, to));
}

/**
 * UTF-8 text of a name, `buf[from..to)`: mostly empty (the unnamed statement and portal) or met before, so the
 * common cases skip the runtime. Statement texts are decoded with {@link decode}.
 */
function utf8(buf: Uint8Array, from: number, to: number): string {
  if (to === from) return "";
  return to - from <= SHORT ? shortText(buf, from, to) : decode(buf, from, to);
}

/** Parse ('P'): statement name, query text, and the parameter type OIDs as raw bytes (Int16 count + Int32s). */
export function decodeParse(buf: Uint8Array, start: number, end: number): { name: string; query: string; types: Uint8Array } {
  const a = cstringEnd(buf, start, end);
  const name = utf8(buf, start, a - 1);
  const b = cstringEnd(buf, a, end);
  const query = b - 1 === a ? "" : decode(buf, a, b - 1);
  if (b + 2 > end) throw new DecodeError("Parse message too short");
  return { name, query, types: buf.subarray(b, end) };
}

/**
 * Bind ('B'): portal and statement names, the offset of the statement name (just past the portal's NUL) and
 * where the rest (formats, values) begins.
 */
export function decodeBind(buf: Uint8Array, start: number, end: number): { portal: string; statement: string; statementAt: number; rest: number } {
  const a = cstringEnd(buf, start, end);
  const b = cstringEnd(buf, a, end);
  return { portal: utf8(buf, start, a - 1), statement: utf8(buf, a, b - 1), statementAt: a, rest: b };
}

/** Describe ('D') and Close ('C'): 'S' for a statement or 'P' for a portal, and its name. */
export function decodeTarget(buf: Uint8Array, start: number, end: number): { kind: number; name: string } {
  if (end - start < 2) throw new DecodeError("message too short");
  return { kind: buf[start]!, name: utf8(buf, start + 1, cstringEnd(buf, start + 1, end) - 1) };
}

/** Execute ('E'): the portal name. */
export function decodeExecute(buf: Uint8Array, start: number, end: number): string {
  return utf8(buf, start, cstringEnd(buf, start, end) - 1);
}

/** Query ('Q'): the query string (`textEnd`: its {@link queryEnd}, when the caller has it already). */
export function decodeQuery(buf: Uint8Array, start: number, end: number, textEnd = queryEnd(buf, start, end)): string {
  return textEnd === start ? "" : decode(buf, start, textEnd);
}

/** Where a Query's text ends (its NUL): {@link decodeQuery} decodes `buf[start, queryEnd)`. */
export function queryEnd(buf: Uint8Array, start: number, end: number): number {
  // The query string is the whole body, NUL last: no search needed.
  if (end > start && buf[end - 1] === 0) return end - 1;
  return cstringEnd(buf, start, end) - 1;
}
