/**
 * Encoders for the messages pgroute itself writes. Backend messages (to clients) are built here; frontend
 * messages to servers come from pg-protocol's `serialize`, except the startup packet, whose pg-protocol encoder
 * appends `client_encoding=UTF8` and would override what the client asked for.
 */
import { Auth, B, ErrorField, StartupCode } from "./codes.ts";

const enc = new TextEncoder();

/** Writes a big-endian Int32 at `at`. */
export function putInt32(buf: Uint8Array, at: number, v: number): void {
  buf[at] = (v >>> 24) & 0xff;
  buf[at + 1] = (v >>> 16) & 0xff;
  buf[at + 2] = (v >>> 8) & 0xff;
  buf[at + 3] = v & 0xff;
}

/** A growable byte builder for one or more messages. */
export class MessageWriter {
  private buf: Uint8Array;
  private pos = 0;
  private start = -1;

  constructor(size = 256) {
    this.buf = new Uint8Array(size);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  /** Starts a typed message; `type` 0 starts an untyped one (startup packets). */
  begin(type: number): this {
    this.ensure(5);
    if (type !== 0) this.buf[this.pos++] = type;
    this.start = this.pos;
    this.pos += 4;
    return this;
  }

  int8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v;
    return this;
  }

  int16(v: number): this {
    this.ensure(2);
    // Big-endian by hand: a DataView would need the buffer object, which is not free in Bun.
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  int32(v: number): this {
    this.ensure(4);
    putInt32(this.buf, this.pos, v);
    this.pos += 4;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** A NUL-terminated string (protocol "String"). */
  cstring(s: string): this {
    const b = enc.encode(s);
    this.ensure(b.length + 1);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    this.buf[this.pos++] = 0;
    return this;
  }

  /** Closes the message begun last by writing its length. */
  end(): this {
    putInt32(this.buf, this.start, this.pos - this.start);
    this.start = -1;
    return this;
  }

  /** The bytes written so far (a copy, so the writer may be reused). */
  done(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

/** Fields of an ErrorResponse or NoticeResponse pgroute produces. */
export interface ErrorFields {
  severity: "ERROR" | "FATAL" | "PANIC" | "WARNING" | "NOTICE" | "LOG" | "INFO" | "DEBUG";
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** Appends an ErrorResponse ('E') or, with `notice`, a NoticeResponse ('N'). */
export function writeError(w: MessageWriter, f: ErrorFields, notice = false): MessageWriter {
  w.begin(notice ? B.NoticeResponse : B.ErrorResponse);
  w.int8(ErrorField.Severity).cstring(f.severity);
  w.int8(ErrorField.SeverityNonLocalized).cstring(f.severity);
  w.int8(ErrorField.Code).cstring(f.code);
  w.int8(ErrorField.Message).cstring(f.message);
  if (f.detail) w.int8(ErrorField.Detail).cstring(f.detail);
  if (f.hint) w.int8(ErrorField.Hint).cstring(f.hint);
  return w.int8(0).end();
}

export function errorResponse(f: ErrorFields): Uint8Array {
  return writeError(new MessageWriter(), f).done();
}

/** ReadyForQuery ('Z') with a transaction status byte. */
export function readyForQuery(status: number): Uint8Array {
  return Uint8Array.of(B.ReadyForQuery, 0, 0, 0, 5, status);
}

export function authenticationOk(): Uint8Array {
  return Uint8Array.of(B.Authentication, 0, 0, 0, 8, 0, 0, 0, Auth.Ok);
}

export function authenticationMD5(salt: Uint8Array): Uint8Array {
  return new MessageWriter(16).begin(B.Authentication).int32(Auth.MD5Password).bytes(salt).end().done();
}

export function authenticationSASL(mechanisms: readonly string[]): Uint8Array {
  const w = new MessageWriter(64).begin(B.Authentication).int32(Auth.SASL);
  for (const m of mechanisms) w.cstring(m);
  return w.int8(0).end().done();
}

export function authenticationSASLContinue(data: string): Uint8Array {
  return new MessageWriter(128).begin(B.Authentication).int32(Auth.SASLContinue).bytes(enc.encode(data)).end().done();
}

export function authenticationSASLFinal(data: string): Uint8Array {
  return new MessageWriter(128).begin(B.Authentication).int32(Auth.SASLFinal).bytes(enc.encode(data)).end().done();
}

export function parameterStatus(name: string, value: string): Uint8Array {
  return new MessageWriter(64).begin(B.ParameterStatus).cstring(name).cstring(value).end().done();
}

export function backendKeyData(pid: number, secret: number): Uint8Array {
  return new MessageWriter(16).begin(B.BackendKeyData).int32(pid).int32(secret).end().done();
}

/** NegotiateProtocolVersion ('v'): the newest minor version we speak and the options we did not recognise. */
export function negotiateProtocolVersion(minor: number, unrecognized: readonly string[]): Uint8Array {
  const w = new MessageWriter(64).begin(B.NegotiateProtocolVersion).int32((3 << 16) | minor);
  w.int32(unrecognized.length);
  for (const o of unrecognized) w.cstring(o);
  return w.end().done();
}

/** A protocol-3.0 StartupMessage carrying exactly the given parameters, in order. */
export function startupMessage(params: ReadonlyMap<string, string>): Uint8Array {
  const w = new MessageWriter(256).begin(0).int32(StartupCode.Protocol30);
  for (const [k, v] of params) w.cstring(k).cstring(v);
  return w.int8(0).end().done();
}
