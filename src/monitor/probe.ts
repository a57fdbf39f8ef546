/**
 * The monitor's checks, as SQL and the parsing of their answers. The ping is one cheap statement every node can
 * answer (its role and WAL position); the detailed probe adds pg_stat_activity, max_connections, on the primary
 * pg_stat_replication, and the optional CPU query. Both run over a {@link Queryable}: a dedicated postgres.js
 * connection in production (connection.ts), a fake in unit tests.
 */
import { parseLsn } from "./lag.ts";

export type Row = Record<string, unknown>;

/** Something that runs one statement within a time limit (rejecting with a {@link CheckError}). */
export interface Queryable {
  query(text: string, timeoutMs: number): Promise<Row[]>;
}

/** Why a check failed: the node did not answer (`down`), or answered with an error that is not about its health. */
export class CheckError extends Error {
  override readonly name = "CheckError";
  constructor(
    message: string,
    /** `down`: refused, reset, timed out, shutting down — the node counts as unreachable. `blind`: the monitor's own problem (authentication, privileges, a bad cpu_query). */
    readonly kind: "down" | "blind",
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

/** What every check learns. */
export interface PingResult {
  readonly standby: boolean;
  /** Current WAL position (primary) or last replayed (replica). */
  readonly lsn: number | null;
  /** Replica: the server clock minus the last replayed commit's timestamp, seconds. */
  readonly sinceReplay: number | null;
  /** Primary: the timeline it writes WAL on; null on a replica or when unknown. */
  readonly timeline: number | null;
  /** Round trip, ms. */
  readonly ms: number;
}

export interface ReplicationRow {
  readonly applicationName: string;
  readonly state: string | null;
  readonly syncState: string | null;
  readonly clientAddr: string | null;
  readonly replayLsn: number | null;
  readonly writeLag: number | null;
  readonly flushLag: number | null;
  readonly replayLag: number | null;
}

/** What the detailed probe learns besides the ping's figures. */
export interface ProbeResult extends PingResult {
  readonly receiveLsn: number | null;
  readonly replayPaused: boolean | null;
  readonly connections: number;
  readonly active: number;
  readonly maxConnections: number;
  readonly clusterName: string;
  /** The primary's view of its standbys; null on a replica. */
  readonly replication: readonly ReplicationRow[] | null;
  /** CPU busy 0–1 from `monitor.cpu_query`; null without one, or when it failed (then `cpuError` says why). */
  readonly cpu: number | null;
  readonly cpuError: string | null;
}

/**
 * Role, WAL position, replay age, and on a primary its timeline — from the name of the WAL file it writes (the
 * first 8 hex digits), which changes the moment a promoted standby starts its own timeline, unlike
 * pg_control_checkpoint() which waits for the next checkpoint. Of two nodes that both claim to be the primary,
 * the one on the later timeline was promoted last (src/monitor/roles.ts).
 */
const ROLE_AND_POSITION = `pg_is_in_recovery() as standby,
  (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end)::text as lsn,
  extract(epoch from clock_timestamp() - pg_last_xact_replay_timestamp())::float8 as since_replay,
  case when not pg_is_in_recovery() then ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end as timeline`;

/** A replica's replay position alone: the fast poll read-your-writes needs (`consistency.lsn_poll_interval`). */
export const REPLAY_SQL = "select pg_last_wal_replay_lsn()::text as lsn";

/** Makes the standby leave recovery; returns at once (the monitor's next ping sees the new primary). */
export const PROMOTE_SQL = "select pg_promote(wait => false) as promoted";

/** The ping: role, WAL position and the age of the last replayed commit, in one cheap statement. */
export const PING_SQL = `select ${ROLE_AND_POSITION}`;

/**
 * The detailed probe. Volatile functions in CASE branches run only when their branch is taken, so the primary
 * never calls the replica-only ones. `active` leaves out the probe's own backend.
 */
export const PROBE_SQL = `select ${ROLE_AND_POSITION},
  pg_last_wal_receive_lsn()::text as receive_lsn,
  case when pg_is_in_recovery() then pg_is_wal_replay_paused() end as replay_paused,
  a.connections, a.active,
  current_setting('max_connections')::int as max_connections,
  current_setting('cluster_name') as cluster_name
from (select count(*)::int as connections,
             (count(*) filter (where state = 'active' and pid <> pg_backend_pid()))::int as active
      from pg_stat_activity where backend_type = 'client backend') a`;

/** The primary's standbys and the write/flush/replay lag its walsenders measured (NULL when caught up and idle). */
export const REPLICATION_SQL = `select application_name, state, sync_state, client_addr::text as client_addr,
  replay_lsn::text as replay_lsn,
  extract(epoch from write_lag)::float8 as write_lag,
  extract(epoch from flush_lag)::float8 as flush_lag,
  extract(epoch from replay_lag)::float8 as replay_lag
from pg_stat_replication`;

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const str = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

function first(rows: Row[], what: string): Row {
  const row = rows[0];
  if (!row || typeof row.standby !== "boolean") throw new CheckError(`${what}: unexpected answer ${JSON.stringify(rows).slice(0, 120)}`, "blind");
  return row;
}

function pingOf(row: Row, ms: number): PingResult {
  return { standby: row.standby as boolean, lsn: parseLsn(str(row.lsn)), sinceReplay: row.standby ? num(row.since_replay) : null, timeline: row.standby ? null : num(row.timeline), ms };
}

/** A replica's replay position (bytes), or null when it reports none. */
export async function replayPosition(conn: Queryable, timeoutMs: number): Promise<number | null> {
  const rows = await conn.query(REPLAY_SQL, timeoutMs);
  return parseLsn(str(rows[0]?.lsn));
}

/** Runs the ping. */
export async function ping(conn: Queryable, timeoutMs: number): Promise<PingResult> {
  const t0 = performance.now();
  const rows = await conn.query(PING_SQL, timeoutMs);
  return pingOf(first(rows, "ping"), performance.now() - t0);
}

/** Runs the detailed probe (and, on a primary, the replication query; with `cpuQuery`, that too). */
export async function probe(conn: Queryable, timeoutMs: number, cpuQuery?: string): Promise<ProbeResult> {
  const t0 = performance.now();
  const row = first(await conn.query(PROBE_SQL, timeoutMs), "probe");
  const ms = performance.now() - t0;
  const replication = row.standby ? null : (await conn.query(REPLICATION_SQL, timeoutMs)).map(replicationRow);
  const { cpu, cpuError } = cpuQuery ? await cpuOf(conn, cpuQuery, timeoutMs) : { cpu: null, cpuError: null };
  return {
    ...pingOf(row, ms),
    receiveLsn: parseLsn(str(row.receive_lsn)),
    replayPaused: row.replay_paused === null || row.replay_paused === undefined ? null : Boolean(row.replay_paused),
    connections: Number(row.connections),
    active: Math.max(0, Number(row.active)),
    maxConnections: Number(row.max_connections),
    clusterName: String(row.cluster_name ?? ""),
    replication,
    cpu,
    cpuError,
  };
}

/** The CPU query's one number; a failure of the query itself costs only that figure, a node that is down fails the probe. */
async function cpuOf(conn: Queryable, sql: string, timeoutMs: number): Promise<{ cpu: number | null; cpuError: string | null }> {
  let rows: Row[];
  try {
    rows = await conn.query(sql, timeoutMs);
  } catch (err) {
    if (err instanceof CheckError && err.kind === "down") throw err;
    return { cpu: null, cpuError: `cpu_query failed: ${(err as Error).message}` };
  }
  const v = rows[0] ? Number(Object.values(rows[0])[0]) : Number.NaN;
  if (!Number.isFinite(v)) return { cpu: null, cpuError: `cpu_query returned ${JSON.stringify(rows[0] ?? null)}, expected one number from 0 to 1` };
  return { cpu: Math.min(1, Math.max(0, v)), cpuError: null };
}

function replicationRow(r: Row): ReplicationRow {
  return {
    applicationName: String(r.application_name ?? ""),
    state: str(r.state),
    syncState: str(r.sync_state),
    clientAddr: str(r.client_addr),
    replayLsn: parseLsn(str(r.replay_lsn)),
    writeLag: num(r.write_lag),
    flushLag: num(r.flush_lag),
    replayLag: num(r.replay_lag),
  };
}
