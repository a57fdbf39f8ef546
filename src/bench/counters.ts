/**
 * Where statements ran, from the servers' own counters: each node is asked before and after a round how much work
 * it has done in the benchmark's database, and the difference is that round's share. Nothing is added to the
 * workload's statements and no statement is probed, so this holds for any target — pgroute, PgBouncer, Pgpool-II
 * or direct.
 *
 * - `pg_stat_statements` (when the extension is loaded on every node): successful statements, exact and current
 *   the moment they finish. The reader's own query is left out by its alias.
 * - `pg_stat_database` otherwise: committed plus rolled-back transactions. PostgreSQL publishes a backend's counts
 *   at most once a second while it is busy and up to 10 s after it goes idle (PGSTAT_IDLE_INTERVAL), so after a
 *   round the reader waits — bounded — until the counts account for the transactions the clients completed. A
 *   pooled backend's last second can still land in a later reading: the share is approximate, and the report says
 *   which source it used.
 */
import postgres from "postgres";
import { connect, queryOne } from "./client.ts";
import type { ConnSpec } from "./protocol.ts";

export type CounterSource = "pg_stat_statements" | "pg_stat_database";

/** The longest the pg_stat_database source waits for counts to catch up after a round (idle flush is 10 s). */
export const SETTLE_LIMIT_MS = 11_000;

/** One reading: node name → cumulative count. */
export type Reading = Map<string, number>;

const PGSS = `SELECT coalesce(sum(calls), 0)::text AS pgroute_bench_counter FROM pg_stat_statements
  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query NOT LIKE '%pgroute_bench_counter%'`;
const XACT = `SELECT (xact_commit + xact_rollback)::text AS pgroute_bench_counter FROM pg_stat_database WHERE datname = current_database()`;
// PostgreSQL 15+: publish this reader's own transaction at once, so the next reading can subtract it exactly.
const XACT_FLUSH = `SELECT pg_stat_force_next_flush(), (xact_commit + xact_rollback)::text AS pgroute_bench_counter FROM pg_stat_database WHERE datname = current_database()`;

/** Whether pg_stat_statements answers on this connection (extension created and library preloaded). */
async function hasPgss(sql: postgres.Sql): Promise<boolean> {
  try {
    await sql.unsafe("SELECT 1 FROM pg_stat_statements LIMIT 1");
    return true;
  } catch {
    return false;
  }
}

export class NodeCounters {
  private constructor(
    readonly source: CounterSource,
    private readonly nodes: { name: string; sql: postgres.Sql; query: string }[],
  ) {}

  /** Connects to every node (the benchmark's database) and picks the best source all of them offer. */
  static async open(nodes: readonly ConnSpec[]): Promise<NodeCounters> {
    const conns = nodes.map((n) => ({ name: n.name, sql: connect(n, "pgroute-bench-counters") }));
    try {
      const pgss = (await Promise.all(conns.map((c) => hasPgss(c.sql)))).every(Boolean);
      const versions = await Promise.all(conns.map(async (c) => Number((await queryOne<{ server_version_num: string }>(c.sql, "SHOW server_version_num")).server_version_num)));
      const source: CounterSource = pgss ? "pg_stat_statements" : "pg_stat_database";
      return new NodeCounters(
        source,
        conns.map((c, i) => ({ ...c, query: pgss ? PGSS : versions[i]! >= 150000 ? XACT_FLUSH : XACT })),
      );
    } catch (err) {
      await Promise.all(conns.map((c) => c.sql.end({ timeout: 1 }).catch(() => {})));
      throw err;
    }
  }

  async read(): Promise<Reading> {
    const values = await Promise.all(this.nodes.map(async (n) => Number((await queryOne<{ pgroute_bench_counter: string }>(n.sql, n.query)).pgroute_bench_counter)));
    return new Map(this.nodes.map((n, i) => [n.name, values[i]!]));
  }

  /**
   * Per-node work between two readings. With pg_stat_database each of the reader's own transactions in between
   * (`own`: the `before` reading's, and any polls after it) is taken off each node.
   */
  delta(before: Reading, after: Reading, own = 1): Record<string, number> {
    const mine = this.source === "pg_stat_database" ? own : 0;
    const out: Record<string, number> = {};
    for (const [name, a] of after) out[name] = Math.max(0, a - (before.get(name) ?? a) - mine);
    return out;
  }

  /**
   * Per-node work since `before`, read after a round. pg_stat_statements is current at once; pg_stat_database is
   * polled until the nodes account for at least `expected` transactions, or `limitMs` passes.
   */
  async since(before: Reading, expected: number, limitMs = SETTLE_LIMIT_MS): Promise<Record<string, number>> {
    let reading = await this.read();
    let own = 1;
    if (this.source === "pg_stat_database") {
      const deadline = performance.now() + limitMs;
      const sum = () => Object.values(this.delta(before, reading, own)).reduce((a, b) => a + b, 0);
      while (sum() < expected && performance.now() < deadline) {
        await Bun.sleep(250);
        reading = await this.read();
        own++;
      }
    }
    return this.delta(before, reading, own);
  }

  async close(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.sql.end({ timeout: 1 }).catch(() => {})));
  }
}
