/**
 * Matches a server connection's replies to the requests sent on it. Every message pgroute sends that the server
 * answers gets an {@link Entry}, in order; replies are forwarded to the client or swallowed (pgroute's own
 * requests), and pgroute's local replies (a ParseComplete for a statement the server already has) are slotted in
 * at the right place. After an error in an extended-protocol message the server skips to Sync, and so do the
 * entries (PostgreSQL docs, "Extended Query": "…discards messages until a Sync is reached").
 */
import type { ErrorInfo } from "../wire/backend.ts";
import { DecodeError, decodeParameterStatus, decodeServerError } from "../wire/backend.ts";
import { B, isTxStatus } from "../wire/codes.ts";
import { FrameReader, type FrameSink } from "../wire/frame.ts";
import { Splice } from "../net/splice.ts";
import { concatBytes, copyBytes } from "../wire/bytes.ts";
import { MessageWriter } from "../wire/encode.ts";

/** The reply that completes an entry. */
export type End = "parse" | "bind" | "describe" | "execute" | "close" | "sync" | "query" | "function";

/** Entries that an ErrorResponse completes (and after which the server skips to Sync). */
const EXTENDED: Record<End, boolean> = {
  parse: true,
  bind: true,
  describe: true,
  execute: true,
  close: true,
  sync: false,
  query: false,
  function: false,
};

export interface Entry {
  end: End;
  /** `swallow`: the replies are pgroute's own and never reach the client. */
  mode: "forward" | "swallow";
  /** Sent to the client instead of this entry's ErrorResponse (a local error reported at its position). */
  replaceError?: Uint8Array;
  /** For swallowed entries: what the client sees instead of their ErrorResponse (default: nothing). */
  onSwallowedError?: (e: ErrorInfo) => Uint8Array | null;
  /** For swallowed entries: each DataRow's body (`buf[start..end)`), for pgroute's own queries whose answer it reads. */
  onRow?: (buf: Uint8Array, start: number, end: number) => void;
  /** Completed without error. */
  ok?: () => void;
  /** Failed, or skipped by the server after an earlier error. */
  fail?: () => void;
  /** Anything the owner wants back with its ReadyForQuery. */
  tag?: unknown;
  /** The request this entry belongs to may be sent again elsewhere (see {@link RetryGroup}). */
  retry?: RetryGroup;
  /**
   * Sees this entry's DataRow, CommandComplete and ErrorResponse messages (a mirrored request's result). Only
   * entries that have one make the reader look at DataRows: the unobserved path pays nothing.
   */
  observe?: ReplyObserver;
}

/** Receives the replies of an observed {@link Entry}: `type` 'D', 'C' or 'E', body `buf[start..end)` (valid only during the call). */
export interface ReplyObserver {
  reply(type: number, buf: Uint8Array, start: number, end: number): void;
  /** A reply larger than {@link MAX_OBSERVED} went by unseen: the observation is incomplete. */
  missed(type: number): void;
}

/**
 * The largest reply an observer is shown. Bigger ones (a huge row) go through to the client as they stream, never
 * gathered whole for an observer: gathering would hand the client the whole row at once, past its buffer.
 */
export const MAX_OBSERVED = 1 << 20;

/**
 * The entries of one request that may be retried on another node (a read a replica refused). Its replies are
 * held back until a row, a COPY or a non-retryable outcome shows the request is really answered here; if instead
 * an error `retryOn` accepts arrives first, nothing of the reply reaches the client and `retry` runs at its
 * ReadyForQuery.
 */
export interface RetryGroup {
  retryOn(e: ErrorInfo): boolean;
  retry(): void;
  /** Set once part of the reply went to the client: too late to retry. */
  committed?: boolean;
}

/** A reply pgroute makes itself, emitted when every reply before it has been forwarded. */
export interface Local {
  local: Uint8Array;
  ok?: () => void;
  /** Skipped: an earlier extended-protocol error made the server (and so pgroute) ignore this message. */
  fail?: () => void;
}

export type Pending = Entry | Local;

/** One thing a client is owed for a request lost with its connection (see {@link Demux.owed}). */
export type Owed = Local | "error" | "ready";

