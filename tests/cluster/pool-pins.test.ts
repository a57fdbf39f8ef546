// Invariant: with transaction pooling, session-scoped features keep working because the client keeps its server
// connection (LISTEN/NOTIFY — every notification delivered, in order —, a WITH HOLD cursor, a session advisory lock,
// a temp table, SQL PREPARE) while other clients go on using the rest of the pool; and once the pinned client
// disconnects, the next client on that same server connection sees none of it — no temp table, no listener, no
// advisory lock, no cursor, no statement.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { AUTH_USERS } from "../support/cluster.ts";
import { ownDatabase, waitFor, type OwnDatabase } from "../support/pool-db.ts";
import { exchange, rawLogin } from "../support/pool-raw.ts";
import { cstrings, dataRow, errorOf } from "../support/raw-client.ts";
import { query, terminate } from "../support/wire-frames.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import type { TestProxy } from "../support/proxy.ts";

let db: OwnDatabase;
let tp: TestProxy;

beforeAll(async () => {
  tp = await startPoolProxy({ mode: "transaction", size: 2, checkout_timeout: "3s" });
  db = await ownDatabase(tp.cluster, "pool_pins");
});
afterAll(async () => {
  await tp?.stop();
  await db?.drop();
});

const client = (port: number) => postgres(`postgres://postgres:${tp.cluster.password}@127.0.0.1:${port}/${db.name}`, { max: 1, onnotice: () => {} });
const pidOf = async (sql: postgres.Sql) => (await sql`select pg_backend_pid() as pid`)[0]!.pid as number;

