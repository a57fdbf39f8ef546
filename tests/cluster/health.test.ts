// Invariant: with a real primary and two streaming replicas, reads follow the cluster's health as a client sees it
// (`select inet_server_port()` through pgroute in transaction mode): weights 1:3 give 1:3 of 1,000 reads within
// 10%; a replica whose WAL replay is paused while the primary writes stops getting reads within two detailed-probe
// intervals of passing max_lag, and gets them again once it has caught up; the latency strategy moves reads away
// from a replica behind a relay that adds 50 ms. Replay is resumed whatever happens (the cluster is shared).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import type { NodeSnapshot } from "../../src/cluster/state.ts";
import { testCluster } from "../support/cluster.ts";
import { startFaultRelay, type FaultRelay } from "../support/fault-relay.ts";
import { clusterNodes, startTestProxy, type TestProxy } from "../support/proxy.ts";
import { waitFor } from "../support/wait.ts";

let cluster: DevCluster;
const proxies: TestProxy[] = [];
const clients: postgres.Sql[] = [];

beforeAll(async () => {
  cluster = await testCluster();
});
afterAll(async () => {
  for (const c of clients) await c.end({ timeout: 1 }).catch(() => {});
  for (const p of proxies) await p.stop().catch(() => {});
});

async function proxy(raw: Record<string, unknown>, connections = 1): Promise<{ tp: TestProxy; sql: postgres.Sql }> {
  const tp = await startTestProxy({ pool: { mode: "transaction", size: 8 }, ...raw });
  proxies.push(tp);
  const sql = postgres(tp.url(), { max: connections, onnotice: () => {} });
  clients.push(sql);
  return { tp, sql };
}

/** The port of the node that ran each of `n` reads, `parallel` at a time over as many connections. */
async function readPorts(sql: postgres.Sql, n: number, parallel = 1): Promise<number[]> {
  const ports: number[] = [];
  const one = async () => (await sql.unsafe<{ port: number }[]>("select inet_server_port() as port").simple())[0]!.port;
  for (let i = 0; i < n; i += parallel) ports.push(...(await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, one))));
  return ports;
}

function count(ports: number[], port: number): number {
  return ports.filter((p) => p === port).length;
}

function nodeOf(tp: TestProxy, name: string): NodeSnapshot {
  return tp.proxy.cluster.current.nodes.find((n) => n.name === name)!;
}

describe("weighted", () => {
  test("replica weights 1:3: 1,000 reads split 1:3 within 10%", async () => {
    const [primary, r1, r2] = clusterNodes(cluster);
    const { sql } = await proxy({ nodes: [primary, { ...r1, weight: 1 }, { ...r2, weight: 3 }], balance: { strategy: "weighted" } });
    const ports = await readPorts(sql, 1000);
    const [a, b] = [count(ports, cluster.replicas[0]!.port), count(ports, cluster.replicas[1]!.port)];
    expect(a + b).toBe(1000);
    expect(b / a).toBeGreaterThan(3 * 0.9);
    expect(b / a).toBeLessThan(3 * 1.1);
  });
});

describe("lag", () => {
  test("a replica whose replay is paused stops getting reads within two probe intervals of passing max_lag, and gets them back after catching up", async () => {
    const PROBE_MS = 500;
    const MAX_LAG_MS = 400;
    const { tp, sql } = await proxy({
      nodes: clusterNodes(cluster),
      monitor: { ping_interval: "100ms", probe_interval: `${PROBE_MS}ms` },
      balance: { max_lag: `${MAX_LAG_MS}ms` },
    });
    const [paused, other] = cluster.replicas as [DevCluster["replicas"][0], DevCluster["replicas"][0]];
    const primaryDb = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {} });
    const replicaDb = postgres(cluster.url(paused), { max: 1, onnotice: () => {} });
    clients.push(primaryDb, replicaDb);
    await primaryDb`create table if not exists health_lag (id serial primary key, at timestamptz default now())`;
    await waitFor("both replicas to take reads", () => [nodeOf(tp, paused.name).readable, nodeOf(tp, other.name).readable], (v) => v.every(Boolean));
    let writing = true;
    let firstWrite = 0;
    const writer = (async () => {
      // Bounded: stops when told, or after 30 s whatever happens.
      const end = Date.now() + 30_000;
      while (writing && Date.now() < end) {
        await primaryDb`insert into health_lag default values`;
        firstWrite ||= Date.now();
        await primaryDb`select pg_sleep(0.02)`;
      }
    })();
    try {
      await replicaDb`select pg_wal_replay_pause()`;
      const pausedAt = Date.now();
      const excluded = await waitFor("the paused replica to be excluded", () => nodeOf(tp, paused.name), (n) => !n.readable, 10_000, 10);
      const detected = Date.now();
      // Its lag passed max_lag no earlier than max_lag after the first write it missed.
      const passed = Math.max(pausedAt, firstWrite) + MAX_LAG_MS;
      expect(detected - passed).toBeLessThanOrEqual(2 * PROBE_MS);
      expect(excluded.excludedBecause).toMatch(/lag [\d.]+ m?s > max_lag 400 ms/);
      expect(excluded.breaker.state).toBe("open");
      expect(excluded.lagBytes).toBeGreaterThan(0);
      const during = await readPorts(sql, 40);
      expect(count(during, paused.port)).toBe(0);
      expect(count(during, other.port)).toBe(40);
    } finally {
      await replicaDb`select pg_wal_replay_resume()`;
      writing = false;
      await writer;
    }
    const back = await waitFor("the caught-up replica to take reads again", () => nodeOf(tp, paused.name), (n) => n.readable && n.breaker.state === "closed", 15_000);
    expect(back.lagSeconds).toBe(0);
    await waitFor("a read to land on it again", () => readPorts(sql, 4), (ports) => ports.includes(paused.port), 10_000);
  });
});

describe("latency", () => {
  const relays: FaultRelay[] = [];
  afterAll(() => {
    for (const r of relays) r.stop();
  });

  test("the latency strategy moves reads away from a replica behind a relay that adds 50 ms", async () => {
    const [primary, r1, r2] = clusterNodes(cluster);
    // Both replicas behind a relay, so they start out alike; then one relay adds 50 ms.
    for (const r of cluster.replicas) relays.push(await startFaultRelay({ host: r.host, port: r.port }));
    const relay = relays[1]!;
    const { tp, sql } = await proxy({
      nodes: [primary, { ...r1, port: relays[0]!.port }, { ...r2, port: relay.port }],
      monitor: { ping_interval: "100ms" },
      balance: { strategy: "latency", latency_decay: "1s" },
    }, 6);
    const slow = cluster.replicas[1]!.port;
    // No delay yet: both replicas serve (reads six at a time: requests in flight raise a replica's cost).
    const before = await readPorts(sql, 120, 6);
    expect(count(before, slow)).toBeGreaterThan(10);
    expect(count(before, cluster.replicas[0]!.port)).toBeGreaterThan(10);
    relay.delayMs = 50;
    await waitFor("the monitor to see the delay", () => nodeOf(tp, r2!.name as string).pingMs ?? 0, (ms) => ms >= 50, 10_000);
    // …and its pings to carry the replica's moving average of latency (what the strategy compares) past 40 ms.
    await waitFor("the slow replica's average to rise", () => tp.proxy.lives.get(r2!.name as string).ewmaMs, (ms) => ms >= 40, 10_000);
    const after = await readPorts(sql, 240, 6);
    expect(count(after, slow)).toBeLessThan(24);
    expect(count(after, cluster.replicas[0]!.port)).toBeGreaterThan(216);
  });
});
