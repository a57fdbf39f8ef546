/**
 * One client connection, from its first byte to its close: startup packet (SSLRequest answered 'S' and the
 * connection upgraded to TLS when `[tls]` offers it, else 'N'; GSSENCRequest 'N'; CancelRequest handed to the
 * proxy), authentication, login (a pooled server connection brought to the
 * client's startup settings, whose ParameterStatus values the client gets), then relay — session pooling
 * ({@link SessionRelay}: bytes pass unchanged) or transaction pooling ({@link TransactionRelay}: per message; also
 * session pooling under policies, rate limits or mirroring, holding the client's one server connection).
 *
 * A client that asks for the database `pgroute` gets the admin console instead ({@link ConsoleRelay}): no server
 * connection, commands answered by pgroute.
 *
 * pgroute writes its own messages to a client only at a message boundary of the server stream, so they never
 * split a server message.
 */
import type { Socket } from "bun";
import { concatBytes } from "../wire/bytes.ts";
import type { Config, UserConfig } from "../config/types.ts";
import { PgError, errors } from "../errors.ts";
import type { Logger } from "../log.ts";
import { Outbox, type OutboxOwner } from "../net/outbox.ts";
import { secondEncryptionRequest, sslRequired, unencryptedAfterSslRequest, upgradeClient, type ClientTls, type ClientTlsLink, type SecureSink } from "../net/tls.ts";
import type { PoolGroup } from "../pool/group.ts";
import type { Pool } from "../pool/pool.ts";
import type { FunctionLists } from "../router/classify.ts";
import type { Mirror } from "../policy/mirror.ts";
import type { RateLimiter } from "../policy/ratelimit.ts";
import { RouterState } from "../router/state.ts";
import { SessionPolicy, type PolicyHost } from "../policy/check.ts";
import { isReadOnly, sessionTarget } from "../policy/roles.ts";
import type { ServerConn, ServerCredentials } from "../pool/server.ts";
import { F } from "../wire/codes.ts";
import { MessageWriter, authenticationOk, backendKeyData, negotiateProtocolVersion, parameterStatus, readyForQuery } from "../wire/encode.ts";
import { FrameError, FrameReader, typesOtherThan, type FrameSink } from "../wire/frame.ts";
import { parseStartup, startupLength, type StartupPacket } from "../wire/startup.ts";
import { ClientAuth } from "./auth.ts";
import { PreparedStatements, type StatementRegistry } from "./prepared.ts";
import { SessionRelay } from "./raw.ts";
import { SessionSettings } from "./settings.ts";
import type { ClientSide } from "./relay.ts";
import { TransactionRelay } from "./transaction.ts";
import { Consistency } from "./consistency.ts";
import type { Observers } from "../cluster/observe.ts";
import { ConsoleRelay, type ConsoleHandler } from "./console-relay.ts";
import type { SessionCounters } from "./counters.ts";
import type { PinReason } from "../router/effects.ts";

/** The virtual database of the admin console. */
export const ADMIN_DATABASE = "pgroute";

/**
 * What a client is doing: `login` (startup and authentication), `waiting` (for a server connection: a busy pool
 * or PAUSE), `active` (holding a server connection), `idle` (logged in, between transactions), `console`.
 */
export type ClientState = "login" | "waiting" | "active" | "idle" | "console";

