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
import { MessageRelay, type ClientSide } from "./relay.ts";
import { RESERVED_PREFIX, sessionEffects, type SessionOp } from "../router/effects.ts";
import { shape, type Shape } from "../router/lexer.ts";
import { describeRoute, type Route } from "../router/route.ts";
import { virtualSetting, type Decision, type RouterState } from "../router/state.ts";
import { F, TxStatus } from "../wire/codes.ts";
import { MessageWriter, errorResponse, readyForQuery, writeError, type ErrorFields } from "../wire/encode.ts";
import { concatBytes, copyBytes } from "../wire/bytes.ts";
import { decodeQuery } from "../wire/frontend.ts";
import { PreparedStatements, namesStatements, type Message } from "./prepared.ts";
import type { SessionSettings } from "./settings.ts";
import type { Mirror, MirrorJob } from "../policy/mirror.ts";
import { shadowBatch, shadowQuery } from "../policy/mirror-request.ts";
import { fieldsOf, offerMirror, type SessionPolicy } from "./policy.ts";
import { FUNCTION_CALL, Throttle } from "./throttle.ts";



type Request = (
  | { kind: "simple"; frame: Uint8Array; end: "query" | "function"; ops: readonly SessionOp[]; prefix?: Uint8Array; retry?: boolean; mirror?: MirrorJob }
  | { kind: "batch"; messages: Message[]; sync: boolean; retry?: boolean; creates?: string[]; mirror?: MirrorJob }
  | { kind: "copy"; frame: Uint8Array }
  | { kind: "local"; bytes: Uint8Array }
) & { target: Target };

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

export class TransactionRelay extends MessageRelay {
  private conn: ServerConn | null = null;
  private pool: Pool | null = null;
  /** The kind of node `conn` is on. */
  private target: Target = "primary";
  /** Requests waiting for a server connection, in order. */
  private queue: Request[] = [];
  private acquiring = false;
  /** A BEGIN held back (`transactions = "first-statement"`), sent ahead of the next statement. */
  private deferredBegin: Uint8Array | null = null;
  /** Rate limits: requests over a limit wait here, with the messages behind them. */
  protected readonly throttle: Throttle;
  private readonly mirror: Mirror;
  /** What runs a request once its rate-limit turn has come, or refuses it (made once, not per request). */
  private readonly queryAdmitted = (frame: Uint8Array) => this.query(frame, true);
  private readonly functionCallAdmitted = (frame: Uint8Array) => this.functionCall(frame, true);
  private readonly refuseQuery = (e: PgError) => this.refuse(fieldsOf(e), true);

