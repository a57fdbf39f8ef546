/**
 * Streaming frame reader for typed protocol messages (`Byte1 type, Int32 length, body`), PostgreSQL docs
 * "Message Formats". It walks message headers across arbitrarily split chunks without copying the bytes it only
 * steps over, so the relay can forward chunks as they came. Only messages whose type was asked for are handed
 * to the sink with their body; when such a body straddles chunks it is gathered into a buffer of its own.
 *
 * The length is authoritative: a length below 4 or above the configured maximum is a protocol violation, decided
 * from the header before anything is allocated.
 */

/** Receives the messages a {@link FrameReader} was asked to look at. */
export interface FrameSink {
  /**
   * One complete message. `body` is valid only during the call; `buf[start..end)` is the body (type and length
   * excluded). `next` is the offset in the chunk just past this message.
   */
  onFrame(type: number, body: Uint8Array, start: number, end: number, next: number): void;
}

export class FrameError extends Error {
  override readonly name = "FrameError";
}

const HEADER = 5;

export class FrameReader {
  /** 1 for each message type whose body the sink wants. */
  private readonly wants = new Uint8Array(256);
  /** Header bytes of a message whose header straddles chunks. */
  private readonly head = new Uint8Array(HEADER);
  private headLen = 0;
  /** Body bytes still to come of the message in progress (stepped over or gathered). */
  private remaining = 0;
  /** Type and gather buffer of the message in progress, when it is wanted. */
  private type = 0;
  /**
   * Pieces of a wanted body that straddles chunks. Copied as they arrive, so memory follows the bytes received,
   * never the length a peer declared.
   */
  private gather: Uint8Array[] | null = null;

  constructor(
    wanted: readonly number[],
    private maxLength: number,
  ) {
    for (const t of wanted) this.wants[t] = 1;
  }

  /** Changes the largest accepted message (length field included). */
  setMaxLength(max: number): void {
    this.maxLength = max;
  }

  /** Asks for (or stops asking for) the bodies of one message type. */
  want(type: number, on = true): void {
    this.wants[type] = on ? 1 : 0;
  }

  /** True when no partial message is pending, i.e. the stream is at a message boundary. */
  get atBoundary(): boolean {
    return this.headLen === 0 && this.remaining === 0;
  }

  /**
   * Walks `chunk` from `from`. Throws {@link FrameError} on an invalid length. Stops early, returning the offset
   * reached, when the sink sets `stop` via {@link FrameReader.stop}; otherwise returns `chunk.length`.
   */
  feed(chunk: Uint8Array, sink: FrameSink, from = 0): number {
    let i = from;
    const n = chunk.length;
    this.stopped = false;
    while (i < n) {
      if (this.remaining > 0) {
        // Inside a message body that began in an earlier chunk.
        const take = Math.min(this.remaining, n - i);
        if (this.gather) this.gather.push(chunk.slice(i, i + take));
        this.remaining -= take;
        i += take;
        if (this.remaining === 0 && this.gather) {
          const body = concat(this.gather);
          this.gather = null;
          sink.onFrame(this.type, body, 0, body.length, i);
          if (this.stopped) return i;
        }
        continue;
      }
      let type: number;
      let len: number;
      if (this.headLen === 0 && n - i >= HEADER) {
        type = chunk[i]!;
        len = ((chunk[i + 1]! << 24) | (chunk[i + 2]! << 16) | (chunk[i + 3]! << 8) | chunk[i + 4]!) >>> 0;
        i += HEADER;
      } else {
        // The header straddles chunks: collect its five bytes first.
        const take = Math.min(HEADER - this.headLen, n - i);
        this.head.set(chunk.subarray(i, i + take), this.headLen);
        this.headLen += take;
        i += take;
        if (this.headLen < HEADER) break;
        this.headLen = 0;
        const h = this.head;
        type = h[0]!;
        len = ((h[1]! << 24) | (h[2]! << 16) | (h[3]! << 8) | h[4]!) >>> 0;
      }
      if (len < 4 || len > this.maxLength) {
        throw new FrameError(
          len < 4
            ? `invalid message length ${len} for message type "${String.fromCharCode(type)}"`
            : `message of type "${String.fromCharCode(type)}" is ${len} bytes, over the limit of ${this.maxLength}`,
        );
      }
      const body = len - 4;
      if (n - i >= body) {
        const end = i + body;
        if (this.wants[type] === 1) {
          sink.onFrame(type, chunk, i, end, end);
          i = end;
          if (this.stopped) return i;
        } else {
          i = end;
        }
        continue;
      }
      // The body continues in a later chunk.
      this.type = type;
      this.remaining = body - (n - i);
      if (this.wants[type] === 1) this.gather = [chunk.slice(i)];
      i = n;
    }
    return n;
  }

  private stopped = false;

  /** Called by a sink inside `onFrame` to make `feed` return right after the current message. */
  stop(): void {
    this.stopped = true;
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
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
