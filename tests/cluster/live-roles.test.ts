// Invariant: an operator changes nodes under load with no client error for work that was not on the node: DRAIN
// of a replica while clients read and write — nobody gets an error, new reads stop landing on it, a read-only
// transaction already running there finishes there; ENABLE brings reads back. ROLE of a replica set to primary
// (under reads) takes it out of the reads without an error; `auto` gives it back. (The admin API's and console's
// answers and permissions are tests/cluster/admin-control.test.ts's; here the same actions run under load.)
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { drain, enable, setRole } from "../../src/admin/actions.ts";
import { clusterNodes, startTestProxy, type TestProxy } from "../support/proxy.ts";
import { APP_DATABASE, testCluster } from "../support/cluster.ts";
import { waitFor } from "../support/wait.ts";

let tp: TestProxy;

beforeAll(async () => {
  tp = await startTestProxy({ nodes: clusterNodes(await testCluster()), pool: { mode: "transaction", size: 10 } });
  const sql = postgres(tp.url({ database: APP_DATABASE }), { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe("create table if not exists live_roles (id serial primary key, at timestamptz default now())").simple();
  } finally {
    await sql.end();
  }
});
afterAll(async () => {
  await tp?.stop();
});

/** Clients reading (and, with `writers`, writing) in a loop, each on its own connection: the node of every read, every error. */
function load(readers: number, writers: number) {
  const reads: { port: number; at: number }[] = [];
  const errors: string[] = [];
  let running = true;
  const deadline = Date.now() + 60_000; // bounded whatever happens
  const clients = Array.from({ length: readers + writers }, () => postgres(tp.url({ database: APP_DATABASE }), { max: 1, onnotice: () => {} }));
  const done = Promise.all(
    clients.map(async (sql, i) => {
      while (running && Date.now() < deadline) {
        try {
          const at = Date.now();
          if (i < readers) reads.push({ port: (await sql.unsafe<{ port: number }[]>("select inet_server_port() as port").simple())[0]!.port, at });
          else await sql.unsafe("insert into live_roles default values").simple();
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    }),
  );
  return {
    reads,
    errors,
    /** The nodes of the reads sent after `t`. */
    since: (t: number) => reads.filter((r) => r.at > t).map((r) => r.port),
    async stop() {
      running = false;
      await done;
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    },
  };
}

describe("live role changes under load", () => {
  test("drain a replica while clients read and write: no errors, no new reads there, its running transaction finishes; enable brings it back", async () => {
    const [r1, r2] = tp.cluster.replicas as [(typeof tp.cluster.replicas)[0], (typeof tp.cluster.replicas)[0]];
    const l = load(6, 2);
    // A read-only transaction on r1 (pgroute sends BEGIN READ ONLY to a replica), kept open across the drain.
    const tx = postgres(tp.url({ database: APP_DATABASE }), { max: 1, onnotice: () => {} });
    try {
      await waitFor("reads on both replicas", () => [...new Set(l.reads.map((r) => r.port))], (s) => s.includes(r1.port) && s.includes(r2.port));
      let txPort = 0;
      await waitFor(
        "a read-only transaction on replica1",
        async () => {
          if (txPort !== 0) await tx.unsafe("rollback").simple();
          await tx.unsafe("begin read only").simple();
          txPort = (await tx.unsafe<{ port: number }[]>("select inet_server_port() as port").simple())[0]!.port;
          return txPort;
        },
        (p) => p === r1.port,
      );
      expect(drain(tp.proxy, r1.name, "test").ok).toBe(true);
      const drainedAt = Date.now();
      await waitFor("reads after the drain", () => l.since(drainedAt).length, (n) => n >= 200, 20_000);
      expect(l.since(drainedAt).filter((p) => p === r1.port)).toEqual([]);
      // The transaction that was on it goes on there and ends normally.
      expect((await tx.unsafe<{ port: number }[]>("select inet_server_port() as port").simple())[0]!.port).toBe(r1.port);
      await tx.unsafe("commit").simple();
      expect(enable(tp.proxy, r1.name, "test").ok).toBe(true);
      const enabledAt = Date.now();
      await waitFor("reads on replica1 again", () => l.since(enabledAt).includes(r1.port), (v) => v, 10_000);
      expect(l.errors).toEqual([]);
    } finally {
      await l.stop();
      await tx.end();
    }
  });

  test("a replica set to primary by hand leaves the reads without an error; auto gives it back", async () => {
    const [r1, r2] = tp.cluster.replicas as [(typeof tp.cluster.replicas)[0], (typeof tp.cluster.replicas)[0]];
    const l = load(6, 0);
    try {
      await waitFor("reads on both replicas", () => [...new Set(l.reads.map((r) => r.port))], (s) => s.includes(r1.port) && s.includes(r2.port));
      expect(setRole(tp.proxy, r1.name, "primary", "test").ok).toBe(true);
      const setAt = Date.now();
      await waitFor("reads after the change", () => l.since(setAt).length, (n) => n >= 200, 20_000);
      expect(l.since(setAt).filter((p) => p === r1.port)).toEqual([]);
      expect(setRole(tp.proxy, r1.name, "auto", "test").ok).toBe(true);
      const autoAt = Date.now();
      await waitFor("reads on replica1 again", () => l.since(autoAt).includes(r1.port), (v) => v, 10_000);
      expect(l.errors).toEqual([]);
    } finally {
      await l.stop();
    }
  });
});