/** What a session needs from the proxy that owns it. */
export interface SessionHost extends PolicyHost {
  readonly config: Config;
  readonly log: Logger;
  /** Resolves once the table sizes of `database` are loaded (or could not be, within a bounded wait). */
  tablesReady(database: string): Promise<void>;
  readonly statements: StatementRegistry;
  /** Function lists for the classifier (built-ins plus the config's). */
  readonly functions: FunctionLists;
  /** The pools of this user and database, one per node. */
  group(user: UserConfig, database: string, credentials: ServerCredentials): PoolGroup;
  /** Registers a session for cancellation; returns its BackendKeyData. */
  register(session: Session): { pid: number; secret: number };
  /** A CancelRequest arrived on this (otherwise unauthenticated) connection. */
  cancel(pid: number, secret: number): void;
  /** The session closed. */
  closed(session: Session): void;
  /** True while new clients are being refused (limit reached). */
  overLimit(): boolean;
  /** Rate limits, shared by every session. */
  readonly limiter: RateLimiter;
  /** Mirroring to a shadow database. */
  readonly mirror: Mirror;
  /** TLS offered to clients (`[tls]`); absent: SSLRequest is answered 'N'. */
  readonly clientTls?: ClientTls;
  /** Told about every request a transaction-pooled session completes (node health, metrics). */
  readonly observers?: Observers;
  /** Where sessions count clients, routing decisions and pins. */
  readonly counters?: SessionCounters;
  /** The admin console for a client that logged in to database `pgroute`; absent: no console. */
  openConsole?(session: Session, user: UserConfig): ConsoleHandler;
  /** The health monitor, asked to read replay positions fast while a session set `pgroute.min_lsn`. */
  readonly monitor?: { wantReplay(): void };
}

type Phase =
  | { kind: "startup" }
  | { kind: "auth"; auth: ClientAuth; user: UserConfig | undefined }
  | { kind: "login" }
  | { kind: "session"; relay: SessionRelay }
  /** Relayed message by message: transaction pooling, or session pooling under policies (holding one connection). */
  | { kind: "messages"; relay: TransactionRelay }
  | { kind: "console"; relay: ConsoleRelay }
  | { kind: "closed" };

const N = Uint8Array.of(0x4e); // 'N': no SSL / no GSS encryption
const S = Uint8Array.of(0x53); // 'S': go ahead with the TLS handshake

/**
 * Largest message before authentication: Postgres reads SASL messages with PG_MAX_AUTH_TOKEN_LENGTH (65535),
 * so an unauthenticated client cannot make pgroute gather max_message_size bytes.
 */
const MAX_AUTH_MESSAGE = 65535 + 4;

/**
 * Message types a client may not send after login: anything but the frontend messages of "Message Formats".
 * Refused from the header, as Postgres does ("invalid frontend message type"), rather than relayed or gathered.
 */
const NOT_FRONTEND = typesOtherThan(Object.values(F).filter((t) => t !== F.Password));

/** Why reading the client is paused; the socket reads again when no reason is left. */
const READ_SERVER_FULL = 1; // the server connection cannot take more (its outbox is blocked)
const READ_CLIENT_BEHIND = 2; // the client is not reading what pgroute sends it
const READ_LOGIN = 4; // waiting for a server connection: nothing to do with client bytes yet
const READ_THROTTLED = 8; // a request waits for its rate-limit turn: what follows it waits too

export class Session implements FrameSink, OutboxOwner, ClientSide, SecureSink {
  private phase: Phase = { kind: "startup" };
  /** Bytes of a startup-phase packet not yet complete, or client bytes that arrived during login. */
  private pending: Uint8Array | null = null;
  /** Writes to the client: to the TLS socket once the connection is encrypted. */
  private outbox: Outbox;
  /** Set once the client's SSLRequest was answered 'S'; from then on all I/O goes through `tls.socket`. */
  private tls: ClientTlsLink<Session> | null = null;
  private readonly reader: FrameReader;
  private loginTimer: ReturnType<typeof setTimeout> | null = null;
  /** Bytes pgroute may hold for this client (`limits.client_buffer`). */
  private readonly clientBuffer: number;
  /** READ_* reasons the client socket is paused for. */
  private readPaused = 0;
  /** Offset in the current chunk where a Terminate message starts, or -1. */
  private terminateAt = -1;
  /** The chunk being read, for message views in transaction mode. */
  private chunk: Uint8Array = new Uint8Array(0);
  /** pgroute's own BackendKeyData for this client. */
  pid = 0;
  secret = 0;
  user = "";
  database = "";
  readonly remote: string;
  /** Startup parameters as the client sent them. */
  params = new Map<string, string>();
  /** Epoch ms when the client connected. */
  readonly connectedAt = Date.now();

