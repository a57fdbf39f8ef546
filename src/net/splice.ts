/**
 * Forwards a chunk of protocol bytes while letting a {@link FrameSink} keep, cut or add whole messages. Untouched
 * stretches go out as slices of the original chunk (no copy); a kept message that straddled chunks (and was
 * therefore held back by the reader) is written out rebuilt from its gathered body.
 */
import { MessageWriter } from "../wire/encode.ts";

export type Out = (buf: Uint8Array, start: number, end: number) => void;

export class Splice {
  private chunk: Uint8Array = new Uint8Array(0);
  private from = 0;

  constructor(private readonly out: Out) {}

  begin(chunk: Uint8Array): void {
    this.chunk = chunk;
    this.from = 0;
  }

  /** Forwards everything not yet forwarded up to offset `to`. */
  flush(to: number): void {
    if (to <= this.from) return;
    this.out(this.chunk, this.from, to);
    this.from = to;
  }

  /** The message at [msgStart, next) is not forwarded. `msgStart` -1: it began in an earlier (held) chunk. */
  cut(msgStart: number, next: number): void {
    if (msgStart >= 0) this.flush(msgStart);
    this.from = next;
  }

  /** A message that straddled chunks (msgStart -1) is forwarded, rebuilt from its gathered body. */
  keepGathered(type: number, body: Uint8Array, start: number, end: number, next: number): void {
    const m = new MessageWriter(end - start + 5).begin(type).bytes(body.subarray(start, end)).end().done();
    this.out(m, 0, m.length);
    this.from = next;
  }

  /** Writes `bytes` right after everything up to offset `at` of the chunk. */
  inject(bytes: Uint8Array, at: number): void {
    this.flush(at);
    this.out(bytes, 0, bytes.length);
  }

  /** Forwards the rest of the chunk up to `heldFrom` (bytes of an incomplete wanted message stay back). */
  end(heldFrom: number): void {
    this.flush(heldFrom);
  }
}
