/**
 * Every byte sequence the tests send or expect comes from here: frontend messages via pg-protocol's serializer,
 * backend messages and raw/malformed frames via pgroute's own writer.
 */
import { serialize } from "pg-protocol";
import { StartupCode } from "../../src/wire/codes.ts";
import { MessageWriter, startupMessage } from "../../src/wire/encode.ts";

export { serialize };

/** A StartupMessage; `version` defaults to protocol 3.0. */
export function startup(params: Record<string, string>, version: number = StartupCode.Protocol30): Uint8Array {
  if (version === StartupCode.Protocol30) return startupMessage(new Map(Object.entries(params)));
  const w = new MessageWriter().begin(0).int32(version);
  for (const [k, v] of Object.entries(params)) w.cstring(k).cstring(v);
  return w.int8(0).end().done();
}

export function sslRequest(): Uint8Array {
  return new MessageWriter(8).begin(0).int32(StartupCode.SSLRequest).end().done();
}

export function gssencRequest(): Uint8Array {
  return new MessageWriter(8).begin(0).int32(StartupCode.GSSENCRequest).end().done();
}

export function cancelRequest(pid: number, secret: number): Uint8Array {
  return new Uint8Array(serialize.cancel(pid, secret));
}

/** A typed frame with an arbitrary body. */
export function frame(type: number | string, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const t = typeof type === "string" ? type.charCodeAt(0) : type;
  return new MessageWriter(body.length + 5).begin(t).bytes(body).end().done();
}

/** Just a header: type and a declared length, with no body behind it (lying lengths). */
export function header(type: number | string, length: number): Uint8Array {
  const t = typeof type === "string" ? type.charCodeAt(0) : type;
  const b = new Uint8Array(5);
  b[0] = t;
  new DataView(b.buffer).setUint32(1, length >>> 0);
  return b;
}

/** An untyped (startup-phase) packet with a declared length and arbitrary body. */
export function untyped(length: number, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(4 + body.length);
  new DataView(b.buffer).setUint32(0, length >>> 0);
  b.set(body, 4);
  return b;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export const query = (sql: string) => new Uint8Array(serialize.query(sql));
export const terminate = () => new Uint8Array(serialize.end());

// --- backend messages, for the fake server (tests/support/fake-server.ts) and hostile-peer tests ---------------

export {
  authenticationOk,
  authenticationSASL,
  authenticationSASLContinue,
  backendKeyData,
  errorResponse,
  parameterStatus,
  readyForQuery,
} from "../../src/wire/encode.ts";

/** RowDescription ('T') of text columns. */
export function rowDescription(...names: string[]): Uint8Array {
  const w = new MessageWriter(64).begin(0x54).int16(names.length);
  for (const n of names) w.cstring(n).int32(0).int16(0).int32(25).int16(-1).int32(-1).int16(0);
  return w.end().done();
}

/** DataRow ('D') of text values (null: SQL NULL). */
export function dataRowOf(...values: (string | null)[]): Uint8Array {
  const w = new MessageWriter(64).begin(0x44).int16(values.length);
  for (const v of values) {
    if (v === null) w.int32(-1);
    else {
      const b = new TextEncoder().encode(v);
      w.int32(b.length).bytes(b);
    }
  }
  return w.end().done();
}

/** CommandComplete ('C') with its tag. */
export const commandComplete = (tag: string) => new MessageWriter(32).begin(0x43).cstring(tag).end().done();

/**
 * An ErrorResponse ('E') with exactly the given fields, in order — e.g. without the SQLSTATE ('C') a real server
 * always sends: `rawError({ S: "ERROR", M: "no code" })`.
 */
export function rawError(fields: Record<string, string>): Uint8Array {
  const w = new MessageWriter(128).begin(0x45);
  for (const [k, v] of Object.entries(fields)) w.int8(k.charCodeAt(0)).cstring(v);
  return w.int8(0).end().done();
}

/** A PasswordMessage ('p') carrying `text` (cleartext or md5 answer). */
export const passwordMessage = (text: string) => new Uint8Array(serialize.password(text));

/** Deterministic pseudo-random bytes (xorshift32), so a failing "random garbage" test can be replayed. */
export function pseudoRandomBytes(n: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
