/**
 * One client connection, from its first byte to its close: startup packet (SSLRequest / GSSENCRequest answered
 * 'N', CancelRequest handed to the proxy), authentication, login (a pooled server connection brought to the
 * client's startup settings, whose ParameterStatus values the client gets), then relay — session pooling
 * ({@link SessionRelay}: bytes pass unchanged) or transaction pooling ({@link TransactionRelay}: per message).
 *
 * pgroute writes its own messages to a client only at a message boundary of the server stream, so they never
 * split a server message.
 */
import type { Socket } from "bun";
import type { Config, UserConfig } from "../config/types.ts";
import { PgError, errors } from "../errors.ts";
import type { Logger } from "../log.ts";
import { Outbox, type OutboxOwner } from "../net/outbox.ts";
import type { PoolGroup } from "../pool/group.ts";
import type { Pool } from "../pool/pool.ts";
import type { FunctionLists } from "../router/classify.ts";
import { RouterState } from "../router/state.ts";
import type { ServerConn, ServerCredentials } from "../pool/server.ts";
import { F } from "../wire/codes.ts";
import { MessageWriter, authenticationOk, backendKeyData, negotiateProtocolVersion, parameterStatus, readyForQuery } from "../wire/encode.ts";
import { FrameError, FrameReader, type FrameSink } from "../wire/frame.ts";
import { parseStartup, startupLength, type StartupPacket } from "../wire/startup.ts";
import { ClientAuth } from "./auth.ts";
import { PreparedStatements, type StatementRegistry } from "./prepared.ts";
import { SessionRelay } from "./raw.ts";
import { SessionSettings } from "./settings.ts";
import { TransactionRelay, type ClientSide } from "./transaction.ts";

/** What a session needs from the proxy that owns it. */
export interface SessionHost {
  readonly config: Config;
  readonly log: Logger;
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
}

type Phase =
  | { kind: "startup" }
  | { kind: "auth"; auth: ClientAuth; user: UserConfig | undefined }
  | { kind: "login" }
  | { kind: "session"; relay: SessionRelay }
  | { kind: "transaction"; relay: TransactionRelay }
  | { kind: "closed" };

const N = Uint8Array.of(0x4e); // 'N': no SSL / no GSS encryption

export class Session implements FrameSink, OutboxOwner, ClientSide {
  private phase: Phase = { kind: "startup" };
  /** Bytes of a startup-phase packet not yet complete, or client bytes that arrived during login. */
  private pending: Uint8Array | null = null;
  private readonly outbox: Outbox;
  private readonly reader: FrameReader;
  private loginTimer: ReturnType<typeof setTimeout> | null = null;
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

  constructor(
    private readonly socket: Socket<Session>,
    private readonly host: SessionHost,
  ) {
    this.outbox = new Outbox(socket as Socket<unknown>, this);
    this.remote = `${socket.remoteAddress}`;
    // Before authentication the only typed messages expected are password messages.
    this.reader = new FrameReader([F.Password], host.config.limits.max_message_size);
    this.loginTimer = setTimeout(() => this.fatal(errors.loginTimeout()), host.config.limits.login_timeout_ms);
  }

  // --- client socket events ------------------------------------------------------------------------------

