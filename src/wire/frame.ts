/**
 * Streaming frame reader for typed protocol messages (`Byte1 type, Int32 length, body`), PostgreSQL docs
 * "Message Formats". It walks message headers across arbitrarily split chunks without copying the bytes it only
 * steps over, so the relay can forward chunks as they came. Only messages whose type was asked for are handed
 * to the sink with their body; when such a message straddles chunks it is gathered into a buffer of its own and
 * its bytes are reported as *held* (see {@link FrameReader.heldFrom}), so a relay forwards it whole or not at all.
 *
 * The length is authoritative: a length below 4 or above the configured maximum is a protocol violation, decided
 * from the header before anything is allocated.
 */
import { concatBytes } from "./bytes.ts";

/** Receives the messages a {@link FrameReader} was asked to look at. */
export interface FrameSink {
  /**
   * One complete message; `buf[start..end)` is its body (type and length excluded), valid only during the call.
   * `msgStart` is the offset of its type byte in the current chunk, or -1 when the message began in an earlier
   * chunk (then `buf` is a gathered copy of the body). `next` is the offset in the chunk just past it.
   */
  onFrame(type: number, buf: Uint8Array, start: number, end: number, msgStart: number, next: number): void;
  /**
   * A message wanted only through `wantAll` was stepped over because its body is larger than `wantAllMax` (decided
   * from its header, when the header is whole in one chunk).
   */
  onPassed?(type: number, bodyLength: number): void;
}

export class FrameError extends Error {
  override readonly name = "FrameError";
}

const HEADER = 5;

export class FrameReader {
  /** 1 for each message type whose body the sink wants. */
  private readonly wants = new Uint8Array(256);
  /** When set, every message is wanted. */
  wantAll = false;
  /**
   * The largest body `wantAll` gathers (messages asked for by type are always gathered): an observer that only
   * looks (mirroring's tally) need not hold a huge row whole. A header split across chunks is wanted before its
   * length is known, so such a message is gathered whatever its size.
   */
  wantAllMax = Number.POSITIVE_INFINITY;
  /** Header bytes of a message whose header straddles chunks. */
  private readonly head = new Uint8Array(HEADER);
  private headLen = 0;
  /** Whether the message whose header is partial is wanted (decided on its first byte). */
  private headWanted = false;
  /** Body bytes still to come of the message in progress (stepped over or gathered). */
  private remaining = 0;
  /** Type of the message in progress. */
  private type = 0;
  /**
   * Pieces of a wanted body that straddles chunks. Copied as they arrive, so memory follows the bytes received,
   * never the length a peer declared.
   */
  private gather: Uint8Array[] | null = null;
  private stopped = false;
  /** 1 for each message type refused outright (see {@link FrameReader.refuse}), or null for none. */
  private refused: Uint8Array | null = null;
  private describeRefused: (type: number) => string = (t) => `unexpected message type ${t}`;
  /**
   * After `feed`: the offset in that chunk from which its bytes belong to a wanted message not yet complete
   * (0 when the whole chunk does), or the chunk's length when none do.
   */
  heldFrom = 0;

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

  /**
   * Refuses messages of the types marked 1 in `types` (null: none) as soon as their header is read: `feed` throws a
   * {@link FrameError} with `describe(type)` before stepping over or gathering any of the body.
   */
  refuse(types: Uint8Array | null, describe?: (type: number) => string): void {
    this.refused = types;
    if (describe) this.describeRefused = describe;
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
   * True when the message in progress is a wanted one whose bytes so far were held back (reported by
   * {@link FrameReader.heldFrom}): a relay that forwards only up to `heldFrom` has then relayed whole messages.
   */
  get holding(): boolean {
    return this.gather !== null || (this.headLen > 0 && this.headWanted);
  }

  /** Called by a sink inside `onFrame` to make `feed` return right after the current message. */
  stop(): void {
    this.stopped = true;
  }

  /**
   * Walks `chunk` from `from`. Throws {@link FrameError} on an invalid length. Returns the offset reached:
   * `chunk.length`, or earlier when the sink called {@link FrameReader.stop}.
   */
  feed(chunk: Uint8Array, sink: FrameSink, from = 0): number {
    let i = from;
    const n = chunk.length;
    this.stopped = false;
    // Bytes of a held message that began in an earlier chunk keep this whole chunk held until it completes.
    let held = this.gather !== null || (this.headLen > 0 && this.headWanted) ? 0 : -1;
    while (i < n) {
      if (this.remaining > 0) {
        // Inside a message body that began in an earlier chunk.
        const take = Math.min(this.remaining, n - i);
        if (this.gather) this.gather.push(chunk.slice(i, i + take));
        this.remaining -= take;
        i += take;
        if (this.remaining === 0 && this.gather) {
          const body = concatBytes(this.gather);
          this.gather = null;
          held = -1;
          sink.onFrame(this.type, body, 0, body.length, -1, i);
          if (this.stopped) return this.finish(i, held, n);
        }
        continue;
      }
      const msgStart = this.headLen === 0 ? i : -1;
      let type: number;
      let len: number;
      if (this.headLen === 0 && n - i >= HEADER) {
        type = chunk[i]!;
        len = ((chunk[i + 1]! << 24) | (chunk[i + 2]! << 16) | (chunk[i + 3]! << 8) | chunk[i + 4]!) >>> 0;
        i += HEADER;
      } else {
        // The header straddles chunks: collect its five bytes first.
        if (this.headLen === 0) {
          this.headWanted = this.wantAll || this.wants[chunk[i]!] === 1;
          if (this.headWanted) held = i;
        }
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
      if (this.refused !== null && this.refused[type] === 1) throw new FrameError(this.describeRefused(type));
      const body = len - 4;
      const wanted =
        msgStart >= 0 ? this.wants[type] === 1 || (this.wantAll && (body <= this.wantAllMax || this.passed(sink, type, body))) : this.headWanted;
      if (n - i >= body) {
        const end = i + body;
        i = end;
        if (wanted) {
          held = -1;
          if (msgStart >= 0) sink.onFrame(type, chunk, end - body, end, msgStart, end);
          else {
            // The header came from an earlier chunk; the body is all here.
            sink.onFrame(type, chunk.slice(end - body, end), 0, body, -1, end);
          }
          if (this.stopped) return this.finish(i, held, n);
        }
        continue;
      }
      // The body continues in a later chunk.
      this.type = type;
      this.remaining = body - (n - i);
      if (wanted) {
        this.gather = [chunk.slice(i)];
        if (held < 0) held = msgStart;
      }
      i = n;
    }
    return this.finish(i, held, n);
  }

  /** Tells the sink a message too large for `wantAll` goes by unseen; never wanted. */
  private passed(sink: FrameSink, type: number, body: number): false {
    sink.onPassed?.(type, body);
    return false;
  }

  private finish(i: number, held: number, n: number): number {
    this.heldFrom = held < 0 ? n : held;
    return i;
  }
}

/** A table for {@link FrameReader.refuse}: every message type except `known`. */
export function typesOtherThan(known: Iterable<number>): Uint8Array {
  const t = new Uint8Array(256).fill(1);
  for (const k of known) t[k] = 0;
  return t;
}

