/**
 * Mirroring: a sampled fraction of the requests (reads, and writes when asked) also runs on a shadow database, in
 * the background, and its result and latency are compared with the primary's — to validate an upgrade, a new
 * index, a configuration change, against real traffic.
 *
 * The client never waits for the shadow and never sees it fail: the relay hands a sampled request over
 * ({@link Mirror.offer}) and sends it to its own server as always; the request waits in a bounded queue (full:
 * dropped and counted) for one of `concurrency` shadow connections; a shadow that is down, slow or wrong costs
 * counters and log lines, nothing else. The primary's result is tallied from the reply the client gets (an
 * observer on the request's entries, see src/pool/demux.ts), the shadow's from its own reply, both by
 * {@link ReplyTally}; when both are in they are compared ({@link compare}) and counted per fingerprint
 * ({@link MirrorStats}, published by {@link Mirror.snapshot}). Mismatches are logged, at most one line per
 * fingerprint a minute.
 *
 * The shadow is spoken to with pgroute's own wire code (a {@link Pool} of {@link ServerConn}s), not a client
 * library: the result is compared byte for byte in the formats the client asked for, and the client's session
 * settings are brought to the shadow connection exactly as they are to a pooled server connection.
 */
import { serialize } from "pg-protocol";
import type { Config, MirrorConfig, NodeConfig } from "../config/types.ts";
import { parseShadowUrl, type ShadowTarget } from "../config/policy.ts";
import type { PgError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Entry, Pending } from "../pool/demux.ts";
import { Pool } from "../pool/pool.ts";
import type { ServerConn, ServerOwner } from "../pool/server.ts";
import type { ShadowRequest } from "./mirror-request.ts";
import { MirrorStats, type Counter, type MirrorSnapshot } from "./mirror-stats.ts";
import { ReplyTally, compare } from "./tally.ts";

/** A client's session settings as they were when its request was sampled (src/session/settings.ts). */
export interface MirrorSettings {
  diff(conn: ServerConn): string | null;
  markApplied(conn: ServerConn): void;
}

export interface MirrorOptions {
  config: Config;
  log: Logger;
  /** Injected for tests: sampling draws, and the clock latencies are measured with. */
  random?: () => number;
  now?: () => number;
}

/** Owner of a shadow connection: every reply is swallowed into the tally, so nothing is delivered. */
const SHADOW_OWNER: ServerOwner = {
  deliver() {},
  ready() {},
  onServerClose() {},
  onServerWritable() {},
  onServerBlocked() {},
};

/** How long a fingerprint's mismatch log line keeps the next ones quiet. */
const LOG_EVERY_MS = 60_000;

type ShadowOutcome = "ok" | "lost" | "timeout";

/** One sampled request: its shadow request, and the tallies of both sides. */
export class MirrorJob {
  readonly primary = new ReplyTally();
  readonly shadow = new ReplyTally();
  private primaryState: "pending" | "done" | "abandoned" = "pending";
  private shadowState: "pending" | "done" | "failed" = "pending";
  private watched = false;

  constructor(
    private readonly mirror: Mirror,
    readonly fingerprint: string,
    readonly database: string,
    readonly request: ShadowRequest,
    readonly settings: MirrorSettings,
  ) {}

  /**
   * Tallies the primary's reply to the request's `entries` (those of one dispatch; a retry on another node
   * dispatches again). `last` is the entry whose completion ends the request (its Query, or its Sync).
   */
  watch(entries: readonly Pending[], last: Entry): void {
    // The client's wait starts with the first attempt: a retry on the primary is part of what it waited.
    if (!this.watched) this.primary.start(this.mirror.now());
    this.watched = true;
    for (const p of entries) if (!("local" in p)) p.observe = this.primary;
    const { ok, fail } = last;
    last.ok = () => {
      ok?.();
      this.primaryEnded(true);
    };
    last.fail = () => {
      fail?.();
      this.primaryEnded(false);
    };
  }

  private primaryEnded(done: boolean): void {
    if (this.primaryState !== "pending") return;
    this.primaryState = done ? "done" : "abandoned";
    if (done) this.primary.finish(this.mirror.now());
    this.settle();
  }

  /** The shadow's side is over: answered (`done`) or not (counted already). */
  shadowEnded(done: boolean): void {
    this.shadowState = done ? "done" : "failed";
    this.settle();
  }

  private settle(): void {
    if (this.primaryState === "done" && this.shadowState === "done") this.mirror.compared(this);
  }
}

export class Mirror {
  private cfg!: MirrorConfig;
  private config!: Config;
  private target: ShadowTarget | null = null;
  private readonly queue: MirrorJob[] = [];
  private inFlight = 0;
  /** Shadow connections by database. */
  private pools = new Map<string, Pool>();
  private readonly stats = new MirrorStats();
  /** Per log key: when a line was last written, and how many were held back since. */
  private readonly quiet = new Map<string, { at: number; held: number }>();
  private readonly random: () => number;
  private log: Logger;
  readonly now: () => number;
  private closed = false;