const isLocal = (p: Pending): p is Local => (p as Local).local !== undefined;

export interface DemuxOwner {
  /** Bytes for the client. */
  deliver(buf: Uint8Array, start: number, end: number): void;
  /** A forwarded ReadyForQuery; `failed` when an error or a rollback happened since the previous one. */
  ready(status: number, failed: boolean, entry: Entry): void;
  /**
   * The server sent a FATAL (it is about to close) in reply to a forwarded request: true keeps it from the client,
   * whose session the owner keeps alive past the lost connection (it then reports the loss its own way).
   */
  absorbFatal?(e: ErrorInfo): boolean;
}

/** Replies watched in tracked mode: every message that can complete an entry, plus ParameterStatus. */
export const TRACKED_TYPES = [
  B.ReadyForQuery,
  B.ErrorResponse,
  B.ParseComplete,
  B.BindComplete,
  B.CloseComplete,
  B.RowDescription,
  B.NoData,
  B.CommandComplete,
  B.EmptyQueryResponse,
  B.PortalSuspended,
  B.ParameterStatus,
];

const ROLLBACK = Buffer.from("ROLLBACK");

function startsWith(buf: Uint8Array, at: number, prefix: Uint8Array): boolean {
  for (let i = 0; i < prefix.length; i++) if (buf[at + i] !== prefix[i]) return false;
  return true;
}

/** The server's replies do not match what was sent: the connection cannot be trusted any more. */
export class DemuxError extends Error {
  override readonly name = "DemuxError";
}

export class Demux implements FrameSink {
  private queue: Pending[] = [];
  private headIdx = 0;
  /** The server is skipping to the next Sync after an extended-protocol error. */
  private skipping = false;
  private errorSinceReady = false;
  /** The SQLSTATE of the first error since the previous ReadyForQuery. */
  private firstErrorCode: string | null = null;
  /**
   * The SQLSTATE of the first error of the request a ReadyForQuery just ended (null if none), read by the owner in
   * {@link DemuxOwner.ready}: health tracking tells a node's own failures (08xxx, 57P01, …) from the SQL's.
   */
  readyErrorCode: string | null = null;
  private rolledBack = false;
  private readonly splice: Splice;
  /** Set while a chunk is being processed, so local replies go out in order with it. */
  private inChunk = false;
  /** The server's FATAL (or PANIC) went through to the client: its close then needs no error of pgroute's. */
  fatalForwarded = false;
  /** The request whose replies are being held back, and those replies (from earlier chunks). */
  private holding: RetryGroup | null = null;
  private held: Uint8Array[] = [];
  /**
   * Where, in the chunk being processed, the held replies begin (-1: none held in it). Held replies of this chunk
   * are not cut out: nothing is forwarded past this offset, so when the request turns out to be answered here (its
   * first row, usually in the same chunk) they simply go on in order, and when it is retried they are cut then.
   * Only what is still held when the chunk ends is copied aside (into `held`).
   */
  private holdFrom = -1;
  /** The request whose reply is being dropped because it will be retried. */
  private retrying: RetryGroup | null = null;

  constructor(
    private readonly reader: FrameReader,
    private owner: DemuxOwner,
    private readonly params: Map<string, string>,
    private readonly onStatus: (status: number) => void,
  ) {
    this.splice = new Splice((b, s, e) => this.owner.deliver(b, s, e));
  }

  setOwner(owner: DemuxOwner): void {
    this.owner = owner;
  }

  /** Requests in flight (entries not yet answered). */
  get pending(): number {
    return this.queue.length - this.headIdx;
  }

  /** Adds the entries for messages just written to the server. */
  push(items: readonly Pending[]): void {
    for (const p of items) {
      if (this.skipping) {
        if (isLocal(p) || p.end !== "sync") {
          p.fail?.();
          continue;
        }
        this.skipping = false;
      }
      this.queue.push(p);
    }
    if (!this.inChunk) this.emitLocals(-1);
    this.updateWant();
  }

  private head(): Pending | undefined {
    return this.queue[this.headIdx];
  }

