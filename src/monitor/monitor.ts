/**
 * The health monitor: the only thing that probes nodes, and the only writer of the cluster snapshot. Each node
 * gets its own connection and tiered checks — a ping every `ping_interval` (role, WAL position), a detailed probe
 * every `probe_interval` (activity, connections, replication, CPU) — each with its time limit; a node that stops
 * answering is retried with exponential backoff and jitter up to `reconnect_max`. What the relay reports of live
 * traffic (latency, the node's own failures) and what server logins reveal (role, refusals) come in here too and
 * feed the breakers and the score. After every change a new immutable snapshot is published
 * (src/cluster/state.ts), which the balancer, metrics, the admin API and `pgroute check lag` read.
 *
 * Without credentials (`[monitor] user`, or a `[[users]]` entry with a password) or with `enabled = false` the
 * monitor is passive: no checks, roles from server logins, health from traffic alone.
 */
import type { Overrides } from "../cluster/overrides.ts";
import type { Config, NodeConfig } from "../config/types.ts";
import type { PgError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Breaker } from "../cluster/breaker.ts";
import { isNodeFault } from "../cluster/faults.ts";
import type { LiveNodes } from "../cluster/live.ts";
import type { RequestObserver, RequestSample } from "../cluster/observe.ts";
import { lagExcess, loosestLag } from "../cluster/plan.ts";
import type { ClusterSnapshot, SnapshotHolder } from "../cluster/state.ts";
import { assemble, emptyState, primaryOf, walsenderOf, type NodeState } from "./assemble.ts";
import { Failover, type FailoverDeps } from "./failover.ts";
import { elect, isDown, roleOf } from "./roles.ts";
import { connectPostgres, type CheckConnection, type Connect, type Credentials } from "./connection.ts";
import { quoteTable, readHeartbeat, writeHeartbeat } from "./heartbeat.ts";
import { LsnHistory, replicaLag } from "./lag.ts";
import { CheckError, PROMOTE_SQL, ping, probe, type PingResult, type ProbeResult } from "./probe.ts";
import { ReplayPoll } from "./replay.ts";

/** Wall-clock (epoch ms, for snapshots and breakers) and monotonic (for latency windows) time. */
export interface Clock {
  now(): number;
  mono(): number;
}

const SYSTEM_CLOCK: Clock = { now: () => Date.now(), mono: () => performance.now() };

/** Stands in for the history while the primary's own is not known yet (never written to). */
const NO_HISTORY = new LsnHistory(1);

export interface MonitorOptions {
  config: Config;
  holder: SnapshotHolder;
  lives: LiveNodes;
  log: Logger;
  clock?: Clock;
  /** Jitter of the reconnection backoff (tests inject it). */
  random?: () => number;
  connect?: Connect;
  /** A node answers the monitor again after it did not: its pools may stop backing off their logins. */
  onReachable?: (node: NodeConfig) => void;
  /** What operators decided (drained nodes, roles set by hand): folded into every snapshot, republished on change. */
  overrides?: Overrides;
  /** Patroni's HTTP client and the DNS resolver of failover discovery (tests inject fakes). */
  failover?: FailoverDeps;
}



/**
 * Who the monitor logs in as: `[monitor] user`/`password`, else the first `[[users]]` entry with a server password
 * (its `server_user` and `server_password`, or its own name and `password`); null when there is none.
 */
export function monitorCredentials(config: Config): Credentials | null {
  const m = config.monitor;
  if (m.user !== undefined) return { user: m.user, ...(m.password === undefined ? {} : { password: m.password }), database: m.database };
  for (const u of config.users) {
    const password = u.server_password ?? u.password;
    if (password !== undefined) return { user: u.server_user ?? u.name, password, database: m.database };
  }
  return null;
}

/** One node's checks: its connection and schedule. */
interface Watch {
  conn: CheckConnection;
  timer: ReturnType<typeof setTimeout> | null;
  nextProbeAt: number;
  /** Checks failed in a row (the backoff's exponent). */
  failures: number;
  busy: boolean;
  stopped: boolean;
}

