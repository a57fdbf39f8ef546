/**
 * The composition root: listens for clients, creates a {@link Session} per connection, owns the server
 * connection pools and the prepared-statement registry, keeps the BackendKeyData registry for cancellation and
 * enforces the client connection limit. It also holds what the admin side reads and changes: the cluster
 * snapshot, operator overrides, the PAUSE gate, traffic statistics and counters (src/admin/ serves them).
 */
import type { Socket, TCPSocketListener } from "bun";
import { randomInt } from "node:crypto";
import { serialize } from "pg-protocol";
import { ConfigLoadError } from "./config/load.ts";
import type { Config, NodeConfig, UserConfig } from "./config/types.ts";
import { errors } from "./errors.ts";
import { createLogger, type Logger } from "./log.ts";
import { Topology } from "./cluster/topology.ts";
import { BATCH, DELAY_MS, Observers } from "./cluster/observe.ts";
import { Overrides } from "./cluster/overrides.ts";
import { AdminConsole } from "./admin/console.ts";
import { Traffic } from "./admin/traffic.ts";
import { PauseGate } from "./pool/gate.ts";
import { LiveNodes } from "./cluster/live.ts";
import { SnapshotHolder } from "./cluster/state.ts";
import { Monitor } from "./monitor/monitor.ts";
import { PoolGroup } from "./pool/group.ts";
import { Pool } from "./pool/pool.ts";
import type { ServerConn, ServerCredentials } from "./pool/server.ts";
import { openServerSocket } from "./pool/tls.ts";
import { functionLists, type FunctionLists } from "./router/classify.ts";
import { NO_SIZES, TableStatsMonitor, type TableSizes } from "./monitor/tables.ts";
import { Policies } from "./policy/policy.ts";
import { loadParser } from "./router/parser.ts";
import { ClientTls, TlsLoadError, type ServedCert } from "./net/tls.ts";
import { planReload, type ReloadPlan } from "./reload.ts";
import { StatementRegistry } from "./session/prepared.ts";
import { SessionCounters } from "./session/counters.ts";
import type { ConsoleHandler } from "./session/console-relay.ts";
import { Session, type SessionHost } from "./session/session.ts";
import { NodeCounters } from "./stats.ts";
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

/** What a reload from the config source did: applied (with what changed), or refused with every error. */
export type ReloadOutcome = { readonly ok: true; readonly plan: ReloadPlan } | { readonly ok: false; readonly errors: readonly string[] };

export class Proxy implements SessionHost {
  config: Config;
  log: Logger;
  readonly statements = new StatementRegistry();
  functions: FunctionLists;
  /** Roles, timeouts and firewall rules of the running config (src/policy). */
  policies: Policies;
  /** Table sizes for the firewall's size rules; started when a rule needs them. */
  private tables: TableStatsMonitor | null = null;
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
  /** The live picture of the cluster, published by {@link monitor}: read `cluster.current` (admin, metrics). */
  readonly cluster = new SnapshotHolder({ at: 0, version: 0, nodes: [], primary: null });
  /** Per-node live figures (observed latency, breakers, pool load) behind the snapshot. */
  readonly lives: LiveNodes;
  /** Probes every node and is the only writer of {@link cluster}. */
  readonly monitor: Monitor;
  /** Roles and the replica for each read, from the latest snapshot. */
  readonly topology: Topology;
  /** Told about every request transaction-pooled sessions complete; see {@link RequestObserver}. */
  readonly observers: Observers;
  /** TLS offered to clients: the `[tls]` mode and the certificate new handshakes use. */
  readonly clientTls = new ClientTls();
  /** Drained nodes and roles set by an operator (admin API and console). */
  readonly overrides = new Overrides();
  /** PAUSE/RESUME: no server connection is leased while it is closed. */
  readonly gate = new PauseGate();
  /** Per-node and per-fingerprint traffic of transaction-pooled sessions. */
  readonly traffic: Traffic;
  /** Clients, routing decisions and pins, counted by the sessions. */
  readonly counters = new SessionCounters();
  /** Per-node connection, checkout and session-pooling counters, shared by the pools of each node. */
  private readonly perNode = new Map<string, NodeCounters>();
  /** Where {@link Proxy.reloadFromSource} reads the next config (`pgroute serve`: the file, with command-line overrides). */
  reloadSource: (() => Promise<Config>) | null = null;
  /** 1 at start, +1 for every config reload applied. */
  configVersion = 1;
  /** Epoch ms when the running config was loaded, and when pgroute started. */
  configLoadedAt = Date.now();
  readonly startedAt = Date.now();
  /** Reloads run one at a time, in the order asked (SIGHUP, admin API, console). */
  private reloading: Promise<unknown> = Promise.resolve();
  /** Rate limits (`[ratelimit]`, users' own), shared by every session. */
  readonly limiter: RateLimiter;
  /** Mirroring to a shadow database (`[mirror]`); its counters: `mirror.snapshot()`. */
  readonly mirror: Mirror;

