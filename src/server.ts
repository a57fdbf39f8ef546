/**
 * The composition root: listens for clients, creates a {@link Session} per connection, owns the server
 * connection pools and the prepared-statement registry, keeps the BackendKeyData registry for cancellation and
 * enforces the client connection limit.
 */
import type { Socket, TCPSocketListener } from "bun";
import { randomInt } from "node:crypto";
import { serialize } from "pg-protocol";
import type { Config, NodeConfig, UserConfig } from "./config/types.ts";
import type { Logger } from "./log.ts";
import { Topology } from "./cluster/topology.ts";
import { PoolGroup } from "./pool/group.ts";
import { Pool } from "./pool/pool.ts";
import type { ServerConn, ServerCredentials } from "./pool/server.ts";
import { functionLists, type FunctionLists } from "./router/classify.ts";
import { loadParser } from "./router/parser.ts";
import { StatementRegistry } from "./session/prepared.ts";
import { Session, type SessionHost } from "./session/session.ts";

export interface ProxyOptions {
  config: Config;
  log: Logger;
}

export class Proxy implements SessionHost {
  config: Config;
  readonly log: Logger;
  readonly statements = new StatementRegistry();
  readonly functions: FunctionLists;
  private listener: TCPSocketListener<Session> | null = null;
  private readonly sessions = new Set<Session>();
  /** pgroute's own BackendKeyData → session, for CancelRequest. */
  private readonly byPid = new Map<number, Session>();
  private readonly pools = new Map<string, Pool>();
  private readonly groups = new Map<string, PoolGroup>();
  readonly topology: Topology;

  constructor(opts: ProxyOptions) {
    this.config = opts.config;
    this.log = opts.log;
    this.topology = new Topology(opts.config.nodes);
    this.functions = functionLists(opts.config.routing);
  }

  /** Loads the SQL parser and starts listening; resolves with the bound address (port 0 picks a free one). */
  async listen(): Promise<{ host: string; port: number }> {
    await loadParser();
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

  /** Every pool, for inspection. */
  get allPools(): readonly Pool[] {
    return [...this.pools.values()];
  }

  overLimit(): boolean {
    return this.sessions.size > this.config.limits.max_client_connections;
  }

  /** The pools of a user and database, one per node. */
  group(user: UserConfig, database: string, credentials: ServerCredentials): PoolGroup {
    const serverUser = user.server_user ?? user.name;
    const key = `${serverUser}\0${database}`;
    let group = this.groups.get(key);
    if (!group) {
      group = new PoolGroup(this.topology, (node) => this.poolOn(node, serverUser, database, credentials));
      this.groups.set(key, group);
    } else group.updateCredentials(credentials);
    return group;
  }

  private poolOn(node: NodeConfig, serverUser: string, database: string, credentials: ServerCredentials): Pool {
    const key = `${node.name}\0${serverUser}\0${database}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new Pool({
        node,
        user: serverUser,
        database,
        credentials,
        config: this.config.pool,
        maxMessageSize: Math.max(this.config.limits.max_message_size, 1 << 30),
        log: this.log,
        onLogin: (conn) => {
          this.topology.learn(node, conn.params.get("in_hot_standby"));
          this.topology.recovered(node);
        },
        onLoginFailed: () => this.topology.failed(node),
      });
      this.pools.set(key, pool);
    }
    return pool;
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
   * nothing, as in Postgres; the requester never gets an answer either way. Until the server has taken the
   * cancel, its connection is not handed to another client, so the cancel cannot hit someone else's query.
   */
  cancel(pid: number, secret: number): void {
    const session = this.byPid.get(pid);
    if (!session || session.secret !== secret) {
      this.log.debug("cancel_ignored", { pid });
      return;
    }
    const target = session.cancelTarget;
    if (!target) return;
    forwardCancel(target, this.log);
    this.log.debug("cancel_forwarded", { pid, node: target.node.name });
  }

  /** Stops accepting, closes every session and every pool. */
  async stop(): Promise<void> {
    this.listener?.stop(true);
    this.listener = null;
    for (const s of [...this.sessions]) s.close();
    for (const p of this.pools.values()) p.close();
    this.pools.clear();
    this.groups.clear();
  }
}

/** Sends a CancelRequest for `target`'s running query over a connection of its own. */
function forwardCancel(target: ServerConn, log: Logger): void {
  const request = serialize.cancel(target.pid, target.secret);
  target.cancelling++;
  const done = () => {
    if (--target.cancelling > 0) return;
    const after = target.afterCancel;
    target.afterCancel = null;
    after?.();
  };
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done();
  };
  Bun.connect({
    hostname: target.node.host,
    port: target.node.port,
    socket: {
      open(s: Socket) {
        s.write(request);
      },
      data() {},
      close: finish,
      error: finish,
    },
  }).catch((err) => {
    log.warn("cancel_failed", { node: target.node.name, error: String(err) });
    finish();
  });
}
