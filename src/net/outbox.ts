/**
 * Write-side flow control for a Bun socket. Bun's `write` is unbuffered: it returns how many bytes the kernel
 * took. The rest is queued here (copied, since the caller's buffer may be reused) and written on `drain`; while
 * anything is queued the outbox is "blocked", and its owner pauses whatever feeds it so memory stays bounded.
 */
import type { Socket } from "bun";
import { concatBytes, copyBytes } from "../wire/bytes.ts";

export interface OutboxOwner {
  /** The queue went from empty to non-empty: stop reading from the source that feeds this socket. */
  onBlocked(): void;
  /** Everything queued has been written: the source may be read again. */
  onUnblocked(): void;
  /** A gathered write found the socket closed (see {@link gatherWrites}). */
  onWriteFailed?(): void;
  /** A gathered write left bytes queued (the owner checks how far behind its reader is, as after any write). */
  onQueued?(): void;
}

/** Whether writes to gathering outboxes are being collected (see {@link gatherWrites}). */
let gathering = false;
/** Outboxes holding gathered writes, in the order they got their first one. */
const gathered: Outbox[] = [];

/**
 * Runs `step(arg)` (the handling of one chunk of server bytes) with the writes it makes to gathering outboxes (the
 * clients') collected, then writes each outbox's share with one system call. A reply pgroute changes in flight — a
 * retryable read's held-back RowDescription, a swallowed settings reply, an injected notice — would otherwise reach
 * the client in pieces, each a system call and a wake-up of the client for an incomplete message. The pieces may be
 * views into the chunk: nothing reuses a buffer before this returns.
 */
export function gatherWrites(step: () => void): void;
export function gatherWrites<A>(step: (arg: A) => void, arg: A): void;
export function gatherWrites<A>(step: (arg?: A) => void, arg?: A): void {
  if (gathering) return step(arg);
  gathering = true;
  try {
    step(arg);
  } finally {
    gathering = false;
    for (let i = 0; i < gathered.length; i++) gathered[i]!.flushGathered();
    gathered.length = 0;
  }
}

export class Outbox {
  private queue: Uint8Array[] = [];
  /** Bytes waiting in `queue`. */
  queued = 0;

  /** Writes collected by {@link gatherWrites}, not yet written. */
  private pieces: Uint8Array[] = [];

  constructor(
    private readonly socket: Socket<unknown>,
    private readonly owner: OutboxOwner,
    /** Whether writes are collected while {@link gatherWrites} runs (client sockets). */
    private readonly gathers = false,
  ) {}

  get blocked(): boolean {
    return this.queued > 0;
  }

  /** Writes `buf[start..end)`; returns false if the socket is closed. */
  write(buf: Uint8Array, start = 0, end = buf.length): boolean {
    if (end <= start) return true;
    if (gathering && this.gathers && this.queued === 0) {
      if (this.pieces.length === 0) gathered.push(this);
      this.pieces.push(start === 0 && end === buf.length ? buf : buf.subarray(start, end));
      return true;
    }
    return this.writeNow(buf, start, end);
  }

  private writeNow(buf: Uint8Array, start: number, end: number): boolean {
    if (this.queued > 0) {
      this.queue.push(copyBytes(buf, start, end));
      this.queued += end - start;
      return true;
    }
    const n = this.socket.write(buf, start, end - start);
    if (n < 0) return false;
    if (n < end - start) {
      this.queue.push(copyBytes(buf, start + n, end));
      this.queued += end - start - n;
      this.owner.onBlocked();
    }
    return true;
  }

  /** Writes what {@link gatherWrites} collected, in one system call. */
  flushGathered(): void {
    const pieces = this.pieces;
    if (pieces.length === 0) return;
    const one = pieces.length === 1 ? pieces[0]! : concatBytes(pieces);
    pieces.length = 0;
    if (!this.writeNow(one, 0, one.length)) this.owner.onWriteFailed?.();
    else if (this.queued > 0) this.owner.onQueued?.();
  }

  /** Call from the socket's `drain` handler. */
  drain(): void {
    if (this.queue.length === 0) return;
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = this.socket.write(head);
      if (n < 0) return;
      this.queued -= Math.max(n, 0);
      if (n < head.length) {
        this.queue[0] = head.subarray(n);
        return;
      }
      this.queue.shift();
    }
    this.owner.onUnblocked();
  }

  /** Drops whatever is queued (the socket is going away). */
  clear(): void {
    this.pieces.length = 0;
    this.queue = [];
    this.queued = 0;
  }
}
