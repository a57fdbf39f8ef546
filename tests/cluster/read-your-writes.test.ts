// Invariant: with one replica replaying 2 s behind (recovery_min_apply_delay) and reads balanced over both
// replicas, a session that inserts a row and reads it back at once never misses it with `consistency = "lsn"` or
// `"sticky"` (500 rounds each), while `"none"` does miss; in `lsn` mode its reads still go to a replica that has
// replayed the write (counted per node, by inet_server_port()), never to one that has not, and once the delayed
// replica catches up it takes reads again; `sticky` keeps reads on the primary for `sticky`, then lets them go to
// the replicas. The causality token works across two client connections: SHOW pgroute.lsn after a write on one,
// SET pgroute.min_lsn on the other, and the other's reads see the write. The cluster is this file's own.
import { beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { waitForReplay, type DevCluster } from "../../src/devcluster/index.ts";
import { ownCluster } from "../support/own-cluster.ts";
import { waitFor } from "../support/wait.ts";

const ROUNDS = 500;

const own = ownCluster("ryw", { replicas: 2, settings: { fsync: "off" } }, async (c) => {
  const admin = postgres(c.url(c.replicas[0]!), { max: 1, onnotice: () => {} });
  try {
    // ALTER SYSTEM works on a standby (postgresql.auto.conf is not WAL-logged); the delay is reloadable.
    await admin.unsafe("alter system set recovery_min_apply_delay = '2s'");
    await admin.unsafe("select pg_reload_conf()");
    await waitFor("the delay to apply", async () => (await admin.unsafe<{ d: string }[]>("select current_setting('recovery_min_apply_delay') as d"))[0]!.d, (d) => d === "2s");
  } finally {
    await admin.end();
  }
  const primary = postgres(c.url(c.primary), { max: 1, onnotice: () => {} });
  try {
    await primary.unsafe("create table ryw (id bigint primary key, who text)");
  } finally {
    await primary.end();
  }
  await waitForReplay(c);
});

let cluster: DevCluster;
let port = 0;
let delayed: number;
let fresh: number;

beforeAll(async () => {
  cluster = own.cluster;
  [delayed, fresh] = cluster.replicas.map((r) => r.port) as [number, number];
  port = await own.serve({
    nodes: cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
    users: [
      { name: cluster.superuser, password: cluster.password },
      { name: "ryw_lsn", password: cluster.password, server_user: cluster.superuser, consistency: "lsn" },
      { name: "ryw_sticky", password: cluster.password, server_user: cluster.superuser, consistency: "sticky" },
    ],
    pool: { mode: "transaction", size: 8 },
    // The delayed replica stays in the rotation (its lag would otherwise take it out): only consistency protects reads.
    balance: { strategy: "round_robin", max_lag: "1h" },
    monitor: { ping_interval: "200ms", probe_interval: "1s" },
    consistency: { sticky: "3s", wait: "300ms", lsn_poll_interval: "10ms" },
  });
}, 30_000);

function client(user: string): postgres.Sql {
  return postgres({ host: "127.0.0.1", port, user, password: cluster.password, database: "postgres", max: 1, prepare: false, onnotice: () => {} });
}

/** One statement over the simple query protocol (ids are integers of the test's own, safe to inline). */
function run<T extends postgres.Row>(sql: postgres.Sql, text: string): Promise<T[]> {
  return sql.unsafe<T[]>(text).simple() as unknown as Promise<T[]>;
}

let nextId = 1;

/** `n` inserts, each read back at once on the same session: misses, and the reads that saw it per node (by port). */
async function rounds(sql: postgres.Sql, n: number): Promise<{ misses: number; byPort: Map<number, number>; last: number }> {
  let misses = 0;
  let last = 0;
  const byPort = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    last = nextId++;
    await run(sql, `insert into ryw values (${last}, 'rounds')`);
    const rows = await run<{ port: number }>(sql, `select inet_server_port() as port from ryw where id = ${last}`);
    if (rows.length !== 1) misses++;
    else byPort.set(rows[0]!.port, (byPort.get(rows[0]!.port) ?? 0) + 1);
  }
  return { misses, byPort, last };
}

/** Reads row `id` until a read lands on `port` (bounded); every read must see it. */
async function readUntilOn(sql: postgres.Sql, id: number, target: number): Promise<{ misses: number; reads: number }> {
  let misses = 0;
  let reads = 0;
  await waitFor(
    `a read of row ${id} on port ${target}`,
    async () => {
      const rows = await run<{ port: number }>(sql, `select inet_server_port() as port from ryw where id = ${id}`);
      reads++;
      if (rows.length !== 1) {
        misses++;
        return 0;
      }
      return rows[0]!.port;
    },
    (p) => p === target,
    15_000,
  );
  return { misses, reads };
}