  constructor(
    private socket: Socket<Session>,
    private readonly host: SessionHost,
  ) {
    this.outbox = new Outbox(socket as Socket<unknown>, this, true);
    this.remote = `${socket.remoteAddress}`;
    // Before authentication the only typed messages expected are password messages: every message is looked at
    // (anything else is a protocol violation), and none may be longer than an authentication token.
    this.reader = new FrameReader([F.Password], Math.min(host.config.limits.max_message_size, MAX_AUTH_MESSAGE));
    this.reader.wantAll = true;
    this.clientBuffer = host.config.limits.client_buffer;
    this.loginTimer = setTimeout(() => this.fatal(errors.loginTimeout()), host.config.limits.login_timeout_ms);
  }

  // --- client socket events ------------------------------------------------------------------------------

  /** Bytes read from the accepted socket. After a TLS upgrade these are the raw TLS records, not protocol data. */
  onData(chunk: Uint8Array): void {
    if (this.tls) {
      const error = this.tls.checkRaw(chunk);
      if (error && this.phase.kind !== "closed") {
        this.tls.refuse(error);
        this.cleanup();
      }
      return;
    }
    this.receive(chunk);
  }

  /** Decrypted bytes from the TLS socket. */
  onSecureData(chunk: Uint8Array): void {
    this.receive(chunk);
  }

  onSecureDrain(): void {
    this.outbox.drain();
  }

  onSecureClose(error?: Error): void {
    if (error) this.host.log.debug("client_tls_error", { client: this.remote, error: error.message });
    this.onClose();
  }

  onSecureHandshake(ok: boolean, protocol: string, error: Error | null): void {
    if (ok) this.host.log.debug("client_tls", { client: this.remote, protocol });
    else this.host.log.info("client_tls_failed", { client: this.remote, error: error?.message ?? "handshake failed" });
  }

  /** Protocol bytes from the client, whichever socket they came through. */
  private receive(chunk: Uint8Array): void {
    const phase = this.phase;
    switch (phase.kind) {
      case "session":
      case "messages":
      case "console":
      case "auth":
        return this.read(chunk);
      case "startup":
        return this.startupData(chunk);
      case "login":
        // The client should wait for ReadyForQuery; keep whatever it sends for when relay begins, and read no
        // more until then (a client cannot make pgroute buffer without bound while it waits for a server).
        this.pending = this.pending ? concatBytes([this.pending, chunk]) : chunk.slice();
        this.pauseRead(READ_LOGIN, true);
        return;
      case "closed":
        return;
    }
  }

  private read(chunk: Uint8Array): void {
    this.chunk = chunk;
    this.terminateAt = -1;
    try {
      this.reader.feed(chunk, this);
    } catch (err) {
      return this.fatal(err instanceof FrameError ? errors.protocolViolation(err.message) : (err as PgError));
    }
    const phase = this.phase;
    if (phase.kind !== "session") {
      if (this.terminateAt >= 0) this.close();
      return;
    }
    // Session pooling forwards the chunk as it came, up to a Terminate (the connection is ours to end).
    const end = this.terminateAt >= 0 ? this.terminateAt : chunk.length;
    if (end > 0 && !phase.relay.forward(chunk, 0, end)) return this.close();
    if (this.terminateAt >= 0) this.close();
  }

  onDrain(): void {
    this.outbox.drain();
  }

  onClose(): void {
    if (this.phase.kind === "closed") return;
    this.cleanup();
  }

  // --- startup -------------------------------------------------------------------------------------------

  private startupData(chunk: Uint8Array): void {
    let buf = this.pending ? concatBytes([this.pending, chunk]) : chunk;
    this.pending = null;
    while (buf.length > 0 && this.phase.kind === "startup") {
      let len: number | null;
      try {
        len = startupLength(buf);
      } catch (err) {
        return this.fatal(startupFailure(err));
      }
      if (len === null || buf.length < len) {
        this.pending = buf.slice();
        return;
      }
      let packet: StartupPacket;
      try {
        packet = parseStartup(buf.subarray(0, len));
      } catch (err) {
        return this.fatal(startupFailure(err));
      }
      buf = buf.subarray(len);
      this.onStartupPacket(packet, buf);
    }
  }

