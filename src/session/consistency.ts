/**
 * Read-your-writes for one transaction-pooled session (`[consistency]`, a user's `consistency`, or
 * `SET pgroute.consistency`). After the session commits a write:
 *
 * - `sticky`: its reads go to the primary for `consistency.sticky` (a route with reason `read_your_writes`).
 *   A write still in flight counts from when it was sent, so a pipelined read is covered too.
 * - `lsn`: before the primary's connection is released, pgroute asks it for `pg_current_wal_insert_lsn()` — one
 *   extra round trip on the connection after each transaction that wrote, which the client does not wait for; a
 *   read the client sends meanwhile waits for it. The insert position is at or past the end of the commit record
 *   (even with `synchronous_commit = off`, when the flush position may not be yet). The session's reads then go
 *   only to replicas whose replay position has reached it (src/cluster/topology.ts), else — after waiting up to
 *   `consistency.wait` for one — to the primary.
 * - any mode: `SET pgroute.min_lsn = 'X/Y'` makes the session's reads wait for (or avoid) replicas behind that
 *   position: the causality token another session got from `SHOW pgroute.lsn` after its write.
 *
 * `none` costs a counter increment per write: `SHOW pgroute.lsn` needs to know whether the session wrote.
 */
import type { ConsistencyMode } from "../config/types.ts";
import { formatLsn, parseLsn } from "../monitor/lag.ts";
import type { Entry } from "../pool/demux.ts";
import type { ReadBound } from "../pool/group.ts";
import type { Route, RouteReason } from "../router/route.ts";
import type { Virtual } from "../router/state.ts";
import { serialize } from "pg-protocol";

const MODES: readonly string[] = ["none", "sticky", "lsn"];

/** pgroute's own question to the primary after a transaction that wrote (its answer is read, never forwarded). */
const LSN_QUERY = new Uint8Array(serialize.query("select pg_current_wal_insert_lsn()::text"));

/** What `SHOW pgroute.lsn` is turned into when the session wrote since its position was last learned. */
export const SHOW_LSN_QUERY = new Uint8Array(serialize.query(`select pg_current_wal_insert_lsn()::text as "pgroute.lsn"`));

const td = new TextDecoder();

/** The first column of a DataRow body as text (null for SQL NULL or a row without columns). */
function firstText(buf: Uint8Array, start: number, end: number): string | null {
  if (end - start < 6) return null;
  const v = new DataView(buf.buffer, buf.byteOffset + start, end - start);
  if (v.getInt16(0) < 1) return null;
  const len = v.getInt32(2);
  if (len < 0 || 6 + len > end - start) return null;
  return td.decode(buf.subarray(start + 6, start + 6 + len));
}

export interface ConsistencyOptions {
  /** The user's mode (its own `consistency`, else `[consistency] mode`). */
  mode: ConsistencyMode;
  stickyMs: number;
  waitMs: number;
  /** Epoch ms (tests inject a clock). */
  now?: () => number;
  /** A session set `pgroute.min_lsn` or `pgroute.consistency = lsn`: the monitor should read replay positions fast for a while. */
  onNeedsReplay?: () => void;
}

export class Consistency {
  mode: ConsistencyMode;
  private readonly configured: ConsistencyMode;
  private readonly now: () => number;
  /** The WAL position (bytes) of the session's last write, once learned; 0 before. */
  private lsn = 0;
  /** `SET pgroute.min_lsn`, bytes; 0: none. */
  private floor = 0;
  /** Writes sent; how many of them `lsn` covers; how many `stickyUntil` accounts for. */
  private writes = 0;
  private learned = 0;
  private settled = 0;
  private stickyUntil = 0;
  /** The position query is in flight. */
  private asking = false;
  /** Reused for every restricted read: a pick allocates nothing. */
  private readonly bound: { minLsn: number; waitMs: number; avoid: string | null };

  constructor(private readonly opts: ConsistencyOptions) {
    this.mode = this.configured = opts.mode;
    this.now = opts.now ?? Date.now;
    this.bound = { minLsn: 0, waitMs: opts.waitMs, avoid: null };
  }

  /** A request that may write was sent to the primary. */
  wrote(): void {
    this.writes++;
  }

  /** Writes were sent that the learned position does not cover. */
  get unlearned(): boolean {
    return this.writes !== this.learned;
  }

  /**
   * Where a read outside a transaction goes in `sticky` mode: the primary while a write is in flight or was
   * committed less than `sticky` ago. Other routes, and other modes, pass unchanged.
   */
  reroute(r: Route): Route {
    if (r.target !== "replica" || !this.sticky()) return r;
    return { target: "primary", reason: { code: "read_your_writes", wanted: r.reason as Exclude<RouteReason, { code: "read_your_writes" }> } };
  }

