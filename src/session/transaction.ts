/**
 * Transaction pooling for one client: a server connection is leased when a request is complete (a Query, a
 * FunctionCall, or extended-protocol messages up to Sync or Flush) and given back at the ReadyForQuery that
 * leaves it idle with nothing in flight — unless the client is pinned (LISTEN, WITH HOLD cursors, …). Each
 * request outside a transaction is routed on its own: read-only statements to a replica, anything else to the
 * primary ({@link RouterState}). Before a request runs on a connection, the client's session settings are brought
 * over in the same round trip.
 */
import { serialize } from "pg-protocol";
import { errors, type PgError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Entry, RetryGroup } from "../pool/demux.ts";
import type { PoolGroup, Target } from "../pool/group.ts";
import type { Pool } from "../pool/pool.ts";
import type { ServerConn } from "../pool/server.ts";
import { ClientRelay, type ClientSide } from "./relay.ts";
import { RESERVED_PREFIX, sessionEffects, type SessionOp } from "../router/effects.ts";
import { shape } from "../router/lexer.ts";
import type { Classification } from "../router/classify.ts";
import { describeRoute, type Route, type RouteReason } from "../router/route.ts";
import type { RequestKind, RequestObserver, RequestSample } from "../cluster/observe.ts";
import { virtualSetting, type Decision, type RouterState } from "../router/state.ts";
import { F, TxStatus } from "../wire/codes.ts";
import { MessageWriter, errorResponse, readyForQuery, writeError, type ErrorFields } from "../wire/encode.ts";
import { concatBytes, copyBytes } from "../wire/bytes.ts";
import { decodeQuery } from "../wire/frontend.ts";
import { PreparedStatements, namesStatements, type Message } from "./prepared.ts";
import type { SessionSettings } from "./settings.ts";


type Request = (
  | ({ kind: "simple"; frame: Uint8Array; end: "query" | "function"; ops: readonly SessionOp[]; prefix?: Uint8Array; retry?: boolean } & About)
  | ({ kind: "batch"; messages: Message[]; sync: boolean; retry?: boolean; creates?: string[] } & About)
  | { kind: "copy"; frame: Uint8Array }
  | { kind: "local"; bytes: Uint8Array }
) & { target: Target };

/** What observers are told about a request (see {@link RequestSample}). */
interface About {
  fingerprint: string;
  about: RequestKind;
  reason: RouteReason["code"] | null;
}

const UNPLACED: About = { fingerprint: "", about: "other", reason: null };

function kindOf(c: Classification): RequestKind {
  return c.tx !== null ? "other" : c.readOnly ? "read" : "write";
}

const warning = (message: string) => writeError(new MessageWriter(), { severity: "WARNING", code: "01000", message }, true).done();

const commandComplete = (tag: string) => new MessageWriter(32).begin(0x43).cstring(tag).end().done();

/** The reply Postgres gives a SHOW of one text setting. */
function showReply(name: string, value: string): Uint8Array {
  const w = new MessageWriter(128);
  w.begin(0x54).int16(1).cstring(name).int32(0).int16(0).int32(25).int16(-1).int32(-1).int16(0).end(); // RowDescription, text
  const v = new TextEncoder().encode(value);
  w.begin(0x44).int16(1).int32(v.length).bytes(v).end(); // DataRow
  return w.bytes(commandComplete("SHOW")).done();
}

export class TransactionRelay extends ClientRelay {
  private conn: ServerConn | null = null;
  private pool: Pool | null = null;
  /** The kind of node `conn` is on. */
  private target: Target = "primary";
  /** Requests waiting for a server connection, in order. */
  private queue: Request[] = [];
  /** Extended-protocol messages since the last Sync/Flush. */
  private batch: Message[] = [];
  private acquiring = false;
  /** A checkout failed for a batch without Sync: drop messages until the client's Sync, as Postgres would. */
  private skippingToSync = false;
  /** A BEGIN held back (`transactions = "first-statement"`), sent ahead of the next statement. */
  private deferredBegin: Uint8Array | null = null;
  /** Requests sent and not yet answered, oldest first, while someone observes them. */
  private inflight: RequestSample[] = [];
  /** A batch ended by Flush: it is answered (and observed) with the Sync that follows. */
  private flushed: { about: About; startedAt: number } | null = null;