  private onStartupPacket(p: StartupPacket, rest: Uint8Array): void {
    switch (p.kind) {
      case "ssl":
      case "gssenc": {
        // A client waits for the one-byte answer before sending more, so bytes behind the request were not sent
        // by a well-behaved client and must not be read as if they came over TLS (CVE-2021-23214).
        if (rest.length > 0) return this.fatal(unencryptedAfterSslRequest());
        if (this.tls) return this.fatal(secondEncryptionRequest());
        const options = p.kind === "ssl" ? this.host.clientTls?.options : null;
        if (!options) {
          this.send(N); // no GSS encryption, and no SSL while tls.mode is "disable": the client may go on in plaintext
          return;
        }
        this.send(S);
        // In this same turn, so no raw byte can be taken for protocol data; the login timer covers the handshake.
        this.tls = upgradeClient(this.socket, options, this);
        this.socket = this.tls.socket;
        this.outbox = new Outbox(this.socket as Socket<unknown>, this, true);
        return;
      }
      case "cancel":
        this.host.cancel(p.pid, p.secret);
        this.close();
        return;
      case "startup":
        return this.begin(p.params, p.minor, p.unrecognized, rest);
    }
  }

  private begin(params: Map<string, string>, minor: number, unrecognized: string[], rest: Uint8Array): void {
    const cfg = this.host.config;
    if (this.host.overLimit()) return this.fatal(errors.tooManyClients(cfg.limits.max_client_connections));
    // Before authentication, so a flood of logins costs no SCRAM work (and no server connection).
    if (!this.host.limiter.admitConnection(this.remote)) {
      const l = this.host.limiter.connectionLimit!;
      // Debug only: a flood of refused connections must not become a flood of log lines (the count is in the snapshot).
      this.host.log.debug("connection_rate_limited", { client: this.remote });
      return this.fatal(errors.tooManyConnectionsFrom(this.remote, l.rate, l.burst));
    }
    const user = params.get("user");
    if (!user) return this.fatal(errors.noUser());
    this.user = user;
    this.database = params.get("database") || user;
    this.params = params;
    if (!this.tls && this.host.clientTls?.mode === "require") {
      return this.fatal(sslRequired(this.remote, user, this.database));
    }
    const rep = params.get("replication");
    if (rep !== undefined && rep !== "false" && rep !== "off" && rep !== "0" && rep !== "no") {
      return this.fatal(errors.unsupported("replication connections are not supported through pgroute"));
    }
    // We speak 3.0 and no protocol extensions: tell a client that asked for more (docs, NegotiateProtocolVersion).
    if (minor > 0 || unrecognized.length > 0) this.send(negotiateProtocolVersion(0, unrecognized));
    const userCfg = cfg.users.find((u) => u.name === user);
    const auth = new ClientAuth(userCfg, user);
    this.phase = { kind: "auth", auth, user: userCfg };
    this.authStep(auth.start(), userCfg);
    // Bytes that came with the startup packet: for the password exchange, or held for the relay after a trust login.
    if (rest.length > 0 && (this.phase as Phase).kind !== "closed") this.receive(rest);
  }

  // --- authentication and relay messages -----------------------------------------------------------------

  onFrame(type: number, buf: Uint8Array, start: number, end: number, msgStart: number, next: number): void {
    const phase = this.phase;
    if (type === F.Terminate && (phase.kind === "session" || phase.kind === "messages" || phase.kind === "console")) {
      this.terminateAt = Math.max(0, msgStart);
      this.reader.stop();
      return;
    }
    switch (phase.kind) {
      case "session":
        return phase.relay.onMessage(type);
      case "messages": {
        // A message that is the whole chunk (the common case for a Query) needs no view of its own.
        const chunk = this.chunk;
        const frame =
          msgStart === 0 && next === chunk.length
            ? chunk
            : msgStart >= 0
              ? chunk.subarray(msgStart, next)
              : new MessageWriter(end - start + 5).begin(type).bytes(buf.subarray(start, end)).end().done();
        return phase.relay.onMessage(type, frame);
      }
      case "console":
        return phase.relay.onMessage(type, buf, start, end);
      case "auth":
        if (type !== F.Password) {
          return this.fatal(errors.protocolViolation(`expected a password response, got message type "${String.fromCharCode(type)}"`));
        }
        this.authStep(phase.auth.onMessage(buf, start, end), phase.user);
        if (this.phase.kind === "login") {
          // Anything after the last password message waits for the relay.
          this.reader.stop();
          if (next < this.chunk.length) this.pending = this.chunk.slice(next);
        }
        return;
    }
  }