  /** `sticky` mode, and the session's reads stay on the primary now. */
  sticky(): boolean {
    return this.mode === "sticky" && (this.writes !== this.settled || this.now() < this.stickyUntil);
  }

  /**
   * What restricts the replica of a read about to lease a connection: null when it must go to the primary (`lsn`
   * mode, a write whose position could not be learned); else the session's position (`lsn` mode) and
   * `pgroute.min_lsn`, or no restriction at all.
   */
  readBound(): ReadBound | null {
    let min = this.floor;
    if (this.mode === "lsn") {
      if (this.unlearned) return null;
      if (this.lsn > min) min = this.lsn;
    }
    this.bound.minLsn = min;
    return this.bound;
  }

  /**
   * A ReadyForQuery arrived on the session's connection (`pending`: requests still in flight there). Outside a
   * transaction, a write is committed: `sticky` starts counting; `lsn` returns the entry of the position query to
   * send on that connection before it is released (`then` runs when it is answered), else null.
   */
  committed(idle: boolean, pending: number, then: () => void): Entry | null {
    if (!idle || this.writes === this.settled) return null;
    if (this.mode === "sticky") {
      // Settled only with nothing else in flight: a later write still under way keeps the reads on the primary.
      if (pending === 0) {
        this.settled = this.writes;
        this.stickyUntil = this.now() + this.opts.stickyMs;
      }
      return null;
    }
    if (this.mode !== "lsn" || this.asking || !this.unlearned) return null;
    this.asking = true;
    const covers = this.writes;
    let value: number | null = null;
    const done = () => {
      this.asking = false;
      if (value !== null) {
        if (value > this.lsn) this.lsn = value;
        this.learned = this.settled = covers;
      }
      then();
    };
    return {
      end: "query",
      mode: "swallow",
      onRow: (buf, start, end) => {
        value = parseLsn(firstText(buf, start, end));
      },
      ok: done,
      fail: done,
    };
  }

  /** The bytes of the position query that {@link committed}'s entry answers. */
  get lsnQuery(): Uint8Array {
    return LSN_QUERY;
  }

  // --- SET / SHOW pgroute.lsn, pgroute.min_lsn, pgroute.consistency ---------------------------------------

  /** Whether `name` is one of this module's settings. */
  static handles(name: string): boolean {
    return name === "pgroute.lsn" || name === "pgroute.min_lsn" || name === "pgroute.consistency";
  }

  /** Applies a SET or RESET; returns an error message for a bad value or a read-only setting. */
  set(v: Exclude<Virtual, { op: "show" }>): string | null {
    switch (v.name) {
      case "pgroute.lsn":
        return `parameter "pgroute.lsn" cannot be changed (it is the position of this session's last write; set pgroute.min_lsn)`;
      case "pgroute.min_lsn": {
        if (v.op === "reset") {
          this.floor = 0;
          return null;
        }
        const lsn = parseLsn(v.value.trim());
        if (lsn === null || !/^[0-9a-f]{1,8}\/[0-9a-f]{1,8}$/i.test(v.value.trim())) return `invalid value for parameter "pgroute.min_lsn": "${v.value}" (expected a WAL position like 16/B374D848)`;
        this.floor = lsn;
        if (lsn > 0) this.opts.onNeedsReplay?.();
        return null;
      }
      case "pgroute.consistency": {
        if (v.op === "reset") {
          this.mode = this.configured;
          return null;
        }
        const value = v.value.toLowerCase();
        if (!MODES.includes(value)) return `invalid value for parameter "pgroute.consistency": "${v.value}" (expected none, sticky or lsn)`;
        this.mode = value as ConsistencyMode;
        if (this.mode === "lsn") this.opts.onNeedsReplay?.();
        return null;
      }
    }
    return `unrecognized configuration parameter "${v.name}"`;
  }

  /**
   * The value of a SHOW. `pgroute.lsn` is null while writes were sent that the learned position does not cover
   * (unless `stale` takes the last one learned): then the relay asks the primary (see {@link SHOW_LSN_QUERY}),
   * whose current position is at or past them.
   */
  show(name: string, stale = false): string | null {
    switch (name) {
      case "pgroute.lsn":
        return this.unlearned && !stale ? null : formatLsn(this.lsn);
      case "pgroute.min_lsn":
        return formatLsn(this.floor);
      case "pgroute.consistency":
        return this.mode;
    }
    return null;
  }
}
