// Invariant: a user's `zone` steers its reads to replicas of that zone while one is healthy there (each read's
// node is what `inet_server_port()` reports), while a user without a zone reads from every replica; writes of
// both go to the primary.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { AUTH_USERS, testCluster } from "../support/cluster.ts";
import { clusterNodes, startTestProxy, testUsers, type TestProxy } from "../support/proxy.ts";

let tp: TestProxy;

beforeAll(async () => {
  const cluster = await testCluster();
  const [primary, r1, r2] = clusterNodes(cluster) as [Record<string, unknown>, Record<string, unknown>, Record<string, unknown>];
  const users = testUsers(cluster).map((u) => (u.name === AUTH_USERS.md5.user ? { ...u, zone: "zone-b" } : u));
  tp = await startTestProxy({
    nodes: [{ ...primary, zone: "zone-a" }, { ...r1, zone: "zone-a" }, { ...r2, zone: "zone-b" }],
    users,
    pool: { mode: "transaction", size: 4 },
    balance: { strategy: "round_robin" },
  });
});
afterAll(async () => {
  await tp?.stop();
});

/** The ports that ran `n` autocommit reads of `user` through pgroute. */
async function readPorts(url: string, n: number): Promise<Set<number>> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const ports = new Set<number>();
    for (let i = 0; i < n; i++) {
      const [row] = await sql.unsafe<{ port: number }[]>("select inet_server_port() as port").simple();
      ports.add(row!.port);
    }
    return ports;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

describe("users.zone", () => {
  test("a user in zone-b reads only from the zone-b replica; a user without a zone from both replicas", async () => {
    const { cluster } = tp;
    const zoneB = tp.url({ user: AUTH_USERS.md5.user, password: AUTH_USERS.md5.password });
    expect(await readPorts(zoneB, 20)).toEqual(new Set([cluster.replicas[1]!.port]));
    expect(await readPorts(tp.url(), 20)).toEqual(new Set(cluster.replicas.map((r) => r.port)));
  });

  test("its writes still go to the primary", async () => {
    const sql = postgres(tp.url({ user: AUTH_USERS.md5.user, password: AUTH_USERS.md5.password }), { max: 1, onnotice: () => {} });
    try {
      // txid_current() must run on the primary (it assigns a transaction id).
      const [row] = await sql.unsafe<{ port: number; standby: boolean }[]>("select inet_server_port() as port, pg_is_in_recovery() as standby, txid_current() > 0 as w").simple();
      expect(row).toMatchObject({ port: tp.cluster.primary.port, standby: false });
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});
