/**
 * Write-side flow control for a Bun socket. Bun's `write` is unbuffered: it returns how many bytes the kernel
 * took. The rest is queued here (copied, since the caller's buffer may be reused) and written on `drain`; while
 * anything is queued the outbox is "blocked", and its owner pauses whatever feeds it so memory stays bounded.
 */
import type { Socket } from "bun";
import { copyBytes } from "../wire/bytes.ts";

export interface OutboxOwner {
  /** The queue went from empty to non-empty: stop reading from the source that feeds this socket. */
  onBlocked(): void;
  /** Everything queued has been written: the source may be read again. */
  onUnblocked(): void;
}

export class Outbox {
  private queue: Uint8Array[] = [];
  /** Bytes waiting in `queue`. */
  queued = 0;

  constructor(
    private readonly socket: Socket<unknown>,
    private readonly owner: OutboxOwner,
  ) {}

  get blocked(): boolean {
    return this.queued > 0;
  }

  /** Writes `buf[start..end)`; returns false if the socket is closed. */
  write(buf: Uint8Array, start = 0, end = buf.length): boolean {
    if (end <= start) return true;
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
    this.queue = [];
    this.queued = 0;
  }
}
