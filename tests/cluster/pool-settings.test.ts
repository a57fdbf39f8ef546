// Invariant: with transaction pooling and a single server connection shared by two clients, session settings
// never leak — after any step of one client (SET, SET ROLE, set_config(…, false), SET in a rolled-back
// transaction, SET undone by ROLLBACK TO SAVEPOINT, RESET, RESET ALL, DISCARD ALL) the other client sees exactly
// its own values, and the client itself keeps seeing its values in its next transaction, startup settings
// (options=-c search_path=…, application_name) included; a client logging in meanwhile is told (ParameterStatus)
// and gets its own values, and one whose startup setting the server rejects gets the server's own FATAL.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { ownDatabase, type OwnDatabase } from "../support/pool-db.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import type { TestProxy } from "../support/proxy.ts";

let tp: TestProxy;
let db: OwnDatabase;
let A: postgres.Sql;
let B: postgres.Sql;
const ROLE = `pool_canary_${process.pid}`;

/** What a client observes of its session. */
interface Seen {
  search_path: string;
  user: string;
  app: string;
  statement_timeout: string;
  work_mem: string;
  /** The schema an unqualified name resolves to (a table `who` exists in both schemas). */
  who: string;
}

const DEFAULTS = { user: "postgres", statement_timeout: "0", work_mem: "4MB" };
/** What each client should see; updated by each step. */
const expected: Record<"A" | "B", Seen> = {
  A: { ...DEFAULTS, search_path: "canary_a", app: "client-a", who: "a" },
  B: { ...DEFAULTS, search_path: '"$user", public', app: "client-b", who: "public" },
};

async function seen(sql: postgres.Sql): Promise<Seen> {
  const [row] = await sql.unsafe(`
    select current_setting('search_path') as search_path, current_user as "user",
           current_setting('application_name') as app, current_setting('statement_timeout') as statement_timeout,
           current_setting('work_mem') as work_mem, (select w from who) as who`);
  return { ...row } as Seen;
}

/** The other client first (did anything leak?), then the client itself (did its own setting stick?). */
async function check(first: "A" | "B"): Promise<void> {
  const order = first === "A" ? (["A", "B"] as const) : (["B", "A"] as const);
  const got: Record<string, Seen> = {};
  for (const k of order) got[k] = await seen(k === "A" ? A : B);
  // Twice, in the other order, so each client also runs right after the other one's transaction.
  for (const k of [...order].reverse()) expect({ client: k, ...(await seen(k === "A" ? A : B)) }).toEqual({ client: k, ...expected[k] });
  for (const k of order) expect({ client: k, ...got[k]! }).toEqual({ client: k, ...expected[k] });
}