  constructor(private readonly opts: MirrorOptions) {
    this.random = opts.random ?? Math.random;
    this.log = opts.log;
    this.now = opts.now ?? (() => performance.now());
    this.configure(opts.config);
  }

  /** A new config (also at a reload): a changed shadow URL, concurrency or `[pool]` settings replace the shadow's pools. */
  configure(config: Config, log?: Logger): void {
    const prev = this.cfg;
    const poolChanged = this.config !== undefined && JSON.stringify(this.config.pool) !== JSON.stringify(config.pool);
    if (log) this.log = log;
    this.config = config;
    this.cfg = config.mirror;
    const parsed = config.mirror.url === undefined ? null : parseShadowUrl(config.mirror.url);
    this.target = parsed?.ok ? parsed.target : null;
    if (prev && (prev.url !== this.cfg.url || prev.concurrency !== this.cfg.concurrency || poolChanged)) {
      for (const p of this.pools.values()) p.retire();
      this.pools = new Map();
      // Samples taken for the old shadow are not the new one's business.
      if (prev.url !== this.cfg.url) this.queue.length = 0;
    }
  }

  /** A shadow is configured and something is sampled: relays offer requests only then. */
  get enabled(): boolean {
    return this.target !== null && this.cfg.fraction > 0 && !this.closed;
  }

  /** The sampling draw for one eligible request; writes only when `mirror.writes`. */
  sample(write: boolean): boolean {
    return this.enabled && (!write || this.cfg.writes) && this.random() < this.cfg.fraction;
  }

  /**
   * A sampled request. `build` makes its shadow request (null: it cannot be mirrored, and nothing is counted).
   * Returns the job the relay watches the primary's reply with, or null when it was dropped (queue full).
   */
  offer(fingerprint: string, database: string, settings: MirrorSettings, build: () => ShadowRequest | null): MirrorJob | null {
    const request = build();
    if (!request) return null;
    this.stats.count(fingerprint, "sampled");
    if (this.queue.length >= this.cfg.queue_size) {
      this.stats.count(fingerprint, "dropped");
      this.note("mirror_dropped", "warn", { reason: "queue full", queue_size: this.cfg.queue_size });
      return null;
    }
    const job = new MirrorJob(this, fingerprint, database, request, settings);
    this.queue.push(job);
    // After the client's own request has gone out: the shadow never goes first.
    if (this.queue.length === 1) queueMicrotask(() => this.pump());
    return job;
  }

