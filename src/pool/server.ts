/**
 * One backend connection: TCP connect, StartupMessage, authentication (SCRAM-SHA-256, md5, cleartext or trust),
 * the server's ParameterStatus and BackendKeyData, then relay. During relay it only steps over message headers,
 * tracking the transaction status from ReadyForQuery, and hands every chunk to its owner unchanged.
 */
import type { Socket, SocketHandler } from "bun";
import { serialize } from "pg-protocol";
import type { NodeConfig } from "../config/types.ts";
import { PgError, errors } from "../errors.ts";
import { Outbox, type OutboxOwner } from "../net/outbox.ts";
import {
  decodeAuthentication,
  decodeBackendKeyData,
  decodeError,
  decodeParameterStatus,
  decodeSaslMechanisms,
} from "../wire/backend.ts";
import { Auth, B, ErrorField, TxStatus } from "../wire/codes.ts";
import { startupMessage } from "../wire/encode.ts";
import { FrameError, FrameReader, type FrameSink } from "../wire/frame.ts";
import { SCRAM_MECHANISM, ScramClient, md5Hash, md5Response, type ScramSecret } from "../wire/scram.ts";

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
}

/** Receives a relaying server connection's traffic. */
export interface ServerOwner {
  /** A chunk of server bytes, to be forwarded as is. */
  onServerData(chunk: Uint8Array): void;
  /** ReadyForQuery arrived (after its chunk was handed over). */
  onServerReady(status: number): void;
  /** The connection is gone; `error` says why when it was not our own doing. */
  onServerClose(error: PgError | null): void;
  /** The socket to the server can take more: resume reading the client. */
  onServerWritable(): void;
  /** The socket to the server is full: pause reading the client. */
  onServerBlocked(): void;
}

type Phase = "connecting" | "login" | "ready" | "closed";

/** Message bodies read during login; after it only ReadyForQuery's status byte is needed. */
const LOGIN_TYPES = [
  B.Authentication,
  B.ParameterStatus,
  B.BackendKeyData,
  B.ReadyForQuery,
  B.ErrorResponse,
  B.NegotiateProtocolVersion,
];

export class ServerConn implements FrameSink, OutboxOwner {
  readonly node: NodeConfig;
  /** ParameterStatus values as the server last reported them, in arrival order. */
  readonly params = new Map<string, string>();
  /** The server's BackendKeyData, used to cancel its running query. */
  pid = 0;
  secret = 0;
  /** Transaction status from the latest ReadyForQuery. */
  txStatus: number = TxStatus.Idle;
  /** Bytes the server sent past ReadyForQuery that are not at a message boundary yet. */
  get atBoundary(): boolean {
    return this.reader.atBoundary;
  }

  private phase: Phase = "connecting";
  private socket!: Socket<ServerConn>;
  private outbox!: Outbox;
  private readonly reader: FrameReader;
  private owner: ServerOwner | null = null;
  private scram: ScramClient | null = null;
  private sawReady = false;
  private readyStatus = 0;
  private loginDone!: { resolve: () => void; reject: (e: PgError) => void };
  private closeError: PgError | null = null;
  private notified = false;
  /** The server sent a FATAL error in relay, so its close needs no error of ours. */
  private sentFatal = false;

  private constructor(private readonly login: ServerLogin) {
    this.node = login.node;
    this.reader = new FrameReader(LOGIN_TYPES, login.maxMessageSize);
  }

