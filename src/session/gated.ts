/**
 * Session pooling under policies: the client keeps one server connection from login to disconnect, as with
 * {@link SessionRelay}, but its messages are relayed one request at a time and the server's replies matched to them
 * (the connection in tracked mode, see src/pool/demux.ts) — because rate limits must be able to hold a request
 * back or answer it with pgroute's own ERROR 53400 in its place, and mirroring must see the primary's result of a
 * request. Nothing is rewritten: statement and portal names, SETs, LISTEN, temporary tables all live on the
 * session's own server connection, exactly as without pgroute.
 *
 * Used instead of the byte relay when, at login, `[ratelimit]` has statement or transaction limits or `[mirror]`
 * is on. Extended-protocol messages are held until their Sync or Flush, when the batch is admitted (or refused) as
 * a whole; a refused request is answered with the error followed by the server's own ReadyForQuery (a lone Sync
 * is sent in its place), so the transaction status the client sees is always the server's.
 */
import { errors, type PgError } from "../errors.ts";
import type { Entry, End, Pending } from "../pool/demux.ts";
import type { Pool } from "../pool/pool.ts";
import type { ServerConn } from "../pool/server.ts";
import type { MirrorJob } from "../policy/mirror.ts";
import { shadowBatch, shadowQuery, type StatementText } from "../policy/mirror-request.ts";
import { classify, type FunctionLists } from "../router/classify.ts";
import { sessionEffects, type SessionOp } from "../router/effects.ts";
import { shape, type Shape } from "../router/lexer.ts";
import { concatBytes, copyBytes } from "../wire/bytes.ts";
import { F, TxStatus } from "../wire/codes.ts";
import { errorResponse } from "../wire/encode.ts";
import { decodeBind, decodeExecute, decodeParse, decodeQuery, decodeTarget } from "../wire/frontend.ts";
import { fieldsOf, offerMirror, type SessionPolicy } from "./policy.ts";
import type { Message } from "./prepared.ts";
import { MessageRelay, type ClientSide } from "./relay.ts";
import type { SessionSettings } from "./settings.ts";
import { FUNCTION_CALL, Throttle } from "./throttle.ts";

const SYNC = Uint8Array.of(F.Sync, 0, 0, 0, 4);

/** The reply that completes each extended-protocol message (Flush has none). */
const END_OF: Partial<Record<number, End>> = {
  [F.Parse]: "parse",
  [F.Bind]: "bind",
  [F.Describe]: "describe",
  [F.Execute]: "execute",
  [F.Close]: "close",
  [F.Sync]: "sync",
};

export class GatedSessionRelay extends MessageRelay {
  protected readonly throttle: Throttle;
  /** The session's prepared statements and portals as the server has them (texts, for fingerprints and the mirror). */
  private readonly statements = new Map<string, StatementText>();
  private readonly portals = new Map<string, StatementText>();
  /** Session effects of statements executed since the last Sync: its ReadyForQuery decides whether they stick. */
  private execOps: SessionOp[] = [];
  /** What runs a request once its rate-limit turn has come, or refuses it (made once, not per request). */
  private readonly queryAdmitted = (frame: Uint8Array) => this.query(frame, true);
  private readonly functionCallAdmitted = (frame: Uint8Array) => this.functionCall(frame, true);
  private readonly refuseQuery = (e: PgError) => this.refuse(e, true);

  constructor(
    client: ClientSide,
    private readonly pool: Pool,
    private conn: ServerConn | null,
    private readonly settings: SessionSettings,
    /** For telling reads from writes (mirroring). */
    private readonly functions: FunctionLists,
    private readonly policy: SessionPolicy,
  ) {
    super(client);
    conn?.attach(this, "tracked");
    this.throttle = new Throttle(policy.limiter, policy.user, policy.address, {
      holdReads: (on) => client.holdReads(on),
      replay: (type, frame) => this.onMessage(type, frame),
    });
  }

  get cancelTarget(): ServerConn | null {
    return this.conn;
  }

  /** The client's Sync after a refused batch: the server's ReadyForQuery answers it. */
  protected skippedToSync(): void {
    this.send(SYNC, [{ end: "sync", mode: "forward" }]);
  }

  protected copy(frame: Uint8Array): void {
    this.send(frame, []);
  }

  protected functionCall(frame: Uint8Array, admitted = false): void {
    if (!admitted && this.throttle.active && !this.throttle.query(FUNCTION_CALL, frame, this.functionCallAdmitted, this.refuseQuery)) return;
    this.send(frame, [{ end: "function", mode: "forward" }]);
  }

  protected query(frame: Uint8Array, admitted = false): void {
    const sql = decodeQuery(frame, 5, frame.length);
    const sh = shape(sql);
    if (!admitted && this.throttle.active && !this.throttle.query(sh.key, frame, this.queryAdmitted, this.refuseQuery)) return;
    const ops = sessionEffects(sql, sh.key);
    this.pinFor(ops);
    const entry: Entry = { end: "query", mode: "forward", tag: ops };
    const job =
      ops.length === 0 && this.mayMirror()
        ? offerMirror(this.policy, this.settings, sh.key, !classify(sql, this.functions, sh.key).readOnly, () => shadowQuery(frame))
        : null;
    job?.watch([entry], entry);
    this.send(frame, [entry]);
  }

