// Invariant: a user with role = "read-only", through `pgroute serve`'s Proxy in front of a primary + 2 replicas,
// gets ERROR 25006 from pgroute itself (its message names the user) for a write in any form — simple query,
// extended protocol (postgres.js, node-postgres), inside BEGIN (which then fails as in Postgres), multi-statement,
// writable CTE, nextval(), SELECT FOR UPDATE, COPY FROM, DO, CALL, functions not known read-only, SQL PREPARE of a
// write, BEGIN READ WRITE, turning default_transaction_read_only off — and nothing changes on any server; its reads
// run on replicas (the primary when none is configured), SETs and reads work, in transaction and session pooling.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { waitForReplay, type DevCluster } from "../../src/devcluster/index.ts";
import { testCluster } from "../support/cluster.ts";
import { ownDatabase, type OwnDatabase } from "../support/pool-db.ts";
import { column, outcome, policyUser, rawAs, request } from "../support/policy.ts";
import { clusterNodes, startTestProxy, testUsers, type TestProxy } from "../support/proxy.ts";
import { concat, frame, serialize } from "../support/wire-frames.ts";

let tp: TestProxy;
let db: OwnDatabase;
let reader: postgres.Sql;
let replicaPorts: number[];

const READ_ONLY = /^pgroute: user "reader" is read-only: /;

function proxyConfig(cluster: DevCluster, mode: "transaction" | "session", nodes: Record<string, unknown>[]) {
  return {
    nodes,
    pool: { mode },
    users: [
      ...testUsers(cluster),
      policyUser(cluster, "reader", { role: "read-only" }),
      policyUser(cluster, "reader_primary", { role: "read-only", target: "primary" }),
    ],
    // sneaky_write is listed as read-only by mistake: the server's read-only transaction still stops it.
    routing: { read_functions: ["ro_count", "sneaky_write"] },
  };
}