  onData(chunk: Uint8Array): void {
    const phase = this.phase;
    switch (phase.kind) {
      case "session":
      case "transaction":
      case "auth":
        return this.read(chunk);
      case "startup":
        return this.startupData(chunk);
      case "login":
        // The client should wait for ReadyForQuery; keep whatever it sends for when relay begins.
        this.pending = this.pending ? concat(this.pending, chunk) : chunk.slice();
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
    let buf = this.pending ? concat(this.pending, chunk) : chunk;
    this.pending = null;
    while (buf.length > 0 && this.phase.kind === "startup") {
      let len: number | null;
      try {
        len = startupLength(buf);
      } catch (err) {
        return this.fatal(errors.protocolViolation((err as Error).message));
      }
      if (len === null || buf.length < len) {
        this.pending = buf.slice();
        return;
      }
      let packet: StartupPacket;
      try {
        packet = parseStartup(buf.subarray(0, len));
      } catch (err) {
        return this.fatal(errors.protocolViolation((err as Error).message));
      }
      buf = buf.subarray(len);
      this.onStartupPacket(packet, buf);
    }
  }

  private onStartupPacket(p: StartupPacket, rest: Uint8Array): void {
    switch (p.kind) {
      case "ssl":
      case "gssenc":
        // Encryption comes with TLS support; until then the client may continue in plaintext.
        this.send(N);
        return;
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
    const user = params.get("user");
    if (!user) return this.fatal(errors.noUser());
    this.user = user;
    this.database = params.get("database") || user;
    this.params = params;
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
    if (rest.length > 0 && this.phase.kind === "auth") this.onData(rest);
  }

  // --- authentication and relay messages -----------------------------------------------------------------

  onFrame(type: number, buf: Uint8Array, start: number, end: number, msgStart: number, next: number): void {
    const phase = this.phase;
    if (type === F.Terminate && (phase.kind === "session" || phase.kind === "transaction")) {
      this.terminateAt = Math.max(0, msgStart);
      this.reader.stop();
      return;
    }
    switch (phase.kind) {
      case "session":
        return phase.relay.onMessage(type);
      case "transaction": {
        const frame =
          msgStart >= 0 ? this.chunk.subarray(msgStart, next) : new MessageWriter(end - start + 5).begin(type).bytes(buf.subarray(start, end)).end().done();
        return phase.relay.onMessage(type, frame);
      }
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
    const settings = new SessionSettings(this.params);
    // Session pooling keeps this connection: it goes where the user's statements go by default.
    const target = cfg.pool.mode === "session" && user.target === "replica" ? "replica" : "primary";
    let conn: ServerConn;
    let pool: Pool;
    try {
      ({ conn, pool } = await group.acquire(target));
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

    const key = this.host.register(this);
    this.pid = key.pid;
    this.secret = key.secret;
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.loginTimer = null;

    const w = new MessageWriter(512).bytes(authenticationOk());
    for (const [k, v] of conn.params) w.bytes(parameterStatus(k, v));
    w.bytes(backendKeyData(this.pid, this.secret)).bytes(readyForQuery(conn.txStatus));
    const welcome = w.done();

    this.reader.want(F.Password, false);
    if (cfg.pool.mode === "session") {
      for (const t of SessionRelay.WATCHED) this.reader.want(t);
      this.phase = { kind: "session", relay: new SessionRelay(this, pool, conn) };
    } else {
      this.reader.wantAll = true;
      pool.release(conn);
      const prepared = new PreparedStatements(this.host.statements);
      const router = new RouterState({ functions: this.host.functions, transactions: cfg.routing.transactions, userTarget: user.target });
      this.phase = { kind: "transaction", relay: new TransactionRelay(this, group, settings, prepared, router, this.host.log) };
    }
    this.send(welcome);
    this.host.log.debug("session_start", { user: this.user, database: this.database, pool: pool.name, client: this.remote });
    const early = this.pending;
    this.pending = null;
    if (early) this.onData(early);
  }

  private loginFailed(err: unknown, pool: Pool): void {
    const e = err instanceof PgError ? err : errors.cannotConnect(pool.node.name, String(err));
    this.host.log.warn("login_failed", { pool: pool.name, user: this.user, code: e.code, error: e.message });
    this.fatal(new PgError(e.code, e.message, "FATAL", e.detail, e.hint));
  }

  // --- ClientSide (used by the relays) -------------------------------------------------------------------

  send(buf: Uint8Array, start = 0, end = buf.length): void {
    if (!this.outbox.write(buf, start, end)) this.cleanup();
  }

  pauseClient(): void {
    this.socket.pause();
  }

  resumeClient(): void {
    this.socket.resume();
  }

  log(event: string, fields: Record<string, string | number>): void {
    this.host.log.debug(event, { user: this.user, client: this.remote, ...fields });
  }

  /** The client cannot take more: stop reading the server until it drains. */
  onBlocked(): void {
    this.cancelTarget?.pause();
  }

  onUnblocked(): void {
    this.cancelTarget?.resume();
  }

  /** The server connection a CancelRequest should reach right now, if any. */
  get cancelTarget(): ServerConn | null {
    const p = this.phase;
    return p.kind === "session" || p.kind === "transaction" ? p.relay.cancelTarget : null;
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
    this.cleanup();
    this.socket.end();
  }

  private cleanup(): void {
    const phase = this.phase;
    if (phase.kind === "closed") return;
    this.phase = { kind: "closed" };
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.loginTimer = null;
    if (phase.kind === "session" || phase.kind === "transaction") phase.relay.close();
    this.outbox.clear();
    this.host.closed(this);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
