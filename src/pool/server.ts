/**
 * One backend connection: TCP connect, TLS as the node's sslmode asks (./tls.ts), StartupMessage,
 * authentication (SCRAM-SHA-256, md5, cleartext or trust), the server's ParameterStatus and BackendKeyData,
 * then relay in one of two modes:
 *
 * - `raw` (session pooling): chunks go to the owner unchanged; only ReadyForQuery is looked at.
 * - `tracked` (transaction pooling): every request sent has an entry in a {@link Demux}, which matches replies
 *   to requests, so pgroute can add its own requests (SET, Parse, ROLLBACK) and know exactly when the
 *   connection is idle and can go back to the pool.
 */
import type { Socket, SocketHandler } from "bun";
import { serialize } from "pg-protocol";
import type { NodeConfig } from "../config/types.ts";
import { PgError, errors } from "../errors.ts";
import { gatherWrites, Outbox, type OutboxOwner } from "../net/outbox.ts";
import { Lru } from "../router/cache.ts";
import {
  decodeAuthentication,
  decodeBackendKeyData,
  decodeError,
  decodeServerError,
  decodeParameterStatus,
  decodeSaslMechanisms,
  type ErrorInfo,
} from "../wire/backend.ts";
import { Auth, B, ErrorField, TxStatus, isTxStatus } from "../wire/codes.ts";
import { startupMessage } from "../wire/encode.ts";
import { FrameReader, typesOtherThan, type FrameSink } from "../wire/frame.ts";
import { SCRAM_MECHANISM, ScramClient, md5Hash, md5Response, type ScramSecret } from "../wire/scram.ts";
import type { NodeCounters } from "../stats.ts";
import { Demux, DemuxError, TRACKED_TYPES, type DemuxOwner, type Entry, type Owed, type Pending } from "./demux.ts";
import { openServerSocket } from "./tls.ts";

/** What pgroute can prove to a server. Which one is used depends on what the server asks for. */
export interface ServerCredentials {
  password?: string;
  /** `md5…` hash of password+user, enough to answer an md5 challenge. */
  md5Hash?: string;
  /** SCRAM pass-through: the ClientKey recovered from the client's own proof, with the verifier it matches. */
  scram?: Extract<ScramSecret, { kind: "clientKey" }>;
}

export interface ServerLogin {
  node: NodeConfig;
  /** Startup parameters, `user` and `database` included. */
  params: ReadonlyMap<string, string>;
  credentials: ServerCredentials;
  connectTimeoutMs: number;
  /** Largest message accepted from the server (length field included). */
  maxMessageSize: number;
  /** Capacity of the per-connection prepared statement cache. */
  preparedCapacity?: number;
  /** Where raw-mode (session pooling) requests and transactions are counted. */
  counters?: NodeCounters;
}

/** Receives a relaying server connection's traffic. */
export interface ServerOwner extends DemuxOwner {
  /** The connection is gone; `error` says why when it was not pgroute's own doing. */
  onServerClose(error: PgError | null): void;
  /** The socket to the server can take more: resume reading the client. */
  onServerWritable(): void;
  /** The socket to the server is full: pause reading the client. */
  onServerBlocked(): void;
}

type Phase = "connecting" | "login" | "ready" | "closed";

/** Message bodies read during login. */
const LOGIN_TYPES = [
  B.Authentication,
  B.ParameterStatus,
  B.BackendKeyData,
  B.ReadyForQuery,
  B.ErrorResponse,
  B.NegotiateProtocolVersion,
];

/** Raw mode looks at ReadyForQuery (transaction status) and ErrorResponse (a FATAL before a close). */
const RAW_TYPES = [B.ReadyForQuery, B.ErrorResponse];

/** Anything but a backend message of protocol 3 is refused from its header: the server is broken or hostile. */
const NOT_BACKEND = typesOtherThan(Object.values(B));

/** What a raw-mode ReadyForQuery is reported with. */
const RAW_ENTRY: Entry = Object.freeze({ end: "query", mode: "forward" }) as Entry;

/** Owner of a connection nobody leases: drops whatever the server sends unasked. */
const NOBODY: ServerOwner = {
  deliver() {},
  ready() {},
  onServerClose() {},
  onServerWritable() {},
  onServerBlocked() {},
};

let nextId = 1;

