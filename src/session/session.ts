/**
 * One client connection, from its first byte to its close: startup packet (SSLRequest / GSSENCRequest answered
 * 'N', CancelRequest handed to the proxy), authentication, the server login, then relay.
 *
 * Relay is byte-for-byte: chunks are forwarded as they arrive while a {@link FrameReader} steps over the message
 * headers, so frame lengths are enforced without copying. pgroute writes its own messages to a client only at a
 * message boundary of the server stream, so they can never split a server message.
 */
import type { Socket } from "bun";
import type { Config, UserConfig } from "../config/types.ts";
import { PgError, errors } from "../errors.ts";
import type { Logger } from "../log.ts";
import { Outbox, type OutboxOwner } from "../net/outbox.ts";
import { ServerConn, type ServerCredentials, type ServerOwner } from "../pool/server.ts";
import { F, TxStatus } from "../wire/codes.ts";
import {
  authenticationOk,
  backendKeyData,
  negotiateProtocolVersion,
  parameterStatus,
  readyForQuery,
} from "../wire/encode.ts";
import { FrameError, FrameReader, type FrameSink } from "../wire/frame.ts";
import { StartupError, parseStartup, startupLength, type StartupPacket } from "../wire/startup.ts";
import { ClientAuth } from "./auth.ts";

/** What a session needs from the proxy that owns it. */
export interface SessionHost {
  readonly config: Config;
  readonly log: Logger;
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
  | { kind: "connecting" }
  | { kind: "relay" }
  | { kind: "closed" };

const N = Uint8Array.of(0x4e); // 'N': no SSL / no GSS encryption

export class Session implements FrameSink, ServerOwner, OutboxOwner {
  private phase: Phase = { kind: "startup" };
  /** Bytes of a startup-phase packet not yet complete, or client bytes that arrived before relay began. */
  private pending: Uint8Array | null = null;
  private readonly outbox: Outbox;
  private readonly reader: FrameReader;
  private server: ServerConn | null = null;
  private loginTimer: ReturnType<typeof setTimeout> | null = null;
  /** Offset in the current chunk where a Terminate message starts, or -1. */
  private terminateAt = -1;
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
    switch (this.phase.kind) {
      case "relay":
        return this.relay(chunk);
      case "startup":
        return this.startupData(chunk);
      case "auth":
        try {
          this.reader.feed(chunk, this);
        } catch (err) {
          this.fatal(err instanceof FrameError ? errors.protocolViolation(err.message) : (err as PgError));
        }
        return;
      case "connecting":
        // The client is not supposed to talk before ReadyForQuery; keep what it sends for the server.
        this.pending = this.pending ? concat(this.pending, chunk) : chunk.slice();
        return;
      case "closed":
        return;
    }
  }

  onDrain(): void {
    this.outbox.drain();
  }

  onClose(): void {
    if (this.phase.kind === "closed") return;
    this.phase = { kind: "closed" };
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
        this.write(N);
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
    if (minor > 0 || unrecognized.length > 0) this.write(negotiateProtocolVersion(0, unrecognized));
    const userCfg = cfg.users.find((u) => u.name === user);
    const auth = new ClientAuth(userCfg, user);
    this.phase = { kind: "auth", auth, user: userCfg };
    this.authStep(auth.start(), userCfg);
    if (rest.length > 0 && this.phase.kind === "auth") this.onData(rest);
  }

  // --- authentication ------------------------------------------------------------------------------------

  onFrame(type: number, buf: Uint8Array, start: number, end: number): void {
    const phase = this.phase;
    if (phase.kind === "relay") {
      // Terminate: the client is done. Everything before it goes to the server; the connection is ours to end.
      if (type === F.Terminate) {
        this.terminateAt = start - 5;
        this.reader.stop();
      }
      return;
    }
    if (phase.kind !== "auth") return;
    if (type !== F.Password) {
      return this.fatal(errors.protocolViolation(`expected a password response, got message type "${String.fromCharCode(type)}"`));
    }
    this.authStep(phase.auth.onMessage(buf, start, end), phase.user);
  }