  private authStep(step: ReturnType<ClientAuth["start"]>, user: UserConfig | undefined): void {
    switch (step.kind) {
      case "send":
        this.send(step.bytes);
        return;
      case "fail":
        this.host.log.info("auth_failed", { user: this.user, client: this.remote });
        return this.fatal(step.error);
      case "ok": {
        if (step.bytes) this.send(step.bytes);
        const allowed = user!.databases;
        if (allowed.length > 0 && !allowed.includes(this.database)) {
          return this.fatal(errors.notAllowed(this.user, this.database));
        }
        if (this.database === ADMIN_DATABASE && this.host.openConsole) return this.startConsole(this.host.openConsole(this, user!));
        this.phase = { kind: "login" };
        void this.login(user!, step.credentials);
        return;
      }
    }
  }

  // --- login ---------------------------------------------------------------------------------------------

  /**
   * Leases a server connection, applies the client's startup settings there (their ParameterStatus values are
   * what the client is told), then starts the relay.
   */
  private async login(user: UserConfig, credentials: ServerCredentials): Promise<void> {
    const cfg = this.host.config;
    const group = this.host.group(user, this.database, credentials);
    const policy = new SessionPolicy(this.host, user, this.database);
    if (policy.needsSizes) {
      // The first login to a database waits (boundedly) for its table sizes, so size rules hold from the start.
      await this.host.tablesReady(this.database);
      if (this.phase.kind !== "login") return;
    }
    const readOnly = isReadOnly(user);
    const settings = new SessionSettings(this.params, { statementTimeoutMs: policy.capMs, readOnly });
    const sessionPooling = cfg.pool.mode === "session";
    // Session pooling keeps this connection: it goes where the user's statements go by default.
    let target: "primary" | "replica" = sessionPooling ? sessionTarget(user) : "primary";
    let conn: ServerConn | null = null;
    let pool: Pool;
    let params: Map<string, string>;
    const known = group.primaryPool().params;
    const idle = cfg.pool.mode === "transaction" ? group.tryAcquire("primary") : null;
    if (cfg.pool.mode === "transaction" && !idle && known) {
      // Every server connection is busy: log in without one, as PgBouncer does, telling the client the values a
      // server reported (overlaid with its own startup settings); those are applied before its first request.
      pool = group.primaryPool();
      params = settings.reported(known);
    } else {
      try {
        ({ conn, pool, target } = idle ?? (await group.acquire(target, undefined, user.zone)));
      } catch (err) {
        return this.loginFailed(err, group.primaryPool());
      }
      if (this.phase.kind !== "login") return pool.release(conn); // the client left meanwhile
      const sql = settings.diff(conn);
      if (sql) {
        try {
          await conn.query(sql);
        } catch (err) {
          pool.release(conn);
          return this.loginFailed(err, pool);
        }
        if (this.phase.kind !== "login") return pool.release(conn);
      }
      settings.markApplied(conn);
      params = conn.params;
    }

    const welcome = this.loggedIn(params, conn?.txStatus ?? 0x49);
    this.reader.wantAll = false;
    const traffic = { limiter: this.host.limiter, mirror: this.host.mirror, user: this.user, address: this.remote, database: this.database };
    if (sessionPooling && !policy.enforces && !traffic.limiter.active && !traffic.mirror.enabled) {
      for (const t of SessionRelay.WATCHED) this.reader.want(t);
      this.phase = { kind: "session", relay: new SessionRelay(this, pool, conn) };
    } else {
      // Transaction pooling; or session pooling with policies, rate limits or mirroring, which must see every
      // request (to refuse it, hold it back or sample it): the same relay, holding the client's one connection.
      this.reader.wantAll = true;
      const hold = sessionPooling && conn ? { conn, pool, target } : null;
      if (conn && !hold) pool.release(conn);
      const prepared = new PreparedStatements(this.host.statements);
      const router = new RouterState({ functions: policy.functions, transactions: cfg.routing.transactions, userTarget: user.target, defaultReadOnly: readOnly });
      const observer = this.host.observers && !this.host.observers.empty ? this.host.observers : null;
      const rc = cfg.consistency;
      const consistency = hold ? null : new Consistency({ mode: user.consistency ?? rc.mode, stickyMs: rc.sticky_ms, waitMs: rc.wait_ms, onNeedsReplay: () => this.host.monitor?.wantReplay() });
      const relay = new TransactionRelay(this, group, settings, prepared, router, this.host.log, observer, this.host.counters ?? null, {
        traffic,
        policy: policy.enforces ? policy : null,
        hold,
        ...(user.zone !== undefined && { zone: user.zone }),
        consistency,
      });
      this.phase = { kind: "messages", relay };
    }
    this.send(welcome);
    this.host.log.debug("session_start", { user: this.user, database: this.database, pool: pool.name, client: this.remote });
    const early = this.pending;
    this.pending = null;
    this.pauseRead(READ_LOGIN, false);
    if (early) this.receive(early);
  }