export class ServerConn implements FrameSink, OutboxOwner {
  readonly id = nextId++;
  readonly node: NodeConfig;
  /** ParameterStatus values as the server last reported them, in arrival order. */
  readonly params = new Map<string, string>();
  /** Session settings pgroute applied on this connection (name → the statement that set it). */
  applied = new Map<string, string>();
  /** The signature of the settings in `applied` (a shortcut past `diff`); null when unknown. */
  appliedSignature: string | null = null;
  /** CancelRequests forwarded for this connection and not yet acknowledged by the server. */
  cancelling = 0;
  /** Runs once `cancelling` drops back to 0 (the pool holds a connection back until then). */
  afterCancel: (() => void) | null = null;
  /**
   * Server-side names of the prepared statements this connection has, least recently used first. Never trimmed
   * by itself: a name forgotten here without a Close would stay on the server, and preparing it again would fail
   * with 42P05. Statements beyond `preparedCapacity` are closed explicitly (PreparedStatements.evictFor).
   */
  readonly prepared = new Lru<string, true>(Number.POSITIVE_INFINITY);
  /** How many prepared statements this connection keeps (`pool.prepared_statements`). */
  readonly preparedCapacity: number;
  /** The server's BackendKeyData, used to cancel its running query. */
  pid = 0;
  secret = 0;
  /** Transaction status from the latest ReadyForQuery. */
  txStatus: number = TxStatus.Idle;
  readonly createdAt = Date.now();
  /** Opened with settings a reload has since changed: closed when it comes back rather than pooled again. */
  stale = false;
  /** Made once: no closure per chunk. */
  private readonly feedDemux = (chunk: Uint8Array) => this.demux.feed(chunk);
  /** When it last went idle (returned to its pool). */
  idleSince = Date.now();

  private phase: Phase = "connecting";
  private mode: "raw" | "tracked" = "raw";
  private socket!: Socket<ServerConn>;
  private outbox!: Outbox;
  private readonly reader: FrameReader;
  private readonly demux: Demux;
  private owner: ServerOwner = NOBODY;
  private scram: ScramClient | null = null;
  private sawReady = false;
  private loginDone!: { resolve: () => void; reject: (e: PgError) => void };
  private closeError: PgError | null = null;
  private notified = false;
  /** The server sent a FATAL error, so its close needs no error of ours. */
  private sentFatal = false;
  /** Raw mode: ReadyForQuery messages still owed for requests the client sent. */
  outstanding = 0;
  /** Set when the stream broke mid-chunk: whether what was relayed before that chunk ended on a message boundary. */
  private relayBoundary: boolean | null = null;
  /**
   * Tracked mode: set when the server went away (crashed, shut down, the network failed) rather than pgroute closing
   * the connection for a reason of its own — with what the owner's client was still owed then (see Demux.owed).
   */
  lost: { steps: Owed[]; skipping: boolean } | null = null;

  private constructor(private readonly login: ServerLogin) {
    this.node = login.node;
    this.reader = new FrameReader(LOGIN_TYPES, login.maxMessageSize);
    this.reader.refuse(NOT_BACKEND, (t) => `unexpected message type ${JSON.stringify(String.fromCharCode(t))} (${t})`);
    this.preparedCapacity = login.preparedCapacity ?? 100;
    this.demux = new Demux(this.reader, this.owner, this.params, (s) => {
      this.txStatus = s;
    });
  }

  /** Connects and logs in; rejects with the server's own error (or a 08001) when that fails. */
  static async connect(login: ServerLogin): Promise<ServerConn> {
    const conn = new ServerConn(login);
    const done = new Promise<void>((resolve, reject) => {
      conn.loginDone = { resolve, reject };
    });
    // It may be settled before it is awaited (a timeout during the TCP connect); that is not an unhandled error.
    done.catch(() => {});
    // The abort also ends an SSL negotiation under way, whose socket is not conn.socket yet.
    const abort = new AbortController();
    const timer = setTimeout(() => {
      conn.fail(errors.unreachable(login.node.name, `timed out after ${login.connectTimeoutMs} ms`), true);
      abort.abort();
    }, login.connectTimeoutMs);
    try {
      // TCP connect, then the SSLRequest and TLS handshake the node's sslmode asks for (pool/tls.ts).
      conn.socket = await openServerSocket(login.node, handlers, conn, abort.signal);
    } catch (err) {
      clearTimeout(timer);
      // Not a PgError: the TCP connect itself failed (sslmode "disable" connects without pool/tls.ts's wrapping).
      throw conn.closeError ?? (err instanceof PgError ? err : errors.unreachable(login.node.name, (err as Error).message));
    }
    if (conn.phase === "closed") {
      // Timed out while the TCP connect was still under way.
      conn.socket.terminate();
      clearTimeout(timer);
      throw conn.closeError!;
    }
    conn.outbox = new Outbox(conn.socket as Socket<unknown>, conn);
    conn.socket.setNoDelay(true);
    conn.phase = "login";
    conn.socket.write(startupMessage(login.params));
    try {
      await done;
    } finally {
      clearTimeout(timer);
    }
    return conn;
  }