/** Runs `n` short statements on a fresh client, so the unpinned part of the pool is demonstrably in use. */
async function others(n: number): Promise<number[]> {
  const sql = client(tp.port);
  try {
    const pids: number[] = [];
    for (let i = 0; i < n; i++) pids.push(await pidOf(sql));
    return pids;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

describe("pool of 2: a pinned client keeps its connection, the others share the rest", () => {
  test("LISTEN through pgroute receives NOTIFY sent by another client through pgroute", async () => {
    const listener = client(tp.port);
    const notifier = client(tp.port);
    try {
      const got: string[] = [];
      // postgres.js runs LISTEN on a connection of its own and keeps it open.
      await listener.listen("pool_pins_chan", (payload) => got.push(payload));
      for (let i = 0; i < 5; i++) await notifier`select pg_notify('pool_pins_chan', ${`hello ${i}`})`;
      await notifier.unsafe("notify pool_pins_chan, 'plain notify'");
      await waitFor("6 notifications", () => got.length, (n) => n >= 6);
      expect(got).toEqual(["hello 0", "hello 1", "hello 2", "hello 3", "hello 4", "plain notify"]);
      // Other clients are not starved: they run on the second connection meanwhile, not the listener's.
      const [listening] = await db.admin`select pid from pg_stat_activity where datname = ${db.name} and query ilike 'listen%'`;
      expect(listening).toBeDefined();
      const pids = await others(3);
      expect(new Set(pids).size).toBe(1);
      expect(pids[0]).not.toBe(listening!.pid);
      // And the listener still hears notifications after the others' traffic.
      await notifier.unsafe("notify pool_pins_chan, 'after'");
      await waitFor("the 7th notification", () => got.length, (n) => n >= 7);
      expect(got[6]).toBe("after");
    } finally {
      await listener.end({ timeout: 1 });
      await notifier.end({ timeout: 1 });
    }
  });

  test("no notification is lost while pgroute brings the listener's settings back on its connection", async () => {
    // RESET of a startup setting makes pgroute re-apply that setting (its own, swallowed request) before the
    // listener's next query: a notification the server sends meanwhile is still the listener's.
    const listener = await rawLogin(tp.port, db.name, { options: "-c search_path=public" });
    const notifier = postgres(tp.cluster.url(tp.cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
    const payloads: string[] = [];
    const run = async (sql: string) => {
      for (const m of await exchange(listener, [query(sql)])) if (m.type === "A") payloads.push(cstrings(m.body, 4)[1]!);
      for (const m of listener.drain()) if (m.type === "A") payloads.push(cstrings(m.body, 4)[1]!);
    };
    try {
      await run("listen pins_settings_chan");
      let sent = 0;
      let stop = false;
      const sending = (async () => {
        while (!stop && sent < 2000) await notifier.unsafe(`notify pins_settings_chan, '${sent++}'`);
      })();
      // At least 100 rounds and 200 notifications, at most 400 rounds.
      for (let i = 0; i < 400 && (i < 100 || sent < 200); i++) {
        await run("reset search_path");
        await run("select 1");
      }
      stop = true;
      await sending;
      await waitFor("every notification", async () => (await run("select 1"), payloads.length), (n) => n >= sent, 5000).catch(() => {});
      expect(sent).toBeGreaterThan(0);
      expect(payloads).toEqual(Array.from({ length: sent }, (_, i) => String(i)));
    } finally {
      listener.close();
      await notifier.end({ timeout: 1 });
    }
  });

  test("a WITH HOLD cursor is fetched from across transactions", async () => {
    const sql = client(tp.port);
    try {
      await sql.unsafe("begin; declare c cursor with hold for select g from generate_series(1, 10) g; commit").simple();
      const pid = await pidOf(sql);
      const batches: number[][] = [];
      for (let i = 0; i < 3; i++) {
        await others(2);
        batches.push((await sql.unsafe("fetch 3 from c")).map((r) => r.g as number));
      }
      expect(batches).toEqual([
        [1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
      ]);
      expect(await pidOf(sql)).toBe(pid);
      await sql.unsafe("close c");
    } finally {
      await sql.end({ timeout: 1 });
    }
  });

  test("pg_advisory_lock, then pg_advisory_unlock in a later statement", async () => {
    const holder = client(tp.port);
    const other = client(tp.port);
    try {
      const [locked] = await holder`select pg_advisory_lock(4242) is not null as ok`;
      expect(locked!.ok).toBe(true);
      // Held across statements: another client (on the other connection) cannot take it.
      const [tryOther] = await other`select pg_try_advisory_xact_lock(4242) as got`;
      expect(tryOther!.got).toBe(false);
      const [unlocked] = await holder`select pg_advisory_unlock(4242) as ok`;
      expect(unlocked!.ok).toBe(true);
      const [tryAgain] = await other`select pg_try_advisory_xact_lock(4242) as got`;
      expect(tryAgain!.got).toBe(true);
    } finally {
      await holder.end({ timeout: 1 });
      await other.end({ timeout: 1 });
    }
  });

  test("a temp table and a SQL PREPARE are used across statements", async () => {
    const sql = client(tp.port);
    try {
      await sql.unsafe("create temp table scratch (x int)");
      for (let i = 1; i <= 3; i++) {
        await others(1);
        await sql.unsafe(`insert into scratch values (${i})`);
      }
      await sql.unsafe("prepare sum_scratch as select sum(x)::int as s from scratch");
      await others(1);
      const rows = await sql.unsafe("execute sum_scratch");
      expect(rows.map((r) => ({ ...r }) as Record<string, unknown>)).toEqual([{ s: 6 }]);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});

describe("pool of 1: the next client on the pinned client's connection inherits nothing", () => {
  let one: TestProxy;
  beforeAll(async () => {
    one = await startPoolProxy({ mode: "transaction", size: 1, checkout_timeout: "5s" });
  });
  afterAll(async () => {
    await one?.stop();
  });

  /** What a session can see of its own session-scoped state. */
  async function leftovers(sql: postgres.Sql) {
    const [row] = await sql.unsafe(`
      select pg_backend_pid() as pid,
             to_regclass('pg_temp.leftover') is not null as temp_table,
             (select count(*)::int from pg_listening_channels()) as listening,
             (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as advisory,
             (select count(*)::int from pg_cursors) as cursors,
             (select count(*)::int from pg_prepared_statements where from_sql) as sql_prepared`);
    return { ...row };
  }

  for (const how of ["sends Terminate", "has its socket destroyed"] as const) {
    test(`after a pinned client ${how}`, async () => {
      const pinned = await rawLogin(one.port, db.name);
      const run = async (sql: string) => {
        const replies = await exchange(pinned, [query(sql)]);
        expect(replies.filter((m) => m.type === "E").map((m) => errorOf(m).message)).toEqual([]);
      };
      await run("create temp table leftover (x int)");
      await run("listen leftover_chan");
      await run("select pg_advisory_lock(77)");
      await run("begin; declare hc cursor with hold for select 1; commit");
      await run("prepare leftover_stmt as select 1");
      const [pidRow] = (await exchange(pinned, [query("select pg_backend_pid()")])).filter((m) => m.type === "D");
      const pid = Number(dataRow(pidRow!)[0]);

      if (how === "sends Terminate") pinned.send(terminate());
      pinned.close();
      const next = postgres(`postgres://${AUTH_USERS.trust.user}@127.0.0.1:${one.port}/${db.name}`, { max: 1, onnotice: () => {} });
      try {
        expect(await leftovers(next)).toEqual({ pid, temp_table: false, listening: 0, advisory: 0, cursors: 0, sql_prepared: 0 });
        // The lock is really free, server-wide.
        const [row] = await db.admin`select count(*)::int as n from pg_locks where locktype = 'advisory' and objid = 77`;
        expect(row!.n).toBe(0);
      } finally {
        await next.end({ timeout: 1 });
      }
    });
  }
});
