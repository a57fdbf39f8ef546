/**
 * The composition root: listens for clients, creates a {@link Session} per connection, owns the server
 * connection pools and the prepared-statement registry, keeps the BackendKeyData registry for cancellation and
 * enforces the client connection limit.
 */
import type { Socket, TCPSocketListener } from "bun";
import { randomInt } from "node:crypto";
import { serialize } from "pg-protocol";
import { ConfigLoadError } from "./config/load.ts";
import type { Config, NodeConfig, UserConfig } from "./config/types.ts";
import { errors } from "./errors.ts";
import type { Logger } from "./log.ts";
import { Topology } from "./cluster/topology.ts";
import { PoolGroup } from "./pool/group.ts";
import { Pool } from "./pool/pool.ts";
import type { ServerConn, ServerCredentials } from "./pool/server.ts";
import { openServerSocket } from "./pool/tls.ts";
import { functionLists, type FunctionLists } from "./router/classify.ts";
import { loadParser } from "./router/parser.ts";
import { ClientTls, TlsLoadError, type ServedCert } from "./net/tls.ts";
import { planReload, type ReloadPlan } from "./reload.ts";
import { StatementRegistry } from "./session/prepared.ts";
import { Session, type SessionHost } from "./session/session.ts";
import { Mirror } from "./policy/mirror.ts";
import { RateLimiter } from "./policy/ratelimit.ts";

export interface ProxyOptions {
  config: Config;
  log: Logger;
}

/**
 * One more step of {@link Proxy.reload} (TLS certificates, for one). It runs before anything is applied and
 * throws a ConfigLoadError (lines with key paths) to refuse the new config, which keeps the old one running;
 * otherwise it returns what to apply once every step has agreed.
 */
export type ReloadHook = (next: Config, prev: Config) => (() => void) | void;

export interface ShutdownOptions {
  /** Let running transactions finish (SIGTERM); false ends every session at once (SIGINT, `stop()`). */
  graceful: boolean;
  /** How long a graceful shutdown waits (default `limits.shutdown_timeout`). */
  timeoutMs?: number;
}

export class Proxy implements SessionHost {
  config: Config;
  log: Logger;
  readonly statements = new StatementRegistry();
  functions: FunctionLists;
  /** Steps {@link Proxy.reload} runs before it applies a new config; see {@link ReloadHook}. */
  readonly reloadHooks: ReloadHook[] = [];
  private stopping: Promise<void> | null = null;
  /** Ends a graceful shutdown's wait early (a second signal). */
  private endDrain: (() => void) | null = null;
  private listener: TCPSocketListener<Session> | null = null;
  private readonly sessions = new Set<Session>();
  /** pgroute's own BackendKeyData → session, for CancelRequest. */
  private readonly byPid = new Map<number, Session>();
  private closedSinceGc = 0;
  private readonly pools = new Map<string, Pool>();
  private readonly groups = new Map<string, PoolGroup>();
  readonly topology: Topology;
  /** TLS offered to clients: the `[tls]` mode and the certificate new handshakes use. */
  readonly clientTls = new ClientTls();
  /** Rate limits (`[ratelimit]`, users' own), shared by every session. */
  readonly limiter: RateLimiter;
  /** Mirroring to a shadow database (`[mirror]`); its counters: `mirror.snapshot()`. */
  readonly mirror: Mirror;

  constructor(opts: ProxyOptions) {
    this.config = opts.config;
    this.log = opts.log;
    this.topology = new Topology(opts.config.nodes);
    this.functions = functionLists(opts.config.routing);
    this.limiter = new RateLimiter(opts.config);
    this.mirror = new Mirror({ config: opts.config, log: opts.log });
    // Every reload re-reads the certificate files, changed paths or not (certificates are renewed in place).
    this.reloadHooks.push((next) => this.prepareTls(next));
    // Policies take a new config as it is applied; buckets keep their tokens, a new shadow gets new connections.
    this.reloadHooks.push((next) => () => {
      this.limiter.configure(next);
      this.mirror.configure(next, this.log);
    });
  }

  /**
   * Re-reads the client TLS certificate and key named by `next.tls` (default: the running config) and serves
   * them from the next handshake on; sessions already encrypted keep theirs. Throws ConfigLoadError
   * (`tls.cert: cannot read …: no such file`) when a file cannot be read or used, and the previous certificate
   * keeps serving. `reload()` does the same through a {@link ReloadHook}, so a SIGHUP needs nothing more.
   */
  reloadTls(next: Config = this.config): ServedCert | null {
    return this.prepareTls(next)();
  }

  private prepareTls(next: Config): () => ServedCert | null {
    let commit: () => ServedCert | null;
    try {
      commit = this.clientTls.prepare(next.tls);
    } catch (err) {
      throw err instanceof TlsLoadError ? new ConfigLoadError([err.message]) : err;
    }
    return () => {
      const served = commit();
      if (served) {
        this.log.info("tls_certificate", { mode: next.tls.mode, subject: served.subject, names: served.altNames, expires: served.validTo });
        if (Date.parse(served.validTo) < Date.now()) this.log.warn("tls_certificate_expired", { subject: served.subject, expired: served.validTo });
      }
      return served;
    };
  }