  /** Hands the connection to `owner` (null: nobody; unasked messages are dropped) in the given mode. */
  attach(owner: ServerOwner | null, mode: "raw" | "tracked"): void {
    this.owner = owner ?? NOBODY;
    this.demux.setOwner(this.owner);
    // A previous owner may have paused reading (its client was slow); a new owner starts afresh.
    if (this.paused && this.phase === "ready") this.resume();
    if (mode === this.mode) return;
    this.mode = mode;
    for (const t of mode === "raw" ? TRACKED_TYPES : RAW_TYPES) this.reader.want(t, false);
    for (const t of mode === "raw" ? RAW_TYPES : TRACKED_TYPES) this.reader.want(t);
  }

  /** Requests in flight in tracked mode. */
  get pending(): number {
    return this.demux.pending;
  }

  /** During {@link DemuxOwner.ready}: the SQLSTATE of the first error of the request just answered, else null. */
  get readyErrorCode(): string | null {
    return this.demux.readyErrorCode;
  }

  /** True when nothing is in flight and no transaction is open: safe to hand to another client. */
  get idle(): boolean {
    return (
      this.phase === "ready" &&
      this.txStatus === TxStatus.Idle &&
      this.reader.atBoundary &&
      (this.mode === "tracked" ? this.demux.pending === 0 : this.outstanding === 0)
    );
  }

  get atBoundary(): boolean {
    return this.reader.atBoundary;
  }

  /** No request in flight and the stream at a message boundary (a transaction may be open). */
  get idleBetweenRequests(): boolean {
    return this.phase === "ready" && this.reader.atBoundary && (this.mode === "tracked" ? this.demux.pending === 0 : this.outstanding === 0);
  }

  /** Tracked mode: writes requests with the entries for their replies. False when the socket is closed. */
  send(bytes: Uint8Array, entries: readonly Pending[]): boolean {
    if (this.phase !== "ready") return false;
    this.demux.push(entries);
    return this.outbox.write(bytes);
  }

  /** Raw mode: forwards client bytes. False when the socket is closed. */
  write(buf: Uint8Array, start?: number, end?: number): boolean {
    return this.phase === "ready" && this.outbox.write(buf, start, end);
  }

  /**
   * Runs one of pgroute's own simple queries, its replies swallowed. Resolves on success, rejects with the
   * server's error otherwise.
   */
  query(sql: string): Promise<void> {
    return new Promise((resolve, reject) => {
      let error: ErrorInfo | null = null;
      const sent = this.send(new Uint8Array(serialize.query(sql)), [
        {
          end: "query",
          mode: "swallow",
          onSwallowedError: (e) => {
            error = e;
            return null;
          },
          ok: () => resolve(),
          fail: () => reject(new PgError(error?.code ?? "08006", error?.message ?? `"${sql}" did not complete`)),
        },
      ]);
      if (!sent) reject(errors.serverGone(this.node.name, "the connection is closed"));
    });
  }

