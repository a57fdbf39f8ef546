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
import type { LeaseWaiter, PoolGroup, ReadBound, Target } from "../pool/group.ts";
import type { Pool } from "../pool/pool.ts";
import type { ServerConn } from "../pool/server.ts";
import { MessageRelay, type ClientSide } from "./relay.ts";
import { RESERVED_PREFIX, sessionEffects, type PinReason, type SessionOp } from "../router/effects.ts";
import { shapeOf, type Shape } from "../router/lexer.ts";
import type { Classification } from "../router/classify.ts";
import { describeRoute, type Route, type RouteReason } from "../router/route.ts";
import type { RequestKind, RequestObserver, RequestSample } from "../cluster/observe.ts";
import type { SessionCounters } from "./counters.ts";
import { virtualSetting, type Decision, type RouterState } from "../router/state.ts";
import { F, TxStatus } from "../wire/codes.ts";
import { MessageWriter, errorResponse, readyForQuery, writeError, type ErrorFields } from "../wire/encode.ts";
import { concatBytes, copyBytes } from "../wire/bytes.ts";
import { commandComplete, showReply } from "../wire/results.ts";
import { decodeQuery, queryEnd } from "../wire/frontend.ts";
import { PreparedStatements, namesStatements, type Message } from "./prepared.ts";
import type { SessionSettings } from "./settings.ts";
import type { SessionPolicy } from "../policy/check.ts";
import { refusals, type Refusal } from "../policy/refusal.ts";
import { AbortedTransaction } from "./aborted.ts";
import { IdleClock, type IdleState } from "./idle.ts";
import { judgeBatch } from "./policed.ts";
import type { MirrorJob } from "../policy/mirror.ts";
import { shadowBatch, shadowQuery } from "../policy/mirror-request.ts";
import { MirrorDraft, offerMirror, type TrafficPolicy } from "./traffic.ts";
import { FUNCTION_CALL, Throttle } from "./throttle.ts";
import { Consistency, SHOW_LSN_QUERY } from "./consistency.ts";
import { IN_FAILED_TRANSACTION, lostReplies, oneRequest } from "./lost.ts";
import type { ErrorInfo } from "../wire/backend.ts";


