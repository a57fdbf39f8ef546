/**
 * The composition root: listens for clients, creates a {@link Session} per connection, keeps the BackendKeyData
 * registry for cancellation and enforces the client connection limit.
 */
import type { Socket, TCPSocketListener } from "bun";
import { randomInt } from "node:crypto";
import { serialize } from "pg-protocol";
import type { Config } from "./config/types.ts";
import type { Logger } from "./log.ts";
import { Session, type SessionHost } from "./session/session.ts";

export interface ProxyOptions {
  config: Config;
  log: Logger;
}

export class Proxy implements SessionHost {
  config: Config;
  readonly log: Logger;
  private listener: TCPSocketListener<Session> | null = null;
  private readonly sessions = new Set<Session>();
  /** pgroute's own BackendKeyData → session, for CancelRequest. */
  private readonly byPid = new Map<number, Session>();

  constructor(opts: ProxyOptions) {
    this.config = opts.config;
    this.log = opts.log;
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free one). */
  listen(): { host: string; port: number } {
    const { host, port } = this.config.listen;
    const proxy = this;
    this.listener = Bun.listen<Session>({
      hostname: host,
      port,
      socket: {
        open(socket) {
          socket.setNoDelay(true);
          socket.data = new Session(socket, proxy);
          proxy.sessions.add(socket.data);
        },
        data(socket, chunk) {
          socket.data.onData(chunk);
        },
        drain(socket) {
          socket.data.onDrain();
        },
        close(socket) {
          socket.data?.onClose();
        },
        error(socket, err) {
          proxy.log.debug("client_socket_error", { error: err.message });
          socket.data?.onClose();
        },
      },
    });
    const bound = { host: this.listener.hostname, port: this.listener.port };
    this.log.info("listening", { host: bound.host, port: bound.port, mode: this.config.pool.mode });
    return bound;
  }

  get clientCount(): number {
    return this.sessions.size;
  }

  overLimit(): boolean {
    return this.sessions.size > this.config.limits.max_client_connections;
  }

  register(session: Session): { pid: number; secret: number } {
    let pid: number;
    do pid = randomInt(1, 0x7fffffff);
    while (this.byPid.has(pid));
    this.byPid.set(pid, session);
    return { pid, secret: randomInt(-0x80000000, 0x7fffffff) };
  }

  closed(session: Session): void {
    this.sessions.delete(session);
    if (session.pid && this.byPid.get(session.pid) === session) this.byPid.delete(session.pid);
  }

  /**
   * Forwards a CancelRequest to the server connection the client is using now. A key that does not match does
   * nothing, as in Postgres; the requester never gets an answer either way.
   */
  cancel(pid: number, secret: number): void {
    const session = this.byPid.get(pid);
    if (!session || session.secret !== secret) {
      this.log.debug("cancel_ignored", { pid });
      return;
    }
    const target = session.cancelTarget;
    if (!target) return;
    const { host, port } = target.node;
    const request = serialize.cancel(target.pid, target.secret);
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s: Socket) {
          s.end(request);
        },
        data() {},
        error() {},
      },
    }).catch((err) => this.log.warn("cancel_failed", { node: target.node.name, error: String(err) }));
    this.log.debug("cancel_forwarded", { pid, node: target.node.name });
  }

  /** Stops accepting and closes every session. */
  async stop(): Promise<void> {
    this.listener?.stop(true);
    this.listener = null;
    for (const s of [...this.sessions]) s.close();
  }
}
