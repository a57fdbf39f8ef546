// Invariant: when a replica's server is stopped under a running read load (transaction pooling, several clients),
// its circuit breaker opens, the load goes on on the other replica and the primary, and clients see no more errors
// than the queries that were in flight on it; when the server comes back, the monitor reconnects, the breaker
// closes and the replica takes reads again. The cluster is this file's own (a server is stopped), stopped in afterAll.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { configFrom } from "../../src/config/load.ts";
import { findPgBin, guardCluster, startCluster, stopCluster, type DevCluster, type Watchdog } from "../../src/devcluster/index.ts";
import { runAs } from "../../src/devcluster/exec.ts";
import { startNode, stopNode } from "../../src/devcluster/node.ts";
import { createLogger } from "../../src/log.ts";
import { Proxy } from "../../src/server.ts";
import { waitFor } from "../support/wait.ts";

const WORKERS = 6;

let cluster: DevCluster;
let guard: Watchdog | undefined;
let proxy: Proxy | undefined;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "pgroute-health-stop-"));
  guard = guardCluster(dir);
  cluster = await startCluster({ dir, replicas: 2, port: 0, settings: { fsync: "off", synchronous_commit: "off" } });
}, 90_000);

afterAll(async () => {
  await proxy?.stop();
  if (cluster) await stopCluster(cluster.dir);
  guard?.dismiss();
});

/** Clients reading in a loop through pgroute, each on its own connection, noting where each read ran and every error. */
function readLoad(port: number) {
  const ports: number[] = [];
  const errors: string[] = [];
  let running = true;
  const clients = Array.from({ length: WORKERS }, () =>
    postgres({ host: "127.0.0.1", port, user: cluster.superuser, password: cluster.password, database: "postgres", max: 1, onnotice: () => {} }),
  );
  const deadline = Date.now() + 60_000; // bounded whatever happens
  const done = Promise.all(
    clients.map(async (sql) => {
      while (running && Date.now() < deadline) {
        try {
          ports.push((await sql.unsafe<{ port: number }[]>("select inet_server_port() as port").simple())[0]!.port);
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    }),
  );
  return {
    ports,
    errors,
    async stop() {
      running = false;
      await done;
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    },
  };
}

test("a stopped replica: its breaker opens, reads go on elsewhere with no more errors than were in flight; back, it takes reads again", async () => {
  const [replica1, replica2] = cluster.replicas as [DevCluster["replicas"][0], DevCluster["replicas"][0]];
  const config = configFrom({
    listen: { host: "127.0.0.1", port: 0 },
    nodes: cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
    users: [{ name: cluster.superuser, password: cluster.password }],
    pool: { mode: "transaction", size: WORKERS },
    monitor: { ping_interval: "100ms", probe_interval: "500ms", reconnect_max: "400ms" },
    breaker: { cooldown: "300ms", max_cooldown: "1s" },
    log: { level: process.env.PGROUTE_TEST_LOG ?? "error" },
  });
  proxy = new Proxy({ config, log: createLogger(config.log) });
  const { port } = await proxy.listen();
  const snapshotOf = (name: string) => proxy!.cluster.current.nodes.find((n) => n.name === name)!;
  const load = readLoad(port);
  try {
    await waitFor("both replicas to serve reads", () => [load.ports.includes(replica1.port), load.ports.includes(replica2.port)], (v) => v.every(Boolean));
    expect(load.errors).toEqual([]);

    const ctx = { dir: cluster.dir, pgBin: findPgBin(), who: runAs(), superuser: cluster.superuser, password: cluster.password };
    await stopNode(ctx, replica1);
    const open = await waitFor("its breaker to open", () => snapshotOf(replica1.name), (n) => n.breaker.state === "open", 10_000);
    expect(open.readable).toBe(false);
    // Reads in flight there count too (a fast shutdown's FATAL ends them), so the error rate may be first.
    expect(open.breaker.reason).toMatch(/login failed|consecutive failures|trial failed|error rate/);

    // The load goes on: a few hundred more reads, none on the stopped replica.
    const from = load.ports.length;
    await waitFor("more reads to complete", () => load.ports.length, (n) => n >= from + 300, 20_000);
    const after = load.ports.slice(from);
    expect(after.every((p) => p === replica2.port || p === cluster.primary.port)).toBe(true);
    expect(after.filter((p) => p === replica2.port).length).toBeGreaterThan(0);
    // At most the queries that were running on the replica when it went down (one per client).
    expect(load.errors.length).toBeLessThanOrEqual(WORKERS);

    // Back: the monitor reconnects, the breaker closes, reads return to it.
    await startNode(ctx, replica1);
    await waitFor("its breaker to close", () => snapshotOf(replica1.name), (n) => n.reachable && n.breaker.state === "closed" && n.readable, 20_000);
    const back = load.ports.length;
    await waitFor("reads to land on it again", () => load.ports.slice(back).includes(replica1.port), (v) => v, 10_000);
    expect(load.errors.length).toBeLessThanOrEqual(WORKERS);
  } finally {
    await load.stop();
  }
});
