// Invariant: pgroute follows the cluster through failures without dropping clients.
// - A replica that fails under an autocommit read that has not returned rows yet — its backend terminated (FATAL),
//   or the server stopped outright — costs the client nothing: the read runs once more on another node.
// - Failover under load (50 clients writing numbered rows, synchronous replication): the primary is stopped
//   (`pg_ctl stop -m immediate`) and a replica promoted (`pg_ctl promote`). Writes succeed again through the same
//   pgroute endpoint within 5 s of the promotion; every commit a client saw acknowledged is on the new primary; no
//   client is disconnected — idle ones notice nothing, one whose request was lost gets an error for it (never a
//   replay) and goes on, one whose transaction was lost gets an error, 25P02 until ROLLBACK, then works again (its
//   COMMIT fails: never a quiet success).
// The cluster is this file's own (nodes are stopped and promoted), stopped in afterAll. FAILOVER_REPORT=1 prints the
// figures (time from the promotion to the first acknowledged write, errors by SQLSTATE).
import { beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { findPgBin, waitForReplay, type DevCluster, type DevNode } from "../../src/devcluster/index.ts";
import { runAs, runPg } from "../../src/devcluster/exec.ts";
import { ownCluster } from "../support/own-cluster.ts";
import { eventually, waitFor } from "../support/wait.ts";

const WRITERS = 50;
const IN_TRANSACTIONS = 10; // of the writers, those that write in BEGIN … COMMIT
const IDLE = 10;

const own = ownCluster("failover", { replicas: 2, settings: { fsync: "off" } }, async (c) => {
  const [r1] = c.replicas as [DevNode];
  const primary = postgres(c.url(c.primary), { max: 1, onnotice: () => {} });
  try {
    // Set after the replicas were cloned, so the one promoted later does not wait for itself.
    await primary.unsafe(`alter system set synchronous_standby_names = '${r1.name}'`);
    await primary.unsafe("select pg_reload_conf()");
    await waitFor("replica1 to be the synchronous standby", async () => (await primary.unsafe<{ s: string }[]>(`select sync_state as s from pg_stat_replication where application_name = '${r1.name}'`))[0]?.s, (s) => s === "sync");
    await primary.unsafe("create table fo (client int, n int, primary key (client, n))");
  } finally {
    await primary.end();
  }
  await waitForReplay(c);
});

let cluster: DevCluster;
let port = 0;
let replica1: DevNode;
let replica2: DevNode;

/** `pg_ctl <args> -D <node>` as the cluster's owner. */
async function pgCtl(node: DevNode, ...args: string[]): Promise<void> {
  await runPg(findPgBin(), "pg_ctl", [...args, "-D", node.dataDir], runAs(), { cwd: cluster.dir, what: `pg_ctl ${args[0]} ${node.name}`, timeoutMs: 30_000 });
}

function direct(node: DevNode): postgres.Sql {
  return postgres(cluster.url(node), { max: 1, onnotice: () => {} });
}

beforeAll(async () => {
  cluster = own.cluster;
  [replica1, replica2] = cluster.replicas as [DevNode, DevNode];
  port = await own.serve({
    // role "auto": pgroute takes each node's role from pg_is_in_recovery(), so it follows the promotion.
    nodes: cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port })),
    users: [{ name: cluster.superuser, password: cluster.password }],
    pool: { mode: "transaction", size: 70 },
    monitor: { ping_interval: "200ms", probe_interval: "1s", ping_timeout: "500ms", reconnect_max: "1s" },
    failover: { failures: 3, search_interval: "100ms", primary_wait_timeout: "15s" },
  });
}, 30_000);

/** A node-postgres client through pgroute (it never reconnects by itself), noting whether it was disconnected. */
async function connect(): Promise<{ c: pg.Client; lost: () => string | null; close: () => Promise<void> }> {
  let lost: string | null = null;
  let closing = false;
  const c = new pg.Client({ host: "127.0.0.1", port, user: cluster.superuser, password: cluster.password, database: "postgres" });
  c.on("error", (e) => (lost ??= `error: ${e.message}`));
  c.on("end", () => (lost ??= closing ? null : "end"));
  await c.connect();
  return {
    c,
    lost: () => lost,
    close: async () => {
      closing = true;
      await c.end().catch(() => {});
    },
  };
}

const codeOf = (e: unknown) => (e as { code?: string }).code ?? String(e);