  private authStep(step: ReturnType<ClientAuth["start"]>, user: UserConfig | undefined): void {
    switch (step.kind) {
      case "send":
        this.write(step.bytes);
        return;
      case "fail":
        this.host.log.info("auth_failed", { user: this.user, client: this.remote });
        return this.fatal(step.error);
      case "ok": {
        if (step.bytes) this.write(step.bytes);
        const allowed = user!.databases;
        if (allowed.length > 0 && !allowed.includes(this.database)) {
          return this.fatal(errors.notAllowed(this.user, this.database));
        }
        this.phase = { kind: "connecting" };
        void this.connectServer(user!, step.credentials);
        return;
      }
    }
  }

  // --- server login --------------------------------------------------------------------------------------

  private async connectServer(user: UserConfig, credentials: ServerCredentials): Promise<void> {
    const cfg = this.host.config;
    const node = cfg.nodes.find((n) => n.role === "primary") ?? cfg.nodes[0]!;
    const params = new Map(this.params);
    if (user.server_user) params.set("user", user.server_user);
    let server: ServerConn;
    try {
      server = await ServerConn.connect({
        node,
        params,
        credentials,
        connectTimeoutMs: cfg.pool.checkout_timeout_ms,
        maxMessageSize: Math.max(cfg.limits.max_message_size, 1 << 30),
      });
    } catch (err) {
      const e = err instanceof PgError ? err : errors.cannotConnect(node.name, String(err));
      this.host.log.warn("server_login_failed", { node: node.name, user: this.user, code: e.code, error: e.message });
      return this.fatal(e);
    }
    if (this.phase.kind !== "connecting") {
      server.close(); // the client left while we were logging in
      return;
    }
    this.server = server;
    server.attach(this);
    const key = this.host.register(this);
    this.pid = key.pid;
    this.secret = key.secret;
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.loginTimer = null;

    const parts: Uint8Array[] = [authenticationOk()];
    for (const [k, v] of server.params) parts.push(parameterStatus(k, v));
    parts.push(backendKeyData(this.pid, this.secret), readyForQuery(server.txStatus));
    this.write(concat(...parts));

    // Relay: the client's frames may now be anything a server accepts, up to the configured size.
    this.reader.want(F.Password, false);
    this.reader.want(F.Terminate);
    this.phase = { kind: "relay" };
    this.host.log.debug("session_start", { user: this.user, database: this.database, node: node.name, client: this.remote });
    const early = this.pending;
    this.pending = null;
    if (early) this.relay(early);
  }

  // --- relay ---------------------------------------------------------------------------------------------

  private relay(chunk: Uint8Array): void {
    try {
      this.reader.feed(chunk, this);
    } catch (err) {
      return this.fatal(errors.protocolViolation((err as FrameError).message));
    }
    const end = this.terminateAt;
    if (end >= 0) {
      if (end > 0) this.server?.write(chunk, 0, end);
      return this.close();
    }
    if (!this.server?.write(chunk)) this.close();
  }

  onServerData(chunk: Uint8Array): void {
    if (!this.outbox.write(chunk)) this.server?.close();
  }

  onServerReady(_status: number): void {}

  onServerClose(error: PgError | null): void {
    this.server = null;
    if (this.phase.kind === "closed") return;
    if (!error) return this.close();
    this.host.log.warn("server_closed", { user: this.user, error: error.message });
    this.fatal(error);
  }

  onServerBlocked(): void {
    this.socket.pause();
  }

  onServerWritable(): void {
    this.socket.resume();
  }

  /** The client cannot take more: stop reading the server until it drains. */
  onBlocked(): void {
    this.server?.pause();
  }

  onUnblocked(): void {
    this.server?.resume();
  }

  // --- cancel & close ------------------------------------------------------------------------------------

  /** The server connection a CancelRequest should reach right now, if any. */
  get cancelTarget(): ServerConn | null {
    return this.server;
  }

  get inTransaction(): boolean {
    return this.server !== null && this.server.txStatus !== TxStatus.Idle;
  }

  private write(bytes: Uint8Array): void {
    this.outbox.write(bytes);
  }

  /** Sends a FATAL error (when the stream allows it) and closes. */
  fatal(e: PgError): void {
    if (this.phase.kind === "closed") return;
    if (!this.server || this.server.atBoundary) this.write(e.toMessage());
    this.close();
  }

  /** Closes the client connection and its server connection. */
  close(): void {
    if (this.phase.kind !== "closed") this.phase = { kind: "closed" };
    this.socket.end();
    this.cleanup();
  }

  private cleanup(): void {
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.loginTimer = null;
    const server = this.server;
    this.server = null;
    server?.close();
    this.outbox.clear();
    this.host.closed(this);
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
