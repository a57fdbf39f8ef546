/**
 * Transaction pooling for one client: a server connection is leased when a request is complete (a Query, a
 * FunctionCall, or extended-protocol messages up to Sync or Flush) and given back at the ReadyForQuery that
 * leaves it idle with nothing in flight — unless the client is pinned (LISTEN, WITH HOLD cursors, …). Before a
 * request runs on a connection, the client's session settings are brought over in the same round trip.
 */
import { serialize } from "pg-protocol";
import { errors, type PgError } from "../errors.ts";
import type { Entry } from "../pool/demux.ts";
import type { Pool } from "../pool/pool.ts";
import type { ServerConn, ServerOwner } from "../pool/server.ts";
import { sessionEffects, type SessionOp } from "../router/effects.ts";
import { F, TxStatus } from "../wire/codes.ts";
import { MessageWriter, errorResponse, readyForQuery, writeError } from "../wire/encode.ts";
import { decodeQuery } from "../wire/frontend.ts";
import { PreparedStatements, type Message } from "./prepared.ts";
import type { SessionSettings } from "./settings.ts";

/** What the relay needs from its client connection. */
export interface ClientSide {
  /** Bytes for the client. */
  send(buf: Uint8Array, start?: number, end?: number): void;
  pauseClient(): void;
  resumeClient(): void;
  /** The relay cannot go on (the server connection broke mid-request): end the client with this error. */
  fatal(error: PgError): void;
  /** End the client connection without a word (the server already sent its FATAL). */
  close(): void;
  log(event: string, fields: Record<string, string | number>): void;
}

type Request =
  | { kind: "simple"; frame: Uint8Array; end: "query" | "function"; ops: readonly SessionOp[] }
  | { kind: "batch"; messages: Message[]; sync: boolean }
  | { kind: "copy"; frame: Uint8Array };

const warning = (message: string) => writeError(new MessageWriter(), { severity: "WARNING", code: "01000", message }, true).done();

export class TransactionRelay implements ServerOwner {
  private conn: ServerConn | null = null;
  /** Requests waiting for a server connection, in order. */
  private queue: Request[] = [];
  /** Extended-protocol messages since the last Sync/Flush. */
  private batch: Message[] = [];
  private acquiring = false;
  /** A checkout failed for a batch without Sync: drop messages until the client's Sync, as Postgres would. */
  private skippingToSync = false;
  private closed = false;

  constructor(
    private readonly client: ClientSide,
    private readonly pool: Pool,
    private readonly settings: SessionSettings,
    private readonly prepared: PreparedStatements,
  ) {}

  /** The server connection a CancelRequest should reach now (none between transactions). */
  get cancelTarget(): ServerConn | null {
    return this.conn;
  }

  /** One complete frontend message; `frame` may be a view into the client's chunk. */
  onMessage(type: number, frame: Uint8Array): void {
    if (this.skippingToSync) {
      if (type !== F.Sync) return;
      this.skippingToSync = false;
      this.client.send(readyForQuery(TxStatus.Idle));
      return;
    }
    switch (type) {
      case F.Query: {
        const ops = sessionEffects(decodeQuery(frame, 5, frame.length));
        this.pinFor(ops);
        return this.submit({ kind: "simple", frame, end: "query", ops });
      }
      case F.FunctionCall:
        return this.submit({ kind: "simple", frame, end: "function", ops: [] });
      case F.Parse:
      case F.Bind:
      case F.Describe:
      case F.Execute:
      case F.Close:
        this.batch.push({ type, frame: frame.slice() });
        return;
      case F.Sync:
      case F.Flush: {
        this.batch.push({ type, frame: frame.slice() });
        const messages = this.batch;
        this.batch = [];
        return this.submit({ kind: "batch", messages, sync: type === F.Sync });
      }
      case F.CopyData:
      case F.CopyDone:
      case F.CopyFail:
        return this.submit({ kind: "copy", frame });
    }
  }

  private pinFor(ops: readonly SessionOp[]): void {
    for (const op of ops) {
      if (op.op === "pin") {
        if (!this.settings.pins.has(op.reason)) this.client.log("pinned", { reason: op.reason });
        this.settings.pin(op.reason);
      }
    }
  }

  private submit(req: Request): void {
    if (this.conn && this.queue.length === 0) return this.dispatch(this.conn, req);
    // Waiting for a connection: keep a copy, the client's chunk will be reused.
    if (req.kind !== "batch") req.frame = req.frame.slice();
    this.queue.push(req);
    if (!this.conn) this.acquire();
  }