/** Slow reads on their own connections; resolves with each one's port or error code. */
function slowReads(n: number): Promise<({ port: number } | { error: string })[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const { c, close } = await connect();
      try {
        const r = await c.query<{ port: number }>("select inet_server_port() as port from pg_sleep(1.5)");
        return { port: r.rows[0]!.port };
      } catch (e) {
        return { error: codeOf(e) };
      } finally {
        await close();
      }
    }),
  );
}

/** Waits until all `n` slow reads run, at least one on `node`; returns the backend pids of those on `node`. */
async function sleepersOn(node: DevNode, n: number): Promise<number[]> {
  const nodes = [cluster.primary, replica1, replica2];
  const conns = nodes.map(direct);
  try {
    const pidsOf = async (sql: postgres.Sql) => (await sql.unsafe<{ pid: number }[]>("select pid from pg_stat_activity where state = 'active' and query like '%pg_sleep(1.5)%' and pid <> pg_backend_pid()")).map((r) => r.pid);
    const all = await waitFor(`${n} slow reads, one on ${node.name}`, () => Promise.all(conns.map(pidsOf)), (p) => p.flat().length === n && p[nodes.indexOf(node)]!.length > 0);
    return all[nodes.indexOf(node)]!;
  } finally {
    await Promise.all(conns.map((c) => c.end()));
  }
}

describe("a replica failing under a read that has not returned rows", () => {
  test("its backend terminated (FATAL 57P01): the read runs once more on another node", async () => {
    await eventually("both replicas to take reads", () => own.proxy.cluster.current.nodes.filter((n) => n.readable && n.role === "replica").length === 2);
    const reads = slowReads(6);
    const pids = await sleepersOn(replica1, 6);
    const sql = direct(replica1);
    try {
      await sql.unsafe(`select pg_terminate_backend(pid) from unnest(array[${pids.join(",")}]::int[]) pid`);
    } finally {
      await sql.end();
    }
    const results = await reads;
    expect(results.filter((r) => "error" in r)).toEqual([]);
    expect(results.some((r) => "port" in r && r.port === replica1.port)).toBe(false);
  }, 30_000);

  test("its server stopped (immediate): the read runs once more on another node", async () => {
    await eventually("both replicas to take reads again", () => own.proxy.cluster.current.nodes.filter((n) => n.readable && n.role === "replica").length === 2, 15_000);
    const reads = slowReads(6);
    await sleepersOn(replica2, 6);
    await pgCtl(replica2, "stop", "-m", "immediate", "-w");
    const results = await reads;
    expect(results.filter((r) => "error" in r)).toEqual([]);
    expect(results.some((r) => "port" in r && r.port === replica2.port)).toBe(false);
  }, 30_000); // the wait for replica1's breaker to close after the test before may take up to 15 s
});

interface Writer {
  id: number;
  acked: { n: number; at: number }[];
  errors: { code: string; at: number }[];
  rollbackFailures: string[];
  lost: () => string | null;
  done: Promise<void>;
}

