/**
 * The fast poll of replicas' replay positions, for read-your-writes (src/session/consistency.ts): every
 * `consistency.lsn_poll_interval` while a session may need them — a user with `consistency = "lsn"`, or a session
 * that set `pgroute.min_lsn` (or switched to `lsn`) within the last minute — each reachable replica is asked for
 * `pg_last_wal_replay_lsn()` on the monitor's own connection, and the answers go to the replicas' live figures,
 * where a read bound to a position looks (no snapshot is published for them). Asked of the replicas rather than of
 * the primary's pg_stat_replication, whose replay_lsn is only as fresh as the standby's last status message
 * (wal_receiver_status_interval, 10 s by default, when the primary is quiet).
 */
import type { LiveNodes } from "../cluster/live.ts";
import type { Config } from "../config/types.ts";
import type { NodeState } from "./assemble.ts";
import type { CheckConnection } from "./connection.ts";
import { replayPosition } from "./probe.ts";
import { roleOf } from "./roles.ts";

/** How long a session's demand keeps the poll running when no user has `lsn`. */
const DEMAND_MS = 60_000;

/** What the poll reads of the monitor. */
export interface ReplayHost {
  readonly config: Config;
  readonly lives: LiveNodes;
  /** The monitor checks nodes (it has credentials and is enabled). */
  readonly active: boolean;
  /** The monitor is running. */
  readonly running: boolean;
  now(): number;
  states(): Iterable<NodeState>;
  /** The node's check connection, unless it is being replaced. */
  connectionOf(name: string): CheckConnection | null;
}

export class ReplayPoll {
  private timer: ReturnType<typeof setInterval> | null = null;
  private demandUntil = 0;
  private polling = false;

  constructor(private readonly host: ReplayHost) {}

  /** Whether a session may need replay positions between checks. */
  private get wanted(): boolean {
    const c = this.host.config;
    return this.host.active && (c.consistency.mode === "lsn" || c.users.some((u) => u.consistency === "lsn") || this.host.now() < this.demandUntil);
  }

  /** A session asked for positions (`pgroute.min_lsn`, `pgroute.consistency = lsn`): polled for a while, whatever the config says. */
  demand(): void {
    this.demandUntil = this.host.now() + DEMAND_MS;
    if (!this.timer) this.start();
  }

  /** Starts (with `restart`, re-times) the poll when it is wanted; it stops by itself when it is not any more. */
  start(restart = false): void {
    if (restart) this.stop();
    if (this.timer || !this.host.running || !this.wanted) return;
    this.timer = setInterval(() => {
      if (this.wanted) void this.poll();
      else this.stop();
    }, this.host.config.consistency.lsn_poll_interval_ms);
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Reads every reachable replica's position once (one cheap statement each); waiting reads are woken if any moved on. */
  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      let advanced = false;
      await Promise.all(
        [...this.host.states()].map(async (s) => {
          const conn = this.host.connectionOf(s.node.name);
          if (!conn || s.reachable !== true || roleOf(s) !== "replica") return;
          try {
            const lsn = await replayPosition(conn, this.host.config.monitor.ping_timeout_ms);
            if (lsn !== null && lsn > s.live.replayLsn) advanced = true;
            if (this.host.connectionOf(s.node.name) === conn) s.live.replayLsn = lsn ?? -1;
          } catch {
            // The next check says what is wrong with the node.
          }
        }),
      );
      if (advanced) this.host.lives.replay.fire();
    } finally {
      this.polling = false;
    }
  }

  /** A check's view of a node's replay position (null: not a replica, or unknown). */
  noted(s: NodeState, lsn: number | null): void {
    const before = s.live.replayLsn;
    s.live.replayLsn = lsn ?? -1;
    if (lsn !== null && lsn > before) this.host.lives.replay.fire();
  }
}