  private acquire(): void {
    if (this.acquiring || this.closed) return;
    this.acquiring = true;
    this.pool.acquire().then(
      (conn) => {
        this.acquiring = false;
        if (this.closed) return this.pool.release(conn);
        this.conn = conn;
        conn.attach(this, "tracked");
        const queued = this.queue;
        this.queue = [];
        for (const r of queued) this.dispatch(conn, r);
      },
      (err: PgError) => {
        this.acquiring = false;
        this.failQueued(err);
      },
    );
  }

  /** No connection could be had: every waiting request gets the error, and the session stays usable. */
  private failQueued(err: PgError): void {
    const queued = this.queue;
    this.queue = [];
    const error = errorResponse({ ...err.fields, severity: "ERROR" });
    for (const r of queued) {
      if (r.kind === "copy") continue;
      this.client.send(error);
      if (r.kind === "batch" && !r.sync) this.skippingToSync = true;
      else this.client.send(readyForQuery(TxStatus.Idle));
    }
  }

  private dispatch(conn: ServerConn, req: Request): void {
    this.syncSettings(conn);
    let ok: boolean;
    switch (req.kind) {
      case "simple":
        ok = conn.send(req.frame, [{ end: req.end, mode: "forward", tag: req.ops }]);
        break;
      case "copy":
        ok = conn.send(req.frame, []);
        break;
      case "batch": {
        const built = this.prepared.build(req.messages, conn);
        this.pinFor(built.ops);
        ok = conn.send(built.bytes, built.entries);
        break;
      }
    }
    if (!ok) this.client.fatal(errors.serverGone(conn.node.name, "the connection is closed"));
  }

  /** Brings the client's session settings to `conn`, pipelined before its request. */
  private syncSettings(conn: ServerConn): void {
    if (conn.appliedFor === this.settings && conn.appliedVersion === this.settings.version) return;
    const sql = this.settings.diff(conn);
    conn.appliedFor = this.settings;
    conn.appliedVersion = this.settings.version;
    if (!sql) return;
    const before = conn.applied;
    this.settings.markApplied(conn);
    conn.send(new Uint8Array(serialize.query(sql)), [
      {
        end: "query",
        mode: "swallow",
        onSwallowedError: (e) => warning(`pgroute could not restore a session setting on this server connection: ${e.message}`),
        fail: () => {
          conn.applied = before;
          conn.appliedFor = null;
        },
      },
    ]);
  }

  // --- ServerOwner -------------------------------------------------------------------------------------

  deliver(buf: Uint8Array, start: number, end: number): void {
    this.client.send(buf, start, end);
  }

  ready(status: number, failed: boolean, entry: Entry): void {
    const conn = this.conn;
    if (!conn) return;
    const version = this.settings.version;
    const r = this.settings.ready(status, failed, entry.tag as readonly SessionOp[] | undefined, conn);
    if (r.deallocated) {
      conn.prepared.clear();
      this.prepared.clear();
    }
    if (this.settings.version !== version) conn.appliedFor = null;
    if (conn.idle && !this.settings.pinned) {
      this.conn = null;
      this.pool.release(conn);
      if (this.queue.length > 0) this.acquire();
    }
  }

  onServerClose(error: PgError | null): void {
    const conn = this.conn;
    this.conn = null;
    if (conn) this.pool.discard(conn);
    if (this.closed) return;
    if (error) this.client.fatal(error);
    else if (conn) this.client.close();
  }

  onServerBlocked(): void {
    this.client.pauseClient();
  }

  onServerWritable(): void {
    this.client.resumeClient();
  }

  /** The client is gone: its connection goes back clean, or not at all when its state is in doubt. */
  close(): void {
    this.closed = true;
    this.queue = [];
    this.batch = [];
    const conn = this.conn;
    this.conn = null;
    if (!conn) return;
    conn.attach(null, "tracked");
    if (conn.pending > 0 || !conn.atBoundary) {
      // Unread results or a COPY in progress: nothing we could send would leave it in a known state.
      this.pool.discard(conn);
      return;
    }
    const steps: string[] = [];
    if (conn.txStatus !== TxStatus.Idle) steps.push("ROLLBACK");
    // Session-scoped state (LISTEN, temp tables, advisory locks, cursors, SQL PREPARE) must not reach the next client.
    if (this.settings.pinned) steps.push("DISCARD ALL");
    if (steps.length === 0) return this.pool.release(conn);
    this.client.log("server_reset", { steps: steps.join("; ") });
    void (async () => {
      try {
        for (const s of steps) await conn.query(s);
        if (this.settings.pinned) {
          conn.applied.clear();
          conn.prepared.clear();
        }
        conn.appliedFor = null;
        this.pool.release(conn);
      } catch {
        this.pool.discard(conn);
      }
    })();
  }
}
