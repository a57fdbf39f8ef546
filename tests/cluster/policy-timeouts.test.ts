// Invariant: through `pgroute serve`'s Proxy, every statement of a user with a statement_timeout policy runs under
// at most that timeout on the server and gets the server's own 57014 past it — a client's lower value holds, a
// higher one, 0, RESET, SET LOCAL or set_config is capped before anything else runs (and a request that would run
// more statements after raising it is refused), other users sharing the server connection keep their own value;
// a client idle inside a transaction past idle_in_transaction_timeout has it rolled back on the server, its server
// connection freed (pg_stat_activity), and gets 25P03 with ReadyForQuery 'E' until it ends the transaction.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { testCluster } from "../support/cluster.ts";
import { ownDatabase, type OwnDatabase } from "../support/pool-db.ts";
import { column, outcome, policyUser, rawAs, request } from "../support/policy.ts";
import { startTestProxy, testUsers, type TestProxy } from "../support/proxy.ts";
import { dataRow } from "../support/raw-client.ts";
import { eventually } from "../support/wait.ts";
import { concat, serialize } from "../support/wire-frames.ts";

let tp: TestProxy;
let db: OwnDatabase;
const clients: postgres.Sql[] = [];

function client(user: string, extra: postgres.Options<{}> = {}): postgres.Sql {
  const sql = postgres(tp.url({ user, database: db.name }), { max: 1, onnotice: () => {}, ...extra });
  clients.push(sql);
  return sql;
}

const TIMEOUT = { code: "57014", message: "canceling statement due to statement timeout" };