  private paused = false;

  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
    this.socket.resume();
  }

  get closed(): boolean {
    return this.phase === "closed";
  }

  /** Ends the connection politely (Terminate, then FIN). */
  close(): void {
    if (this.phase === "closed") return;
    this.phase = "closed";
    this.outbox?.clear();
    this.socket?.end(serialize.end());
  }

  /** Ends the connection at once, e.g. when its state is in doubt. */
  destroy(): void {
    if (this.phase === "closed") return;
    this.phase = "closed";
    this.outbox?.clear();
    this.socket?.terminate();
  }

  // --- socket events ---------------------------------------------------------------------------------------

  /** @internal */
  handleData(chunk: Uint8Array): void {
    if (this.phase === "ready") {
      const boundary = this.reader.atBoundary;
      try {
        if (this.mode === "tracked") return gatherWrites(this.feedDemux, chunk);
        this.sawReady = false;
        this.reader.feed(chunk, this);
      } catch (err) {
        // A length or a reply that makes no sense: this connection cannot be trusted with anyone's data. What the
        // owner got of the stream ends where this chunk began (raw mode relays whole chunks; tracked mode relays
        // at message boundaries within one, so this errs on the side of no error message).
        this.relayBoundary = boundary;
        this.fail(errors.serverGone(this.node.name, (err as Error).message), true);
        return;
      }
      this.owner.deliver(chunk, 0, chunk.length);
      if (this.sawReady) this.owner.ready(this.txStatus, false, RAW_ENTRY);
      return;
    }
    if (this.phase !== "login") return;
    try {
      this.reader.feed(chunk, this);
    } catch (err) {
      this.fail(err instanceof PgError ? err : errors.cannotConnect(this.node.name, (err as Error).message), true);
    }
  }

  /** @internal */
  handleClose(): void {
    if (this.notified) return;
    this.notified = true;
    const wasLogin = this.phase === "login" || this.phase === "connecting";
    const wasReady = this.phase === "ready";
    this.phase = "closed";
    if (wasReady && this.mode === "tracked" && !this.closeError) this.lost = this.demux.owed();
    this.demux.abort();
    if (wasLogin) {
      this.loginDone.reject(this.closeError ?? errors.unreachable(this.node.name, "the server closed the connection during login"));
    } else if (this.closeError) this.owner.onServerClose(this.relayedWhole() ? this.closeError : null);
    else if (wasReady && !this.sentFatal && !this.demux.fatalForwarded) {
      this.owner.onServerClose(this.relayedWhole() ? errors.serverGone(this.node.name, "the server closed the connection") : null);
    } else this.owner.onServerClose(null);
  }

  /**
   * Whether what the owner got of the server's stream ends with a whole message, so an ErrorResponse may follow.
   * Cut off in the middle of a message, the client can only be closed: an error there would be read as the rest
   * of that message.
   */
  private relayedWhole(): boolean {
    // Tracked mode relays up to `heldFrom`: a wanted message in progress was not relayed at all.
    return this.relayBoundary ?? (this.reader.atBoundary || (this.mode === "tracked" && this.reader.holding));
  }

  /** @internal */
  handleDrain(): void {
    this.outbox?.drain();
  }

  onBlocked(): void {
    this.owner.onServerBlocked();
  }

  onUnblocked(): void {
    this.owner.onServerWritable();
  }

  // --- messages (login, and raw mode) ----------------------------------------------------------------------

  onFrame(type: number, buf: Uint8Array, start: number, end: number): void {
    if (this.phase === "ready") {
      if (type === B.ReadyForQuery) {
        // Each ReadyForQuery answers a Query, Sync or FunctionCall the client sent; an unknown status or one that
        // answers nothing means pgroute and the server no longer agree on the conversation (never guessed at).
        if (end - start !== 1 || !isTxStatus(buf[start])) throw new DemuxError("ReadyForQuery with an invalid transaction status");
        if (this.outstanding === 0) throw new DemuxError("ReadyForQuery with no request pending");
        this.txStatus = buf[start]!;
        this.outstanding--;
        this.sawReady = true;
        const counters = this.login.counters;
        if (counters) {
          counters.sessionRequests++;
          if (this.txStatus === TxStatus.Idle) counters.sessionTransactions++;
        }
      } else if (type === B.ErrorResponse) {
        const sev = decodeServerError(buf, start, end).severity;
        if (sev === "FATAL" || sev === "PANIC") this.sentFatal = true;
      }
      return;
    }
    switch (type) {
      case B.Authentication:
        this.onAuthentication(buf, start, end);
        return;
      case B.ParameterStatus: {
        const [k, v] = decodeParameterStatus(buf, start, end);
        this.params.set(k, v);
        return;
      }
      case B.BackendKeyData: {
        const k = decodeBackendKeyData(buf, start, end);
        this.pid = k.pid;
        this.secret = k.secret;
        return;
      }
      case B.ErrorResponse: {
        // The server refused us: the client gets the server's own error, fields and all.
        const e = decodeError(buf, start, end);
        const f = e.fields;
        this.fail(new PgError(e.code, e.message, "FATAL", f.get(ErrorField.Detail), f.get(ErrorField.Hint)), true);
        return;
      }
      case B.NegotiateProtocolVersion:
        return; // We ask for 3.0 with no options, so there is nothing to fall back from.
      case B.ReadyForQuery:
        if (end - start !== 1 || !isTxStatus(buf[start])) {
          return this.fail(errors.cannotConnect(this.node.name, "ReadyForQuery with an invalid transaction status"), true);
        }
        this.txStatus = buf[start]!;
        this.phase = "ready";
        for (const t of LOGIN_TYPES) this.reader.want(t, false);
        for (const t of RAW_TYPES) this.reader.want(t);
        this.loginDone.resolve();
        return;
    }
  }

  private onAuthentication(buf: Uint8Array, start: number, end: number): void {
    const { kind, data } = decodeAuthentication(buf, start, end);
    const c = this.login.credentials;
    const user = this.login.params.get("user") ?? "";
    switch (kind) {
      case Auth.Ok:
        return;
      case Auth.CleartextPassword:
        if (c.password === undefined) return this.noSecret("a cleartext password");
        this.socket.write(serialize.password(c.password));
        return;
      case Auth.MD5Password: {
        const hash = c.password !== undefined ? md5Hash(c.password, user) : c.md5Hash;
        if (!hash) return this.noSecret("an md5 password");
        this.socket.write(serialize.password(md5Response(hash, data.subarray(0, 4))));
        return;
      }
      case Auth.SASL: {
        if (!decodeSaslMechanisms(data).includes(SCRAM_MECHANISM)) {
          return this.fail(errors.cannotConnect(this.node.name, "the server offers no SASL mechanism pgroute supports"), true);
        }
        const secret: ScramSecret | undefined = c.password !== undefined ? { kind: "password", password: c.password } : c.scram;
        if (!secret) return this.noSecret("a SCRAM-SHA-256 password");
        this.scram = new ScramClient(secret);
        this.socket.write(serialize.sendSASLInitialResponseMessage(SCRAM_MECHANISM, this.scram.first()));
        return;
      }
      case Auth.SASLContinue:
        if (!this.scram) return this.fail(errors.cannotConnect(this.node.name, "unexpected SASL message"), true);
        // PBKDF2 with the iteration count the server chose runs off the event loop, so no other client waits on it.
        this.scram.finalAsync(text(data)).then(
          (final) => {
            if (this.phase === "login") this.socket.write(serialize.sendSCRAMClientFinalMessage(final));
          },
          (err: Error) => this.fail(errors.cannotConnect(this.node.name, err.message), true),
        );
        return;
      case Auth.SASLFinal:
        if (!this.scram) return this.fail(errors.cannotConnect(this.node.name, "unexpected SASL message"), true);
        this.guard(() => this.scram!.verify(text(data)));
        return;
      default:
        this.fail(
          errors.cannotConnect(this.node.name, `the server asks for an authentication method pgroute does not support (${kind})`),
          true,
        );
    }
  }

  private guard(step: () => unknown): void {
    try {
      step();
    } catch (err) {
      this.fail(errors.cannotConnect(this.node.name, (err as Error).message), true);
    }
  }

  private noSecret(what: string): void {
    const user = this.login.params.get("user") ?? "";
    this.fail(
      errors.cannotConnect(
        this.node.name,
        `the server asks for ${what} for user "${user}" and pgroute has none configured (set password or server_password)`,
      ),
      true,
    );
  }

  /** Records why the connection is failing and drops it; login waiters and owners learn it on close. */
  private fail(e: PgError, destroy = false): void {
    this.closeError ??= e;
    if (this.phase === "login" || this.phase === "connecting") {
      this.phase = "closed";
      this.loginDone.reject(e);
    }
    if (destroy) {
      this.phase = "closed";
      this.socket?.terminate();
    }
  }
}

const td = new TextDecoder();
const text = (b: Uint8Array) => td.decode(b);

const handlers: SocketHandler<ServerConn> = {
  data(socket, chunk) {
    socket.data.handleData(chunk);
  },
  drain(socket) {
    socket.data.handleDrain();
  },
  close(socket) {
    socket.data.handleClose();
  },
  error(socket) {
    socket.data.handleClose();
  },
};
