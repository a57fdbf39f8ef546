/**
 * Decoders for the backend messages pgroute looks inside (PostgreSQL docs, "Message Formats"). Each takes a
 * message body (type byte and length already stripped) as `buf[start..end)`.
 */
import { ErrorField } from "./codes.ts";

const dec = new TextDecoder();

export class DecodeError extends Error {
  override readonly name = "DecodeError";
}

function cstringAt(buf: Uint8Array, at: number, end: number): [string, number] {
  const z = buf.indexOf(0, at);
  if (z < 0 || z >= end) throw new DecodeError("missing string terminator");
  return [dec.decode(buf.subarray(at, z)), z + 1];
}

/** Fields of an ErrorResponse or NoticeResponse, keyed by their field letter. */
export interface ErrorInfo {
  severity: string;
  code: string;
  message: string;
  fields: Map<number, string>;
}

/**
 * An ErrorResponse from a server, checked: every ErrorResponse a real server sends carries a SQLSTATE, so one
 * without is a broken or hostile peer (the caller drops that server connection).
 */
export function decodeServerError(buf: Uint8Array, start: number, end: number): ErrorInfo {
  const e = decodeError(buf, start, end);
  if (!e.fields.has(ErrorField.Code)) throw new DecodeError(`ErrorResponse without a SQLSTATE: ${e.message}`);
  return e;
}

export function decodeError(buf: Uint8Array, start: number, end: number): ErrorInfo {
  const fields = new Map<number, string>();
  let i = start;
  while (i < end && buf[i] !== 0) {
    const f = buf[i]!;
    const [v, next] = cstringAt(buf, i + 1, end);
    fields.set(f, v);
    i = next;
  }
  return {
    severity: fields.get(ErrorField.SeverityNonLocalized) ?? fields.get(ErrorField.Severity) ?? "ERROR",
    // A server that omits the SQLSTATE still gets a well-formed one at our edge.
    code: fields.get(ErrorField.Code) ?? "XX000",
    message: fields.get(ErrorField.Message) ?? "",
    fields,
  };
}

export function decodeParameterStatus(buf: Uint8Array, start: number, end: number): [string, string] {
  const [name, next] = cstringAt(buf, start, end);
  const [value] = cstringAt(buf, next, end);
  return [name, value];
}

export function decodeBackendKeyData(buf: Uint8Array, start: number, end: number): { pid: number; secret: number } {
  if (end - start < 8) throw new DecodeError("BackendKeyData too short");
  const v = new DataView(buf.buffer, buf.byteOffset + start, end - start);
  return { pid: v.getInt32(0), secret: v.getInt32(4) };
}

/** An Authentication ('R') request: its subtype and the bytes after it. */
export function decodeAuthentication(buf: Uint8Array, start: number, end: number): { kind: number; data: Uint8Array } {
  if (end - start < 4) throw new DecodeError("Authentication message too short");
  const v = new DataView(buf.buffer, buf.byteOffset + start, 4);
  return { kind: v.getInt32(0), data: buf.subarray(start + 4, end) };
}

/** SASL mechanism names offered in AuthenticationSASL. */
export function decodeSaslMechanisms(data: Uint8Array): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < data.length && data[i] !== 0) {
    const [m, next] = cstringAt(data, i, data.length);
    out.push(m);
    i = next;
  }
  return out;
}