beforeAll(async () => {
  const cluster = await testCluster();
  db = await ownDatabase(cluster, "policy_timeouts");
  const setup = postgres(cluster.url(cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
  try {
    await setup.unsafe("create table accounts (id int primary key, balance int); insert into accounts values (1, 100)");
  } finally {
    await setup.end({ timeout: 1 });
  }
  const p = cluster.primary;
  tp = await startTestProxy({
    nodes: [{ name: p.name, host: p.host, port: p.port, role: "primary" }],
    // One server connection: every client shares it, so settings must follow each client, and a connection held
    // by an idle transaction would block everyone else.
    pool: { mode: "transaction", size: 1, checkout_timeout: "5s" },
    policy: { statement_timeout: "400ms" },
    users: [
      ...testUsers(cluster),
      policyUser(cluster, "capped", { statement_timeout: "300ms" }),
      policyUser(cluster, "defaulted"),
      policyUser(cluster, "unlimited", { statement_timeout: 0 }),
      policyUser(cluster, "idler", { statement_timeout: 0, idle_in_transaction_timeout: "300ms" }),
    ],
  });
});
afterAll(async () => {
  for (const c of clients) await c.end({ timeout: 1 });
  await tp?.stop();
  await db?.drop();
});

describe("statement_timeout policy", () => {
  test("a statement past the policy gets the server's 57014; the global default applies to users without their own", async () => {
    const capped = client("capped");
    expect(await column(capped, "show statement_timeout")).toEqual(["300ms"]);
    expect(await outcome(() => capped`select pg_sleep(1)`)).toEqual(TIMEOUT);
    expect(await column(capped, "select 'still usable'")).toEqual(["still usable"]);
    const defaulted = client("defaulted");
    expect(await column(defaulted, "show statement_timeout")).toEqual(["400ms"]);
    expect(await outcome(() => defaulted`select pg_sleep(1)`)).toEqual(TIMEOUT);
  });

  test("a client's own lower value holds; a higher one, 0, RESET and set_config are capped", async () => {
    const sql = client("capped");
    await sql.unsafe("set statement_timeout = 100");
    expect(await column(sql, "show statement_timeout")).toEqual(["100ms"]);
    expect(await outcome(() => sql`select pg_sleep(0.2)`)).toEqual(TIMEOUT); // under the 300ms cap, over its own 100ms
    for (const raise of ["set statement_timeout = '10min'", "set statement_timeout = 0", "reset statement_timeout", "set statement_timeout to default", "select set_config('statement_timeout', '0', false)"]) {
      await sql.unsafe(raise);
      expect({ raise, shown: await column(sql, "show statement_timeout") }).toEqual({ raise, shown: ["300ms"] });
      expect({ raise, ...(await outcome(() => sql`select pg_sleep(1)`)) }).toEqual({ raise, ...TIMEOUT });
    }
    // By the simple protocol too.
    await sql.unsafe("set statement_timeout = 0").simple();
    expect(await outcome(() => sql.unsafe("select pg_sleep(1)").simple())).toEqual(TIMEOUT);
  });

  test("startup parameters: a lower value holds, 0 is capped", async () => {
    expect(await column(client("capped", { connection: { statement_timeout: 100 } }), "show statement_timeout")).toEqual(["100ms"]);
    const zero = client("capped", { connection: { options: "-c statement_timeout=0" } });
    expect(await column(zero, "show statement_timeout")).toEqual(["300ms"]);
    expect(await outcome(() => zero`select pg_sleep(1)`)).toEqual(TIMEOUT);
  });

  test("inside a transaction, SET LOCAL and SET above the cap are capped for the statements after them", async () => {
    const sql = client("capped");
    for (const raise of ["set local statement_timeout = 0", "set statement_timeout = '1h'"]) {
      const o = await outcome(() =>
        sql.begin(async (tx) => {
          await tx.unsafe(raise);
          expect(await column(tx, "show statement_timeout")).toEqual(["300ms"]);
          await tx`select pg_sleep(1)`;
        }),
      );
      expect({ raise, ...o }).toEqual({ raise, ...TIMEOUT });
    }
    expect(await column(sql, "show statement_timeout")).toEqual(["300ms"]);
  });

  test("a request that raises it and runs more statements after is refused; the last statement may raise it", async () => {
    const sql = client("capped");
    const o = await outcome(() => sql.unsafe("set statement_timeout = 0; select pg_sleep(1)").simple());
    expect(o.code).toBe("42501");
    expect(o.message).toContain('statement_timeout is limited to 300 ms for user "capped"');
    // The same in one extended-protocol batch (two Executes before one Sync).
    const raw = await rawAs(tp.port, "capped", db.name);
    try {
      const batch = [serialize.parse({ text: "set statement_timeout = 0" }), serialize.bind({}), serialize.execute({}), serialize.parse({ text: "select pg_sleep(1)" }), serialize.bind({}), serialize.execute({}), serialize.sync()];
      expect((await request(raw, concat(...batch.map((b) => new Uint8Array(b))))).replies).toEqual(["E:42501", "Z:I"]);
    } finally {
      raw.close();
    }
    await sql.unsafe("select 1; set statement_timeout = 0").simple();
    expect(await outcome(() => sql`select pg_sleep(1)`)).toEqual(TIMEOUT);
  });

  test("users sharing the one server connection keep their own values", async () => {
    const capped = client("capped");
    const unlimited = client("unlimited");
    await capped`select 1`;
    expect(await column(unlimited, "show statement_timeout")).toEqual(["0"]);
    expect(await column(unlimited, "select pg_sleep(0.5)::text")).toEqual([""]);
    expect(await outcome(() => capped`select pg_sleep(1)`)).toEqual(TIMEOUT);
    await unlimited.unsafe("set statement_timeout = '2min'");
    expect(await column(capped, "show statement_timeout")).toEqual(["300ms"]);
    expect(await column(unlimited, "show statement_timeout")).toEqual(["2min"]);
  });
});

describe("idle_in_transaction_timeout", () => {
  /** Backends of the test database on the primary, with their state. */
  const states = async () => (await db.admin`select state from pg_stat_activity where datname = ${db.name} and backend_type = 'client backend'`).map((r) => r.state as string);

  test("the transaction is rolled back and its server connection freed; the client gets 25P03 until ROLLBACK", async () => {
    const raw = await rawAs(tp.port, "idler", db.name);
    try {
      expect((await request(raw, serialize.query("begin"))).replies).toEqual(["C", "Z:T"]);
      expect((await request(raw, serialize.query("update accounts set balance = 0 where id = 1"))).replies).toEqual(["C", "Z:T"]);
      // The row lock is released and the one server connection is free for others: this would otherwise wait.
      await eventually("the idle transaction to be rolled back", async () => !(await states()).includes("idle in transaction"));
      const other = client("unlimited");
      expect(await column(other, "update accounts set balance = balance + 1 where id = 1 returning balance")).toEqual(["101"]);
      // Its next statement — anything but the end of the transaction — fails, and the transaction stays failed.
      const next = await request(raw, serialize.query("select 1"));
      expect(next.replies).toEqual(["E:25P03", "Z:E"]);
      expect(next.error).toBe("idle-in-transaction timeout: pgroute rolled back this transaction after it was idle for more than 300 ms");
      expect((await request(raw, serialize.query("select 2"))).replies).toEqual(["E:25P03", "Z:E"]);
      expect((await request(raw, serialize.query("commit"))).replies).toEqual(["C", "Z:I"]);
      expect((await request(raw, serialize.query("select balance from accounts"))).replies).toEqual(["T", "D", "C", "Z:I"]);
    } finally {
      raw.close();
    }
    expect(await column(client("unlimited"), "select balance from accounts")).toEqual(["101"]);
  });

  test("postgres.js (extended protocol): the failed transaction throws 25P03, its ROLLBACK works, the session goes on", async () => {
    const sql = client("idler");
    const o = await outcome(() =>
      sql.begin(async (tx) => {
        await tx`select 1`;
        await eventually("the idle transaction to be rolled back", async () => !(await states()).includes("idle in transaction"));
        await tx`select 2`;
      }),
    );
    expect(o.code).toBe("25P03");
    expect(await column(sql, "select 'after'")).toEqual(["after"]);
    // A named statement parsed while the transaction was failed (postgres.js prepares its ROLLBACK) still works.
    await sql.begin((tx) => tx`select 1`);
  });

  test("a long statement inside a transaction is not idleness", async () => {
    const sql = client("idler");
    const rows = await sql.begin(async (tx) => {
      await tx`select pg_sleep(0.6)`;
      return tx`select 'done' as r`;
    });
    expect(rows[0]!.r).toBe("done");
  });

  test("session pooling: rolled back on the client's own connection, which it keeps", async () => {
    const p = tp.cluster.primary;
    const sp = await startTestProxy({
      nodes: [{ name: p.name, host: p.host, port: p.port, role: "primary" }],
      pool: { mode: "session" },
      users: [...testUsers(tp.cluster), policyUser(tp.cluster, "idler", { idle_in_transaction_timeout: "300ms" })],
    });
    const raw = await rawAs(sp.port, "idler", db.name);
    const pid = async () => {
      raw.send(new Uint8Array(serialize.query("select pg_backend_pid()")));
      const row = (await raw.readUntil("Z")).find((m) => m.type === "D");
      return dataRow(row!)[0];
    };
    try {
      await request(raw, serialize.query("begin"));
      const before = await pid();
      await eventually("the idle transaction to be rolled back", async () => !(await states()).includes("idle in transaction"));
      expect((await request(raw, serialize.query("select 1"))).replies).toEqual(["E:25P03", "Z:E"]);
      expect((await request(raw, serialize.query("rollback"))).replies).toEqual(["C", "Z:I"]);
      expect(await pid()).toBe(before);
    } finally {
      raw.close();
      await sp.stop();
    }
  });
});
