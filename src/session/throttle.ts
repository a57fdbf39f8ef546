/**
 * Rate limits as one session meets them (the buckets themselves are shared: src/policy/ratelimit.ts). A request
 * over a limit waits its turn without blocking the event loop: it is held with a timer, the client is not read
 * meanwhile, and messages of the client's pipeline that had already arrived are held behind it and replayed in
 * order once it has run (or been refused) — so replies keep the order of the requests. A request whose turn would
 * come after `ratelimit.max_wait` waits that long and is asked about once more; then it gets ERROR 53400 and the
 * session goes on.
 */
import { errors, type PgError } from "../errors.ts";
import { describeExceeded, type Demand, type RateLimiter, type Reservation } from "../policy/ratelimit.ts";
import { TransactionStarts } from "../policy/txstart.ts";
import { copyBytes } from "../wire/bytes.ts";

/** What the throttle needs from its relay and client. */
export interface ThrottleHost {
  /** Stop (or resume) reading the client while a request waits. */
  holdReads(on: boolean): void;
  /** A message that arrived while a request waited, handed back in order. */
  replay(type: number, frame: Uint8Array): void;
}

/** Fingerprint of a FunctionCall message (which carries a function's OID, not SQL). */
export const FUNCTION_CALL = "(function call)";

export class Throttle {
  private waiting: { timer: ReturnType<typeof setTimeout>; reservation: Reservation | null } | null = null;
  private held: { type: number; frame: Uint8Array }[] = [];
  private readonly tx = new TransactionStarts();
  private closed = false;

  constructor(
    private readonly limiter: RateLimiter,
    private readonly user: string,
    private readonly address: string,
    private readonly host: ThrottleHost,
  ) {}

  /** Some statement or transaction limit is configured: requests must be admitted. */
  get active(): boolean {
    return this.limiter.active;
  }

  /** A request is waiting its turn: every message after it waits too ({@link Throttle.hold}). */
  get holding(): boolean {
    return this.waiting !== null;
  }

  /** Keeps a message that arrived while a request waits (a copy: the client's buffer is not ours to keep). */
  hold(type: number, frame: Uint8Array): void {
    this.held.push({ type, frame: copyBytes(frame) });
  }

  /**
   * A simple Query (or FunctionCall) with this shape key. True: it may run now. False: the throttle has it, and
   * calls `run` with a copy of `frame` when its turn comes, or `refuse` with ERROR 53400.
   */
  query(key: string, frame: Uint8Array, run: (frame: Uint8Array) => void, refuse: (e: PgError) => void): boolean {
    const saved = this.tx.save();
    const starts = this.tx.query(key);
    const d: Demand = { user: this.user, address: this.address, queries: [key], transactions: starts > 0 ? Array<string>(starts).fill(key) : [] };
    // A frame is a view into the client's buffer: copied only when it has to wait.
    return this.admit(d, saved, () => {
      const copy = copyBytes(frame);
      return () => run(copy);
    }, refuse);
  }

  /** An extended-protocol batch executing statements of these shape keys, ending in Sync (`sync`) or Flush. */
  batch(keys: readonly string[], sync: boolean, run: () => void, refuse: (e: PgError) => void): boolean {
    const saved = this.tx.save();
    const transactions: string[] = [];
    for (const k of keys) for (let n = this.tx.execute(k); n > 0; n--) transactions.push(k);
    if (sync) this.tx.sync();
    return this.admit({ user: this.user, address: this.address, queries: keys, transactions }, saved, () => run, refuse);
  }

  /** `later` makes what runs the request once its turn has come (called only when it has to wait). */
  private admit(d: Demand, saved: number, later: () => () => void, refuse: (e: PgError) => void): boolean {
    const maxWait = this.limiter.maxWaitMs;
    const v = this.limiter.admit(d, maxWait);
    switch (v.kind) {
      case "go":
        return true;
      case "wait":
        this.limiter.noteWaited();
        this.wait(v.ms, v.reservation, later());
        return false;
      case "over": {
        const refused = (waited: number, e = v.exceeded) => {
          this.tx.restore(saved); // it never ran: the transaction state is as before it
          this.limiter.noteRefused(e);
          refuse(errors.rateLimited(describeExceeded(e, waited)));
        };
        if (maxWait === 0) {
          refused(0);
          return false;
        }
        // Held for max_wait, then one more look with no wait allowed: tokens freed meanwhile let it run.
        this.limiter.noteWaited();
        const run = later();
        this.wait(maxWait, null, () => {
          const again = this.limiter.admit(d, 0);
          if (again.kind === "go") run();
          else refused(maxWait, again.kind === "over" ? again.exceeded : v.exceeded);
        });
        return false;
      }
    }
  }

  private wait(ms: number, reservation: Reservation | null, then: () => void): void {
    this.host.holdReads(true);
    const timer = setTimeout(() => {
      this.waiting = null;
      if (this.closed) return;
      then();
      this.drain();
    }, ms);
    this.waiting = { timer, reservation };
  }

  /** Replays what was held, in order, until a replayed request has to wait in turn. */
  private drain(): void {
    while (!this.waiting && !this.closed && this.held.length > 0) {
      const m = this.held.shift()!;
      this.host.replay(m.type, m.frame);
    }
    if (!this.waiting && !this.closed) this.host.holdReads(false);
  }

  /** ReadyForQuery with nothing else in flight: the server's transaction status corrects the session's. */
  settle(inTransaction: boolean): void {
    if (!this.waiting && this.held.length === 0) this.tx.settle(inTransaction);
  }

  /** The client is gone: a reservation it held goes back to the buckets. */
  close(): void {
    this.closed = true;
    const w = this.waiting;
    this.waiting = null;
    this.held = [];
    if (!w) return;
    clearTimeout(w.timer);
    w.reservation?.cancel();
  }
}