type Request = (
  | ({
      kind: "simple";
      frame: Uint8Array;
      end: "query" | "function";
      ops: readonly SessionOp[];
      prefix?: Uint8Array;
      retry?: boolean;
      /** Sent to the client instead of the server's error (a refusal sent as a poisoned Query, see refusePolicy). */
      replaceError?: Uint8Array;
      /** The request may leave statement_timeout above the policy's cap: restore it before the next one. */
      capAfter?: boolean;
      /** A sample for the mirror: it watches the primary's replies. */
      mirror?: MirrorJob | null;
    } & About)
  | ({ kind: "batch"; messages: Message[]; sync: boolean; retry?: boolean; creates?: string[]; capAfter?: boolean; mirror?: MirrorJob | null } & About)
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

/** A Query the server is sure to reject (a syntax error), carrying a refusal into a transaction: see refusePolicy. */
const POISON_QUERY = new Uint8Array(serialize.query("pgroute"));
/** The same as a Parse, for a refusal that replaces a whole extended-protocol batch. */
const POISON_PARSE = new Uint8Array(serialize.parse({ name: "", text: "pgroute" }));

/** What a relay enforces beyond routing (src/policy), and whether it keeps one server connection (session pooling). */
export interface RelayOptions {
  /** Rate limits and mirroring (each may be off), and who the session is for them. */
  traffic: TrafficPolicy;
  /** The user's roles, timeouts and firewall rules; null: none to enforce. */
  policy?: SessionPolicy | null;
  /** Session pooling with policies: the client keeps this connection from login to disconnect. */
  hold?: { conn: ServerConn; pool: Pool; target: Target } | null;
  /** The zone the user's clients run in (`users.zone`): their reads prefer replicas there; absent: `balance.prefer_zone`. */
  zone?: string;
  /** Read-your-writes (src/session/consistency.ts); null: none (session pooling). */
  consistency?: Consistency | null;
}

const warning = (message: string) => writeError(new MessageWriter(), { severity: "WARNING", code: "01000", message }, true).done();


export class TransactionRelay extends MessageRelay {
  /** See {@link RelayOptions.zone}. */
  private readonly zone: string | undefined;
  private conn: ServerConn | null = null;
  private pool: Pool | null = null;
  /** The kind of node `conn` is on. */
  private target: Target = "primary";
  /** Requests waiting for a server connection, in order. */
  private queue: Request[] = [];
  private acquiring = false;
  /** A BEGIN held back (`transactions = "first-statement"`), sent ahead of the next statement. */
  private deferredBegin: Uint8Array | null = null;
  /** Requests sent and not yet answered, oldest first, while someone observes them. */
  private inflight: RequestSample[] = [];
  /** A batch ended by Flush: it is answered (and observed) with the Sync that follows. */
  private flushed: { about: About; startedAt: number } | null = null;
  private readonly policy: SessionPolicy | null;
  /** Session pooling: the connection is the client's until it leaves. */
  private readonly hold: boolean;
  /** A transaction pgroute rolled back after the idle-in-transaction timeout, answered locally until it ends. */
  private aborted: AbortedTransaction | null = null;
  /** The idle-in-transaction timeout's clock, when the user has one. */
  private readonly idle: IdleClock | null;
  /** The last statement text whose shape was taken, and that shape. */
  private lastText: string | null = null;
  private lastShape: Shape | null = null;
  /** Rate limits: requests over a limit wait here, with the messages behind them. */
  protected readonly throttle: Throttle;
  private readonly traffic: TrafficPolicy;
  /** What runs a request once its rate-limit turn has come, or refuses it (made once, not per request). */
  private readonly functionCallAdmitted = (frame: Uint8Array) => this.functionCall(frame, true);
  private readonly refuseAdmission = (e: PgError) => this.refusePolicy(e.fields);
  private readonly consistency: Consistency | null;
  /** The retryable read in flight (a replica's connection lost before any row: sent once more elsewhere). */
  private retryable: ReplicaRead | null = null;
  /** The node the next lease avoids (a read retried after its connection there was lost). */
  private avoid: string | null = null;
  /** The FATAL the server sent before it went away, kept from the client (see absorbFatal). */
  private serverFatal: ErrorInfo | null = null;

  constructor(
    client: ClientSide,
    private readonly group: PoolGroup,
    private readonly settings: SessionSettings,
    private readonly prepared: PreparedStatements,
    private readonly router: RouterState,
    private readonly log: Logger,
    /** Told about every completed request; null when nobody listens (nothing is recorded then). */
    private readonly observer: RequestObserver | null = null,
    /** Where routing decisions and pins are counted. */
    private readonly counters: SessionCounters | null = null,
    opts: RelayOptions,
  ) {
    super(client);
    prepared.onSettled = () => this.drainQueue();
    this.traffic = opts.traffic;
    this.throttle = new Throttle(opts.traffic.limiter, opts.traffic.user, opts.traffic.address, {
      holdReads: (on) => client.holdReads(on),
      replay: (type, frame) => this.onMessage(type, frame),
    });
    this.policy = opts.policy ?? null;
    this.hold = !!opts.hold;
    this.zone = opts.zone;
    this.consistency = opts.consistency ?? null;
    const limit = this.policy?.idleTimeoutMs ?? 0;
    this.idle = limit > 0 ? new IdleClock(limit, () => this.idleState(), () => this.rollBackIdle(limit)) : null;
    if (opts.hold) this.adopt(opts.hold.conn, opts.hold.pool, opts.hold.target);
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

  /** Why the session keeps its server connection between transactions, if it does. */
  get pinnedBy(): PinReason | null {
    return this.settings.pinned ? this.settings.pins.keys().next().value! : null;
  }

  /** A request waits for a server connection (a busy pool, or PAUSE). */
  get waiting(): boolean {
    return this.acquiring;
  }

  /**
   * A batch ended by Flush was sent and no Sync yet: the server is inside the implicit transaction that batch
   * opened, so everything up to the next Sync runs on the same connection.
   */
  private unsynced = false;

  /** Whether a read of this client may go to a replica now (one in its zone, or spilling over from it). */
  private get replicaAvailable(): boolean {
    return this.zone === undefined ? this.group.replicaAvailable : this.group.replicaAvailableIn(this.zone);
  }

  /** Whether the next request must stay on the current connection. */
  private get bound(): boolean {
    return this.conn !== null && (this.unsynced || this.hold || this.conn.txStatus !== TxStatus.Idle || this.settings.pinned || this.router.transaction !== null);
  }

  private status(): number {
    if (this.aborted) return TxStatus.Failed;
    return this.router.transaction || this.deferredBegin ? TxStatus.InTransaction : TxStatus.Idle;
  }

  /** One complete frontend message; `frame` may be a view into the client's chunk. */
  override onMessage(type: number, frame: Uint8Array): void {
    this.idle?.touch();
    // A transaction pgroute rolled back answers everything itself until it ends (a skip to Sync comes first; a
    // request waiting for its rate-limit turn keeps what follows it in order).
    if (this.aborted && !this.skippingToSync && !this.throttle.holding) return this.aborted.onMessage(type, frame);
    super.onMessage(type, frame);
  }

  protected skippedToSync(): void {
    this.client.send(readyForQuery(this.status()));
  }

  protected copy(frame: Uint8Array): void {
    this.submit({ kind: "copy", frame, target: this.target });
  }

  // --- routing -------------------------------------------------------------------------------------------

  protected functionCall(frame: Uint8Array, admitted = false): void {
    if (!admitted) {
      // A function by OID cannot be judged: refused for users whose statements are checked (fail closed).
      if (this.policy?.failsClosed) return this.refusePolicy(refusals.functionCall(this.policy.user));
      if (this.throttle.active && !this.throttle.query(FUNCTION_CALL, frame, this.functionCallAdmitted, this.refuseAdmission)) return;
    }
    this.submit({ kind: "simple", frame, end: "function", ops: [], target: this.hold ? this.target : "primary", ...UNPLACED, about: "write" });
  }

  /**
   * A Query: virtual settings are answered, reserved names and the user's policies checked, then the rate limits
   * admit it (a refused statement spends no token), and it is routed.
   */
  protected query(frame: Uint8Array): void {
    const end = queryEnd(frame, 5, frame.length);
    const sql = decodeQuery(frame, 5, frame.length, end);
    // One lexer pass (over the frame's own bytes) serves the virtual-setting check, the session effects, the
    // classification and the hints.
    const sh = shapeOf(sql, frame, 5, end);
    const v = virtualSetting(sql, sh.key);
    if (v) {
      if (this.consistency && Consistency.handles(v.name)) return this.consistencySetting(v);
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
    let capAfter = false;
    if (this.policy?.checks) {
      const verdict = this.policy.check(sql, sh.key);
      if (verdict.refusal) return this.refusePolicy(verdict.refusal);
      const change = this.policy.timeoutChange(sql, verdict);
      if (change === "refuse") return this.refusePolicy(refusals.timeoutNotLast(this.policy.user, this.policy.capMs));
      capAfter = change === "cap";
    }
    // Over a limit it waits its turn: the throttle calls back with its own copy of the frame.
    if (this.throttle.active && !this.throttle.query(sh.key, frame, (copy) => this.forward(copy, sql, sh, ops, capAfter), this.refuseAdmission)) return;
    this.forward(frame, sql, sh, ops, capAfter);
  }

  /** A Query that passed every check, to the session's own connection or where the router sends it. */
  private forward(frame: Uint8Array, sql: string, sh: Shape, ops: readonly SessionOp[], capAfter: boolean): void {
    if (this.hold) {
      // Session pooling: everything runs on the client's own connection; nothing to route.
      const mirror = ops.length === 0 && this.mayMirror() ? this.offerQuery(frame, sh.key, this.router.classify(sql, sh.key)) : null;
      this.pinFor(ops);
      return this.submit({ kind: "simple", frame, end: "query", ops, target: this.target, capAfter, mirror, ...UNPLACED, fingerprint: sh.key });
    }
    this.router.pinned = this.pinnedTo();
    const d = this.router.decide(sql, this.replicaAvailable, sh, ops);
    const route = this.readYourWrites(this.pinsToPrimary(d.route, ops));
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
    const mirror = ops.length === 0 && this.mayMirror() ? this.offerQuery(frame, sh.key, d.classification) : null;
    this.pinFor(ops);
    const prefix = this.deferredBegin ?? undefined;
    this.deferredBegin = null;
    this.router.deferredBegin = null;
    this.router.noteSettings(sql, d.classification);
    // A read sent to a replica outside a transaction may be retried on the primary if the replica refuses it.
    const retry = route.target === "replica" && !this.bound && !prefix && d.classification.statements === 1;
    this.submit({ kind: "simple", frame, end: "query", ops, target: route.target, prefix, retry, capAfter, mirror, fingerprint: sh.key, about: kindOf(d.classification), reason: route.reason.code });
  }

  /** The sampling draw for a Query the shadow may run. */
  private offerQuery(frame: Uint8Array, key: string, c: Classification): MirrorJob | null {
    return offerMirror(this.traffic, this.settings, key, !c.readOnly, () => shadowQuery(frame));
  }

  /**
   * Outside a transaction and with no session-bound state: a request means the same on the shadow. Nothing may be
   * ahead of it, queued or unanswered (a pipelined BEGIN would put it in a transaction); a batch after a
   * Flush-ended one is outside any transaction block all the same.
   */
  private mayMirror(): boolean {
    if (!this.traffic.mirror.enabled || this.settings.pinned || this.deferredBegin || this.router.transaction !== null || this.queue.length > 0) return false;
    const conn = this.conn;
    return conn === null || (conn.txStatus === TxStatus.Idle && conn.pending === 0);
  }

  /** Where the session is pinned, for the router (which then says so): the node of the connection it keeps. */
  private pinnedTo(): RouterState["pinned"] {
    if (!this.settings.pinned) return null;
    return { target: this.conn ? this.target : "primary", why: this.settings.pins.keys().next().value! };
  }

  /** Read-your-writes in `sticky` mode: a read outside a transaction stays on the primary a while after a write. */
  private readYourWrites(r: Route): Route {
    return this.consistency && !this.bound ? this.consistency.reroute(r) : r;
  }

  /**
   * `SET/RESET/SHOW pgroute.lsn | min_lsn | consistency`. A SHOW of the session's position that is not known yet
   * (it wrote since, or never asks in its mode) is answered by the primary, whose current position is at or past
   * the session's writes.
   */
  private consistencySetting(v: NonNullable<ReturnType<typeof virtualSetting>>): void {
    const c = this.consistency!;
    if (v.op !== "show") {
      const err = c.set(v);
      const reply = err ? errorResponse({ severity: "ERROR", code: "22023", message: err }) : commandComplete(v.op === "set" ? "SET" : "RESET");
      return this.local(new MessageWriter(64).bytes(reply).bytes(readyForQuery(this.status())).done());
    }
    // Inside a transaction on a replica the primary cannot be asked: the last position learned is the answer.
    const value = c.show(v.name, this.bound && this.target !== "primary");
    if (value !== null) return this.local(new MessageWriter(64).bytes(showReply(v.name, value)).bytes(readyForQuery(this.status())).done());
    this.submit({ kind: "simple", frame: SHOW_LSN_QUERY, end: "query", ops: [], target: this.bound ? this.target : "primary", ...UNPLACED, about: "read" });
  }

  /** Statements that pin the session run on the primary: the session then stays there. */
  private pinsToPrimary(r: Route, ops: readonly SessionOp[]): Route {
    if (r.target === "replica" && !this.bound && ops.some((o) => o.op === "pin")) return { target: "primary", reason: r.reason };
    return r;
  }

  /**
   * Extended-protocol messages up to a Sync or Flush: the user's policies judge the batch, the rate limits admit it
   * whole (a refused batch spends no token), then it is routed.
   */
  protected batchRequest(messages: Message[], sync: boolean): void {
    const { executed, executedAt, named } = this.prepared.peek(messages);
    let capAfter = false;
    if (this.policy?.checks) {
      const v = judgeBatch(this.policy, messages, executed, executedAt, this.shaped);
      if (v.kind === "refuse") return this.refuseBatch(messages, v.error, sync);
      capAfter = v.capAfter;
    }
    if (this.throttle.active) {
      const keys = executed.map((sql) => this.shaped(sql).key);
      const run = () => this.routeBatch(messages, sync, executed, named, capAfter);
      const refuse = (e: PgError) => this.refuseBatch(messages, errorResponse({ ...e.fields, severity: "ERROR" }), sync);
      if (!this.throttle.batch(keys, sync, run, refuse)) return;
    }
    this.routeBatch(messages, sync, executed, named, capAfter);
  }

  /** A batch that passed every check: where it runs, what observers are told of it, and the mirror's draw. */
  private routeBatch(messages: Message[], sync: boolean, executed: readonly string[], named: string[], capAfter: boolean): void {
    let target: Target = "primary";
    const about: About = { ...UNPLACED };
    // Only a batch up to its Sync is a request of its own on the shadow.
    const draft = sync && this.mayMirror() ? new MirrorDraft() : null;
    if (this.bound) {
      target = this.target;
      // Where it runs is settled (the transaction's connection); what it runs is still counted and reported.
      for (const sql of executed) {
        const sh = this.shaped(sql);
        const ops = sessionEffects(sql, sh.key);
        const d = this.router.decide(sql, this.replicaAvailable, sh, ops);
        this.trace(sql, d.route, d);
        describeInto(about, sh.key, d);
        draft?.add(sh.key, ops.length > 0, d.classification.readOnly);
      }
    } else if (executed.length > 0) {
      // The batch runs on one node: a replica only when every statement it executes may run there.
      target = "replica";
      for (const sql of executed) {
        this.router.pinned = this.pinnedTo();
        // One lexer pass for the effects and the decision (a prepared statement's text comes back every Execute).
        const sh = this.shaped(sql);
        const ops = sessionEffects(sql, sh.key);
        const taken = reservedName(ops);
        if (taken) return this.refuse(reservedError(taken), sync);
        const d = this.router.decide(sql, this.replicaAvailable, sh, ops);
        const r = this.pinsToPrimary(d.route, ops);
        this.trace(sql, r, d);
        if (r.target === "refuse") return this.refuse({ code: "25006", message: `pgroute: ${describeRoute(r.reason)}` }, sync);
        if (r.target !== "replica") target = "primary";
        describeInto(about, sh.key, { route: r, classification: d.classification });
        draft?.add(sh.key, ops.length > 0, d.classification.readOnly);
      }
    }
    if (target === "replica" && !this.bound && this.consistency?.sticky()) target = "primary";
    // A read a replica refuses is sent again to the primary, whole batches up to their Sync (names the batch
    // created are given up first, so its Parse can create them again).
    const retry = target === "replica" && !this.bound && sync;
    // Before the batch's own Parse and Close take effect: the shadow needs the statements as they were.
    const mirror = draft?.offer(this.traffic, this.settings, () => shadowBatch(messages, (name) => this.prepared.statementOf(name))) ?? null;
    this.submit({ kind: "batch", messages, sync, target, retry, creates: named, capAfter, mirror, ...about });
  }

  /** A statement's shape; the last one is kept, as a batch's statement is looked at by policy and router alike. */
  private readonly shaped = (sql: string): Shape => {
    if (sql !== this.lastText) {
      this.lastText = sql;
      this.lastShape = shapeOf(sql);
    }
    return this.lastShape!;
  };

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

  /**
   * A policy's refusal of a simple Query (or FunctionCall). With nothing in flight and no transaction open it is
   * answered locally. Otherwise it goes to the server as a Query that fails, its error replaced by the refusal:
   * the replies stay in order, and an open transaction fails as it would in Postgres, so a later COMMIT rolls back
   * rather than committing what ran before the refused statement.
   */
  private refusePolicy(fields: Refusal): void {
    if (this.quiet()) return this.refuse(fields, true);
    const prefix = this.deferredBegin ?? undefined;
    this.deferredBegin = null;
    this.router.deferredBegin = null;
    const replaceError = errorResponse({ severity: "ERROR", ...fields });
    this.submit({ kind: "simple", frame: POISON_QUERY, end: "query", ops: [], target: this.conn ? this.target : "primary", prefix, replaceError, ...UNPLACED });
  }

  /** A whole batch refused (`error`: an ErrorResponse): as {@link refusePolicy}, where its first message failed. */
  private refuseBatch(messages: Message[], error: Uint8Array, sync: boolean): void {
    if (this.quiet()) {
      this.local(sync ? concatBytes([error, readyForQuery(this.status())]) : error);
      if (!sync) this.skippingToSync = true;
      return;
    }
    const refused: Message[] = [{ type: F.Parse, frame: POISON_PARSE, refusal: error }, messages[messages.length - 1]!];
    this.submit({ kind: "batch", messages: refused, sync, target: this.conn ? this.target : "primary", ...UNPLACED });
  }

  /** Nothing in flight, no transaction: a reply of pgroute's own can answer the next request. */
  private quiet(): boolean {
    return this.queue.length === 0 && !this.acquiring && (this.conn === null || this.conn.pending === 0) && this.status() === TxStatus.Idle;
  }

  /** Counts a routing decision, and logs it at debug. */
  private trace(sql: string, r: Route, d: Decision): void {
    this.counters?.route(r);
    if (!this.log.enabled("debug")) return;
    this.log.debug("route", { target: r.target, reason: describeRoute(r.reason), statement: sql.length > 80 ? `${sql.slice(0, 79)}…` : sql, cached: d.classification.reason.code });
  }

  private pinFor(ops: readonly SessionOp[]): void {
    for (const op of ops) {
      if (op.op === "pin") {
        // A session-pooled client keeps its connection anyway: its pins only keep it from being mirrored.
        if (!this.hold && !this.settings.pins.has(op.reason)) {
          this.client.log("pinned", { reason: op.reason });
          if (this.counters) this.counters.pins[op.reason]++;
        }
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
      const read = this.readBound(req); // first: it may move the request to the primary
      const got = this.group.tryAcquire(req.target, read, this.zone);
      if (got) {
        this.adopt(got.conn, got.pool, got.target);
        return this.dispatch(got.conn, req);
      }
    }
    // Waiting for a connection. Bun hands every read a buffer of its own, so a frame that is a whole read (a
    // Query sent on its own) is kept as it is; one inside a larger read is copied, so that the request keeps only
    // its own bytes alive.
    if ((req.kind === "simple" || req.kind === "copy") && req.frame.byteLength !== req.frame.buffer.byteLength) req.frame = copyBytes(req.frame);
    this.queue.push(req);
    if (!conn) this.acquire();
  }

  private adopt(conn: ServerConn, pool: Pool, target: Target): void {
    this.conn = conn;
    this.pool = pool;
    this.target = target;
    this.serverFatal = null;
    conn.attach(this, "tracked");
  }

  /**
   * What restricts the replica a request about to lease a connection may use: read-your-writes, and a node to
   * avoid after a lost connection. A read that must see a write whose position is unknown goes to the primary.
   */
  private readBound(req: Request): ReadBound | undefined {
    if (req.target !== "replica") return undefined;
    const avoid = this.avoid;
    this.avoid = null;
    const bound = this.consistency?.readBound();
    if (bound === null) {
      req.target = "primary";
      if (req.kind === "simple" || req.kind === "batch") req.retry = false;
      return undefined;
    }
    if (avoid === null) return bound;
    return { minLsn: bound?.minLsn ?? 0, waitMs: bound?.waitMs ?? 0, avoid };
  }

  private acquire(): void {
    if (this.acquiring || this.closed) return;
    // Local replies at the head of the queue need no connection.
    while (this.queue[0]?.kind === "local") this.client.send((this.queue.shift() as { bytes: Uint8Array }).bytes);
    const head = this.queue[0];
    if (!head) return;
    this.acquiring = true;
    this.leasingFor = head;
    const read = this.readBound(head); // first: it may move the request to the primary
    this.group.lease(head.target, read, this.zone, this.leaseWaiter);
  }

  /** The request a lease is being waited for (the queue's head then). */
  private leasingFor: Request | null = null;

  /** Told by the pool group when the connection {@link acquire} waits for comes, or cannot. */
  private readonly leaseWaiter: LeaseWaiter = {
    granted: ({ conn, pool, target }) => {
      const head = this.leasingFor!;
      this.leasingFor = null;
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
    failed: (err) => {
      this.leasingFor = null;
      this.acquiring = false;
      this.failQueued(err);
    },
  };

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
        if (req.retry) entry.retry = this.retryGroupOf(conn, req);
        if (req.replaceError) entry.replaceError = req.replaceError;
        req.mirror?.watch([entry], entry);
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
          const group = this.retryGroupOf(conn, req);
          for (const e of built.entries) if (!("local" in e)) e.retry = group;
        }
        const last = built.entries[built.entries.length - 1];
        if (req.mirror && last && !("local" in last)) req.mirror.watch(built.entries, last);
        ok = conn.send(built.bytes, built.entries);
        break;
      }
    }
    if (!ok) return this.client.fatal(errors.serverGone(conn.node.name, "the connection is closed"));
    if (req.kind !== "copy" && req.about === "write" && this.target === "primary") this.consistency?.wrote();
    if (this.observer && req.kind !== "copy") this.track(req);
    if (req.kind !== "copy" && req.capAfter) {
      // The connection may now run with a statement_timeout above the cap: the next request brings it back.
      conn.applied.delete("statement_timeout");
      conn.appliedSignature = null;
    }
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
    this.inflight.push({ target: req.target, kind: about.about, fingerprint: about.fingerprint, reason: about.reason, startedAt, ms: 0, failed: false, txEnd: false, errorCode: null });
  }

  /** The retry group of a read sent to a replica outside a transaction, remembered while it is in flight. */
  private retryGroupOf(conn: ServerConn, req: Extract<Request, { kind: "simple" | "batch" }>): RetryGroup {
    this.retryable = new ReplicaRead(this, conn, req);
    return this.retryable;
  }

  /** A read the replica `r.conn` refused (25006) is sent again, to the primary (see {@link ReplicaRead}). */
  retryOnPrimary(r: ReplicaRead): void {
    const { conn, req } = r;
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
  }

  /** Brings the client's session settings to `conn`, pipelined before its request. */
  private syncSettings(conn: ServerConn): void {
    // In a failed transaction nothing runs but its end; the settings follow with the next request.
    if (conn.appliedSignature === this.settings.signature || conn.txStatus === TxStatus.Failed) return;
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
    this.retryable = null; // answered: nothing in flight is a read that may still be retried
    const sample = this.inflight.shift();
    if (sample && this.observer) {
      sample.ms = performance.now() - sample.startedAt;
      sample.failed = failed;
      sample.txEnd = status === TxStatus.Idle;
      if (failed) sample.errorCode = conn.readyErrorCode;
      this.observer.request(conn.node, sample);
    }
    this.router.transaction = status === TxStatus.Idle ? null : this.target;
    if (conn.pending === 0 && this.queue.length === 0) this.throttle.settle(status !== TxStatus.Idle);
    const version = this.settings.version;
    if (this.settings.ready(status, failed, entry.tag as readonly SessionOp[] | undefined, conn)) {
      conn.prepared.clear();
      this.prepared.clear();
    }
    if (this.settings.version !== version) conn.appliedSignature = null;
    // Read-your-writes: a transaction that wrote has committed; in `lsn` mode its WAL position is asked for on
    // this connection before it goes back (and the session's next read waits for the answer).
    // Its answer settles the connection after the chunk it arrived in is processed: what that chunk still holds is ours.
    const ask = this.target === "primary" ? (this.consistency?.committed(status === TxStatus.Idle, conn.pending, () => queueMicrotask(() => this.settle(conn))) ?? null) : null;
    if (ask) conn.send(this.consistency!.lsnQuery, [ask]);
    this.settle(conn);
    if (status !== TxStatus.Idle && this.idle && this.queue.length === 0 && conn.pending === 0) this.idle.idle();
  }

  /** The connection goes back to its pool when it is idle and the session does not keep it; else what waits is sent. */
  private settle(conn: ServerConn): void {
    // A closed connection is being given up (its entries fail first): onServerClose decides what happens next.
    if (this.conn !== conn || conn.closed) return;
    if (conn.idle && !this.settings.pinned && !this.hold) {
      this.conn = null;
      this.pool?.release(conn);
      if (this.queue.length > 0) this.acquire();
    } else this.drainQueue();
  }

  // --- idle in transaction --------------------------------------------------------------------------------

  private idleState(): IdleState {
    const conn = this.conn;
    if (this.closed || this.aborted || !conn || conn.txStatus === TxStatus.Idle) return "done";
    return this.queue.length > 0 || this.batch.length > 0 || conn.pending > 0 || this.throttle.holding ? "busy" : "idle";
  }

  /**
   * Past the idle-in-transaction timeout: the transaction is rolled back on the server and its connection goes
   * back to the pool (a pinned or session-pooled one stays with the client, rolled back); the client's session is
   * left in a failed transaction that pgroute answers until the client ends it (src/session/aborted.ts).
   */
  private rollBackIdle(limit: number): void {
    const conn = this.conn!;
    this.log.warn("idle_in_transaction_timeout", { node: conn.node.name, timeout_ms: limit, user: this.policy!.user });
    this.settings.ready(TxStatus.Idle, true, undefined, conn); // what the transaction did to the session is undone
    this.router.transaction = null;
    if (this.settings.pinned || this.hold) {
      conn.query("ROLLBACK").catch(() => {}); // a failure closes the connection, and the client learns it then
    } else {
      this.conn = null;
      this.pool?.recycle(conn, false);
    }
    this.enterAborted(refusals.idleInTransaction(limit));
  }

  /** The session is in a transaction that failed without its server: pgroute answers it until it ends. */
  private enterAborted(error: Omit<ErrorFields, "severity">, later?: Omit<ErrorFields, "severity">, reportFirst = false): void {
    this.aborted = new AbortedTransaction(
      {
        local: (bytes) => this.local(bytes),
        statementText: (name) => this.prepared.statementText(name),
        declare: (name, query, types) => this.prepared.declare(name, query, types),
        forget: (name) => this.prepared.forget([name]),
        ended: (rest) => {
          this.aborted = null;
          for (const m of rest) this.onMessage(m.type, m.frame);
        },
      },
      error,
      later,
      reportFirst,
    );
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
    if (error && conn && this.survive(conn)) return;
    // No connection of this client's: nothing it was told was cut off.
    if (conn || error) this.serverLost(null, null, error);
  }

  /** The server is about to go away under a forwarded request: kept from the client when the session survives it. */
  absorbFatal(e: ErrorInfo): boolean {
    if (this.closed || this.hold || this.settings.pinned) return false;
    this.serverFatal = e;
    return true;
  }

  /**
   * The server went away under the session (it crashed, was shut down, failed over). Unless the session kept
   * server-side state there (a pin, session pooling), it survives: a read that had not returned anything is sent
   * once more to another node; otherwise each request in flight gets an error — never sent again, since it may
   * have run — and a transaction that was open is failed: statements get 25P02 until ROLLBACK (a COMMIT before the
   * client was told gets the error; one after, ROLLBACK). Requests queued behind go on a new connection, or, in the
   * failed transaction, to the answers of it. Returns false when the client must go.
   */
  private survive(conn: ServerConn): boolean {
    const lost = conn.lost;
    if (!lost || this.hold || this.settings.pinned) return false;
    const inTx = conn.txStatus !== TxStatus.Idle || this.router.transaction !== null;
    const why = this.serverFatal?.message ?? "the server closed the connection";
    this.serverFatal = null;
    const r = this.retryable;
    this.retryable = null;
    if (!inTx && r && r.conn === conn && !r.committed && oneRequest(lost.steps)) {
      this.log.info("retry_elsewhere", { node: conn.node.name, reason: why });
      if (r.req.kind === "batch" && r.req.creates) this.prepared.forget(r.req.creates);
      this.avoid = conn.node.name;
      this.queue.unshift({ ...r.req, retry: false });
      this.acquire();
      return true;
    }
    this.log.warn("server_connection_lost", { node: conn.node.name, error: why, in_transaction: inTx ? "yes" : "no", requests: lost.steps.filter((x) => x === "ready").length });
    const error = errors.serverLost(conn.node.name, why, inTx);
    this.router.transaction = null;
    if (inTx) this.settings.ready(TxStatus.Idle, true, undefined, conn); // what the transaction did to the session is gone
    this.client.send(lostReplies(lost.steps, errorResponse({ ...error.fields, severity: "ERROR" }), inTx ? TxStatus.Failed : TxStatus.Idle));
    if (lost.skipping) this.skippingToSync = true;
    const queued = this.queue;
    this.queue = [];
    if (inTx) {
      // A client idle in its transaction learns of it at its next statement; one that was answered, by 25P02.
      const told = lost.steps.includes("error");
      this.enterAborted(told ? IN_FAILED_TRANSACTION : { code: error.code, message: error.message, detail: error.detail, hint: error.hint }, IN_FAILED_TRANSACTION, !told);
      for (const q of queued) this.replay(q);
    } else {
      this.queue = queued;
      if (queued.length > 0) this.acquire();
    }
    return true;
  }

  /** A request that was waiting for the lost connection, handed back as the messages it came from. */
  private replay(q: Request): void {
    switch (q.kind) {
      case "simple":
        return this.onMessage(q.frame[0]!, q.frame);
      case "batch":
        for (const m of q.messages) this.onMessage(m.type, m.frame);
        return;
      case "local":
        return this.client.send(q.bytes);
      case "copy":
        return; // COPY data outside a COPY is ignored, as Postgres does
    }
  }



  /** The client is gone: its connection goes back clean, or not at all when its state is in doubt. */
  close(): void {
    this.closed = true;
    this.throttle.close();
    this.queue = [];
    this.batch = [];
    this.idle?.stop();
    const conn = this.conn;
    const pool = this.pool;
    this.conn = null;
    if (!conn || !pool) return;
    // Session-scoped state (LISTEN, temp tables, advisory locks, cursors, SQL PREPARE) must not reach the next client.
    pool.recycle(conn, this.settings.pinned || this.hold);
  }
}

/**
 * How a read sent to a replica outside a transaction is retried elsewhere: on the primary when the replica refuses
 * it (25006), on another node when the replica goes away before answering (a FATAL, then the close: see
 * TransactionRelay's `survive`). One object per such read, with no closures: it is made for every replica read.
 */
class ReplicaRead implements RetryGroup {
  committed?: boolean;

  constructor(
    private readonly relay: TransactionRelay,
    readonly conn: ServerConn,
    readonly req: Extract<Request, { kind: "simple" | "batch" }>,
  ) {}

  /** 25006: the statement wanted to write. Only in autocommit: nothing else of the session ran there. */
  retryOn(e: ErrorInfo): boolean {
    return this.conn.txStatus === TxStatus.Idle && (e.code === "25006" || e.severity === "FATAL" || e.severity === "PANIC");
  }

  retry(): void {
    this.relay.retryOnPrimary(this);
  }
}

/** Adds one executed statement to what observers are told of its batch: the first one names it, any write makes it a write. */
function describeInto(about: About, key: string, d: Pick<Decision, "route" | "classification">): void {
  if (about.reason === null) {
    about.fingerprint = key;
    about.reason = d.route.reason.code;
  }
  const kind = kindOf(d.classification);
  if (about.about !== "write" && kind !== "other") about.about = kind;
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