describe("failover under load", () => {
  test("writes resume within 5 s of the promotion, every acknowledged commit survives, nobody is disconnected", async () => {
    let running = true;
    const deadline = Date.now() + 60_000; // bounded whatever happens
    const writers: Writer[] = [];
    for (let id = 1; id <= WRITERS; id++) {
      const { c, lost, close } = await connect();
      const w: Writer = { id, acked: [], errors: [], rollbackFailures: [], lost, done: Promise.resolve() };
      const inTransaction = id <= IN_TRANSACTIONS;
      w.done = (async () => {
        for (let n = 1; running && Date.now() < deadline; n++) {
          try {
            if (inTransaction) {
              await c.query("begin");
              await c.query(`insert into fo values (${id}, ${n})`);
              await c.query("commit");
            } else await c.query("insert into fo values ($1, $2)", [id, n]); // extended protocol
            w.acked.push({ n, at: Date.now() });
          } catch (e) {
            w.errors.push({ code: codeOf(e), at: Date.now() });
            if (inTransaction) await c.query("rollback").catch((r) => w.rollbackFailures.push(codeOf(r)));
          }
        }
        await close();
      })();
      writers.push(w);
    }
    const idle = await Promise.all(Array.from({ length: IDLE }, () => connect()));
    for (const i of idle) await i.c.query("select 1");
    // Clients idle inside a transaction on the primary when it goes.
    const x = await connect();
    await x.c.query("begin");
    await x.c.query("insert into fo values (999, 1)");
    const y = await connect();
    await y.c.query("begin");
    await y.c.query("insert into fo values (998, 1)");

    const acked = () => writers.reduce((sum, w) => sum + w.acked.length, 0);
    try {
      await waitFor("writes through pgroute", acked, (n) => n >= 300, 20_000);
      await pgCtl(cluster.primary, "stop", "-m", "immediate", "-w");
      await eventually("the monitor to lose the primary", () => own.proxy.cluster.current.nodes.find((n) => n.name === cluster.primary.name)!.reachable === false, 10_000);
      await pgCtl(replica1, "promote", "-w");
      const promotedAt = Date.now();
      const firstAfter = await waitFor("a write acknowledged after the promotion", () => Math.min(...writers.flatMap((w) => w.acked.filter((a) => a.at > promotedAt).map((a) => a.at))), (t) => Number.isFinite(t), 15_000);
      expect(firstAfter - promotedAt).toBeLessThan(5_000);
      if (process.env.FAILOVER_REPORT) console.log(`first write acknowledged ${firstAfter - promotedAt} ms after the promotion`);
      expect(own.proxy.cluster.current.primary).toBe(replica1.name);
      const before = acked();
      await waitFor("more writes on the new primary", acked, (n) => n >= before + 300, 20_000);
    } finally {
      running = false;
      await Promise.all(writers.map((w) => w.done));
    }

    // Every acknowledged commit is on the new primary (synchronous replication: it had them before acknowledging).
    const sql = direct(replica1);
    try {
      const rows = await sql.unsafe<{ client: number; n: number }[]>("select client, n from fo where client <= $1", [WRITERS]);
      const stored = new Set(rows.map((r) => `${r.client}/${r.n}`));
      const missing = writers.flatMap((w) => w.acked.filter((a) => !stored.has(`${w.id}/${a.n}`)).map((a) => `${w.id}/${a.n}`));
      expect(missing).toEqual([]);
    } finally {
      await sql.end();
    }
    // Nobody was disconnected; errors were the lost requests' (08006) and writes that found no primary in time (57P03).
    expect(writers.map((w) => w.lost()).filter((l) => l !== null)).toEqual([]);
    expect(writers.flatMap((w) => w.rollbackFailures)).toEqual([]);
    const codes = new Set(writers.flatMap((w) => w.errors.map((e) => e.code)));
    if (process.env.FAILOVER_REPORT) {
      const by = new Map<string, number>();
      for (const e of writers.flatMap((w) => w.errors)) by.set(e.code, (by.get(e.code) ?? 0) + 1);
      console.log(`acknowledged ${writers.reduce((n, w) => n + w.acked.length, 0)} writes; errors: ${JSON.stringify(Object.fromEntries(by))}`);
    }
    for (const code of codes) expect(["08006", "57P03"]).toContain(code);
    expect(idle.map((i) => i.lost()).filter((l) => l !== null)).toEqual([]);
    for (const i of idle) expect((await i.c.query<{ one: number }>("select 1 as one")).rows).toEqual([{ one: 1 }]);
    await Promise.all(idle.map((i) => i.close()));

    // The transaction that was open on the old primary: an error, then 25P02 until ROLLBACK, then all is well.
    expect(x.lost()).toBeNull();
    expect(codeOf(await x.c.query("insert into fo values (999, 2)").catch((e) => e))).toBe("08006");
    expect(codeOf(await x.c.query("select 1").catch((e) => e))).toBe("25P02");
    await x.c.query("rollback");
    await x.c.query("insert into fo values (999, 3)");
    expect((await x.c.query<{ n: number }>("select n from fo where client = 999 order by n")).rows).toEqual([{ n: 3 }]);
    expect((await x.c.query<{ port: number }>("select inet_server_port() as port")).rows[0]!.port).toBe(replica1.port);
    await x.close();
    // Its COMMIT fails — the work is gone — and ends the transaction; the session goes on.
    expect(y.lost()).toBeNull();
    expect(codeOf(await y.c.query("commit").catch((e) => e))).toBe("08006");
    expect((await y.c.query<{ n: string }>("select count(*) as n from fo where client = 998")).rows).toEqual([{ n: "0" }]);
    await y.close();
  }, 90_000);
});
