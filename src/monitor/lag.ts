/**
 * Replication lag from WAL positions. Bytes: the primary's WAL position when the replica was sampled minus the
 * replica's replay position. Time: how long ago the primary first stood beyond the position the replica has
 * replayed, from a history of the primary's positions as the monitor saw them — which is 0 on an idle primary
 * (nothing to replay) rather than "time since the last transaction", the classic
 * `now() - pg_last_xact_replay_timestamp()` mistake. The walsender's own `replay_lag` and an opt-in heartbeat
 * refine it when they are known. Pure: times are passed in.
 */

/** An LSN such as `16/B374D848` as a number of bytes (exact below 2^53, i.e. for the first 8 PiB of WAL). */
export function parseLsn(text: string | null | undefined): number | null {
  if (!text) return null;
  const slash = text.indexOf("/");
  if (slash <= 0) return null;
  const hi = Number.parseInt(text.slice(0, slash), 16);
  const lo = Number.parseInt(text.slice(slash + 1), 16);
  if (!Number.isFinite(hi) || !Number.isFinite(lo)) return null;
  return hi * 2 ** 32 + lo;
}

/** The `X/Y` form of a byte position. */
export function formatLsn(n: number): string {
  const hi = Math.floor(n / 2 ** 32);
  const lo = n - hi * 2 ** 32;
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

/**
 * The primary's WAL positions over time: each position with the time it was first seen (a position seen again
 * adds nothing), in a ring of `capacity` entries. A position that goes backwards (another primary, a restore)
 * starts the history afresh.
 */
export class LsnHistory {
  private readonly at: Float64Array;
  private readonly lsn: Float64Array;
  private start = 0;
  private count = 0;

  constructor(private readonly capacity = 4096) {
    this.at = new Float64Array(capacity);
    this.lsn = new Float64Array(capacity);
  }

  private index(k: number): number {
    return (this.start + k) % this.capacity;
  }

  get size(): number {
    return this.count;
  }

  /** The latest position, or null when none was seen. */
  get latest(): number | null {
    return this.count === 0 ? null : this.lsn[this.index(this.count - 1)]!;
  }

  add(at: number, lsn: number): void {
    const last = this.latest;
    if (last !== null && lsn === last) return;
    if (last !== null && lsn < last) this.clear();
    if (this.count === this.capacity) {
      this.start = (this.start + 1) % this.capacity;
      this.count--;
    }
    const i = this.index(this.count++);
    this.at[i] = at;
    this.lsn[i] = lsn;
  }

  clear(): void {
    this.start = 0;
    this.count = 0;
  }

  /** Bytes the primary was ahead of `replayed` at time `at` (its latest position by then, else its first); null when nothing is known. */
  bytesBehind(replayed: number, at: number): number | null {
    if (this.count === 0) return null;
    let primary = this.lsn[this.index(0)]!;
    for (let k = 0; k < this.count; k++) {
      const i = this.index(k);
      if (this.at[i]! > at) break;
      primary = this.lsn[i]!;
    }
    return Math.max(0, primary - replayed);
  }

  /**
   * Seconds from when the primary was first seen beyond `replayed` to `at`: the replica has been missing changes
   * at least that long. 0 when the primary was never seen beyond it. `older` is true when even the oldest position
   * in the history is beyond it, so the true lag may be longer than the history reaches.
   */
  secondsBehind(replayed: number, at: number): { seconds: number; older: boolean } {
    for (let k = 0; k < this.count; k++) {
      const i = this.index(k);
      if (this.lsn[i]! > replayed) return { seconds: Math.max(0, at - this.at[i]!) / 1000, older: k === 0 };
    }
    return { seconds: 0, older: false };
  }
}

/** What else is known about a replica's lag in time, besides the primary's history. */
export interface LagHints {
  /** The walsender's `replay_lag` for this replica (pg_stat_replication on the primary), seconds. */
  readonly walsender: number | null;
  /** Age of the heartbeat row as the replica sees it, seconds (heartbeat table enabled). */
  readonly heartbeat: number | null;
  /** The replica's clock minus its last replayed commit's timestamp, seconds. */
  readonly sinceReplay: number | null;
  /**
   * How long the replica must have been behind everything the history holds before `sinceReplay` is believed
   * (a ping interval or so): a replica sampled a moment before a fresh record reached it is not behind for long.
   */
  readonly settleSeconds: number;
}

/**
 * The lag of a replica that had replayed up to `replayed` at time `at` (epoch ms): bytes, and seconds. A replica
 * that has replayed everything the primary had is 0 s behind whatever the other figures say. Otherwise the
 * largest of the history's lower bound, the walsender's measure and the heartbeat's age; the time since the
 * last replayed commit is used only when the replica has stayed behind everything the history remembers (it
 * overstates the lag after a quiet spell on the primary, so it is a last resort).
 */
export function replicaLag(history: LsnHistory, replayed: number | null, at: number, hints: LagHints): { bytes: number | null; seconds: number | null } {
  if (replayed === null) return { bytes: null, seconds: hints.heartbeat };
  const bytes = history.bytesBehind(replayed, at);
  if (bytes === null) return { bytes: null, seconds: hints.heartbeat };
  if (bytes === 0) return { bytes: 0, seconds: 0 };
  const behind = history.secondsBehind(replayed, at);
  let seconds = Math.max(behind.seconds, hints.walsender ?? 0, hints.heartbeat ?? 0);
  if (behind.older && behind.seconds >= hints.settleSeconds && hints.sinceReplay !== null) seconds = Math.max(seconds, hints.sinceReplay);
  return { bytes, seconds };
}