  constructor(
    client: ClientSide,
    private readonly group: PoolGroup,
    private readonly settings: SessionSettings,
    private readonly prepared: PreparedStatements,
    private readonly router: RouterState,
    private readonly log: Logger,
    /** Told about every completed request; null when nobody listens (nothing is recorded then). */
    private readonly observer: RequestObserver | null = null,
  ) {
    super(client);
    prepared.onSettled = () => this.drainQueue();
  }

  /**
   * A batch naming prepared statements waits while an earlier Parse or Close of a named statement is unanswered:
   * how it is rewritten depends on whether those took effect (PreparedStatements.unsettled).
   */
  private mustWait(r: Request): boolean {
    return r.kind === "batch" && this.prepared.unsettled && namesStatements(r.messages);
  }

  /** The server connection a CancelRequest should reach now (none between transactions). */
  get cancelTarget(): ServerConn | null {
    return this.conn;
  }

  /**
   * A batch ended by Flush was sent and no Sync yet: the server is inside the implicit transaction that batch
   * opened, so everything up to the next Sync runs on the same connection.
   */
  private unsynced = false;

  /** Whether the next request must stay on the current connection. */
  private get bound(): boolean {
    return this.conn !== null && (this.unsynced || this.conn.txStatus !== TxStatus.Idle || this.settings.pinned || this.router.transaction !== null);
  }