  protected batchRequest(messages: Message[], sync: boolean, admitted = false): void {
    const executed = this.peek(messages);
    let shapes: Shape[] | null = null;
    if (!admitted && this.throttle.active) {
      shapes = executed.map(shape);
      if (!this.throttle.batch(shapes.map((s) => s.key), sync, () => this.batchRequest(messages, sync, true), (e) => this.refuse(e, sync))) return;
    }
    const ops: SessionOp[] = [];
    let keys = "";
    let write = false;
    const mayMirror = sync && this.mayMirror();
    for (let i = 0; i < executed.length; i++) {
      const sql = executed[i]!;
      const sh = shapes?.[i] ?? shape(sql);
      ops.push(...sessionEffects(sql, sh.key));
      if (mayMirror) {
        keys = i === 0 ? sh.key : `${keys}; ${sh.key}`;
        write ||= !classify(sql, this.functions, sh.key).readOnly;
      }
    }
    this.pinFor(ops);
    this.execOps.push(...ops);
    // Before the batch's own Parse and Close are recorded: the shadow needs the statements as they were.
    const job =
      mayMirror && keys !== "" && ops.length === 0
        ? offerMirror(this.policy, this.settings, keys, write, () => shadowBatch(messages, (name) => this.statements.get(name)))
        : null;
    const entries: Pending[] = [];
    for (const m of messages) {
      this.track(m);
      const end = END_OF[m.type];
      if (!end) continue;
      if (end !== "sync") entries.push({ end, mode: "forward" });
      else {
        entries.push({ end, mode: "forward", tag: this.execOps });
        this.execOps = [];
      }
    }
    const last = entries[entries.length - 1];
    if (job && last && !("local" in last)) job.watch(entries, last);
    this.send(concatBytes(messages.map((m) => m.frame)), entries);
  }

  /**
   * The texts of the statements a batch executes, from this session's statements and portals and the batch's own
   * Parse and Bind messages — without recording anything yet (the batch may be refused).
   */
  private peek(messages: readonly Message[]): string[] {
    const out: string[] = [];
    const stmts = new Map<string, string>();
    const portals = new Map<string, string>();
    for (const m of messages) {
      const msg = m.frame; // decoders take offsets: the body starts at 5, after type and length
      try {
        if (m.type === F.Parse) {
          const p = decodeParse(msg, 5, msg.length);
          stmts.set(p.name, p.query);
        } else if (m.type === F.Bind) {
          const b = decodeBind(msg, 5, msg.length);
          const text = stmts.get(b.statement) ?? this.statements.get(b.statement)?.query;
          if (text !== undefined) portals.set(b.portal, text);
        } else if (m.type === F.Execute) {
          const portal = decodeExecute(msg, 5, msg.length);
          const text = portals.get(portal) ?? this.portals.get(portal)?.query;
          out.push(text ?? "");
        }
      } catch {
        // A malformed message is the server's to reject.
      }
    }
    return out;
  }

  /** Records what a message sent to the server creates or removes. */
  private track(m: Message): void {
    const msg = m.frame;
    try {
      switch (m.type) {
        case F.Parse: {
          const p = decodeParse(msg, 5, msg.length);
          this.statements.set(p.name, { query: p.query, types: copyBytes(p.types) });
          break;
        }
        case F.Bind: {
          const b = decodeBind(msg, 5, msg.length);
          const s = this.statements.get(b.statement);
          if (s) this.portals.set(b.portal, s);
          break;
        }
        case F.Close: {
          const t = decodeTarget(msg, 5, msg.length);
          (t.kind === 0x53 /* 'S' */ ? this.statements : this.portals).delete(t.name);
          break;
        }
      }
    } catch {
      // The server rejects it; nothing is created.
    }
  }

  /** Outside a transaction, nothing in flight, no session-bound state: a request means the same on the shadow. */
  private mayMirror(): boolean {
    const conn = this.conn;
    return this.policy.mirror.enabled && conn !== null && conn.txStatus === TxStatus.Idle && conn.pending === 0 && !this.settings.pinned;
  }

  private pinFor(ops: readonly SessionOp[]): void {
    for (const op of ops) if (op.op === "pin") this.settings.pin(op.reason);
  }

  /**
   * pgroute's own error in place of a request, in order with the replies still owed: followed by the server's
   * ReadyForQuery (a lone Sync) when the request ended with a Sync or was a Query; otherwise the client's messages
   * up to its Sync are skipped, as Postgres does after an error.
   */
  private refuse(e: PgError, sync: boolean): void {
    const error = errorResponse({ severity: "ERROR", ...fieldsOf(e) });
    if (sync) this.send(SYNC, [{ local: error }, { end: "sync", mode: "forward" }]);
    else {
      this.send(new Uint8Array(0), [{ local: error }]);
      this.skippingToSync = true;
    }
  }

  private send(bytes: Uint8Array, entries: Pending[]): void {
    const conn = this.conn;
    if (!conn || !conn.send(bytes, entries)) this.client.fatal(errors.serverGone(conn?.node.name ?? this.pool.node.name, "the connection is closed"));
  }

  // --- ServerOwner -------------------------------------------------------------------------------------

  ready(status: number, failed: boolean, entry: Entry): void {
    const conn = this.conn;
    if (!conn) return;
    // Settings follow the session, so mirrored requests run under the same ones on the shadow.
    if (this.settings.ready(status, failed, entry.tag as readonly SessionOp[] | undefined, conn)) this.statements.clear();
    if (status === TxStatus.Idle) this.portals.clear(); // portals end with their transaction
    if (conn.pending === 0) this.throttle.settle(status !== TxStatus.Idle);
  }

  onServerClose(error: PgError | null): void {
    const conn = this.conn;
    this.conn = null;
    this.serverLost(conn, this.pool, error);
  }

  /** The client is gone: reset and pool its connection when nothing is in flight, close it otherwise. */
  close(): void {
    this.closed = true;
    this.throttle.close();
    this.batch = [];
    const conn = this.conn;
    this.conn = null;
    if (!conn) return;
    this.pool.recycle(conn, true);
  }
}