beforeAll(async () => {
  tp = await startPoolProxy({ mode: "transaction", size: 1 });
  db = await ownDatabase(tp.cluster, "pool_settings");
  const setup = postgres(tp.cluster.url(tp.cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
  try {
    await setup.unsafe(`
      create schema canary_a; create schema canary_b;
      create table public.who (w text); insert into public.who values ('public');
      create table canary_a.who (w text); insert into canary_a.who values ('a');
      create table canary_b.who (w text); insert into canary_b.who values ('b');`);
    await db.admin.unsafe(`drop role if exists ${ROLE}`);
    await db.admin.unsafe(`create role ${ROLE}`);
    await db.admin.unsafe(`grant ${ROLE} to postgres`);
    await setup.unsafe(`grant usage on schema canary_a, canary_b to ${ROLE}; grant select on all tables in schema public, canary_a, canary_b to ${ROLE}`);
  } finally {
    await setup.end({ timeout: 1 });
  }
  const url = tp.url({ database: db.name });
  A = postgres(url, { max: 1, onnotice: () => {}, connection: { application_name: "client-a", options: "-c search_path=canary_a" } });
  B = postgres(url, { max: 1, onnotice: () => {}, connection: { application_name: "client-b" } });
});
afterAll(async () => {
  await A?.end({ timeout: 1 });
  await B?.end({ timeout: 1 });
  await tp?.stop();
  await db?.drop();
  const admin = postgres(tp.cluster.url(tp.cluster.primary), { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop role if exists ${ROLE}`).finally(() => admin.end({ timeout: 1 }));
});

describe("two clients alternating on one server connection", () => {
  test("they really share one backend, and each starts with its startup settings", async () => {
    const [a] = await A`select pg_backend_pid() as pid`;
    const [b] = await B`select pg_backend_pid() as pid`;
    expect(a!.pid).toBe(b!.pid);
    await check("A");
  });

  test("SET search_path", async () => {
    await A.unsafe("set search_path = canary_b");
    expected.A.search_path = "canary_b";
    expected.A.who = "b";
    await check("B");
  });

  test("SET ROLE", async () => {
    await B.unsafe(`set role ${ROLE}`);
    expected.B.user = ROLE;
    await check("A");
  });

  test("set_config('application_name', 'x', false)", async () => {
    await A.unsafe("select set_config('application_name', 'x', false)");
    expected.A.app = "x";
    await check("B");
  });

  test("SET statement_timeout inside a rolled-back transaction reverts", async () => {
    await B.unsafe("begin");
    await B.unsafe("set statement_timeout = '5s'");
    const [inside] = await B.unsafe("show statement_timeout");
    expect(inside!.statement_timeout).toBe("5s");
    await B.unsafe("rollback");
    await check("B");
    // And as one simple-query message.
    await B.unsafe("begin; set statement_timeout = '6s'; rollback").simple();
    await check("A");
  });

  test("SAVEPOINT s; SET …; ROLLBACK TO s; COMMIT reverts only what followed the savepoint", async () => {
    await A.unsafe("begin");
    await A.unsafe("set work_mem = '5MB'");
    await A.unsafe("savepoint s");
    await A.unsafe("set statement_timeout = '7s'");
    await A.unsafe("rollback to s");
    await A.unsafe("commit");
    expected.A.work_mem = "5MB";
    await check("B");
  });

  test("SET inside a committed transaction sticks", async () => {
    await B.unsafe("begin; set statement_timeout = '8s'; commit").simple();
    expected.B.statement_timeout = "8s";
    await check("A");
  });

  test("SET through the extended protocol as a prepared statement, reused later inside a rolled-back transaction", async () => {
    // postgres.js sends a tagged template as Parse/Describe/Bind/Execute/Sync of a named statement, and the next
    // time only Bind/Execute/Sync: what the statement does to the session is known either way.
    await B`set statement_timeout = '9s'`;
    expected.B.statement_timeout = "9s";
    await check("A");
    await B.unsafe("set statement_timeout = '1s'");
    expected.B.statement_timeout = "1s";
    await check("B");
    // A transaction whose error is swallowed, so postgres.js sends COMMIT — which the server answers with ROLLBACK.
    await B.unsafe("begin");
    await B`set statement_timeout = '9s'`;
    const e = await B.unsafe("select 1/0").catch((err) => err);
    expect((e as postgres.PostgresError).code).toBe("22012");
    const [commit] = await B.unsafe("commit").execute();
    expect(commit).toBeUndefined();
    await check("A");
    await B.begin(async (tx) => {
      await tx`set statement_timeout = '9s'`;
      throw new Error("roll back");
    }).catch(() => {});
    await check("B");
  });

  test("RESET returns to the startup value, not the server default", async () => {
    await A.unsafe("reset search_path");
    expected.A.search_path = "canary_a";
    expected.A.who = "a";
    await check("B");
    await A.unsafe("reset application_name");
    expected.A.app = "client-a";
    await check("A");
  });

  test("RESET ROLE", async () => {
    await B.unsafe("reset role");
    expected.B.user = "postgres";
    await check("A");
  });

  test("RESET ALL keeps the startup settings", async () => {
    await A.unsafe("set search_path = canary_b; select set_config('application_name', 'y', false)").simple();
    await A.unsafe("reset all");
    expected.A = { ...DEFAULTS, search_path: "canary_a", app: "client-a", who: "a" };
    await check("B");
  });

  test("a client logging in after another changed reported settings gets its own ParameterStatus values", async () => {
    await A.unsafe("set datestyle = 'German'; set timezone = 'Asia/Tokyo'; set intervalstyle = 'sql_standard'").simple();
    const reported: Record<string, string> = {};
    const C = postgres(tp.url({ database: db.name }), {
      max: 1,
      onnotice: () => {},
      onparameter: (k, v) => {
        reported[k] = String(v);
      },
      connection: { TimeZone: "UTC" },
    });
    try {
      const [row] = await C.unsafe("select current_setting('DateStyle') as ds, current_setting('TimeZone') as tz, current_setting('IntervalStyle') as ivs");
      // What the server says and what the client was told at login (and since) agree, and are C's own.
      expect({ ...row }).toEqual({ ds: "ISO, MDY", tz: "UTC", ivs: "postgres" });
      expect({ ds: reported.DateStyle, tz: reported.TimeZone, ivs: reported.IntervalStyle, app: reported.application_name }).toEqual({
        ds: "ISO, MDY",
        tz: "UTC",
        ivs: "postgres",
        app: "postgres.js", // postgres.js's own default startup application_name
      });
      // A still has its own.
      const [a] = await A.unsafe("select current_setting('DateStyle') as ds, current_setting('TimeZone') as tz");
      expect({ ...a }).toEqual({ ds: "German, DMY", tz: "Asia/Tokyo" });
    } finally {
      await C.end({ timeout: 1 });
    }
    await A.unsafe("reset datestyle; reset timezone; reset intervalstyle").simple();
    await check("B");
  });

  test("a startup setting the server rejects: the client gets the server's own FATAL, the shared connection is unharmed", async () => {
    const bad: Record<string, string>[] = [{ options: "-c statement_timeout=abc" }, { options: "-c no_such_setting=1" }, { application_name: "ok", DateStyle: "Bogus" }];
    for (const connection of bad) {
      const outcome = async (url: string) => {
        const sql = postgres(url, { max: 1, onnotice: () => {}, connection });
        try {
          return await sql`select 1`.then(
            () => "logged in",
            (e: postgres.PostgresError) => `${e.severity} ${e.code} ${e.message}`,
          );
        } finally {
          await sql.end({ timeout: 1 });
        }
      };
      const direct = await outcome(tp.cluster.url(tp.cluster.primary, { database: db.name }));
      expect(direct).toStartWith("FATAL ");
      expect(await outcome(tp.url({ database: db.name }))).toBe(direct);
    }
    await check("A");
  });

  test("DISCARD ALL", async () => {
    await B.unsafe(`set role ${ROLE}; set search_path = canary_b; set work_mem = '6MB'`).simple();
    expected.B = { ...expected.B, user: ROLE, search_path: "canary_b", work_mem: "6MB", who: "b" };
    await check("A");
    await B.unsafe("discard all");
    expected.B = { ...DEFAULTS, search_path: '"$user", public', app: "client-b", who: "public" };
    await check("B");
  });
});
