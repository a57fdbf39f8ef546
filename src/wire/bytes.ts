/** Byte helpers shared by the codec and the relays. */

/** The parts joined into one buffer (the part itself when there is only one). */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * A real copy of `buf[start..end)`. (`Buffer#slice`, unlike `Uint8Array#slice`, shares memory: Bun hands socket
 * data over as Buffers, so `.slice()` on them is only a view.)
 */
export function copyBytes(buf: Uint8Array, start = 0, end = buf.length): Uint8Array {
  return Uint8Array.prototype.slice.call(buf, start, end);
}