  private status(): number {
    return this.router.transaction || this.deferredBegin ? TxStatus.InTransaction : TxStatus.Idle;
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
      case F.Query:
        return this.query(frame);
      case F.FunctionCall:
        return this.submit({ kind: "simple", frame, end: "function", ops: [], target: "primary", ...UNPLACED, about: "write" });
      case F.Parse:
      case F.Bind:
      case F.Describe:
      case F.Execute:
      case F.Close:
        // A view is enough: each read from a socket arrives in a buffer of its own, never reused.
        this.batch.push({ type, frame });
        return;
      case F.Sync:
      case F.Flush: {
        this.batch.push({ type, frame });
        const messages = this.batch;
        this.batch = [];
        return this.batchRequest(messages, type === F.Sync);
      }
      case F.CopyData:
      case F.CopyDone:
      case F.CopyFail:
        return this.submit({ kind: "copy", frame, target: this.target });
    }
  }

  // --- routing -------------------------------------------------------------------------------------------

  private query(frame: Uint8Array): void {
    const sql = decodeQuery(frame, 5, frame.length);
    // One lexer pass serves the virtual-setting check, the session effects, the classification and the hints.
    const sh = shape(sql);
    const v = virtualSetting(sql, sh.key);
    if (v) {
      const err = v.op === "show" ? null : this.router.setVirtual(v);
      const value = v.op === "show" ? this.router.showVirtual(v.name) : null;
      let reply: Uint8Array;
      if (err) reply = errorResponse({ severity: "ERROR", code: "22023", message: err });
      else if (v.op === "show" && value === null) reply = errorResponse({ severity: "ERROR", code: "42704", message: `unrecognized configuration parameter "${v.name}"` });
      else reply = v.op === "show" ? showReply(v.name, value!) : commandComplete(v.op === "set" ? "SET" : "RESET");
      return this.local(new MessageWriter(64).bytes(reply).bytes(readyForQuery(this.status())).done());
    }
    const ops = sessionEffects(sql, sh.key);
    const taken = reservedName(ops);
    if (taken) return this.refuse(reservedError(taken), true);
    this.router.pinned = this.pinnedTo();
    const d = this.router.decide(sql, this.group.replicaAvailable, sh, ops);
    const route = this.pinsToPrimary(d.route, ops);
    this.trace(sql, route, d);
    switch (route.target) {
      case "refuse":
        return this.refuse({ code: "25006", message: `pgroute: ${describeRoute(route.reason)}`, hint: "Remove the replica hint, or send the statement to the primary." }, true);
      case "defer":
        // Answer the BEGIN now; it goes out ahead of the statement that decides where the transaction runs.
        this.deferredBegin = frame.slice();
        this.router.deferredBegin = sql;
        return this.local(new MessageWriter(32).bytes(commandComplete("BEGIN")).bytes(readyForQuery(TxStatus.InTransaction)).done());
    }
    this.pinFor(ops);
    const prefix = this.deferredBegin ?? undefined;
    this.deferredBegin = null;
    this.router.deferredBegin = null;
    this.router.noteSettings(sql, d.classification);
    // A read sent to a replica outside a transaction may be retried on the primary if the replica refuses it.
    const retry = route.target === "replica" && !this.bound && !prefix && d.classification.statements === 1;
    this.submit({ kind: "simple", frame, end: "query", ops, target: route.target, prefix, retry, fingerprint: sh.key, about: kindOf(d.classification), reason: route.reason.code });
  }

  /** Where the session is pinned, for the router (which then says so): the node of the connection it keeps. */
  private pinnedTo(): RouterState["pinned"] {
    if (!this.settings.pinned) return null;
    return { target: this.conn ? this.target : "primary", why: this.settings.pins.keys().next().value! };
  }

  /** Statements that pin the session run on the primary: the session then stays there. */
  private pinsToPrimary(r: Route, ops: readonly SessionOp[]): Route {
    if (r.target === "replica" && !this.bound && ops.some((o) => o.op === "pin")) return { target: "primary", reason: r.reason };
    return r;
  }

  private batchRequest(messages: Message[], sync: boolean): void {
    const { executed, named } = this.prepared.peek(messages);
    let target: Target = "primary";
    const about: About = { ...UNPLACED };
    if (this.bound) target = this.target;
    else if (executed.length > 0) {
      // The batch runs on one node: a replica only when every statement it executes may run there.
      target = "replica";
      for (const sql of executed) {
        this.router.pinned = this.pinnedTo();
        // One lexer pass for the effects and the decision (a prepared statement's text comes back every Execute).
        const sh = shape(sql);
        const ops = sessionEffects(sql, sh.key);
        const taken = reservedName(ops);
        if (taken) return this.refuse(reservedError(taken), sync);
        const d = this.router.decide(sql, this.group.replicaAvailable, sh, ops);
        const r = this.pinsToPrimary(d.route, ops);
        this.trace(sql, r, d);
        if (r.target === "refuse") return this.refuse({ code: "25006", message: `pgroute: ${describeRoute(r.reason)}` }, sync);
        if (r.target !== "replica") target = "primary";
        if (about.reason === null) {
          about.fingerprint = sh.key;
          about.reason = r.reason.code;
        }
        const kind = kindOf(d.classification);
        if (about.about !== "write" && kind !== "other") about.about = kind;
      }
    }
    // A read a replica refuses is sent again to the primary, whole batches up to their Sync (names the batch
    // created are given up first, so its Parse can create them again).
    const retry = target === "replica" && !this.bound && sync;
    this.submit({ kind: "batch", messages, sync, target, retry, creates: named, ...about });
  }

  /**
   * A request pgroute answers with its own error, in order with the replies still owed: then ReadyForQuery when
   * the request ended with a Sync (or was a Query), else the messages up to the client's Sync are skipped, as
   * Postgres does after an error.
   */
  private refuse(fields: Omit<ErrorFields, "severity">, sync: boolean): void {
    const error = errorResponse({ severity: "ERROR", ...fields });
    this.local(sync ? concatBytes([error, readyForQuery(this.status())]) : error);
    if (!sync) this.skippingToSync = true;
  }

  private trace(sql: string, r: Route, d: Decision): void {
    if (!this.log.enabled("debug")) return;
    this.log.debug("route", { target: r.target, reason: describeRoute(r.reason), statement: sql.length > 80 ? `${sql.slice(0, 79)}…` : sql, cached: d.classification.reason.code });
  }

  private pinFor(ops: readonly SessionOp[]): void {
    for (const op of ops) {
      if (op.op === "pin") {
        if (!this.settings.pins.has(op.reason)) this.client.log("pinned", { reason: op.reason });
        this.settings.pin(op.reason);
      }
    }
  }

  /** A reply pgroute makes itself, in order with whatever the client still awaits. */
  private local(bytes: Uint8Array): void {
    if (this.conn && this.queue.length === 0) {
      this.conn.send(new Uint8Array(0), [{ local: bytes }]);
      return;
    }
    if (this.queue.length > 0 || this.acquiring) {
      this.queue.push({ kind: "local", bytes, target: this.target });
      return;
    }
    this.client.send(bytes);
  }

  private submit(req: Request): void {
    const conn = this.conn;
    if (conn && this.queue.length === 0 && (this.bound || req.target === this.target || req.kind === "copy") && !this.mustWait(req)) {
      return this.dispatch(conn, req);
    }
    if (!conn && this.queue.length === 0 && !this.acquiring && req.kind !== "local") {
      // The common case: an idle connection is at hand, no promise needed.
      const got = this.group.tryAcquire(req.target);
      if (got) {
        this.adopt(got.conn, got.pool, got.target);
        return this.dispatch(got.conn, req);
      }
    }
    // Waiting for a connection: keep a copy of the frame, independent of the buffer it was read into.
    if (req.kind === "simple" || req.kind === "copy") req.frame = copyBytes(req.frame);
    this.queue.push(req);
    if (!conn) this.acquire();
  }

  private adopt(conn: ServerConn, pool: Pool, target: Target): void {
    this.conn = conn;
    this.pool = pool;
    this.target = target;
    conn.attach(this, "tracked");
  }

  private acquire(): void {
    if (this.acquiring || this.closed) return;
    // Local replies at the head of the queue need no connection.
    while (this.queue[0]?.kind === "local") this.client.send((this.queue.shift() as { bytes: Uint8Array }).bytes);
    const head = this.queue[0];
    if (!head) return;
    this.acquiring = true;
    this.group.acquire(head.target).then(
      ({ conn, pool, target }) => {
        this.acquiring = false;
        if (this.closed) return pool.release(conn);
        this.adopt(conn, pool, target);
        // No replica could be reached and the group gave the primary instead: the read runs there (otherwise it
        // would wait forever for a connection of the kind it asked for). It is not retried: it is on the primary.
        if (target !== head.target && this.queue[0] === head) {
          head.target = target;
          if (head.kind === "simple" || head.kind === "batch") head.retry = false;
        }
        this.drainQueue();
      },
      (err: PgError) => {
        this.acquiring = false;
        this.failQueued(err);
      },
    );
  }

  /** Sends queued requests that belong on the current connection, in order. */
  private drainQueue(): void {
    const conn = this.conn;
    while (conn && this.queue.length > 0) {
      const r = this.queue[0]!;
      if (!(this.bound || r.target === this.target || r.kind === "copy" || r.kind === "local")) break;
      if (this.mustWait(r)) break;
      this.queue.shift();
      this.dispatch(conn, r);
    }
  }

  /** No connection could be had: every waiting request gets the error, and the session stays usable. */
  private failQueued(err: PgError): void {
    const queued = this.queue;
    this.queue = [];
    const error = errorResponse({ ...err.fields, severity: "ERROR" });
    for (const r of queued) {
      if (r.kind === "copy") continue;
      if (r.kind === "local") {
        this.client.send(r.bytes);
        continue;
      }
      this.client.send(error);
      if (r.kind === "batch" && !r.sync) this.skippingToSync = true;
      else this.client.send(readyForQuery(TxStatus.Idle));
    }
  }

  private dispatch(conn: ServerConn, req: Request): void {
    if (req.kind === "local") {
      conn.send(new Uint8Array(0), [{ local: req.bytes }]);
      return;
    }
    this.syncSettings(conn);
    let ok = true;
    switch (req.kind) {
      case "simple": {
        this.unsynced = false;
        if (req.prefix) ok = conn.send(req.prefix, [{ end: "query", mode: "swallow", onSwallowedError: relayWarning }]);
        const entry: Entry = { end: req.end, mode: "forward", tag: req.ops };
        if (req.retry) entry.retry = this.retryGroup(conn, req);
        ok = ok && conn.send(req.frame, [entry]);
        break;
      }
      case "copy":
        ok = conn.send(req.frame, []);
        break;
      case "batch": {
        this.unsynced = !req.sync;
        const built = this.prepared.build(req.messages, conn);
        this.pinFor(built.ops);
        if (req.retry) {
          const group = this.retryGroup(conn, req);
          for (const e of built.entries) if (!("local" in e)) e.retry = group;
        }
        ok = conn.send(built.bytes, built.entries);
        break;
      }
    }
    if (this.observer && req.kind !== "copy") this.track(req);
    if (!ok) this.client.fatal(errors.serverGone(conn.node.name, "the connection is closed"));
  }

  /** Remembers a request just sent, for its observers (answered in order, so a queue pairs them up). */
  private track(req: Extract<Request, { kind: "simple" | "batch" }>): void {
    let about: About = req;
    let startedAt = performance.now();
    if (req.kind === "batch") {
      const flushed = this.flushed;
      if (!req.sync) {
        // Answered by the ReadyForQuery of a later Sync: observed then, timed from here.
        if (!flushed || (flushed.about.reason === null && req.reason !== null)) this.flushed = { about: req, startedAt: flushed?.startedAt ?? startedAt };
        return;
      }
      if (flushed) {
        this.flushed = null;
        startedAt = flushed.startedAt;
        if (req.reason === null) about = flushed.about;
      }
    }
    this.inflight.push({ target: req.target, kind: about.about, fingerprint: about.fingerprint, reason: about.reason, startedAt, ms: 0, failed: false, errorCode: null });
  }

  /** How a read sent to a replica outside a transaction is retried on the primary when the replica refuses it. */
  private retryGroup(conn: ServerConn, req: Extract<Request, { kind: "simple" | "batch" }>): RetryGroup {
    return {
      // 25006: the statement wanted to write. Only in autocommit: nothing else of the session ran there.
      retryOn: (e) => e.code === "25006" && conn.txStatus === TxStatus.Idle,
      retry: () => {
        this.inflight.shift();
        this.log.info("retry_on_primary", { node: conn.node.name, reason: "replica answered 25006" });
        if (this.conn === conn && conn.idle && !this.settings.pinned) {
          this.conn = null;
          this.pool?.release(conn);
        }
        if (req.kind === "batch" && req.creates) this.prepared.forget(req.creates);
        this.queue.unshift(req.kind === "simple" ? { ...req, frame: req.frame.slice(), target: "primary", retry: false } : { ...req, target: "primary", retry: false });
        if (!this.conn) this.acquire();
        else this.drainQueue();
      },
    };
  }

  /** Brings the client's session settings to `conn`, pipelined before its request. */
  private syncSettings(conn: ServerConn): void {
    if (conn.appliedSignature === this.settings.signature) return;
    const sql = this.settings.diff(conn);
    const before = conn.applied;
    this.settings.markApplied(conn);
    if (!sql) return;
    conn.send(new Uint8Array(serialize.query(sql)), [
      {
        end: "query",
        mode: "swallow",
        onSwallowedError: (e) => warning(`pgroute could not restore a session setting on this server connection: ${e.message}`),
        fail: () => {
          conn.applied = before;
          conn.appliedSignature = null;
        },
      },
    ]);
  }

  // --- ServerOwner -------------------------------------------------------------------------------------


  ready(status: number, failed: boolean, entry: Entry): void {
    const conn = this.conn;
    if (!conn) return;
    const sample = this.inflight.shift();
    if (sample && this.observer) {
      sample.ms = performance.now() - sample.startedAt;
      sample.failed = failed;
      if (failed) sample.errorCode = conn.readyErrorCode;
      this.observer.request(conn.node, sample);
    }
    this.router.transaction = status === TxStatus.Idle ? null : this.target;
    const version = this.settings.version;
    if (this.settings.ready(status, failed, entry.tag as readonly SessionOp[] | undefined, conn)) {
      conn.prepared.clear();
      this.prepared.clear();
    }
    if (this.settings.version !== version) conn.appliedSignature = null;
    if (conn.idle && !this.settings.pinned) {
      this.conn = null;
      this.pool?.release(conn);
      if (this.queue.length > 0) this.acquire();
    } else this.drainQueue();
  }

  onServerClose(error: PgError | null): void {
    const conn = this.conn;
    this.conn = null;
    // Requests the server took down with it failed for the node's sake: observers hear of them (health counts them).
    if (error && conn && this.observer) {
      for (const sample of this.inflight) {
        sample.ms = performance.now() - sample.startedAt;
        sample.failed = true;
        sample.errorCode = "08006";
        this.observer.request(conn.node, sample);
      }
    }
    this.inflight = [];
    this.flushed = null;
    this.unsynced = false;
    if (conn) this.pool?.discard(conn);
    if (this.closed) return;
    if (error) this.client.fatal(error);
    else if (conn) this.client.close();
  }



  /** The client is gone: its connection goes back clean, or not at all when its state is in doubt. */
  close(): void {
    this.closed = true;
    this.queue = [];
    this.batch = [];
    const conn = this.conn;
    const pool = this.pool;
    this.conn = null;
    if (!conn || !pool) return;
    // Session-scoped state (LISTEN, temp tables, advisory locks, cursors, SQL PREPARE) must not reach the next client.
    pool.recycle(conn, this.settings.pinned);
  }
}

/** The name of a reserved statement a statement uses, if any. */
function reservedName(ops: readonly SessionOp[]): string | null {
  for (const o of ops) if (o.op === "reserved") return o.name;
  return null;
}

function reservedError(name: string): Omit<ErrorFields, "severity"> {
  return {
    code: "42939",
    message: `prepared statement name "${name}" is reserved by pgroute`,
    hint: `Names starting with "${RESERVED_PREFIX}" belong to pgroute's shared server-side statements.`,
  };
}

function relayWarning(e: { message: string }): Uint8Array {
  return warning(`pgroute: the held-back BEGIN failed: ${e.message}`);
}
