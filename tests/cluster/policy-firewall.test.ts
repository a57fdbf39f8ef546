// Invariant: firewall rules, enforced by `pgroute serve`'s Proxy against a real cluster, deny exactly what they
// describe — by statement type, DELETE/UPDATE without WHERE, SELECT without WHERE or LIMIT on a table the server's
// statistics say is big (re-judged when the sizes are reloaded), SELECT * on a wide table, listed tables and
// functions — with ERROR 42501 naming the rule, the statement never reaching a server, and the session usable
// after; no comment, quoting form, case, multi-statement string, extended-protocol Parse (earlier or in the same
// batch), SQL PREPARE, EXPLAIN ANALYZE or CTE gets around a rule; `log` rules log and let the statement run;
// users a rule does not name are not affected; session pooling enforces the same rules.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { waitForReplay } from "../../src/devcluster/index.ts";
import { createLogger } from "../../src/log.ts";
import { testCluster } from "../support/cluster.ts";
import { ownDatabase, type OwnDatabase } from "../support/pool-db.ts";
import { column, outcome, policyUser, rawAs, request } from "../support/policy.ts";
import { clusterNodes, startTestProxy, testUsers, type TestProxy } from "../support/proxy.ts";
import { eventually } from "../support/wait.ts";
import { concat, serialize } from "../support/wire-frames.ts";

let tp: TestProxy;
let db: OwnDatabase;
let guarded: postgres.Sql;
const logLines: string[] = [];

const RULES = [
  { name: "no-ddl", kind: "statement", statements: ["DROP", "truncate", "ALTER SYSTEM", "DO"], message: "ask the DBA team", users: ["guarded"] },
  { name: "where-required", kind: "missing_where", users: ["guarded"] },
  { name: "no-full-scans", kind: "unbounded_select", min_rows: 1000, users: ["guarded"] },
  { name: "no-wide-star", kind: "select_star", max_columns: 10, users: ["guarded"] },
  { name: "secrets", kind: "tables", tables: ["secrets"], users: ["guarded"] },
  { name: "no-terminate", kind: "functions", functions: ["pg_terminate_backend"], users: ["guarded"] },
  { name: "audit", kind: "tables", tables: ["audited"], action: "log", users: ["guarded"] },
];

function config(cluster: Awaited<ReturnType<typeof testCluster>>, mode: "transaction" | "session") {
  return {
    nodes: clusterNodes(cluster),
    pool: { mode },
    users: [...testUsers(cluster), policyUser(cluster, "guarded"), policyUser(cluster, "free")],
    firewall: { stats_interval: "200ms", rules: RULES },
  };
}

beforeAll(async () => {
  const cluster = await testCluster();
  db = await ownDatabase(cluster, "policy_fw");
  const setup = postgres(cluster.url(cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
  try {
    await setup.unsafe(`
      create table big as select g as id, g % 10 as k from generate_series(1, 5000) g;
      create table small as select g as id from generate_series(1, 10) g;
      create table grows (id int); insert into grows values (1);
      create table wide (${Array.from({ length: 12 }, (_, i) => `c${i} int`).join(", ")});
      create table secrets (s text); insert into secrets values ('s3cr3t');
      create table audited (a int); insert into audited values (1);
      create table victim (v int); insert into victim values (1), (2);
      create schema other; create table other.small as select 1 as id;
      analyze;`);
  } finally {
    await setup.end({ timeout: 1 });
  }
  await waitForReplay(cluster);
  const cfg = config(cluster, "transaction");
  tp = await startTestProxy(cfg, createLogger({ level: "info", format: "text" }, (l) => logLines.push(l)));
  guarded = postgres(tp.url({ user: "guarded", database: db.name }), { max: 1, onnotice: () => {} });
});
afterAll(async () => {
  await guarded?.end({ timeout: 1 });
  await tp?.stop();
  await db?.drop();
});

/** The rule that denied `run` (from its 42501 message), or the outcome's code when none did. */
async function deniedBy(run: () => Promise<unknown>): Promise<string> {
  const o = await outcome(run);
  const m = /^denied by pgroute firewall rule "([^"]+)"/.exec(o.message);
  return o.code === "42501" && m ? m[1]! : `${o.code}${o.code === "ok" ? "" : `: ${o.message}`}`;
}