/** A node's address and TLS: what its check connection depends on. */
function connectionKey(n: NodeConfig): string {
  return `${n.host}\0${n.port}\0${n.sslmode}\0${n.sslrootcert ?? ""}`;
}

export class Monitor implements RequestObserver {
  private config: Config;
  private readonly clock: Clock;
  private log: Logger;
  private readonly connect: Connect;
  private readonly random: () => number;
  private readonly states = new Map<string, NodeState>();
  private readonly watches = new Map<string, Watch>();
  /** The primary's WAL positions, for lag in time; `historyOf` names the primary they belong to. */
  private readonly history = new LsnHistory();
  private historyOf: string | null = null;
  private creds: Credentials | null;
  private version = 0;
  private running = false;
  private breakerTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private beating = false;
  /** Problems already logged, so a repeating one is logged once. */
  private readonly warned = new Set<string>();
  /** The primary the last election chose (before operator overrides), or null. */
  private elected: string | null = null;
  /** Discovery through Patroni and DNS, and promotion, while the primary is lost. */
  private readonly failover: Failover;
  /** The fast poll of replicas' replay positions (read-your-writes). */
  private readonly replay: ReplayPoll;
  /** The first round of checks is over: what the election says from now on is news (logged at info). */
  private settled = false;

  constructor(private readonly opts: MonitorOptions) {
    this.config = opts.config;
    this.log = opts.log;
    this.clock = opts.clock ?? SYSTEM_CLOCK;
    this.connect = opts.connect ?? connectPostgres;
    this.random = opts.random ?? Math.random;
    this.creds = this.credentialsOf(opts.config);
    const monitor = this;
    this.failover = new Failover(
      {
        get config() {
          return monitor.config;
        },
        get log() {
          return monitor.log;
        },
        checkNow: (name) => this.checkNow(name),
        promote: (name) => this.promote(name),
        hintsChanged: () => void this.publish(),
      },
      opts.failover,
    );
    this.replay = new ReplayPoll({
      get config() {
        return monitor.config;
      },
      lives: opts.lives,
      get active() {
        return !monitor.passive;
      },
      get running() {
        return monitor.running;
      },
      now: () => this.clock.now(),
      states: () => this.states.values(),
      connectionOf: (name) => {
        const w = this.watches.get(name);
        return w && !w.stopped ? w.conn : null;
      },
    });
    for (const n of opts.config.nodes) this.addNode(n);
    this.publish();
  }

  private credentialsOf(config: Config): Credentials | null {
    return config.monitor.enabled ? monitorCredentials(config) : null;
  }

  /** No checks: monitoring is disabled or has no credentials. */
  get passive(): boolean {
    return this.creds === null;
  }

  /** The latest snapshot. */
  get current(): ClusterSnapshot {
    return this.opts.holder.current;
  }

  private addNode(n: NodeConfig): NodeState {
    const s = emptyState(n, this.opts.lives.get(n.name));
    this.states.set(n.name, s);
    if (this.creds) this.watches.set(n.name, this.newWatch(n, this.creds));
    return s;
  }

  private newWatch(n: NodeConfig, creds: Credentials): Watch {
    const timeout = Math.max(this.config.monitor.ping_timeout_ms, this.config.monitor.probe_timeout_ms);
    return { conn: this.connect(n, creds, timeout), timer: null, nextProbeAt: 0, failures: 0, busy: false, stopped: false };
  }

  // --- lifecycle ---------------------------------------------------------------------------------------------

