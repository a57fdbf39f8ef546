// Invariant: with `failover.promote = true`, when the primary is down (stopped, `failover.failures` checks failed)
// and no other node is out of recovery, pgroute itself promotes the replica (pg_promote() over its monitor's
// connection) and a write that was waiting for a primary goes through there. The cluster is this file's own.
import { beforeAll, expect, test } from "bun:test";
import postgres from "postgres";
import { findPgBin, waitForReplay, type DevNode } from "../../src/devcluster/index.ts";
import { runAs, runPg } from "../../src/devcluster/exec.ts";
import { ownCluster } from "../support/own-cluster.ts";

const own = ownCluster("promote", { replicas: 1, settings: { fsync: "off" } });
let port = 0;

beforeAll(async () => {
  const c = own.cluster;
  port = await own.serve({
    nodes: c.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port })),
    users: [{ name: c.superuser, password: c.password }],
    pool: { mode: "transaction", size: 4 },
    monitor: { ping_interval: "200ms", probe_interval: "1s", ping_timeout: "500ms", reconnect_max: "1s" },
    failover: { failures: 2, promote: true, primary_wait_timeout: "20s" },
  });
}, 30_000);

test("the primary stops: pgroute promotes the replica, and the write that waited runs there", async () => {
  const c = own.cluster;
  const replica = c.replicas[0] as DevNode;
  const sql = postgres({ host: "127.0.0.1", port, user: c.superuser, password: c.password, database: "postgres", max: 1, onnotice: () => {} });
  try {
    await sql.unsafe("create table promoted (n int)").simple();
    await waitForReplay(c);
    await runPg(findPgBin(), "pg_ctl", ["stop", "-m", "immediate", "-w", "-D", c.primary.dataDir], runAs(), { cwd: c.dir, what: "stopping the primary", timeoutMs: 30_000 });
    // Sent while no primary is known: it waits for pgroute to promote the replica.
    await sql.unsafe("insert into promoted values (1)").simple();
    const [row] = await sql.unsafe<{ port: number; standby: boolean }[]>("select inet_server_port() as port, pg_is_in_recovery() as standby").simple();
    expect(row).toEqual({ port: replica.port, standby: false });
    expect(own.proxy.cluster.current.primary).toBe(replica.name);
  } finally {
    await sql.end();
  }
  const direct = postgres(c.url(replica), { max: 1, onnotice: () => {} });
  try {
    expect([...(await direct.unsafe<{ n: number }[]>("select n from promoted"))]).toEqual([{ n: 1 }]);
  } finally {
    await direct.end();
  }
});