  /**
   * Login is over: the client gets its BackendKeyData, the login timer stops, and the reader takes messages of
   * every frontend type up to `limits.max_message_size`. Returns the welcome (AuthenticationOk, the ParameterStatus
   * values, BackendKeyData, ReadyForQuery) for the caller to send once its relay is in place.
   */
  private loggedIn(params: ReadonlyMap<string, string>, status: number): Uint8Array {
    const key = this.host.register(this);
    this.pid = key.pid;
    this.secret = key.secret;
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.loginTimer = null;
    const w = new MessageWriter(512).bytes(authenticationOk());
    for (const [k, v] of params) w.bytes(parameterStatus(k, v));
    w.bytes(backendKeyData(this.pid, this.secret)).bytes(readyForQuery(status));
    this.reader.want(F.Password, false);
    this.reader.setMaxLength(this.host.config.limits.max_message_size);
    this.reader.refuse(NOT_FRONTEND, (t) => `invalid frontend message type ${t}`);
    return w.done();
  }

  /** The admin console: logged in without a server connection; pgroute answers every query. */
  private startConsole(handler: ConsoleHandler): void {
    const welcome = this.loggedIn(handler.params, 0x49);
    this.phase = { kind: "console", relay: new ConsoleRelay(this, handler) };
    this.send(welcome);
    this.host.log.info("admin_console_login", { user: this.user, client: this.remote });
    const early = this.pending;
    this.pending = null;
    if (early) this.receive(early);
  }

  private loginFailed(err: unknown, pool: Pool): void {
    const e = err instanceof PgError ? err : errors.cannotConnect(pool.node.name, String(err));
    this.host.log.warn("login_failed", { pool: pool.name, user: this.user, code: e.code, error: e.message });
    this.fatal(new PgError(e.code, e.message, "FATAL", e.detail, e.hint));
  }

  // --- ClientSide (used by the relays) -------------------------------------------------------------------

  send(buf: Uint8Array, start = 0, end = buf.length): void {
    if (!this.outbox.write(buf, start, end)) return this.cleanup();
    if (this.outbox.queued > 0) this.behind();
  }

  /**
   * The client is not keeping up. The server connection in use now is paused — also one leased after the client
   * fell behind, whose first bytes land here (the outbox reports only the first blocking write). What still
   * arrives is bounded; should it pass `limits.client_buffer` anyway, the client is dropped: it cannot be sent
   * an error it does not read, and its server connection is closed by the relay since results were in flight.
   */
  private behind(): void {
    if (this.outbox.queued <= this.clientBuffer) {
      this.cancelTarget?.pause();
      return;
    }
    this.host.log.warn("client_buffer_exceeded", { user: this.user, client: this.remote, queued: this.outbox.queued, limit: this.clientBuffer });
    this.cleanup();
    this.socket.terminate();
  }