  private pump(): void {
    while (!this.closed && this.inFlight < this.cfg.concurrency && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.inFlight++;
      void this.run(job).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private count(job: MirrorJob, what: Counter): void {
    this.stats.count(job.fingerprint, what);
  }

  private async run(job: MirrorJob): Promise<void> {
    if (!this.target) return job.shadowEnded(false); // mirroring was switched off by a reload
    const pool = this.poolFor(job.database);
    let conn: ServerConn;
    try {
      conn = await pool.acquire();
    } catch (err) {
      this.count(job, "shadow_errors");
      this.note("mirror_shadow_error", "warn", { shadow: this.describeShadow(job.database), error: (err as PgError).message });
      return job.shadowEnded(false);
    }
    if (this.closed) return pool.release(conn);
    conn.attach(SHADOW_OWNER, "tracked");
    // The client's settings go first, in the same round trip (and under the same timeout) as the request.
    let settingsError: string | null = null;
    const sql = job.settings.diff(conn);
    const before = conn.applied;
    job.settings.markApplied(conn);
    if (sql) {
      conn.send(new Uint8Array(serialize.query(sql)), [
        {
          end: "query",
          mode: "swallow",
          onSwallowedError: (e) => {
            settingsError = e.message;
            return null;
          },
          // Not applied after all (the string runs as one transaction): the connection carries what it did.
          fail: () => {
            conn.applied = before;
            conn.appliedSignature = null;
          },
        },
      ]);
    }
    this.count(job, "sent");
    const outcome = await this.send(conn, job);
    if (outcome === "ok" && settingsError !== null) {
      pool.release(conn);
      this.count(job, "shadow_errors");
      this.note("mirror_shadow_error", "warn", { shadow: this.describeShadow(job.database), error: `session settings: ${settingsError}` });
      return job.shadowEnded(false);
    }
    switch (outcome) {
      case "ok":
        pool.release(conn);
        return job.shadowEnded(true);
      case "timeout":
        pool.discard(conn);
        this.count(job, "timeouts");
        this.note("mirror_shadow_timeout", "warn", { shadow: this.describeShadow(job.database), timeout_ms: this.cfg.timeout_ms });
        return job.shadowEnded(false);
      case "lost":
        pool.discard(conn);
        this.count(job, "shadow_errors");
        this.note("mirror_shadow_error", "warn", { shadow: this.describeShadow(job.database), error: "connection lost" });
        return job.shadowEnded(false);
    }
  }

  /** Sends the job's request; resolves when the shadow has answered it, the connection broke, or time ran out. */
  private send(conn: ServerConn, job: MirrorJob): Promise<ShadowOutcome> {
    return new Promise((resolve) => {
      let over = false;
      const end = (o: ShadowOutcome) => {
        if (over) return;
        over = true;
        clearTimeout(timer);
        if (o === "ok") job.shadow.finish(this.now());
        resolve(o);
      };
      // A query still running there is ended with the connection; the shadow notices when it next writes.
      const timer = setTimeout(() => {
        end("timeout");
        conn.destroy();
      }, this.cfg.timeout_ms);
      const ends = job.request.ends;
      const entries: Entry[] = ends.map((e) => ({ end: e, mode: "swallow", observe: job.shadow }));
      const last = entries[entries.length - 1]!;
      // An error is an answer too (tallied); a failure without the connection closing is the server's error.
      last.ok = () => end("ok");
      last.fail = () => end(conn.closed ? "lost" : "ok");
      job.shadow.start(this.now());
      if (!conn.send(job.request.bytes, entries)) end("lost");
    });
  }

  /** Both results are in. */
  compared(job: MirrorJob): void {
    if (job.primary.incomplete || job.shadow.incomplete) return this.count(job, "uncomparable");
    const c = compare(job.primary, job.shadow);
    this.stats.compared(job.fingerprint, c.kind === "mismatch" ? c.what : null, job.primary.ms, job.shadow.ms);
    if (c.kind === "mismatch") {
      this.note(
        `mirror_mismatch\0${job.fingerprint}`,
        "warn",
        { fingerprint: job.fingerprint.length > 200 ? `${job.fingerprint.slice(0, 199)}…` : job.fingerprint, difference: c.what, primary: c.primary, shadow: c.shadow },
        "mirror_mismatch",
      );
    }
  }

  /** A log line, at most one per `key` a minute; the next says how many were held back. */
  private note(key: string, level: "warn" | "info", fields: Record<string, string | number>, event = key): void {
    const now = this.now();
    const q = this.quiet.get(key);
    if (q && now - q.at < LOG_EVERY_MS) {
      q.held++;
      return;
    }
    if (this.quiet.size > 10_000) this.quiet.clear();
    this.quiet.set(key, { at: now, held: 0 });
    this.log[level](event, q && q.held > 0 ? { ...fields, suppressed: q.held } : fields);
  }

  private poolFor(database: string): Pool {
    const db = this.target!.database ?? database;
    let pool = this.pools.get(db);
    if (!pool) {
      const t = this.target!;
      const node: NodeConfig = { name: "shadow", host: t.host, port: t.port, role: "primary", weight: 1, zone: "", sslmode: t.sslmode, ...(t.sslrootcert !== undefined && { sslrootcert: t.sslrootcert }) };
      const c = this.config.pool;
      pool = new Pool({
        node,
        user: t.user,
        database: db,
        credentials: t.password !== undefined ? { password: t.password } : {},
        // One connection per concurrent request; a job waits only while its connection is being opened, which
        // pool.connect_timeout bounds (mirror.timeout is for the request itself).
        config: { ...c, size: this.cfg.concurrency, checkout_timeout_ms: c.connect_timeout_ms },
        maxMessageSize: Math.max(this.config.limits.max_message_size, 1 << 30),
        log: this.log,
      });
      this.pools.set(db, pool);
    }
    return pool;
  }

  private describeShadow(database: string): string {
    const t = this.target;
    return t ? `${t.host}:${t.port}/${t.database ?? database}` : "";
  }

  /**
   * Mirroring's counters and latencies, per fingerprint and in total, for metrics and the admin API (a fresh
   * object each call; see {@link MirrorSnapshot} for the shape).
   */
  snapshot(): MirrorSnapshot {
    const t = this.target;
    return {
      enabled: this.enabled,
      shadow: t ? `${t.host}:${t.port}/${t.database ?? "(client's database)"}` : null,
      fraction: this.cfg.fraction,
      writes: this.cfg.writes,
      queue: { depth: this.queue.length, capacity: this.cfg.queue_size },
      in_flight: this.inFlight,
      concurrency: this.cfg.concurrency,
      totals: this.stats.totals(),
      fingerprints: this.stats.fingerprints(),
    };
  }

  /** Stops: queued requests are forgotten, shadow connections closed. */
  close(): void {
    this.closed = true;
    this.queue.length = 0;
    for (const p of this.pools.values()) p.close();
    this.pools.clear();
  }
}