  constructor(opts: ProxyOptions) {
    this.config = opts.config;
    this.log = opts.log;
    this.observers = new Observers(BATCH, DELAY_MS, (err) => this.log.error("request_observer_failed", { error: err instanceof Error ? (err.stack ?? err.message) : String(err) }));
    this.lives = new LiveNodes(opts.config);
    this.monitor = new Monitor({
      config: opts.config,
      holder: this.cluster,
      lives: this.lives,
      log: opts.log,
      overrides: this.overrides,
      onReachable: (node) => {
        for (const p of this.pools.values()) if (p.node.name === node.name) p.resetBackoff();
      },
    });
    this.topology = new Topology({
      holder: this.cluster,
      lives: this.lives,
      balance: opts.config.balance,
      onTrial: (node) => this.monitor.trial(node),
      onAcquireFailed: (node, error) => this.monitor.acquireFailed(node, error),
    });
    // Health learns from live traffic: observed latency and the nodes' own failures (transaction pooling only).
    this.observers.add(this.monitor);
    // An operator's drain or role change applies to the next transaction, not the next check.
    this.overrides.subscribe(() => this.monitor.publish());
    this.traffic = new Traffic(opts.config.admin.top_queries, this.observers.flush);
    this.observers.add(this.traffic);
    this.functions = functionLists(opts.config.routing);
    this.policies = new Policies(opts.config, this.functions);
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
    // The first check of every node (bounded by the monitor's time limits) before the first client.
    await this.monitor.start();
    const { host, port } = this.config.listen;
    try {
      this.listener = this.bind(host, port);
    } catch (err) {
      await this.monitor.stop();
      throw err;
    }
    const bound = { host: this.listener.hostname, port: this.listener.port };
    this.log.info("listening", { host: bound.host, port: bound.port, mode: this.config.pool.mode });
    return bound;
  }