beforeAll(async () => {
  const cluster = await testCluster();
  tp = await startTestProxy(proxyConfig(cluster, "transaction", clusterNodes(cluster)));
  db = await ownDatabase(tp.cluster, "policy_ro");
  const setup = postgres(tp.cluster.url(tp.cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
  try {
    await setup.unsafe(`
      create table items (id int);
      create sequence seq;
      create function ro_count() returns bigint language sql as 'select count(*) from items';
      create function sneaky_write() returns int language sql as 'insert into items values (99) returning id';
      create function write_fn() returns int language sql as 'insert into items values (98) returning id';
      create procedure add_item() language sql as 'insert into items values (97)';`);
  } finally {
    await setup.end({ timeout: 1 });
  }
  await waitForReplay(tp.cluster);
  replicaPorts = tp.cluster.replicas.map((r) => r.port);
  reader = postgres(tp.url({ user: "reader", database: db.name }), { max: 1, onnotice: () => {} });
});
afterAll(async () => {
  await reader?.end({ timeout: 1 });
  await tp?.stop();
  await db?.drop();
});

/** Nothing a refused write could have done happened on the primary. */
async function unchanged(): Promise<void> {
  expect(await column(db.admin, `select count(*) from pg_stat_activity where datname = '${db.name}' and wait_event_type = 'Lock'`)).toEqual(["0"]);
  const direct = postgres(tp.cluster.url(tp.cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
  try {
    expect(await column(direct, "select count(*) from items")).toEqual(["0"]);
    expect(await column(direct, "select is_called from seq")).toEqual(["false"]);
    expect(await column(direct, "select count(*) from pg_class where relname in ('made', 'copied')")).toEqual(["0"]);
  } finally {
    await direct.end({ timeout: 1 });
  }
}

describe("read-only role, transaction pooling", () => {
  test("reads run on a replica; BEGIN starts a read-only transaction there; the server runs it read-only too", async () => {
    const [row] = await reader`select inet_server_port() as port, current_setting('default_transaction_read_only') as ro`;
    expect(replicaPorts).toContain(row!.port);
    expect(row!.ro).toBe("on");
    const inTx = await reader.begin((tx) => tx`select inet_server_port() as port, current_setting('transaction_read_only') as ro`);
    expect(replicaPorts).toContain(inTx[0]!.port);
    expect(inTx[0]!.ro).toBe("on");
  });

  test("a write in every form gets pgroute's 25006 and changes nothing", async () => {
    const node = new pg.Client({ connectionString: tp.url({ user: "reader", database: db.name }) });
    await node.connect();
    try {
      const attempts: [string, () => Promise<unknown>][] = [
        ["simple query", () => reader.unsafe("insert into items values (1)").simple()],
        ["extended protocol (postgres.js, prepared)", () => reader`insert into items values (${1})`],
        ["extended protocol (node-postgres)", () => node.query("insert into items values ($1)", [1])],
        ["multi-statement", () => reader.unsafe("select 1; insert into items values (2); select 2").simple()],
        ["writable CTE", () => reader.unsafe("with d as (insert into items values (3) returning *) select * from d")],
        ["nextval()", () => reader`select nextval('seq')`],
        ["SELECT FOR UPDATE", () => reader`select * from items for update`],
        ["SELECT FOR SHARE in a subquery", () => reader`select * from (select * from items for share) s`],
        ["COPY FROM", () => reader.unsafe("copy items from stdin").simple()],
        ["DO block", () => reader.unsafe("do $$ begin insert into items values (4); end $$")],
        ["CALL", () => reader`call add_item()`],
        ["a function not known to be read-only", () => reader`select write_fn()`],
        ["SQL PREPARE of a write", () => reader.unsafe("prepare w as insert into items values (5)").simple()],
        ["BEGIN READ WRITE", () => reader.unsafe("begin read write").simple()],
        ["START TRANSACTION READ WRITE", () => reader.unsafe("start transaction isolation level read committed, read write")],
        ["SET default_transaction_read_only = off", () => reader.unsafe("set default_transaction_read_only = off")],
        ["set_config(default_transaction_read_only)", () => reader`select set_config('default_transaction_read_only', 'off', false)`],
        ["SET SESSION CHARACTERISTICS … READ WRITE", () => reader.unsafe("set session characteristics as transaction read write")],
        ["CREATE TABLE", () => reader.unsafe("create table made (x int)")],
        ["SELECT INTO", () => reader.unsafe("select * into copied from items")],
        ["TRUNCATE", () => reader.unsafe("truncate items")],
        ["EXPLAIN ANALYZE of a DELETE", () => reader.unsafe("explain analyze delete from items")],
        ["hidden behind a comment and a replica hint", () => reader.unsafe("/* select 1; */ /* pgroute: replica */ DELETE FROM items")],
        ["quoted identifiers and odd case", () => reader.unsafe(`InSeRt InTo "items" VALUES (6)`)],
        ["advisory lock", () => reader`select pg_advisory_lock(1)`],
      ];
      for (const [label, run] of attempts) {
        const o = await outcome(run);
        expect({ label, ...o, message: READ_ONLY.test(o.message) ? "pgroute's" : o.message }).toEqual({ label, code: "25006", message: "pgroute's" });
      }
      // The refused PREPARE created nothing: its EXECUTE gets the server's own error.
      expect(await outcome(() => reader.unsafe("execute w").simple())).toEqual({ code: "26000", message: 'prepared statement "w" does not exist' });
    } finally {
      await node.end();
    }
    await unchanged();
  });

  test("inside a transaction a refused write fails the transaction, as an error does in Postgres", async () => {
    const raw = await rawAs(tp.port, "reader", db.name);
    try {
      expect((await request(raw, serialize.query("begin"))).replies).toEqual(["C", "Z:T"]);
      expect((await request(raw, serialize.query("select 1"))).replies).toEqual(["T", "D", "C", "Z:T"]);
      const refused = await request(raw, serialize.query("delete from items"));
      expect(refused.replies).toEqual(["E:25006", "Z:E"]);
      expect(refused.error).toMatch(READ_ONLY);
      expect((await request(raw, serialize.query("select 1"))).replies).toEqual(["E:25P02", "Z:E"]);
      expect((await request(raw, serialize.query("rollback"))).replies).toEqual(["C", "Z:I"]);
      // SET TRANSACTION READ WRITE inside a transaction, too.
      await request(raw, serialize.query("begin"));
      expect((await request(raw, serialize.query("set transaction read write"))).replies).toEqual(["E:25006", "Z:E"]);
      expect((await request(raw, serialize.query("rollback"))).replies).toEqual(["C", "Z:I"]);
    } finally {
      raw.close();
    }
    await unchanged();
  });

  test("extended protocol: a write is refused at its Parse, in place — what came before runs, the rest is skipped", async () => {
    const raw = await rawAs(tp.port, "reader", db.name);
    try {
      const batch = concat(
        new Uint8Array(serialize.parse({ text: "select 1" })),
        new Uint8Array(serialize.bind({})),
        new Uint8Array(serialize.execute({})),
        new Uint8Array(serialize.parse({ name: "w", text: "delete from items" })),
        new Uint8Array(serialize.bind({ statement: "w" })),
        new Uint8Array(serialize.execute({})),
        new Uint8Array(serialize.sync()),
      );
      const r = await request(raw, batch);
      expect(r.replies).toEqual(["1", "2", "D", "C", "E:25006", "Z:I"]);
      expect(r.error).toMatch(READ_ONLY);
      // The refused statement was never created: binding it later fails as for any unknown name.
      const later = await request(raw, concat(new Uint8Array(serialize.bind({ statement: "w" })), new Uint8Array(serialize.execute({})), new Uint8Array(serialize.sync())));
      expect(later.replies).toEqual(["E:26000", "Z:I"]);
      // Parse alone (a prepare) of a write, without executing it: refused too.
      const prepare = await request(raw, concat(new Uint8Array(serialize.parse({ name: "p", text: "update items set id = 0" })), new Uint8Array(serialize.describe({ type: "S", name: "p" })), new Uint8Array(serialize.sync())));
      expect(prepare.replies).toEqual(["E:25006", "Z:I"]);
      // A fast-path FunctionCall names a function by OID, which pgroute cannot judge: refused.
      const call = frame("F", new Uint8Array([0, 0, 0x0b, 0xb8, 0, 0, 0, 0, 0, 0]));
      expect((await request(raw, call)).replies).toEqual(["E:42501", "Z:I"]);
    } finally {
      raw.close();
    }
    await unchanged();
  });

  test("reads, SETs, set_config, SQL PREPARE/EXECUTE of a read, cursors and listed read functions all work", async () => {
    await reader.unsafe("set application_name = 'reporting'");
    expect(await column(reader, "select current_setting('application_name')")).toEqual(["reporting"]);
    expect(await column(reader, "select set_config('search_path', 'public', false)")).toEqual(["public"]);
    // The same shapes with other literals are judged again, not taken from a cache.
    expect((await outcome(() => reader.unsafe("select set_config('default_transaction_read_only', 'off', false)"))).code).toBe("25006");
    await reader.unsafe("set default_transaction_read_only = 'on'");
    expect((await outcome(() => reader.unsafe("set default_transaction_read_only = 'off'"))).code).toBe("25006");
    expect(await column(reader, "select ro_count()")).toEqual(["0"]);
    expect(await column(reader, "explain select * from items")).not.toHaveLength(0);
    await reader.unsafe("prepare r as select count(*) from items").simple();
    expect(await column(reader, "execute r")).toEqual(["0"]);
    await reader.unsafe("deallocate r");
    await reader.begin(async (tx) => {
      await tx.unsafe("declare c cursor for select generate_series(1, 3)");
      expect(await column(tx, "fetch 2 from c")).toEqual(["1", "2"]);
    });
    expect(await column(reader, "show default_transaction_read_only")).toEqual(["on"]);
  });

  test("a statement pgroute cannot parse is refused (42601) rather than forwarded", async () => {
    const o = await outcome(() => reader.unsafe("selec 1 frm items").simple());
    expect(o.code).toBe("42601");
    const e = await reader.unsafe("selec 1").simple().catch((err) => err);
    expect(String(e.hint)).toContain('pgroute does not forward statements it cannot parse for user "reader"');
  });

  test("target = primary: reads run on the primary; a writing function listed as read-only is stopped by the server", async () => {
    const sql = postgres(tp.url({ user: "reader_primary", database: db.name }), { max: 1, onnotice: () => {} });
    try {
      expect(await column(sql, "select inet_server_port()")).toEqual([String(tp.cluster.primary.port)]);
      const o = await outcome(() => sql`select sneaky_write()`);
      expect(o).toEqual({ code: "25006", message: "cannot execute INSERT in a read-only transaction" });
      expect((await outcome(() => sql`delete from items`)).message).toMatch(/^pgroute: user "reader_primary" is read-only: /);
    } finally {
      await sql.end({ timeout: 1 });
    }
    await unchanged();
  });
});

describe("read-only role, other setups", () => {
  test("session pooling: the client keeps one replica connection, and writes are refused all the same", async () => {
    const sp = await startTestProxy(proxyConfig(tp.cluster, "session", clusterNodes(tp.cluster)));
    const sql = postgres(sp.url({ user: "reader", database: db.name }), { max: 1, onnotice: () => {} });
    try {
      const ports = await Promise.all([1, 2, 3].map(() => column(sql, "select inet_server_port()")));
      expect(new Set(ports.flat()).size).toBe(1);
      expect(replicaPorts).toContain(Number(ports[0]![0]));
      for (const run of [() => sql.unsafe("insert into items values (1)").simple(), () => sql`insert into items values (${1})`, () => sql`select nextval('seq')`]) {
        const o = await outcome(run);
        expect([o.code, READ_ONLY.test(o.message)]).toEqual(["25006", true]);
      }
      const raw = await rawAs(sp.port, "reader", db.name);
      try {
        await request(raw, serialize.query("begin"));
        expect((await request(raw, serialize.query("update items set id = 1"))).replies).toEqual(["E:25006", "Z:E"]);
        expect((await request(raw, serialize.query("rollback"))).replies).toEqual(["C", "Z:I"]);
      } finally {
        raw.close();
      }
    } finally {
      await sql.end({ timeout: 1 });
      await sp.stop();
    }
    await unchanged();
  });

  test("with no replica configured, reads run on the primary and writes are still refused", async () => {
    const p = tp.cluster.primary;
    const sp = await startTestProxy(proxyConfig(tp.cluster, "transaction", [{ name: p.name, host: p.host, port: p.port, role: "primary" }]));
    const sql = postgres(sp.url({ user: "reader", database: db.name }), { max: 1, onnotice: () => {} });
    try {
      expect(await column(sql, "select inet_server_port()")).toEqual([String(p.port)]);
      expect((await outcome(() => sql`delete from items`)).code).toBe("25006");
    } finally {
      await sql.end({ timeout: 1 });
      await sp.stop();
    }
    await unchanged();
  });
});