  /** Starts checking: one detailed probe of every node (bounded by the time limits) before it resolves. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    if (this.passive) {
      const why = this.config.monitor.enabled ? "no credentials: set [monitor] user, or give a [[users]] entry a password" : "monitor.enabled = false";
      this.log.warn("monitor_passive", { reason: why });
      return;
    }
    this.startHeartbeat();
    await this.round();
    for (const [name, w] of this.watches) this.schedule(this.states.get(name)!, w, this.nextCheckMs());
    this.replay.start();
    this.settled = true;
  }

  /** Stops every check and closes the check connections. */
  async stop(): Promise<void> {
    this.running = false;
    this.failover.stop();
    if (this.breakerTimer) clearTimeout(this.breakerTimer);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.replay.stop();
    this.breakerTimer = this.heartbeatTimer = null;
    await Promise.all([...this.watches.values()].map((w) => this.stopWatch(w)));
  }

  private stopWatch(w: Watch): Promise<void> {
    w.stopped = true;
    if (w.timer) clearTimeout(w.timer);
    return w.conn.close();
  }

  /** A reloaded config: nodes added, removed or moved, new credentials, intervals and limits (and logger). */
  reconfigure(config: Config, log?: Logger): void {
    const before = this.config;
    this.config = config;
    if (log) this.log = log;
    this.opts.lives.configure(config);
    const creds = this.credentialsOf(config);
    const credsChanged = JSON.stringify(creds) !== JSON.stringify(this.creds) || before.monitor.probe_timeout_ms !== config.monitor.probe_timeout_ms;
    this.creds = creds;
    const names = new Set(config.nodes.map((n) => n.name));
    for (const [name, w] of this.watches) {
      if (!names.has(name) || !creds) {
        void this.stopWatch(w);
        this.watches.delete(name);
      }
    }
    for (const name of [...this.states.keys()]) if (!names.has(name)) this.states.delete(name);
    for (const n of config.nodes) {
      const s = this.states.get(n.name);
      if (!s) {
        const added = this.addNode(n);
        const w = this.watches.get(n.name);
        if (w && this.running) void this.check(added, w, true, true);
        continue;
      }
      const moved = connectionKey(s.node) !== connectionKey(n);
      if (moved) Object.assign(s, emptyState(n, s.live));
      s.node = n;
      const w = this.watches.get(n.name);
      if (creds && (!w || moved || credsChanged)) {
        if (w) void this.stopWatch(w);
        const fresh = this.newWatch(n, creds);
        this.watches.set(n.name, fresh);
        if (this.running) void this.check(s, fresh, true, true);
      }
    }
    if (this.running) {
      this.startHeartbeat();
      this.replay.start(true);
      this.failover.reconfigure();
    }
    this.publish();
  }

  // --- checks ------------------------------------------------------------------------------------------------

  /** One detailed probe of every node now, then a publication (`pgroute check lag`, and the first round of `start`). */
  async round(): Promise<ClusterSnapshot> {
    // The primary first: replicas' lag is measured against its WAL position.
    const primary = this.primaryState();
    const order = [...this.watches].sort(([a], [b]) => Number(b === primary?.node.name) - Number(a === primary?.node.name));
    const [first, ...rest] = order;
    if (first) await this.check(this.states.get(first[0])!, first[1], true, false);
    await Promise.all(rest.map(([name, w]) => this.check(this.states.get(name)!, w, true, false)));
    return this.current;
  }

  /** `count` pings of every node, back to back: the round trips fill each node's probe p99 (`check lag`). */
  async burst(count: number): Promise<ClusterSnapshot> {
    await Promise.all(
      [...this.watches].map(async ([name, w]) => {
        for (let k = 0; k < count; k++) await this.check(this.states.get(name)!, w, false, false);
      }),
    );
    return this.current;
  }

  private schedule(s: NodeState, w: Watch, delayMs: number): void {
    if (w.stopped || !this.running) return;
    if (w.timer) clearTimeout(w.timer);
    w.timer = setTimeout(() => void this.check(s, w, this.clock.now() >= w.nextProbeAt, true), delayMs);
    w.timer.unref?.();
  }