  private bind(host: string, port: number): TCPSocketListener<Session> {
    const proxy = this;
    return Bun.listen<Session>({
      hostname: host,
      port,
      socket: {
        open(socket) {
          socket.setNoDelay(true);
          socket.data = new Session(socket, proxy);
          proxy.sessions.add(socket.data);
          proxy.counters.clientsOpened++;
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
  }

  /** The table-size monitor, started on first need. */
  private tableStats(): TableStatsMonitor {
    this.tables ??= new TableStatsMonitor({
      config: () => this.config,
      node: () => this.topology.primary() ?? this.topology.primaryCandidates()[0] ?? null,
      log: () => this.log,
    });
    return this.tables;
  }

  /** The current table sizes of `database` (none while no rule needs them). */
  tableSizes(database: string): TableSizes {
    if (!this.policies.needsSizes) return NO_SIZES;
    const t = this.tableStats();
    t.track(database);
    return t.sizes(database);
  }

  /** Resolves once `database`'s table sizes are loaded, or after `pool.connect_timeout` (logins wait for this). */
  tablesReady(database: string): Promise<void> {
    if (!this.policies.needsSizes) return Promise.resolve();
    return this.tableStats().ready(database, this.config.pool.connect_timeout_ms);
  }

  /** Reloads the table sizes of every database in use now (the monitor does it every `firewall.stats_interval`). */
  refreshTableSizes(): Promise<void> {
    return this.tables?.refresh() ?? Promise.resolve();
  }

  get clientCount(): number {
    return this.sessions.size;
  }

  /** Every client connection, for inspection. */
  get clients(): Iterable<Session> {
    return this.sessions.values();
  }

  /** The counters of node `name` (shared by its pools; they outlive pools a reload retires). */
  nodeCounters(name: string): NodeCounters {
    let c = this.perNode.get(name);
    if (!c) {
      c = new NodeCounters();
      this.perNode.set(name, c);
    }
    return c;
  }

  /** The admin console of a client that logged in to database `pgroute`. */
  openConsole(session: Session, user: UserConfig): ConsoleHandler {
    return new AdminConsole(this, session, user);
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
      group = new PoolGroup(this.topology, (node) => this.poolOn(node, serverUser, database, credentials), this.gate, () => ({
        waitMs: this.config.failover.primary_wait_timeout_ms,
        retryMs: this.config.failover.search_interval_ms,
      }));
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
        // conn.node: the node's settings when it was opened (a reload may have changed them since).
        onLogin: (conn) => this.monitor.loginSucceeded(conn.node, conn.params.get("in_hot_standby")),
        onLoginFailed: (error) => this.monitor.loginFailed(node, error),
        counters: this.nodeCounters(node.name),
      });
      if (this.overrides.isDrained(node.name)) pool.drain(true);
      this.pools.set(key, pool);
      this.lives.get(node.name).attach(pool);
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
    if (this.sessions.delete(session)) this.counters.clientsClosed++;
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
    this.observers.flush(); // the last requests' reports, before the monitor stops (and no timer left behind)
    await this.monitor.stop();
    this.groups.clear();
    // Clients held by PAUSE go on to find the pools closed.
    this.gate.resume();
    await this.tables?.stop();
    this.tables = null;
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
    // Firewall rules and role checks hold for open sessions at once; timeouts and routing from their next login.
    this.policies = new Policies(next, this.functions);
    if (!this.policies.needsSizes && this.tables) {
      void this.tables.stop();
      this.tables = null;
    }
    this.overrides.retain(new Set(next.nodes.map((n) => n.name)));
    // The monitor applies new nodes, credentials and health settings and publishes; the topology follows it.
    this.monitor.reconfigure(next, this.log);
    this.topology.configure(next.balance);
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
    if (next.admin.top_queries !== prev.admin.top_queries) this.traffic.fingerprints.resize(next.admin.top_queries);
    for (const w of plan.warnings) this.log.warn("config_reload_warning", { warning: w });
    this.configVersion++;
    this.configLoadedAt = Date.now();
    this.log.info("config_reloaded", { changed: plan.changed.join(",") || "nothing", version: this.configVersion });
    return plan;
  }

  /**
   * Loads a config with `load` and applies it ({@link Proxy.reload}); a config that does not load (every error
   * with its key path) or that a reload hook refuses is logged line by line and the running one stays.
   */
  reloadFrom(load: () => Promise<Config>, log: Logger = this.log, file?: string): Promise<ReloadOutcome> {
    const run = async (): Promise<ReloadOutcome> => {
      try {
        const next = await load();
        return { ok: true, plan: this.reload(next, createLogger(next.log)) };
      } catch (err) {
        if (!(err instanceof ConfigLoadError)) throw err;
        for (const error of err.errors) log.error("config_reload_failed", { file, error });
        log.error("config_reload_kept_old", { file, errors: err.errors.length });
        return { ok: false, errors: err.errors };
      }
    };
    const result = this.reloading.then(run, run);
    this.reloading = result.catch(() => {});
    return result;
  }

  /** Reloads from {@link Proxy.reloadSource} (the admin API's and console's RELOAD). */
  reloadFromSource(): Promise<ReloadOutcome> {
    const source = this.reloadSource;
    if (!source) return Promise.resolve({ ok: false, errors: ["this pgroute was not started from a configuration file: there is nothing to reload"] });
    return this.reloadFrom(source);
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
