/**
 * Helpers for pool tests: a database of a test file's own (so pgroute's pool for it is the only source of its
 * backends and pg_stat_activity counts mean something), a superuser connection straight to the primary to look
 * at those backends, a sampler that records the most backends seen during a run, and bounded condition waits.
 */
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";

/** A superuser postgres.js connection straight to the primary (its `postgres` database, so it never counts). */
export function adminSql(cluster: DevCluster): postgres.Sql {
  return postgres(cluster.url(cluster.primary), { max: 2, onnotice: () => {}, idle_timeout: 5 });
}

/** A database private to one test file, owned by the superuser, in which every role may create objects. */
export interface OwnDatabase {
  name: string;
  admin: postgres.Sql;
  /** Drops the database (forcing out any connection left) and ends the admin connection. */
  drop(): Promise<void>;
}

export async function ownDatabase(cluster: DevCluster, prefix: string): Promise<OwnDatabase> {
  const name = `${prefix}_${process.pid}`;
  const admin = adminSql(cluster);
  await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.unsafe(`create database ${name}`);
  await admin.unsafe(`grant all on database ${name} to public`);
  const inDb = postgres(cluster.url(cluster.primary, { database: name }), { max: 1, onnotice: () => {} });
  try {
    await inDb.unsafe("grant all on schema public to public");
  } finally {
    await inDb.end({ timeout: 1 });
  }
  return {
    name,
    admin,
    async drop() {
      try {
        await admin.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await admin.end({ timeout: 1 });
      }
    },
  };
}

export interface Backend {
  pid: number;
  state: string | null;
  backend_start: Date;
}

/** Client backends of `database` on the primary, as pg_stat_activity shows them. */
export async function backends(admin: postgres.Sql, database: string): Promise<Backend[]> {
  return (await admin`
    select pid, state, backend_start from pg_stat_activity
    where datname = ${database} and backend_type = 'client backend' and pid <> pg_backend_pid()
    order by pid`) as unknown as Backend[];
}

/** Polls `read` until `accept` holds for its value; returns that value, or fails after `timeoutMs`. */
export { waitFor } from "./wait.ts";

/**
 * Counts the backends of `database` over and over (one query at a time, a bounded number of times) until
 * stopped; `stop()` resolves with the largest count seen and the number of samples taken.
 */
export function sampleBackends(admin: postgres.Sql, database: string, maxSamples = 100_000): { stop(): Promise<{ max: number; samples: number }> } {
  let running = true;
  let max = 0;
  let samples = 0;
  const loop = (async () => {
    while (running && samples < maxSamples) {
      const [row] = await admin`
        select count(*)::int as n from pg_stat_activity
        where datname = ${database} and backend_type = 'client backend'`;
      samples++;
      max = Math.max(max, (row as { n: number }).n);
      // Yield between samples so the sampler never starves the run it watches.
      await Bun.sleep(5);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { max, samples };
    },
  };
}
