/**
 * The untyped packets a client sends before its first typed message (PostgreSQL docs, "Message Formats":
 * StartupMessage, SSLRequest, GSSENCRequest, CancelRequest). Pure: bytes in, a decoded view out.
 */
import { StartupCode } from "./codes.ts";

/** Postgres's own limit (MAX_STARTUP_PACKET_LENGTH); anything longer is refused before it is read. */
export const MAX_STARTUP_LENGTH = 10_000;

export type StartupPacket =
  | { kind: "ssl" }
  | { kind: "gssenc" }
  | { kind: "cancel"; pid: number; secret: number }
  | { kind: "startup"; major: number; minor: number; params: Map<string, string>; unrecognized: string[] };

/** A startup packet pgroute refuses: reported to the client as FATAL 08P01 (protocol violation). */
export class StartupError extends Error {
  override readonly name = "StartupError";
}

/**
 * Length of the startup packet at the head of `buf`, once 4 bytes are there; validated against the limits so a
 * caller never waits for (or allocates) a length a client merely claimed.
 */
export function startupLength(buf: Uint8Array): number | null {
  if (buf.length < 4) return null;
  const len = ((buf[0]! << 24) | (buf[1]! << 16) | (buf[2]! << 8) | buf[3]!) >>> 0;
  if (len < 8) throw new StartupError(`invalid length of startup packet: ${len}`);
  if (len > MAX_STARTUP_LENGTH) throw new StartupError(`invalid length of startup packet: ${len}`);
  return len;
}

const dec = new TextDecoder("utf-8", { fatal: false });

/** Decodes one complete startup-phase packet (`buf` holds exactly `startupLength(buf)` bytes). */
export function parseStartup(buf: Uint8Array): StartupPacket {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const code = view.getInt32(4) >>> 0;
  switch (code) {
    case StartupCode.SSLRequest:
      if (buf.length !== 8) throw new StartupError("invalid length of SSLRequest");
      return { kind: "ssl" };
    case StartupCode.GSSENCRequest:
      if (buf.length !== 8) throw new StartupError("invalid length of GSSENCRequest");
      return { kind: "gssenc" };
    case StartupCode.CancelRequest:
      if (buf.length !== 16) throw new StartupError("invalid length of CancelRequest");
      return { kind: "cancel", pid: view.getInt32(8), secret: view.getInt32(12) };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) {
    // Postgres's own wording; the SQLSTATE is 08P01 as pgroute's specification asks (Postgres itself says 0A000):
    // to a proxy, a version it cannot frame is a protocol violation like any other.
    throw new StartupError(`unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`);
  }
  const params = new Map<string, string>();
  const unrecognized: string[] = [];
  let i = 8;
  for (;;) {
    const keyEnd = buf.indexOf(0, i);
    if (keyEnd < 0) throw new StartupError("invalid startup packet layout: expected terminator as last byte");
    if (keyEnd === i) break; // the final empty name ends the list
    const valEnd = buf.indexOf(0, keyEnd + 1);
    if (valEnd < 0) throw new StartupError("invalid startup packet layout: expected terminator as last byte");
    const key = dec.decode(buf.subarray(i, keyEnd));
    const value = dec.decode(buf.subarray(keyEnd + 1, valEnd));
    // Protocol-option names start with "_pq_."; we implement none of them, so they are reported back.
    if (key.startsWith("_pq_.")) unrecognized.push(key);
    else params.set(key, value);
    i = valEnd + 1;
  }
  if (i !== buf.length - 1) throw new StartupError("invalid startup packet layout: expected terminator as last byte");
  return { kind: "startup", major, minor, params, unrecognized };
}