  /** The delay before the next attempt after `failures` failed checks in a row: doubling, capped, jittered (50–100%). */
  private backoff(failures: number): number {
    const m = this.config.monitor;
    const ceiling = Math.min(m.reconnect_max_ms, m.ping_interval_ms * 2 ** Math.min(failures - 1, 30));
    return ceiling * (0.5 + this.random() / 2);
  }

  /** The delay to the next check of a node that answers: `ping_interval`, shorter while no primary is known. */
  private nextCheckMs(): number {
    const m = this.config.monitor;
    return this.elected === null ? Math.min(m.ping_interval_ms, this.config.failover.search_interval_ms) : m.ping_interval_ms;
  }

  /**
   * After `failures` failed checks: the first `failover.failures - 1` retries come at the usual pace (a node is
   * taken for down after that many checks, `ping_interval` apart), later ones back off.
   */
  private retryMs(failures: number): number {
    const n = this.config.failover.failures;
    return failures < n ? this.nextCheckMs() : this.backoff(failures - n + 1);
  }

  /** Checks node `name` as soon as it can (a hint named it the primary). */
  checkNow(name: string): void {
    const s = this.states.get(name);
    const w = this.watches.get(name);
    if (s && w && this.running && !w.busy) this.schedule(s, w, 0);
  }

  /** Runs pg_promote() on node `name` over the monitor's connection (failover.promote). */
  private async promote(name: string): Promise<void> {
    const w = this.watches.get(name);
    if (!w) throw new Error(`node "${name}" is not checked by the monitor`);
    await w.conn.query(PROMOTE_SQL, this.config.monitor.probe_timeout_ms);
  }

  /** The state of the elected primary, else of the primary by the rules alone. */
  private primaryState(): NodeState | undefined {
    return (this.elected === null ? undefined : this.states.get(this.elected)) ?? primaryOf([...this.states.values()], this.config.failover.failures);
  }

  /** Runs one check of a node (a probe when `detailed`), records it, publishes, and schedules the next when `reschedule`. */
  private async check(s: NodeState, w: Watch, detailed: boolean, reschedule: boolean): Promise<void> {
    if (w.busy || w.stopped) return;
    w.busy = true;
    const m = this.config.monitor;
    let next = this.nextCheckMs();
    const connects = w.conn.connects;
    try {
      const r = detailed ? await probe(w.conn, m.probe_timeout_ms, m.cpu_query) : await ping(w.conn, m.ping_timeout_ms);
      const heartbeat = r.standby ? await this.heartbeatAge(w.conn) : null;
      if (detailed) w.nextProbeAt = this.clock.now() + m.probe_interval_ms;
      w.failures = 0;
      // A check that had to connect first timed the login too: not a round trip worth averaging.
      if (!w.stopped) this.checked(s, r, heartbeat, w.conn.connects === connects);
    } catch (err) {
      const e = err instanceof CheckError ? err : new CheckError(err instanceof Error ? err.message : String(err), "down");
      if (e.kind === "down") {
        w.failures++;
        w.nextProbeAt = 0; // back: a full probe first
        next = this.retryMs(w.failures);
      }
      if (!w.stopped) this.checkFailed(s, e, w.failures);
    } finally {
      w.busy = false;
    }
    if (reschedule) this.schedule(s, w, next);
  }

  private async heartbeatAge(conn: CheckConnection): Promise<number | null> {
    const table = this.config.monitor.heartbeat_table;
    if (table === undefined) return null;
    try {
      return await readHeartbeat(conn, quoteTable(table)!, this.config.monitor.ping_timeout_ms);
    } catch (err) {
      if (err instanceof CheckError && err.kind === "down") throw err;
      this.warnOnce("heartbeat_read_failed", { table, error: (err as Error).message });
      return null;
    }
  }