describe("read-your-writes", () => {
  test(`none: with a replica 2 s behind, reads right after a write miss (${ROUNDS / 5} rounds)`, async () => {
    const sql = client(cluster.superuser);
    try {
      const r = await rounds(sql, ROUNDS / 5);
      expect(r.misses).toBeGreaterThan(0);
    } finally {
      await sql.end();
    }
  });

  test(`lsn: ${ROUNDS} rounds, 0 misses; reads go to the replica that replayed the write; the delayed one takes reads once caught up`, async () => {
    const sql = client("ryw_lsn");
    try {
      const r = await rounds(sql, ROUNDS);
      expect(r.misses).toBe(0);
      // The fresh replica (within `wait` of the write) took reads; the delayed one, 2 s behind, took none it had not replayed.
      expect(r.byPort.get(fresh) ?? 0).toBeGreaterThan(ROUNDS / 2);
      const back = await readUntilOn(sql, r.last, delayed);
      expect(back.misses).toBe(0);
    } finally {
      await sql.end();
    }
  }, 60_000);

  test(`sticky: ${ROUNDS} rounds, 0 misses, on the primary; after \`sticky\` reads go to the replicas again`, async () => {
    const sql = client("ryw_sticky");
    try {
      const r = await rounds(sql, ROUNDS);
      expect(r.misses).toBe(0);
      expect([...r.byPort.keys()]).toEqual([cluster.primary.port]);
      // 3 s after the last write: the replicas (the delayed one included, 2 s behind) have it.
      for (const replica of [fresh, delayed]) expect((await readUntilOn(sql, r.last, replica)).misses).toBe(0);
    } finally {
      await sql.end();
    }
  }, 60_000);

  test("SET pgroute.consistency switches a session's mode; SHOW says which", async () => {
    const sql = client(cluster.superuser);
    try {
      expect((await sql.unsafe<{ "pgroute.consistency": string }[]>("show pgroute.consistency").simple())[0]!["pgroute.consistency"]).toBe("none");
      await sql.unsafe("set pgroute.consistency = lsn").simple();
      expect((await rounds(sql, 50)).misses).toBe(0);
      const err = await sql.unsafe("set pgroute.consistency = eventual").simple().catch((e: postgres.PostgresError) => e);
      expect((err as postgres.PostgresError).code).toBe("22023");
    } finally {
      await sql.end();
    }
  });
});

describe("the causality token", () => {
  test("SHOW pgroute.lsn after a write on one connection, SET pgroute.min_lsn on another: its reads see the write", async () => {
    const writer = client(cluster.superuser);
    const reader = client(cluster.superuser);
    try {
      expect((await writer.unsafe<{ "pgroute.lsn": string }[]>("show pgroute.lsn").simple())[0]!["pgroute.lsn"]).toBe("0/0");
      let misses = 0;
      const byPort = new Map<number, number>();
      for (let i = 0; i < 100; i++) {
        const id = nextId++;
        await run(writer, `insert into ryw values (${id}, 'token')`);
        const token = (await writer.unsafe<{ "pgroute.lsn": string }[]>("show pgroute.lsn").simple())[0]!["pgroute.lsn"];
        expect(token).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
        await reader.unsafe(`set pgroute.min_lsn = '${token}'`).simple();
        const rows = await run<{ port: number }>(reader, `select inet_server_port() as port from ryw where id = ${id}`);
        if (rows.length !== 1) misses++;
        else byPort.set(rows[0]!.port, (byPort.get(rows[0]!.port) ?? 0) + 1);
      }
      expect(misses).toBe(0);
      // The token is a bound, not a detour to the primary: a replica that replayed it took reads.
      expect(byPort.get(fresh) ?? 0).toBeGreaterThan(0);
      expect((await reader.unsafe<{ "pgroute.min_lsn": string }[]>("show pgroute.min_lsn").simple())[0]!["pgroute.min_lsn"]).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
      const bad = await reader.unsafe("set pgroute.min_lsn = 'soon'").simple().catch((e: postgres.PostgresError) => e);
      expect((bad as postgres.PostgresError).code).toBe("22023");
    } finally {
      await writer.end();
      await reader.end();
    }
  }, 60_000);
});