/** The victim table is intact on the primary (no denied statement reached a server). */
async function victimIntact(): Promise<void> {
  const direct = postgres(tp.cluster.url(tp.cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
  try {
    expect(await column(direct, "select count(*) from victim")).toEqual(["2"]);
  } finally {
    await direct.end({ timeout: 1 });
  }
}

describe("firewall rules through pgroute", () => {
  test("by statement type: every spelling of a DROP is denied with the rule's name and message", async () => {
    const e = await guarded.unsafe("drop table victim").catch((err) => err);
    expect([e.code, e.message, e.detail]).toEqual(["42501", 'denied by pgroute firewall rule "no-ddl": ask the DBA team', "DROP TABLE"]);
    const forms = [
      "DROP TABLE victim",
      "/* a comment */ DrOp /* in the middle */ TaBlE victim",
      "-- a line comment\ndrop table victim",
      'drop table "victim"',
      'drop table public."victim"',
      'drop table U&"v\\0069ctim"',
      "select 1; drop table victim",
      "select 1; select 2;\n\tdrop table victim; select 3",
      "drop table if exists nothing_here, victim cascade",
      "truncate victim",
      "TRUNCATE TABLE ONLY victim",
      "alter system set work_mem = '1GB'",
      "do $$ begin delete from victim; end $$",
      "DO LANGUAGE plpgsql $body$ begin perform 1; end $body$",
    ];
    for (const sql of forms) {
      expect({ sql, simple: await deniedBy(() => guarded.unsafe(sql).simple()) }).toEqual({ sql, simple: "no-ddl" });
      if (!sql.includes(";")) expect({ sql, extended: await deniedBy(() => guarded.unsafe(sql)) }).toEqual({ sql, extended: "no-ddl" });
    }
    await victimIntact();
  });

  test("the text of a statement is not a statement: literals and comments that spell a rule are allowed", async () => {
    for (const sql of ["select 'drop table victim'", "select $$truncate victim$$", "select 1 /* ; drop table victim */", "select 1 -- ; truncate victim", `select 1 as "drop table victim"`]) {
      expect({ sql, o: await deniedBy(() => guarded.unsafe(sql).simple()) }).toEqual({ sql, o: "ok" });
    }
  });

  test("DELETE/UPDATE without WHERE, wherever they run: CTE, EXPLAIN ANALYZE, SQL PREPARE", async () => {
    for (const sql of [
      "delete from victim",
      "update victim set v = 0",
      "with d as (delete from victim returning *) select count(*) from d",
      "explain analyze delete from victim",
      "explain (analyze 'off') update victim set v = 0",
      "prepare wipe as delete from victim",
      "select 1; update victim set v = v + 1",
    ]) {
      expect({ sql, o: await deniedBy(() => guarded.unsafe(sql).simple()) }).toEqual({ sql, o: "where-required" });
    }
    expect(await deniedBy(() => guarded`delete from victim where v = ${42}`)).toBe("ok");
    expect(await deniedBy(() => guarded.unsafe("explain delete from victim"))).toBe("ok"); // plain EXPLAIN runs nothing
    await victimIntact();
  });

  test("SELECT without WHERE or LIMIT on a big table (by the server's statistics); bounded or small ones pass", async () => {
    const e = await guarded.unsafe("select * from big").catch((err) => err);
    expect([e.code, e.detail]).toEqual(["42501", "SELECT without WHERE or LIMIT on table big (about 5000 rows, more than 1000)"]);
    for (const sql of ["select count(*) from big", "select * from public.big", "select id from small join big using (id)", "select * from (select * from big) s where id = 1", "select * from big limit all", "select * from small union all select * from big"]) {
      expect({ sql, o: await deniedBy(() => guarded.unsafe(sql)) }).toEqual({ sql, o: "no-full-scans" });
    }
    for (const sql of ["select * from big where id = 1", "select * from big limit 5", "select * from big fetch first 3 rows only", "select * from small", "select * from other.small", "(select id from big union all select id from small) limit 10"]) {
      expect({ sql, o: await deniedBy(() => guarded.unsafe(sql)) }).toEqual({ sql, o: "ok" });
    }
  });

  test("the size rule is judged again when the table-size monitor reloads sizes", async () => {
    expect(await deniedBy(() => guarded`select * from grows`)).toBe("ok");
    const direct = postgres(tp.cluster.url(tp.cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
    try {
      await direct.unsafe("insert into grows select generate_series(1, 3000); analyze grows");
    } finally {
      await direct.end({ timeout: 1 });
    }
    // stats_interval is 200ms: the monitor reloads on its own.
    await eventually("the grown table to be denied", async () => (await deniedBy(() => guarded`select * from grows`)) === "no-full-scans");
  });

  test("SELECT * on a wide table (t.* too); named columns pass", async () => {
    expect(await deniedBy(() => guarded`select * from wide`)).toBe("no-wide-star");
    expect(await deniedBy(() => guarded`select w.* from small s, wide w where s.id = w.c0`)).toBe("no-wide-star");
    expect(await deniedBy(() => guarded`table wide`)).toBe("no-wide-star");
    expect(await deniedBy(() => guarded`select c0, c1 from wide`)).toBe("ok");
    expect(await deniedBy(() => guarded`select s.* from small s, wide w where s.id = w.c0`)).toBe("ok");
  });

  test("listed tables and functions, however they are named or reached", async () => {
    for (const sql of [
      "select * from secrets",
      'select s from public."secrets"',
      "select (select count(*) from secrets)",
      "with x as (select * from secrets) select 1",
      "select 1 from small join secrets on true where small.id = 1",
      "copy secrets to stdout",
      "create view leak as select * from secrets",
      "delete from secrets where s = 'x'",
    ]) {
      expect({ sql, o: await deniedBy(() => guarded.unsafe(sql).simple()) }).toEqual({ sql, o: "secrets" });
    }
    for (const sql of ["select pg_terminate_backend(0)", "select pg_catalog.pg_terminate_backend(0)", 'select "pg_terminate_backend"(0)', "select coalesce(pg_terminate_backend(0), true)"]) {
      expect({ sql, o: await deniedBy(() => guarded.unsafe(sql)) }).toEqual({ sql, o: "no-terminate" });
    }
    expect(await deniedBy(() => guarded.unsafe("select 'secrets', 'pg_terminate_backend'"))).toBe("ok");
  });

  test("extended protocol: denied at Parse — also a statement parsed in an earlier batch can never run", async () => {
    const raw = await rawAs(tp.port, "guarded", db.name);
    try {
      const parseOnly = await request(raw, concat(new Uint8Array(serialize.parse({ name: "d", text: "delete from victim" })), new Uint8Array(serialize.sync())));
      expect(parseOnly.replies).toEqual(["E:42501", "Z:I"]);
      const execLater = await request(raw, concat(new Uint8Array(serialize.bind({ statement: "d" })), new Uint8Array(serialize.execute({})), new Uint8Array(serialize.sync())));
      expect(execLater.replies).toEqual(["E:26000", "Z:I"]);
      // In the middle of a pipeline: what precedes runs, the denied Parse fails in place, the rest is skipped.
      const mixed = await request(
        raw,
        concat(
          ...[serialize.parse({ text: "select 1" }), serialize.bind({}), serialize.execute({}), serialize.parse({ text: "truncate victim" }), serialize.bind({}), serialize.execute({}), serialize.parse({ text: "select 2" }), serialize.bind({}), serialize.execute({}), serialize.sync()].map((b) => new Uint8Array(b)),
        ),
      );
      expect(mixed.replies).toEqual(["1", "2", "D", "C", "E:42501", "Z:I"]);
      expect(mixed.error).toBe('denied by pgroute firewall rule "no-ddl": ask the DBA team');
      // The session goes on.
      expect((await request(raw, serialize.query("select 1"))).replies).toEqual(["T", "D", "C", "Z:I"]);
      // node-postgres, with parameters.
      const node = new pg.Client({ connectionString: tp.url({ user: "guarded", database: db.name }) });
      await node.connect();
      try {
        expect(await deniedBy(() => node.query("update victim set v = $1", [0]))).toBe("where-required");
        expect((await node.query("select $1::int as x", [7])).rows).toEqual([{ x: 7 }]);
      } finally {
        await node.end();
      }
    } finally {
      raw.close();
    }
    await victimIntact();
  });

  test("a denial inside a transaction fails it as an error would, and ROLLBACK ends it", async () => {
    const raw = await rawAs(tp.port, "guarded", db.name);
    try {
      expect((await request(raw, serialize.query("begin"))).replies).toEqual(["C", "Z:T"]);
      expect((await request(raw, serialize.query("update victim set v = v where v = 1"))).replies).toEqual(["C", "Z:T"]);
      expect((await request(raw, serialize.query("delete from victim"))).replies).toEqual(["E:42501", "Z:E"]);
      expect((await request(raw, serialize.query("commit"))).replies).toEqual(["C", "Z:I"]); // tagged ROLLBACK, as in Postgres
    } finally {
      raw.close();
    }
    await victimIntact();
  });

  test("a statement that cannot be parsed is denied for a user under deny rules; others get the server's error", async () => {
    const o = await outcome(() => guarded.unsafe("drop tabel victim").simple());
    expect(o.code).toBe("42601");
    const free = postgres(tp.url({ user: "free", database: db.name }), { max: 1, onnotice: () => {} });
    try {
      expect(await outcome(() => free.unsafe("selec 1").simple())).toEqual({ code: "42601", message: 'syntax error at or near "selec"' });
      // Rules name their users: this one may scan and drop freely.
      expect(await deniedBy(() => free`select * from big`)).toBe("ok");
      expect(await deniedBy(() => free`select * from secrets`)).toBe("ok");
    } finally {
      await free.end({ timeout: 1 });
    }
  });

  test("a log rule logs the match and lets the statement run", async () => {
    logLines.length = 0;
    expect(await column(guarded, "select a from audited")).toEqual(["1"]);
    // Parsed and executed in one batch: one line, for the execution.
    expect(logLines.filter((l) => l.includes("firewall_match"))).toHaveLength(1);
    const line = logLines.find((l) => l.includes("firewall_match"));
    expect(line).toContain("rule=audit");
    expect(line).toContain("user=guarded");
    expect(line).toContain('match="uses table audited"');
  });

  test("session pooling enforces the same rules", async () => {
    const sp = await startTestProxy(config(tp.cluster, "session"));
    const sql = postgres(sp.url({ user: "guarded", database: db.name }), { max: 1, onnotice: () => {} });
    try {
      expect(await deniedBy(() => sql.unsafe("select 1; drop table victim").simple())).toBe("no-ddl");
      expect(await deniedBy(() => sql`delete from victim`)).toBe("where-required");
      expect(await deniedBy(() => sql`select * from big`)).toBe("no-full-scans");
      expect(await column(sql, "select count(*) from victim")).toEqual(["2"]);
    } finally {
      await sql.end({ timeout: 1 });
      await sp.stop();
    }
    await victimIntact();
  });

  test("a rule added by a reload holds for sessions already open", async () => {
    expect(await deniedBy(() => guarded`select count(*) from small`)).toBe("ok");
    const { configFrom } = await import("../../src/config/load.ts");
    const next = configFrom({ ...config(tp.cluster, "transaction"), listen: { host: "127.0.0.1", port: 0 }, log: { level: "error" }, firewall: { rules: [...RULES, { name: "no-small", kind: "tables", tables: ["small"] }] } });
    tp.proxy.reload(next);
    try {
      expect(await deniedBy(() => guarded`select count(*) from small`)).toBe("no-small");
    } finally {
      tp.proxy.reload(tp.config);
    }
  });
});