  /** A check answered: the node's figures, its lag, its breaker. */
  private checked(s: NodeState, r: PingResult | ProbeResult, heartbeat: number | null, timed: boolean): void {
    const now = this.clock.now();
    const mono = this.clock.mono();
    const live = s.live;
    if (s.reachable === false) {
      this.log.info("node_reachable", { node: s.node.name });
      this.opts.onReachable?.(s.node);
    }
    s.reachable = true;
    s.error = null;
    s.checkedAt = now;
    s.failures = 0;
    s.timeline = r.timeline;
    if (timed) {
      s.pingMs = r.ms;
      live.pings.add(mono, r.ms, false);
      // A node that gets no reads keeps a current average from the pings, so the latency strategy can return to it.
      live.ewma.add(mono, r.ms);
    }
    if (s.standby !== r.standby) {
      if (s.standby !== null || s.node.role === "auto") this.log.info("node_role", { node: s.node.name, standby: r.standby, role: s.node.role });
      s.standby = r.standby;
    }
    s.lsn = r.lsn;
    if ("connections" in r) {
      s.activity = { active: r.active, connections: r.connections, maxConnections: r.maxConnections };
      s.cpu = r.cpu;
      s.clusterName = r.clusterName;
      s.replayPaused = r.replayPaused;
      s.replication = r.replication;
      if (r.cpuError) this.warnOnce("monitor_cpu_query_failed", { node: s.node.name, error: r.cpuError });
    }
    const role = roleOf(s);
    const primary = this.primaryState();
    this.replay.noted(s, role === "replica" ? r.lsn : null);
    if (role === "primary" && primary === s) {
      if (this.historyOf !== s.node.name) {
        this.history.clear();
        this.historyOf = s.node.name;
      }
      if (r.lsn !== null) this.history.add(now, r.lsn);
    }
    let changed = live.breaker.success("check");
    if (role === "replica") {
      const lag = replicaLag(this.historyOf === primary?.node.name ? this.history : NO_HISTORY, r.lsn, now, {
        walsender: walsenderOf(s, primary)?.replayLag ?? null,
        heartbeat,
        sinceReplay: r.sinceReplay,
        settleSeconds: this.config.monitor.ping_interval_ms / 1000,
      });
      s.lagBytes = lag.bytes;
      s.lagSeconds = lag.seconds;
      changed = this.judgeLag(s, live.breaker, now) || changed;
    } else {
      s.lagBytes = s.lagSeconds = null;
    }
    if (changed) this.breakerChanged(s);
    this.publish();
  }

  /** Lag past the largest limit any client accepts opens the replica's breaker; back within it, trials may go. */
  private judgeLag(s: NodeState, breaker: Breaker, now: number): boolean {
    const why = lagExcess(s.lagSeconds, s.lagBytes, loosestLag(this.config.balance), this.config.balance.max_lag_bytes);
    return why !== null ? breaker.trip(now, "lag", why) : breaker.lagRecovered();
  }

  /** A check failed: the node is unreachable (and one failure nearer an open breaker), or the monitor cannot see it. */
  private checkFailed(s: NodeState, e: CheckError, failures: number): void {
    if (e.kind === "blind") {
      // The node answers but the monitor cannot check it (authentication, privileges): it is not the node's fault.
      this.warnOnce("monitor_cannot_check", { node: s.node.name, error: e.message });
      s.reachable = null;
      s.error = e.message;
      this.publish();
      return;
    }
    if (s.reachable !== false) this.log.warn("node_unreachable", { node: s.node.name, error: e.message });
    s.reachable = false;
    s.error = e.message;
    s.failures = failures;
    this.replay.noted(s, null);
    if (s.live.breaker.failure(this.clock.now(), "check", e.message)) this.breakerChanged(s);
    this.publish();
  }

  // --- the heartbeat -----------------------------------------------------------------------------------------

