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