  pauseClient(): void {
    this.pauseRead(READ_SERVER_FULL, true);
  }

  holdReads(on: boolean): void {
    this.pauseRead(READ_THROTTLED, on);
  }

  resumeClient(): void {
    this.pauseRead(READ_SERVER_FULL, false);
  }

  /** Pauses or resumes reading the client for one reason; the socket reads only when no reason is left. */
  private pauseRead(reason: number, on: boolean): void {
    const before = this.readPaused;
    this.readPaused = on ? before | reason : before & ~reason;
    if (before === 0 && this.readPaused !== 0) this.socket.pause();
    else if (before !== 0 && this.readPaused === 0) this.socket.resume();
  }

  log(event: string, fields: Record<string, string | number>): void {
    this.host.log.debug(event, { user: this.user, client: this.remote, ...fields });
  }

  /**
   * The client cannot take more: stop reading the server until it drains, and stop reading the client too, as a
   * Postgres backend blocked on a send does — requests answered locally would otherwise pile up replies.
   */
  onBlocked(): void {
    this.cancelTarget?.pause();
    this.pauseRead(READ_CLIENT_BEHIND, true);
  }

  onUnblocked(): void {
    this.cancelTarget?.resume();
    this.pauseRead(READ_CLIENT_BEHIND, false);
  }

  onWriteFailed(): void {
    this.cleanup();
  }

  onQueued(): void {
    this.behind();
  }

  /**
   * True when ending the session now loses nothing: no transaction open, no request unanswered, nothing queued
   * for the client. A session not logged in yet counts as idle. Graceful shutdown waits for this.
   */
  get idle(): boolean {
    const p = this.phase;
    if (p.kind !== "session" && p.kind !== "messages") return true;
    if (this.outbox.queued > 0) return false;
    const conn = p.relay.cancelTarget;
    return conn === null || conn.idle;
  }

  /** What the client is doing now (SHOW CLIENTS, metrics). */
  get state(): ClientState {
    const p = this.phase;
    switch (p.kind) {
      case "startup":
      case "auth":
      case "closed":
        return "login";
      case "login":
        return "waiting";
      case "console":
        return "console";
      case "session":
        return "active";
      case "messages":
        return p.relay.waiting ? "waiting" : p.relay.cancelTarget ? "active" : "idle";
    }
  }

  /** Why a transaction-pooled client keeps its server connection, if it does. */
  get pinnedBy(): PinReason | null {
    return this.phase.kind === "messages" ? this.phase.relay.pinnedBy : null;
  }

  /** Whether the client connection is encrypted. */
  get encrypted(): boolean {
    return this.tls !== null;
  }

  /** The server connection a CancelRequest should reach right now, if any. */
  get cancelTarget(): ServerConn | null {
    const p = this.phase;
    return p.kind === "session" || p.kind === "messages" ? p.relay.cancelTarget : null;
  }

  /** Sends a FATAL error (when the stream allows it) and closes. */
  fatal(e: PgError): void {
    if (this.phase.kind === "closed") return;
    const server = this.cancelTarget;
    if (!server || server.atBoundary) this.send(e.toMessage());
    this.close();
  }

  /** Closes the client connection; its server connection goes back to the pool if it is clean. */
  close(): void {
    if (this.phase.kind === "closed") return;
    // What was said last (a FATAL) may be among the writes gathered for this server chunk: it goes out first.
    this.outbox.flushGathered();
    this.cleanup();
    this.socket.end();
  }

  private cleanup(): void {
    const phase = this.phase;
    if (phase.kind === "closed") return;
    this.phase = { kind: "closed" };
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.loginTimer = null;
    if (phase.kind === "session" || phase.kind === "messages" || phase.kind === "console") phase.relay.close();
    this.outbox.clear();
    this.host.closed(this);
  }
}

/** The FATAL for a startup packet that cannot be accepted. */
function startupFailure(err: unknown): PgError {
  return errors.protocolViolation((err as Error).message);
}

