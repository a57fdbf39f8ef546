// Invariant: every request a transaction-pooled session completes is reported once to the proxy's observers, with
// the node that actually answered it (the one `inet_server_port()` names), whether it was a read or a write, its
// normalized statement, and whether it failed — for the simple protocol, the extended protocol (Sync and
// Flush-then-Sync) and a read retried on the primary after a replica refused it (reported once, for the primary).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import type { RequestSample } from "../../src/cluster/observe.ts";
import type { NodeConfig } from "../../src/config/types.ts";
import { AUTH_USERS, testCluster } from "../support/cluster.ts";
import { RawClient } from "../support/raw-client.ts";
import { clusterNodes, startTestProxy, type TestProxy } from "../support/proxy.ts";
import { concat, serialize } from "../support/wire-frames.ts";

let tp: TestProxy;
let sql: postgres.Sql;
const seen: { node: NodeConfig; sample: RequestSample }[] = [];

beforeAll(async () => {
  tp = await startTestProxy({ nodes: clusterNodes(await testCluster()), pool: { mode: "transaction", size: 2 } });
  tp.proxy.observers.add({ request: (node, sample) => seen.push({ node, sample }) });
  sql = postgres(tp.url(), { max: 1, onnotice: () => {} });
  await sql`select 1`; // postgres.js looks up array types on its first connection: not part of any test
});
afterAll(async () => {
  await sql?.end({ timeout: 1 });
  await tp?.stop();
});

/** The samples reported while `run` ran (reports reach observers in batches: the queue is handed on first). */
async function observed(run: () => Promise<unknown>): Promise<{ node: NodeConfig; sample: RequestSample }[]> {
  tp.proxy.observers.flush();
  const from = seen.length;
  await run();
  tp.proxy.observers.flush();
  return seen.slice(from);
}

describe("request observers", () => {
  test("a simple-protocol read is reported once, for the replica that ran it", async () => {
    let port = 0;
    const got = await observed(async () => {
      const rows = await sql.unsafe<{ port: number }[]>("select inet_server_port() as port /* where */").simple();
      port = rows[0]!.port;
    });
    expect(got.length).toBe(1);
    const { node, sample } = got[0]!;
    expect(node.port).toBe(port);
    expect(tp.cluster.replicas.some((r) => r.port === port)).toBe(true);
    expect(sample).toMatchObject({ target: "replica", kind: "read", reason: "read_only", failed: false, fingerprint: "select inet_server_port() as port" });
    expect(sample.ms).toBeGreaterThan(0);
  });

  test("a write and a failing statement are reported for the primary, the failure as failed", async () => {
    const got = await observed(async () => {
      await sql.unsafe("create temp table if not exists obs_t (id int)").simple().catch(() => {});
      await sql.unsafe("select 1/0").simple().catch((e: postgres.PostgresError) => expect(e.code).toBe("22012"));
    });
    expect(got.length).toBe(2);
    expect(got[0]!.node.port).toBe(tp.cluster.primary.port);
    expect(got[0]!.sample).toMatchObject({ target: "primary", kind: "write", failed: false });
    expect(got[1]!.sample).toMatchObject({ kind: "read", failed: true, fingerprint: "select ?/?" });
  });

  test("the extended protocol: one report per Sync, a Flush-ended batch reported with the Sync after it", async () => {
    const c = await RawClient.connect(tp.port, tp.host);
    await c.loginTrust({ user: AUTH_USERS.trust.user, database: "postgres" });
    const run = (text: string) => [serialize.parse({ text }), serialize.bind({ values: ["1"] }), serialize.describe({ type: "P" }), serialize.execute({})];
    try {
      const got = await observed(async () => {
        c.send(concat(...run("select inet_server_port() where $1::int > 0"), serialize.sync()));
        await c.readUntil("Z");
        c.send(concat(...run("select 42 where $1::int > 0"), serialize.flush()));
        await c.readUntil("C"); // CommandComplete: answered before any Sync
        c.send(serialize.sync());
        await c.readUntil("Z");
      });
      expect(got.map((g) => g.sample.fingerprint)).toEqual(["select inet_server_port() where $1::int > ?", "select ? where $1::int > ?"]);
      expect(got.every((g) => g.sample.kind === "read" && !g.sample.failed)).toBe(true);
    } finally {
      c.close();
    }
  });

  test("a read a replica refuses (25006) is reported once, for the primary where it ran", async () => {
    await sql.unsafe("create table if not exists obs_w (id int)");
    const got = await observed(async () => {
      // Classified as a read (the function is not known to write), but it writes: the replica answers 25006.
      await sql.unsafe("create or replace function obs_touch() returns int language sql as 'insert into obs_w values (1) returning 1'");
      await sql.unsafe("select obs_touch()").simple();
    });
    const touch = got.filter((g) => g.sample.fingerprint.startsWith("select obs_touch"));
    expect(touch.length).toBe(1);
    expect(touch[0]!.node.port).toBe(tp.cluster.primary.port);
    await sql.unsafe("drop function obs_touch(); drop table obs_w");
  });
});
