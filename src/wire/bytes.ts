/** Byte helpers shared by the codec and the relays. */

/** The parts joined into one buffer (the part itself when there is only one). */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    copyInto(out, o, p, 0, p.length);
    o += p.length;
  }
  return out;
}

/** Parts up to this many bytes are copied in JavaScript: cheaper than a call into the runtime for a few bytes. */
const SHORT_COPY = 64;

/** Copies `src[from, to)` into `dst` at `at`. */
export function copyInto(dst: Uint8Array, at: number, src: Uint8Array, from: number, to: number): void {
  if (to - from <= SHORT_COPY) for (let i = from; i < to; i++) dst[at++] = src[i]!;
  else dst.set(from === 0 && to === src.length ? src : src.subarray(from, to), at);
}

/**
 * A real copy of `buf[start..end)`. (`Buffer#slice`, unlike `Uint8Array#slice`, shares memory: Bun hands socket
 * data over as Buffers, so `.slice()` on them is only a view.)
 */
export function copyBytes(buf: Uint8Array, start = 0, end = buf.length): Uint8Array {
  return Uint8Array.prototype.slice.call(buf, start, end);
}