  private startHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    const m = this.config.monitor;
    if (m.heartbeat_table === undefined || this.passive) return;
    const table = quoteTable(m.heartbeat_table)!;
    this.heartbeatTimer = setInterval(() => void this.beat(table), m.heartbeat_interval_ms);
    this.heartbeatTimer.unref?.();
  }

  private async beat(table: string): Promise<void> {
    const primary = this.primaryState();
    const w = primary && this.watches.get(primary.node.name);
    if (!w || primary.reachable !== true || this.beating) return;
    this.beating = true;
    try {
      await writeHeartbeat(w.conn, table, this.config.monitor.ping_timeout_ms);
    } catch (err) {
      this.warnOnce("heartbeat_write_failed", { table, error: (err as Error).message });
    } finally {
      this.beating = false;
    }
  }

  // --- what traffic and logins tell ----------------------------------------------------------------------

  /** A request the relay completed (hot path: a few array writes unless it failed for the node's sake). */
  request(node: NodeConfig, sample: RequestSample): void {
    const live = this.opts.lives.find(node.name);
    if (!live) return;
    const mono = this.clock.mono();
    const fault = sample.failed && isNodeFault(sample.errorCode, sample.target);
    live.observed.add(mono, sample.ms, fault);
    const breaker = live.breaker;
    if (fault) {
      const now = this.clock.now();
      let opened = breaker.failure(now, "request", `${sample.errorCode} on a request`);
      if (!opened) {
        live.observed.sum(mono);
        opened = breaker.errorRate(now, live.observed.failed, live.observed.total, live.observed.windowMs);
      }
      const s = this.states.get(node.name);
      if (opened && s) {
        this.breakerChanged(s);
        this.publish();
      }
      return;
    }
    // A lost connection answers fast: its time would flatter the node's average.
    live.ewma.add(mono, sample.ms);
    if ((breaker.state !== "closed" || breaker.failuresInARow > 0) && breaker.success("request")) {
      const s = this.states.get(node.name);
      if (s) {
        this.breakerChanged(s);
        this.publish();
      }
    }
  }

  /** A server login to `node` succeeded; `inHotStandby` is its ParameterStatus (PostgreSQL 14+). */
  loginSucceeded(node: NodeConfig, inHotStandby: string | undefined): void {
    const s = this.states.get(node.name);
    if (!s) return;
    let changed = false;
    if (inHotStandby !== undefined && s.standby !== (inHotStandby === "on")) {
      s.standby = inHotStandby === "on";
      changed = true;
    }
    if (this.passive && s.reachable !== true) {
      s.reachable = true;
      s.error = null;
      s.checkedAt = this.clock.now();
      changed = true;
    }
    if (s.live.breaker.success("login")) {
      this.breakerChanged(s);
      changed = true;
    }
    if (changed) this.publish();
  }

  /** A server login to `node` failed: a node that refused the connection (not the credentials) takes no reads for a while. */
  loginFailed(node: NodeConfig, error: PgError): void {
    const s = this.states.get(node.name);
    if (!s || !isNodeFault(error.code, "primary")) return;
    if (this.passive) {
      s.reachable = false;
      s.error = error.message;
    }
    if (s.live.breaker.trip(this.clock.now(), "login", `login failed: ${error.message}`)) this.breakerChanged(s);
    this.publish();
  }

  /** A read went to `node` as a half-open trial. */
  trial(node: NodeConfig): void {
    const s = this.states.get(node.name);
    if (!s?.live.breaker.takeTrial(this.clock.now())) return;
    this.armBreakers();
    this.publish();
  }

  /**
   * A read picked for `node` could not get a connection there (its pool is still backing off, or the login failed).
   * For a half-open breaker that is a failed trial; otherwise the login failure, if any, was reported already.
   */
  acquireFailed(node: NodeConfig, error: PgError): void {
    const s = this.states.get(node.name);
    if (!s || s.live.breaker.state !== "half-open") return;
    if (s.live.breaker.failure(this.clock.now(), "login", error.message)) this.breakerChanged(s);
    this.publish();
  }

  // --- breakers and publication --------------------------------------------------------------------------

  private breakerChanged(s: NodeState): void {
    const view = s.live.breaker.view();
    const fields = { node: s.node.name, reason: view.reason ?? undefined, until: view.until === null ? undefined : new Date(view.until).toISOString() };
    if (view.state === "open") {
      s.live.observed.forgetFailures();
      this.log.warn("breaker_open", fields);
    } else this.log.info(view.state === "closed" ? "breaker_closed" : "breaker_half_open", fields);
    this.armBreakers();
  }

  /** A timer for the next breaker whose cooldown ends. */
  private armBreakers(): void {
    if (this.breakerTimer) clearTimeout(this.breakerTimer);
    this.breakerTimer = null;
    let next = Infinity;
    for (const s of this.states.values()) next = Math.min(next, s.live.breaker.deadline ?? Infinity);
    if (next === Infinity) return;
    this.breakerTimer = setTimeout(() => {
      this.breakerTimer = null;
      const now = this.clock.now();
      let changed = false;
      for (const s of this.states.values()) {
        const before = s.live.breaker.state;
        if (!s.live.breaker.tick(now)) continue;
        changed = true;
        if (s.live.breaker.state !== before) this.breakerChanged(s);
      }
      this.armBreakers();
      if (changed) this.publish();
    }, Math.max(0, next - this.clock.now()));
    this.breakerTimer.unref?.();
  }

  private warnOnce(event: string, fields: Record<string, string>): void {
    const key = `${event}\0${JSON.stringify(fields)}`;
    if (this.warned.has(key)) return;
    if (this.warned.size >= 1000) this.warned.clear();
    this.warned.add(key);
    this.log.warn(event, fields);
  }

  /** A session set `pgroute.min_lsn` (or `pgroute.consistency = lsn`): replay positions are read fast for a while. */
  wantReplay(): void {
    this.replay.demand();
  }

  /** Publishes a snapshot of what is known now. */
  publish(): ClusterSnapshot {
    const states = [...this.states.values()];
    const previous = this.elected;
    const winner = this.passive ? undefined : elect(states, { failures: this.config.failover.failures, hinted: this.failover.hinted, incumbent: previous });
    this.elected = winner?.node.name ?? null;
    if (this.elected !== previous) this.electionChanged(previous, winner);
    const snapshot = assemble({
      config: this.config,
      states: [...this.states.values()],
      now: this.clock.now(),
      mono: this.clock.mono(),
      version: ++this.version,
      passive: this.passive,
      trialsOut: (s) => s.live.breaker.state === "half-open" && !s.live.breaker.admits,
      overrides: this.opts.overrides,
      elected: this.passive ? undefined : this.elected,
    });
    this.opts.holder.publish(snapshot);
    if (this.running) this.failover.update({ states, elected: winner, previous });
    return snapshot;
  }

  /**
   * A new primary, or none: logged (at debug until the first round of checks is over: what the config and the
   * first answers say is no news); with none, every node is checked at the search pace from now on.
   */
  private electionChanged(previous: string | null, winner: NodeState | undefined): void {
    if (winner) {
      const fields: Record<string, string | number> = { node: winner.node.name };
      if (previous !== null) fields.previous = previous;
      if (winner.timeline !== null) fields.timeline = winner.timeline;
      if (this.failover.hinted.has(winner.node.name)) fields.hinted = "yes";
      if (this.settled) this.log.info("primary_elected", fields);
      else this.log.debug("primary_elected", fields);
      return;
    }
    const was = previous === null ? undefined : this.states.get(previous);
    const fields = { node: previous ?? "", reason: was && isDown(was, this.config.failover.failures) ? `down after ${was.failures} failed checks` : was?.standby ? "in recovery" : "not the primary any more" };
    if (this.settled) this.log.warn("primary_lost", fields);
    else this.log.debug("primary_lost", fields);
    if (!this.running) return;
    const soon = this.nextCheckMs();
    for (const [name, w] of this.watches) if (!w.busy) this.schedule(this.states.get(name)!, w, soon);
  }
}
