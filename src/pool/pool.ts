/**
 * A fixed-size pool of server connections for one (node, user, database). Clients lease a connection for a
 * transaction (or a whole session) and give it back; when none is free they wait in FIFO order up to the
 * checkout timeout. Idle connections are validated before reuse after a quiet spell, and closed when idle too long
 * or past their lifetime. A failing server login backs off exponentially, and waiting clients get the server's
 * own error.
 */
import type { NodeConfig, PoolConfig } from "../config/types.ts";
import { PgError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { NodeCounters } from "../stats.ts";
import { TxStatus } from "../wire/codes.ts";
import { ServerConn, type ServerCredentials } from "./server.ts";

export interface PoolOptions {
  node: NodeConfig;
  /** Role pgroute logs in as. */
  user: string;
  database: string;
  credentials: ServerCredentials;
  config: PoolConfig;
  maxMessageSize: number;
  log: Logger;
  /** Injected clock, for tests. */
  now?: () => number;
  /** A server login succeeded (its ParameterStatus tells the node's role) or failed. */
  onLogin?: (conn: ServerConn) => void;
  onLoginFailed?: (error: PgError) => void;
  /** Where this pool counts connections, checkouts and waits (shared by the pools of one node). */
  counters?: NodeCounters;
}

/**
 * Who waits for a connection: told by a call, never during the call that queued it (the pool tells its waiters
 * in a microtask, after whatever released or failed the connection has finished).
 */
export interface PoolWaiter {
  granted(conn: ServerConn, pool: Pool): void;
  failed(err: PgError): void;
}

interface Waiter {
  to: PoolWaiter;
  /** `performance.now()` when it began to wait. */
  since: number;
  /** `performance.now()` past which it gets 53300 (checkout_timeout). */
  deadline: number;
  timeoutMs: number;
}

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 10_000;

export class Pool {
  readonly name: string;
  /** The node's settings; replaced by {@link Pool.reconfigure} on a config reload. */
  node: NodeConfig;
  readonly user: string;
  readonly database: string;
  /** ParameterStatus values of the most recent login, sent to clients at their startup. */
  params: Map<string, string> | null = null;
  private credentials: ServerCredentials;
  private readonly idle: ServerConn[] = [];
  private readonly all = new Set<ServerConn>();
  private connecting = 0;
  private readonly waiters: Waiter[] = [];
  /**
   * One timer for every waiter's checkout timeout, armed for the earliest deadline: a timer per wait would be set
   * and cleared for nearly every request while clients outnumber connections.
   */
  private waitTimer: ReturnType<typeof setTimeout> | null = null;
  /** When it fires (`performance.now()`). */
  private waitTimerAt = Number.POSITIVE_INFINITY;
  /** Waiters to tell, with what (a connection or an error), in order: see {@link tell}. */
  private readonly told: (PoolWaiter | ServerConn | PgError)[] = [];
  private telling = false;
  private backoffMs = 0;
  private lastFailure: { at: number; error: PgError } | null = null;
  private sweeper: ReturnType<typeof setInterval>;
  private closed = false;
  private readonly now: () => number;
  readonly counters: NodeCounters;
  /** An operator drained the node: connections are closed as they come back instead of pooled. */
  private draining = false;

  constructor(private readonly opts: PoolOptions) {
    this.node = opts.node;
    this.user = opts.user;
    this.database = opts.database;
    this.credentials = opts.credentials;
    this.name = `${opts.node.name}/${opts.user}@${opts.database}`;
    this.now = opts.now ?? Date.now;
    this.counters = opts.counters ?? new NodeCounters();
    this.sweeper = this.startSweeper();
  }

  private startSweeper(): ReturnType<typeof setInterval> {
    const c = this.opts.config;
    const sweeper = setInterval(() => this.sweep(), Math.max(250, Math.min(c.idle_timeout_ms, c.max_lifetime_ms, 10_000) / 2));
    sweeper.unref?.();
    return sweeper;
  }

  /**
   * New settings from a config reload. Connections in use keep serving their clients and are closed when they
   * come back; idle ones are closed now; new ones are opened with the new settings.
   */
  reconfigure(update: Partial<Pick<PoolOptions, "node" | "config" | "maxMessageSize" | "credentials">>): void {
    if (this.closed) return;
    Object.assign(this.opts, update);
    if (update.node) this.node = update.node;
    if (update.credentials) this.credentials = update.credentials;
    for (const c of this.all) c.stale = true;
    this.closeIdle();
    clearInterval(this.sweeper);
    this.sweeper = this.startSweeper();
  }

  /**
   * A reload removed this pool's node: no new leases; waiting clients get an error; connections in use are
   * closed when they come back.
   */
  retire(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    this.rejectWaiters(new PgError("08006", `pool ${this.name} was removed by a configuration reload`));
    this.closeIdle();
  }

  /**
   * Drain (an operator's DRAIN): idle connections are closed now, the others as they come back; the pool keeps
   * serving whoever still asks (routing sends nobody new). Off again: connections are pooled as usual.
   */
  drain(on: boolean): void {
    this.draining = on;
    if (on) this.closeIdle();
  }

  private closeIdle(): void {
    for (const c of this.idle.splice(0)) {
      this.forget(c);
      c.close();
    }
  }

  /** Removes a connection from the pool's books, counting it as closed. */
  private forget(c: ServerConn): void {
    if (this.all.delete(c)) this.counters.closed++;
  }

  get size(): number {
    return this.all.size;
  }

  /** Server logins under way. */
  get opening(): number {
    return this.connecting;
  }

  /** Most connections this pool opens (`pool.size`). */
  get max(): number {
    return this.opts.config.size;
  }

  get idleCount(): number {
    return this.idle.length;
  }

  /** Clients waiting for a connection (the FIFO queue's depth). */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Connections leased to clients, being validated or being reset: open and not idle. */
  get busy(): number {
    return this.all.size - this.idle.length;
  }

  /** The node answers again (the monitor says so): the next lease may log in at once instead of waiting out the backoff. */
  resetBackoff(): void {
    this.backoffMs = 0;
    this.lastFailure = null;
  }

  /** Newer credentials (e.g. a SCRAM key recovered from a client's login) for future server logins. */
  updateCredentials(c: ServerCredentials): void {
    if (c.scram || !this.credentials.password) this.credentials = c;
  }

  /** Leases a connection; rejects with 53300 after the checkout timeout, or with the server's login error. */
  acquire(): Promise<ServerConn> {
    return new Promise((resolve, reject) => this.lease({ granted: resolve, failed: reject }));
  }

  /**
   * {@link acquire} without a promise: `to` is told of the connection (or of 53300 after the checkout timeout, or
   * of the server's login error) later, never during this call. While clients outnumber connections nearly every
   * request waits here, so a connection handed on costs one call, not a chain of promises.
   */
  lease(to: PoolWaiter): void {
    if (this.closed) return this.tell(to, new PgError("08006", `pool ${this.name} is closed`));
    this.counters.checkouts++;
    const conn = this.takeIdle();
    if (conn) {
      this.validated(conn).then(
        (c) => to.granted(c, this),
        (e: PgError) => to.failed(e),
      );
      return;
    }
    const timeoutMs = this.opts.config.checkout_timeout_ms;
    const since = performance.now();
    this.waiters.push({ to, since, deadline: since + timeoutMs, timeoutMs });
    if (since + timeoutMs < this.waitTimerAt) this.armWaitTimer(since + timeoutMs, since);
    this.grow();
  }

  /** Hands `conn` to the first waiter; false when nobody waits. */
  private handOn(conn: ServerConn): boolean {
    const w = this.waiters.shift();
    if (!w) return false;
    this.counters.waits.observe((performance.now() - w.since) / 1000);
    this.tell(w.to, conn);
    return true;
  }

  /**
   * Tells `to` of `what` in a microtask: whoever released the connection (a session handling its server's reply)
   * finishes first, as with a promise, but one microtask tells every waiter served meanwhile.
   */
  private tell(to: PoolWaiter, what: ServerConn | PgError): void {
    this.told.push(to, what);
    if (this.telling) return;
    this.telling = true;
    queueMicrotask(this.tellAll);
  }

  private readonly tellAll = (): void => {
    const told = this.told;
    // Waiters told during the loop (a session served may release another connection) are told in it too.
    for (let i = 0; i < told.length; i += 2) {
      const to = told[i] as PoolWaiter;
      const what = told[i + 1]!;
      try {
        if (what instanceof PgError) to.failed(what);
        else to.granted(what as ServerConn, this);
      } catch (err) {
        // A waiter's own bug: the ones after it are told all the same.
        this.opts.log.error("pool_waiter_failed", { pool: this.name, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      }
    }
    told.length = 0;
    this.telling = false;
  };

  /** Fails waiters whose checkout timeout passed, and waits for the next deadline. */
  private readonly expireWaiters = (): void => {
    this.waitTimer = null;
    this.waitTimerAt = Number.POSITIVE_INFINITY;
    const now = performance.now();
    let next = Number.POSITIVE_INFINITY;
    // In arrival order, mostly by deadline too; a reload may change the timeout for later ones, so all are looked at.
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i]!;
      if (w.deadline > now) {
        next = Math.min(next, w.deadline);
        i++;
        continue;
      }
      this.waiters.splice(i, 1);
      this.tell(
        w.to,
        new PgError(
          "53300",
          `no server connection available in pool "${this.name}" within checkout_timeout (${w.timeoutMs} ms)`,
          "ERROR",
          `all ${this.opts.config.size} connections of the pool are in use`,
        ),
      );
    }
    if (next !== Number.POSITIVE_INFINITY) this.armWaitTimer(next, now);
  };

  private armWaitTimer(at: number, now: number): void {
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.waitTimerAt = at;
    // Unreferenced: once its waiters are served it may still be pending, and that must not keep a process alive.
    this.waitTimer = setTimeout(this.expireWaiters, Math.max(1, Math.ceil(at - now)));
    this.waitTimer.unref();
  }

  /** Fails every waiter with `err`. */
  private rejectWaiters(err: PgError): void {
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.waitTimer = null;
    this.waitTimerAt = Number.POSITIVE_INFINITY;
    for (const w of this.waiters.splice(0)) this.tell(w.to, err);
  }

  /** An idle connection that needs no validation, leased at once; null when there is none (use `acquire`). */
  tryAcquire(): ServerConn | null {
    if (this.closed || this.waiters.length > 0) return null;
    const now = this.now();
    for (let c = this.idle.pop(); c; c = this.idle.pop()) {
      if (c.closed || this.expired(c, now)) {
        this.discard(c);
        continue;
      }
      if (now - c.idleSince < this.opts.config.validate_after_ms) {
        this.counters.checkouts++;
        return c;
      }
      this.idle.push(c); // needs a ping first: the asynchronous path does that
      return null;
    }
    return null;
  }

  /** Returns a leased connection. Connections not known to be clean are closed instead. */
  release(conn: ServerConn): void {
    if (conn.cancelling > 0) {
      // A cancel for its last client may still land: nobody else gets it until the server took the cancel.
      conn.afterCancel = () => this.release(conn);
      return;
    }
    const now = this.now();
    if (conn.closed || !conn.idle || this.closed || this.draining || this.expired(conn, now)) {
      this.discard(conn);
      return;
    }
    conn.attach(null, "tracked");
    conn.idleSince = now;
    // Straight to the first waiter: it was in use until now, so it needs no validation.
    if (!this.handOn(conn)) this.idle.push(conn);
  }

  /**
   * Takes back a connection its client left: rolled back when a transaction is open, `DISCARD ALL` when session
   * state (listeners, temp tables, locks, cursors, SQL PREPARE, settings) may remain, then pooled. Any failure,
   * or state in doubt (replies in flight, a COPY), closes it instead.
   */
  recycle(conn: ServerConn, discardAll: boolean): void {
    conn.attach(null, "tracked");
    if (conn.closed || !conn.idleBetweenRequests) return this.discard(conn);
    const steps: string[] = [];
    if (conn.txStatus !== TxStatus.Idle) steps.push("ROLLBACK");
    if (discardAll) steps.push("DISCARD ALL");
    if (steps.length === 0) return this.release(conn);
    this.opts.log.debug("server_reset", { pool: this.name, conn: conn.id, steps: steps.join("; ") });
    void (async () => {
      try {
        for (const s of steps) await conn.query(s);
        if (discardAll) {
          conn.applied.clear();
          conn.prepared.clear();
        }
        conn.appliedSignature = null;
        this.release(conn);
      } catch {
        this.discard(conn);
      }
    })();
  }

  /** Drops a connection (closed, or in doubt) and makes room for a new one if clients are waiting. */
  discard(conn: ServerConn): void {
    this.forget(conn);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
    if (!conn.closed) conn.destroy();
    this.grow();
  }

  /** Closes every connection and fails every waiter. */
  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    this.rejectWaiters(new PgError("57P01", `pool ${this.name} is shutting down`, "FATAL"));
    for (const c of this.all) c.close();
    this.counters.closed += this.all.size;
    this.all.clear();
    this.idle.length = 0;
  }

  private takeIdle(): ServerConn | undefined {
    // LIFO: the most recently used connection is the warmest and lets the others age out.
    for (let c = this.idle.pop(); c; c = this.idle.pop()) {
      if (!c.closed && !this.expired(c, this.now())) return c;
      this.discard(c);
    }
    return undefined;
  }

  private expired(c: ServerConn, now: number): boolean {
    return c.stale || now - c.createdAt >= this.opts.config.max_lifetime_ms;
  }

  /** A connection idle longer than `validate_after` is pinged first; a dead one is replaced transparently. */
  private async validated(c: ServerConn): Promise<ServerConn> {
    if (this.now() - c.idleSince < this.opts.config.validate_after_ms) return c;
    try {
      await c.query(";");
      return c;
    } catch {
      this.opts.log.info("server_validation_failed", { pool: this.name, conn: c.id });
      this.discard(c);
      return this.acquire();
    }
  }

  /** Opens connections for waiting clients, within the pool size and the login backoff. */
  private grow(): void {
    while (!this.closed && this.waiters.length > this.connecting && this.all.size + this.connecting < this.opts.config.size) {
      const f = this.lastFailure;
      if (f && this.now() - f.at < this.backoffMs) {
        // Logins are failing: tell the waiters why instead of hammering the server.
        this.rejectWaiters(f.error);
        return;
      }
      this.connecting++;
      void this.open();
    }
  }

  private async open(): Promise<void> {
    let conn: ServerConn;
    try {
      conn = await ServerConn.connect({
        node: this.node,
        params: new Map([
          ["user", this.user],
          ["database", this.database],
        ]),
        credentials: this.credentials,
        connectTimeoutMs: this.opts.config.connect_timeout_ms,
        maxMessageSize: this.opts.maxMessageSize,
        preparedCapacity: this.opts.config.prepared_statements,
        counters: this.counters,
      });
    } catch (err) {
      this.connecting--;
      const e = err instanceof PgError ? err : new PgError("08001", String(err), "FATAL");
      this.backoffMs = Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, this.backoffMs * 2));
      this.lastFailure = { at: this.now(), error: e };
      this.counters.loginFailures++;
      this.opts.log.warn("server_login_failed", { pool: this.name, code: e.code, error: e.message, retry_ms: this.backoffMs });
      this.opts.onLoginFailed?.(e);
      // The clients waiting now get the server's own error rather than a timeout.
      this.rejectWaiters(e);
      return;
    }
    this.connecting--;
    this.backoffMs = 0;
    this.lastFailure = null;
    this.params = new Map(conn.params);
    this.opts.onLogin?.(conn);
    if (this.closed) {
      conn.close();
      return;
    }
    this.all.add(conn);
    this.counters.opened++;
    this.opts.log.debug("server_connected", { pool: this.name, conn: conn.id, size: this.all.size });
    conn.attach(null, "tracked");
    if (!this.handOn(conn)) this.idle.push(conn);
  }

  /** Closes idle connections past `idle_timeout` or `max_lifetime`. */
  private sweep(): void {
    const now = this.now();
    for (const c of [...this.idle]) {
      if (c.closed || now - c.idleSince >= this.opts.config.idle_timeout_ms || this.expired(c, now)) {
        this.opts.log.debug("server_closed_idle", { pool: this.name, conn: c.id });
        this.forget(c);
        this.idle.splice(this.idle.indexOf(c), 1);
        c.close();
      }
    }
  }
}