  /** Connects and logs in; rejects with the server's own error (or a 08001) when that fails. */
  static async connect(login: ServerLogin): Promise<ServerConn> {
    const conn = new ServerConn(login);
    const done = new Promise<void>((resolve, reject) => {
      conn.loginDone = { resolve, reject };
    });
    const timer = setTimeout(
      () => conn.fail(errors.cannotConnect(login.node.name, `timed out after ${login.connectTimeoutMs} ms`)),
      login.connectTimeoutMs,
    );
    try {
      conn.socket = await Bun.connect({
        hostname: login.node.host,
        port: login.node.port,
        socket: handlers,
        data: conn,
      });
    } catch (err) {
      clearTimeout(timer);
      throw conn.closeError ?? errors.cannotConnect(login.node.name, (err as Error).message);
    }
    if (conn.phase === "closed") {
      // Timed out while the TCP connect was still under way.
      conn.socket.terminate();
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

  /** Starts relaying to `owner`; from here on data goes there. */
  attach(owner: ServerOwner): void {
    this.owner = owner;
  }

  /** Forwards client bytes. False when the socket is already closed. */
  write(buf: Uint8Array, start?: number, end?: number): boolean {
    return this.phase === "ready" && this.outbox.write(buf, start, end);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
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
      this.sawReady = false;
      try {
        this.reader.feed(chunk, this);
      } catch (err) {
        this.fail(errors.serverGone(this.node.name, (err as Error).message), true);
        return;
      }
      this.owner?.onServerData(chunk);
      if (this.sawReady) this.owner?.onServerReady(this.readyStatus);
      return;
    }
    if (this.phase !== "login") return;
    try {
      this.reader.feed(chunk, this);
    } catch (err) {
      const e = err instanceof PgError ? err : errors.cannotConnect(this.node.name, (err as Error).message);
      this.fail(e, true);
    }
  }

  /** @internal */
  handleClose(): void {
    if (this.notified) return;
    this.notified = true;
    const wasReady = this.phase === "ready";
    const wasLogin = this.phase === "login" || this.phase === "connecting";
    this.phase = "closed";
    if (wasLogin) this.loginDone.reject(this.closeError ?? errors.cannotConnect(this.node.name, "the server closed the connection during login"));
    else if (this.closeError) this.owner?.onServerClose(this.closeError);
    else if (wasReady && !this.sentFatal) this.owner?.onServerClose(errors.serverGone(this.node.name, "the server closed the connection"));
    else this.owner?.onServerClose(null);
  }

  /** @internal */
  handleDrain(): void {
    this.outbox?.drain();
  }

  onBlocked(): void {
    this.owner?.onServerBlocked();
  }

  onUnblocked(): void {
    this.owner?.onServerWritable();
  }

  // --- messages --------------------------------------------------------------------------------------------

  onFrame(type: number, buf: Uint8Array, start: number, end: number): void {
    if (this.phase === "ready") {
      if (type === B.ReadyForQuery) {
        this.readyStatus = buf[start]!;
        this.txStatus = this.readyStatus;
        this.sawReady = true;
      } else if (type === B.ErrorResponse) {
        // A FATAL the server sends before closing already told the client why; no second error after it.
        const sev = decodeError(buf, start, end).severity;
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
        this.fail(
          new PgError(e.code, e.message, "FATAL", f.get(ErrorField.Detail), f.get(ErrorField.Hint)),
          true,
        );
        return;
      }
      case B.NegotiateProtocolVersion:
        return; // We ask for 3.0 with no options, so there is nothing to fall back from.
      case B.ReadyForQuery:
        this.txStatus = buf[start]!;
        this.phase = "ready";
        // From now on only ReadyForQuery bodies are looked at.
        for (const t of LOGIN_TYPES) this.reader.want(t, false);
        this.reader.want(B.ReadyForQuery);
        this.reader.want(B.ErrorResponse);
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
        const secret: ScramSecret | undefined =
          c.password !== undefined ? { kind: "password", password: c.password } : c.scram;
        if (!secret) return this.noSecret("a SCRAM-SHA-256 password");
        this.scram = new ScramClient(secret);
        this.socket.write(serialize.sendSASLInitialResponseMessage(SCRAM_MECHANISM, this.scram.first()));
        return;
      }
      case Auth.SASLContinue:
        if (!this.scram) return this.fail(errors.cannotConnect(this.node.name, "unexpected SASL message"), true);
        this.guard(() => this.socket.write(serialize.sendSCRAMClientFinalMessage(this.scram!.final(text(data)))));
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