  /**
   * Loads the SQL parser and the client TLS certificate (ConfigLoadError when it cannot be used), then starts
   * listening; resolves with the bound address (port 0 picks a free one).
   */
  async listen(): Promise<{ host: string; port: number }> {
    await loadParser();
    this.reloadTls();
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
          // conn.node: the node's settings when it was opened (a reload may have changed them since).
          this.topology.learn(conn.node, conn.params.get("in_hot_standby"));
          this.topology.recovered(conn.node);
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
    // JSC sizes its collection threshold by a heap that includes the SQL parser's WebAssembly memory, so after a
    // wave of short-lived clients a full collection can be far off while garbage piles up: ask for one.
    if (++this.closedSinceGc >= 2_000) {
      this.closedSinceGc = 0;
      Bun.gc(false);
    }
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
    forwardCancel(target, this.log, this.config.pool.connect_timeout_ms);
    this.log.debug("cancel_forwarded", { pid, node: target.node.name });
  }

  /** Stops at once: every session gets FATAL 57P01, every pool closes. */
  stop(): Promise<void> {
    return this.shutdown({ graceful: false });
  }

  /**
   * Stops accepting clients, then ends every session with FATAL 57P01 and closes every pool, as a Postgres
   * shutdown does. A graceful shutdown first lets running transactions finish: each session is ended as soon as
   * it is idle, until none is left or `timeoutMs` passes. Called again while a graceful one waits (a second
   * signal), a non-graceful call ends the wait at once; both resolve when pgroute has stopped.
   */
  shutdown(opts: ShutdownOptions): Promise<void> {
    if (this.stopping) {
      if (!opts.graceful) this.endDrain?.();
      return this.stopping;
    }
    this.stopping = this.runShutdown(opts.graceful, opts.timeoutMs ?? this.config.limits.shutdown_timeout_ms);
    return this.stopping;
  }

  private async runShutdown(graceful: boolean, timeoutMs: number): Promise<void> {
    this.listener?.stop(false);
    this.listener = null;
    if (graceful && timeoutMs > 0 && this.sessions.size > 0) {
      this.log.info("shutdown_draining", { clients: this.sessions.size, timeout_ms: timeoutMs });
      await this.drain(timeoutMs);
    }
    const left = this.sessions.size;
    for (const s of [...this.sessions]) s.fatal(errors.shuttingDown());
    for (const p of this.pools.values()) p.close();
    this.pools.clear();
    this.groups.clear();
    this.mirror.close();
    this.log.info("shutdown_complete", { graceful, ended: left });
  }

  /** Ends sessions with FATAL 57P01 as they become idle; resolves when none is left, at the deadline, or early. */
  private drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve) => {
      const sweep = () => {
        for (const s of [...this.sessions]) if (s.idle) s.fatal(errors.shuttingDown());
        if (this.sessions.size === 0 || Date.now() >= deadline) finish();
      };
      // Idleness changes inside the relays, which know nothing of shutdowns: a short poll keeps them so.
      const timer = setInterval(sweep, 20);
      const finish = () => {
        clearInterval(timer);
        this.endDrain = null;
        resolve();
      };
      this.endDrain = finish;
      sweep();
    });
  }

  /**
   * Swaps in a new config snapshot (SIGHUP). Clients keep their sessions; new logins use the new users, limits
   * and routing; pools whose settings changed are rebuilt as their connections go idle, and pools of removed
   * nodes are retired. A {@link ReloadHook} that throws leaves everything as it was (the error propagates).
   * Returns what changed, for the log.
   */
  reload(next: Config, log?: Logger): ReloadPlan {
    const prev = this.config;
    const plan = planReload(prev, next);
    // Hooks that may still refuse the new config run before anything changes (the client TLS certificate reload
    // is one, registered by the constructor), so an unusable certificate keeps the old config.
    const commits = this.reloadHooks.map((hook) => hook(next, prev));
    this.config = next;
    if (log) this.log = log;
    for (const commit of commits) commit?.();
    if (plan.routingChanged) this.functions = functionLists(next.routing);
    if (plan.nodesChanged) this.topology.update(next.nodes);
    for (const [key, pool] of this.pools) {
      const action = plan.pool(pool.node.name, pool.user, pool.database);
      if (action.kind === "retire") {
        this.pools.delete(key);
        pool.retire();
        this.log.info("pool_retired", { pool: pool.name });
      } else if (action.kind === "reconfigure") {
        pool.reconfigure(action.update);
        this.log.info("pool_reconfigured", { pool: pool.name, changed: action.why.join(",") });
      }
    }
    for (const w of plan.warnings) this.log.warn("config_reload_warning", { warning: w });
    this.log.info("config_reloaded", { changed: plan.changed.join(",") || "nothing" });
    return plan;
  }
}

/** Sends a CancelRequest for `target`'s running query over a connection of its own. */
function forwardCancel(target: ServerConn, log: Logger, timeoutMs: number): void {
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
  // Encrypted as the node's sslmode says, like the connection it cancels: the key is a credential.
  openServerSocket(target.node, { data() {}, close: finish, error: finish }, undefined, AbortSignal.timeout(timeoutMs)).then(
    (s: Socket) => {
      s.write(request);
    },
    (err) => {
      log.warn("cancel_failed", { node: target.node.name, error: err instanceof Error ? err.message : String(err) });
      finish();
    },
  );
}