  private shift(): void {
    this.queue[this.headIdx++] = undefined as unknown as Pending;
    if (this.headIdx > 64 && this.headIdx * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.headIdx);
      this.headIdx = 0;
    }
  }

  /** Emits local replies now at the head; `at` is the chunk offset to place them after (-1: outside a chunk). */
  private emitLocals(at: number): void {
    for (let h = this.head(); h && isLocal(h); h = this.head()) {
      this.shift();
      if (at >= 0) this.splice.inject(h.local, at);
      else this.owner.deliver(h.local, 0, h.local.length);
      h.ok?.();
    }
  }

  private updateWant(): void {
    const h = this.head();
    // A simple Query's RowDescription ends nothing and holds nothing to check: it goes through unseen (one call
    // less per SELECT). Everything that would be out of place in its reply is still looked at.
    this.reader.want(B.RowDescription, h === undefined || isLocal(h) || h.end !== "query");
    // While pgroute's own request is answered, or a retryable reply is held, every message must be looked at.
    const all = h !== undefined && !isLocal(h) && (h.mode === "swallow" || (h.retry !== undefined && !h.retry.committed));
    this.reader.wantAll = all || (h !== undefined && !isLocal(h) && h.observe !== undefined);
    // Watched only for an observer: no need to gather huge messages (see MAX_OBSERVED).
    this.reader.wantAllMax = all ? Number.POSITIVE_INFINITY : MAX_OBSERVED;
  }

  /** Sends what was held for a retryable request, before the message at `msgStart`; no retry after this. */
  private releaseHeld(msgStart: number): void {
    const group = this.holding;
    if (!group) return;
    group.committed = true;
    this.holding = null;
    this.holdFrom = -1; // what was held in this chunk goes on where it is
    const held = this.held;
    this.held = [];
    if (held.length > 0) this.splice.inject(concatBytes(held), Math.max(msgStart, 0));
  }

  /** Drops what was held for a request about to be retried, up to `next` (the end of its error). */
  private dropHeld(next: number): void {
    this.holding = null;
    this.held = [];
    if (this.holdFrom >= 0) this.splice.cut(this.holdFrom, next);
    this.holdFrom = -1;
  }

  /** Processes a chunk of server bytes. Throws {@link DemuxError} or FrameError when the server breaks the protocol. */
  feed(chunk: Uint8Array): void {
    this.splice.begin(chunk);
    this.inChunk = true;
    try {
      this.reader.feed(chunk, this);
      const complete = this.reader.heldFrom;
      if (this.holdFrom >= 0) {
        // Still held at the end of the chunk: copied aside (the chunk's buffer is the reader's to keep or drop).
        if (complete > this.holdFrom) this.held.push(copyBytes(chunk, this.holdFrom, complete));
        this.splice.cut(this.holdFrom, complete);
        this.holdFrom = -1;
      }
      this.splice.end(complete);
    } catch (err) {
      // A reply whose body does not decode (an ErrorResponse without terminators…) is as broken as one out of place.
      throw err instanceof DecodeError ? new DemuxError(err.message) : err;
    } finally {
      this.inChunk = false;
    }
  }

  /** A message too large to be shown to an observer went through unseen. */
  onPassed(type: number): void {
    const head = this.head() as Entry | undefined;
    if (head?.observe && !isLocal(head)) head.observe.missed(type);
  }

  onFrame(type: number, buf: Uint8Array, start: number, end: number, msgStart: number, next: number): void {
    // Transaction state comes only from ReadyForQuery: a status that is not one of the three is never guessed at.
    if (type === B.ReadyForQuery && (end - start !== 1 || !isTxStatus(buf[start]))) {
      throw new DemuxError(`ReadyForQuery with an invalid transaction status (${end - start} bytes, first ${buf[start]})`);
    }
    const head = this.head() as Entry | undefined;
    if (type === B.ParameterStatus) {
      const [k, v] = decodeParameterStatus(buf, start, end);
      this.params.set(k, v);
    }
    let ends = false;
    let error: ErrorInfo | null = null;
    if (head) {
      switch (type) {
        case B.ReadyForQuery:
          ends = !EXTENDED[head.end];
          break;
        case B.ErrorResponse:
          error = decodeServerError(buf, start, end);
          ends = EXTENDED[head.end];
          break;
        // Each of these answers exactly the message at the head, or the conversation is lost.
        case B.ParseComplete:
          ends = head.end === "parse";
          if (!ends) throw new DemuxError(`ParseComplete arrived while a ${head.end} reply was expected`);
          break;
        case B.BindComplete:
          ends = head.end === "bind";
          if (!ends) throw new DemuxError(`BindComplete arrived while a ${head.end} reply was expected`);
          break;
        case B.CloseComplete:
          ends = head.end === "close";
          if (!ends) throw new DemuxError(`CloseComplete arrived while a ${head.end} reply was expected`);
          break;
        case B.RowDescription:
        case B.NoData:
          ends = head.end === "describe";
          break;
        case B.CommandComplete:
          // A transaction that ends in ROLLBACK (or a COMMIT of a failed one, tagged ROLLBACK) undid its SETs.
          if (end - start >= 8 && startsWith(buf, start, ROLLBACK)) this.rolledBack = true;
          ends = head.end === "execute";
          break;
        case B.EmptyQueryResponse:
        case B.PortalSuspended:
          ends = head.end === "execute";
          break;
      }
    } else if (type === B.ErrorResponse) {
      error = decodeServerError(buf, start, end);
      // Unasked, only a FATAL makes sense: the server is going away and says why.
      if (error.severity !== "FATAL" && error.severity !== "PANIC") throw new DemuxError(`unexpected ErrorResponse: ${error.message}`);
      // Between requests (a client idle in its transaction, a pinned session): its owner may keep the client.
      if (this.owner.absorbFatal?.(error)) {
        this.splice.cut(msgStart, next);
        this.updateWant();
        return;
      }
    } else if (type !== B.ParameterStatus) {
      throw new DemuxError(`unexpected message "${String.fromCharCode(type)}" with no request pending`);
    }
    if (error) {
      this.errorSinceReady = true;
      this.firstErrorCode ??= error.code;
    }
    const group = head?.retry;
    let hold = false;
    /**
     * Whether the head entry or its retry group changed: only then can a local reply be due or the messages the
     * reader must surface differ (most replies — a RowDescription, each row, a CommandComplete — change neither).
     */
    let changed = false;
    if (group && !group.committed && this.retrying !== group) {
      this.holding ??= group;
      if (error && group.retryOn(error)) {
        this.retrying = group;
        this.dropHeld(msgStart >= 0 ? msgStart : next);
        changed = true;
      } else if (error || type === B.DataRow || type === B.ReadyForQuery || type === B.CopyInResponse || type === B.CopyOutResponse || type === B.CopyBothResponse) {
        // The request is answered here (a ReadyForQuery: with nothing but descriptions and a CommandComplete): what
        // was held goes out first, then this message as usual — also when this message began in an earlier chunk.
        this.releaseHeld(msgStart);
        changed = true;
      } else hold = true;
    }
    const swallow = head !== undefined && (head.mode === "swallow" || (group !== undefined && this.retrying === group));
    // A reply that will be dropped for a retry elsewhere is not the request's result.
    if (head?.observe && (type === B.DataRow || type === B.CommandComplete || type === B.ErrorResponse) && (group === undefined || this.retrying !== group)) {
      head.observe.reply(type, buf, start, end);
    }

    // What the client gets of this message. A NotificationResponse is the session's whatever request it arrives
    // during: the server sends it when it goes idle, which may be while pgroute's own request is still unread.
    const fatal = error !== null && (error.severity === "FATAL" || error.severity === "PANIC");
    let absorbed = false;
    if (error && head?.replaceError) {
      this.splice.cut(msgStart, next);
      this.splice.inject(head.replaceError, next);
    } else if (fatal && !swallow && head !== undefined && this.owner.absorbFatal?.(error!)) {
      absorbed = true;
      this.splice.cut(msgStart, next);
    } else if (swallow && type !== B.NotificationResponse) {
      if (type === B.DataRow) head.onRow?.(buf, start, end);
      this.splice.cut(msgStart, next);
      const instead = error && head?.onSwallowedError?.(error);
      if (instead) this.splice.inject(instead, next);
    } else if (hold) {
      if (msgStart >= 0 && this.held.length === 0) {
        // Held where it is (see holdFrom).
        if (this.holdFrom < 0) this.holdFrom = msgStart;
      } else {
        this.held.push(msgStart >= 0 ? buf.slice(msgStart, next) : new MessageWriter(end - start + 5).begin(type).bytes(buf.subarray(start, end)).end().done());
        this.splice.cut(msgStart, next);
      }
    } else if (msgStart < 0) {
      this.splice.keepGathered(type, buf, start, end, next);
    }
    if (fatal && !swallow && !head?.replaceError && !absorbed) this.fatalForwarded = true;

    if (type === B.ReadyForQuery && head && !ends) {
      // Every extended-protocol message is answered (or skipped after an error) before ReadyForQuery.
      throw new DemuxError(`ReadyForQuery arrived while a ${head.end} reply was still expected`);
    }
    if (type === B.ReadyForQuery) {
      const status = buf[start]!;
      this.onStatus(status);
      const errored = this.errorSinceReady;
      const failed = errored || this.rolledBack;
      this.readyErrorCode = this.firstErrorCode;
      this.firstErrorCode = null;
      this.errorSinceReady = false;
      this.rolledBack = false;
      if (head && ends) {
        this.shift();
        changed = true;
        if (group && this.retrying === group) {
          // Withheld reply over: the request is sent again elsewhere (the owner is told, not the client).
          this.retrying = null;
          if (this.inChunk) this.splice.flush(next);
          group.retry();
          this.emitLocals(next);
          this.updateWant();
          return;
        }
        // pgroute's own request failed only if it got an error: its own ROLLBACK (a reset) succeeds with one.
        if (errored && head.mode === "swallow") head.fail?.();
        else head.ok?.();
        if (!swallow) {
          // The owner may hand the connection on from here: everything up to this message is theirs first.
          if (this.inChunk) this.splice.flush(next);
          this.owner.ready(status, failed, head);
        }
      }
    } else if (head && ends) {
      this.shift();
      changed = true;
      if (error) {
        head.fail?.();
        this.skipToSync();
      } else head.ok?.();
    }
    if (changed) {
      this.emitLocals(next);
      this.updateWant();
    }
  }

  /** After an extended-protocol error: the server ignores everything up to the next Sync. */
  private skipToSync(): void {
    for (let h = this.head(); h; h = this.head()) {
      if (!isLocal(h) && h.end === "sync") return;
      this.shift();
      h.fail?.();
    }
    this.skipping = true;
  }

  /**
   * What the client is still owed for the requests in flight, in order — were the connection lost now: an error
   * for each request (one per extended-protocol batch), the ReadyForQuery of each Query, FunctionCall and Sync,
   * and pgroute's own replies queued between them (skipped after an error in a batch, as the server would).
   * `skipping`: a batch failed and its Sync is still to come from the client.
   */
  owed(): { steps: Owed[]; skipping: boolean } {
    const steps: Owed[] = [];
    let failed = this.skipping;
    for (let i = this.headIdx; i < this.queue.length; i++) {
      const p = this.queue[i]!;
      if (isLocal(p)) {
        if (!failed) steps.push(p);
      } else if (p.mode === "swallow" && p.end !== "sync") {
        // pgroute's own request (settings, a Parse the server lacked): nothing of it was the client's.
      } else if (EXTENDED[p.end]) {
        if (!failed) steps.push("error");
        failed = true;
      } else if (p.end === "sync") {
        if (!failed) steps.push("error");
        steps.push("ready");
        failed = false;
      } else {
        steps.push("error", "ready");
      }
    }
    return { steps, skipping: failed };
  }

  /** The connection is gone: everything pending fails. */
  abort(): void {
    for (let h = this.head(); h; h = this.head()) {
      this.shift();
      h.fail?.();
    }
    this.skipping = false;
  }
}