  constructor(
    client: ClientSide,
    private readonly group: PoolGroup,
    private readonly settings: SessionSettings,
    private readonly prepared: PreparedStatements,
    private readonly router: RouterState,
    private readonly log: Logger,
    private readonly policy: SessionPolicy,
  ) {
    super(client);
    prepared.onSettled = () => this.drainQueue();
    this.mirror = policy.mirror;
    this.throttle = new Throttle(policy.limiter, policy.user, policy.address, {
      holdReads: (on) => client.holdReads(on),
      replay: (type, frame) => this.onMessage(type, frame),
    });
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

  /** Whether the next request must stay on the current connection. */
  private get bound(): boolean {
    return this.conn !== null && (this.conn.txStatus !== TxStatus.Idle || this.settings.pinned || this.router.transaction !== null);
  }

  private status(): number {
    return this.router.transaction || this.deferredBegin ? TxStatus.InTransaction : TxStatus.Idle;
  }

  protected skippedToSync(): void {
    this.client.send(readyForQuery(TxStatus.Idle));
  }

  protected copy(frame: Uint8Array): void {
    this.submit({ kind: "copy", frame, target: this.target });
  }

  // --- routing -------------------------------------------------------------------------------------------

  protected functionCall(frame: Uint8Array, admitted = false): void {
    if (!admitted && this.throttle.active && !this.throttle.query(FUNCTION_CALL, frame, this.functionCallAdmitted, this.refuseQuery)) return;
    this.submit({ kind: "simple", frame, end: "function", ops: [], target: "primary" });
  }

  /** `admitted`: the rate limiter already let it through (it waited its turn). */
  protected query(frame: Uint8Array, admitted = false): void {
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
    if (!admitted && this.throttle.active && !this.throttle.query(sh.key, frame, this.queryAdmitted, this.refuseQuery)) return;
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
    const mirror = !prefix && ops.length === 0 && this.mayMirror() ? offerMirror(this.policy, this.settings, sh.key, !d.classification.readOnly, () => shadowQuery(frame)) : null;
    this.submit({ kind: "simple", frame, end: "query", ops, target: route.target, prefix, retry, mirror: mirror ?? undefined });
  }

  /** Outside a transaction and with no session-bound state: a request means the same on the shadow. */
  private mayMirror(): boolean {
    return this.mirror.enabled && !this.bound && this.router.transaction === null && !this.deferredBegin && !this.settings.pinned;
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

  /** `admitted`: the rate limiter already let it through (it waited its turn). */
  protected batchRequest(messages: Message[], sync: boolean, admitted = false): void {
    const { executed, named } = this.prepared.peek(messages);
    // One lexer pass per executed statement serves the rate limits, the effects and the decision.
    let shapes: Shape[] | null = null;
    if (!admitted && this.throttle.active) {
      shapes = executed.map(shape);
      const keys = shapes.map((sh) => sh.key);
      if (!this.throttle.batch(keys, sync, () => this.batchRequest(messages, sync, true), (e) => this.refuse(fieldsOf(e), sync))) return;
    }
    let target: Target = "primary";
    const mayMirror = sync && this.mayMirror();
    let write = false;
    let effects = false;
    let keys = "";
    if (this.bound) target = this.target;
    else if (executed.length > 0) {
      // The batch runs on one node: a replica only when every statement it executes may run there.
      target = "replica";
      for (let i = 0; i < executed.length; i++) {
        const sql = executed[i]!;
        this.router.pinned = this.pinnedTo();
        // A prepared statement's text comes back every Execute: its shape is taken once here.
        const sh = shapes?.[i] ?? shape(sql);
        const ops = sessionEffects(sql, sh.key);
        const taken = reservedName(ops);
        if (taken) return this.refuse(reservedError(taken), sync);
        const d = this.router.decide(sql, this.group.replicaAvailable, sh, ops);
        const r = this.pinsToPrimary(d.route, ops);
        this.trace(sql, r, d);
        if (r.target === "refuse") return this.refuse({ code: "25006", message: `pgroute: ${describeRoute(r.reason)}` }, sync);
        if (r.target !== "replica") target = "primary";
        if (mayMirror) {
          effects ||= ops.length > 0;
          write ||= !d.classification.readOnly;
          keys = i === 0 ? sh.key : `${keys}; ${sh.key}`;
        }
      }
    }
    // A read a replica refuses is sent again to the primary, whole batches up to their Sync (names the batch
    // created are given up first, so its Parse can create them again).
    const retry = target === "replica" && !this.bound && sync;
    const mirror = mayMirror && keys !== "" && !effects ? offerMirror(this.policy, this.settings, keys, write, () => shadowBatch(messages, (name) => this.prepared.statementText(name))) : null;
    this.submit({ kind: "batch", messages, sync, target, retry, creates: named, mirror: mirror ?? undefined });
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
        if (req.prefix) ok = conn.send(req.prefix, [{ end: "query", mode: "swallow", onSwallowedError: relayWarning }]);
        const entry: Entry = { end: req.end, mode: "forward", tag: req.ops };
        if (req.retry) entry.retry = this.retryGroup(conn, req);
        req.mirror?.watch([entry], entry);
        ok = ok && conn.send(req.frame, [entry]);
        break;
      }
      case "copy":
        ok = conn.send(req.frame, []);
        break;
      case "batch": {
        const built = this.prepared.build(req.messages, conn);
        this.pinFor(built.ops);
        if (req.retry) {
          const group = this.retryGroup(conn, req);
          for (const e of built.entries) if (!("local" in e)) e.retry = group;
        }
        const last = built.entries[built.entries.length - 1];
        if (req.mirror && last && !("local" in last)) req.mirror.watch(built.entries, last);
        ok = conn.send(built.bytes, built.entries);
        break;
      }
    }
    if (!ok) this.client.fatal(errors.serverGone(conn.node.name, "the connection is closed"));
  }

  /** How a read sent to a replica outside a transaction is retried on the primary when the replica refuses it. */
  private retryGroup(conn: ServerConn, req: Extract<Request, { kind: "simple" | "batch" }>): RetryGroup {
    return {
      // 25006: the statement wanted to write. Only in autocommit: nothing else of the session ran there.
      retryOn: (e) => e.code === "25006" && conn.txStatus === TxStatus.Idle,
      retry: () => {
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
    this.router.transaction = status === TxStatus.Idle ? null : this.target;
    if (conn.pending === 0 && this.queue.length === 0) this.throttle.settle(status !== TxStatus.Idle);
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
    // No connection of this client's: nothing it was told was cut off.
    if (conn || error) this.serverLost(conn, this.pool, error);
  }



  /** The client is gone: its connection goes back clean, or not at all when its state is in doubt. */
  close(): void {
    this.closed = true;
    this.throttle.close();
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
