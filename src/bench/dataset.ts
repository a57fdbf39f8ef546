/**
 * The data the built-in workloads run on: pgbench's four tables at a scale factor (100,000 accounts per unit),
 * generated server-side as `pgbench -i -I dtGvp` does, so a database initialised by pgbench itself is reused as is.
 * Also creates pg_stat_statements in the benchmark's database when the library is preloaded, and waits until the
 * replicas have replayed all of it.
 */
import postgres from "postgres";
import { connect, queryOne } from "./client.ts";
import { BenchError } from "./errors.ts";
import type { ConnSpec } from "./protocol.ts";

export type InitMode = "auto" | "force" | "skip";

/** The statements of `pgbench -i -I dtGvp -s <scale>` (drop, create, server-side generate, vacuum, primary keys). */
export function initStatements(scale: number): string[] {
  return [
    "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
    "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))",
    "CREATE TABLE pgbench_tellers (tid int NOT NULL, bid int, tbalance int, filler char(84)) WITH (fillfactor = 100)",
    "CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84)) WITH (fillfactor = 100)",
    "CREATE TABLE pgbench_branches (bid int NOT NULL, bbalance int, filler char(88)) WITH (fillfactor = 100)",
    `INSERT INTO pgbench_branches (bid, bbalance) SELECT bid, 0 FROM generate_series(1, ${scale}) AS bid`,
    `INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT tid, (tid - 1) / 10 + 1, 0 FROM generate_series(1, ${10 * scale}) AS tid`,
    `INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT aid, (aid - 1) / 100000 + 1, 0, '' FROM generate_series(1, ${100_000 * scale}) AS aid`,
    "VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history",
    "ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid)",
    "ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid)",
    "ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)",
  ];
}

/** The scale the tables hold now, or null when they are missing or not a pgbench data set of one scale. */
async function currentScale(sql: postgres.Sql): Promise<number | null> {
  try {
    const { branches, accounts, tellers } = await queryOne<{ branches: number; accounts: number; tellers: number }>(
      sql,
      "SELECT (SELECT count(*) FROM pgbench_branches)::int AS branches, (SELECT count(*) FROM pgbench_accounts)::int AS accounts, (SELECT count(*) FROM pgbench_tellers)::int AS tellers",
    );
    return accounts === branches * 100_000 && tellers === branches * 10 && branches > 0 ? branches : null;
  } catch {
    return null;
  }
}

export interface DatasetReport {
  /** What was done: found the tables at that scale, created them, or trusted `--init skip`. */
  action: "reused" | "initialized" | "skipped";
  seconds: number;
}

/**
 * Makes sure the tables exist at `scale` (`auto`: reuse them if they do, else create; `force`: always create;
 * `skip`: trust they are there), through `setup` — the primary, or the first target when no node is known.
 */
export async function prepareDataset(setup: ConnSpec, o: { mode: InitMode; scale: number; log: (line: string) => void }): Promise<DatasetReport> {
  const t0 = performance.now();
  const sql = connect(setup, "pgroute-bench-setup");
  try {
    if (o.mode === "skip") return { action: "skipped", seconds: 0 };
    if (o.mode === "auto") {
      const found = await currentScale(sql);
      if (found === o.scale) return { action: "reused", seconds: (performance.now() - t0) / 1000 };
      o.log(found === null ? `creating pgbench tables at scale ${o.scale}…` : `pgbench tables have scale ${found}; recreating them at scale ${o.scale}…`);
    } else {
      o.log(`recreating pgbench tables at scale ${o.scale}…`);
    }
    for (const statement of initStatements(o.scale)) {
      try {
        await sql.unsafe(statement);
      } catch (err) {
        throw new BenchError(`initialising the data set on ${setup.name} failed at "${statement.slice(0, 60)}…": ${(err as Error).message}`);
      }
    }
    return { action: "initialized", seconds: (performance.now() - t0) / 1000 };
  } finally {
    await sql.end({ timeout: 5 }).catch(() => {});
  }
}

/** Waits until every replica has replayed the primary's WAL as of now (the data set, the extension). */
export async function waitForReplicas(primary: ConnSpec, replicas: readonly ConnSpec[], timeoutMs = 60_000): Promise<void> {
  if (replicas.length === 0) return;
  const p = connect(primary, "pgroute-bench-setup");
  let lsn: string;
  try {
    lsn = (await queryOne<{ lsn: string }>(p, "SELECT pg_current_wal_lsn()::text AS lsn")).lsn;
  } finally {
    await p.end({ timeout: 5 }).catch(() => {});
  }
  await Promise.all(
    replicas.map(async (r) => {
      const sql = connect(r, "pgroute-bench-setup");
      const deadline = performance.now() + timeoutMs;
      try {
        for (;;) {
          const { done } = await queryOne<{ done: boolean }>(sql, "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, true) AS done", [lsn]);
          if (done) return;
          if (performance.now() > deadline) throw new BenchError(`replica ${r.name} did not replay the data set within ${timeoutMs / 1000} s`);
          await Bun.sleep(100);
        }
      } finally {
        await sql.end({ timeout: 5 }).catch(() => {});
      }
    }),
  );
}

/**
 * Creates pg_stat_statements in the benchmark's database when the library is preloaded but the extension is
 * missing (the per-node counters then count statements exactly). True when it was created just now.
 */
export async function ensureStatements(primary: ConnSpec): Promise<boolean> {
  const sql = connect(primary, "pgroute-bench-setup");
  try {
    const { libs } = await queryOne<{ libs: string }>(sql, "SELECT current_setting('shared_preload_libraries') AS libs");
    if (!String(libs).split(",").some((l) => l.trim() === "pg_stat_statements")) return false;
    const { n } = await queryOne<{ n: number }>(sql, "SELECT count(*)::int AS n FROM pg_extension WHERE extname = 'pg_stat_statements'");
    if (n > 0) return false;
    await sql.unsafe("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    return true;
  } catch {
    // Not allowed to (the extension needs a superuser): per-node counts fall back to pg_stat_database.
    return false;
  } finally {
    await sql.end({ timeout: 5 }).catch(() => {});
  }
}
