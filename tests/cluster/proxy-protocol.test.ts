// Invariant: through pgroute a client sees what the server says, as the server says it — errors with their
// SQLSTATE and fields (and an aborted transaction stays aborted until ROLLBACK), NOTICEs, ParameterStatus,
// NOTIFYs, COPY in both directions (a bad row included), pipelined queries in order — a CancelRequest with
// pgroute's BackendKeyData cancels the running query while one with a wrong secret does nothing, each client
// has a server backend of its own for as long as it stays and leaves no session state behind, and a terminated
// backend's FATAL reaches the client.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { APP_DATABASE, AUTH_USERS } from "../support/cluster.ts";
import { startTestProxy, type TestProxy } from "../support/proxy.ts";
import { RawClient, cstrings, type BackendMessage, dataRow, errorOf, eventually } from "../support/raw-client.ts";
import { cancelRequest, query, serialize } from "../support/wire-frames.ts";

// Bun 1.4.5 applies the preload's setDefaultTimeout to the first test file only; this file sets its own.
setDefaultTimeout(60_000);

const digest = (s: string) => createHash("sha256").update(s).digest("hex");
const copyData = (text: string) => new Uint8Array(serialize.copyData(Buffer.from(text)));

let tp: TestProxy;
let cluster: DevCluster;
/** The primary, straight: for setup, for comparisons and for watching pg_stat_activity. */
let admin: postgres.Sql;

const side = {
  proxy: () => tp.url({ database: APP_DATABASE }),
  direct: () => cluster.url(cluster.primary, { database: APP_DATABASE }),
};
type Side = keyof typeof side;
const SIDES: Side[] = ["proxy", "direct"];

beforeAll(async () => {
  tp = await startTestProxy();
  cluster = tp.cluster;
  admin = postgres(side.direct(), { max: 2, onnotice: () => {} });
});
afterAll(async () => {
  await admin?.end({ timeout: 1 });
  await tp?.stop();
});

let seq = 0;
/** A name unique to this run, for tables, channels and application_names. */
const unique = (prefix: string) => `${prefix}_${process.pid}_${Date.now()}_${++seq}`;

/** The error a promise rejects with; fails if it resolves. */
async function rejection(p: Promise<unknown>): Promise<Record<string, unknown>> {
  try {
    await p;
  } catch (err) {
    return err as Record<string, unknown>;
  }
  throw new Error("expected the query to fail, but it succeeded");
}

/** The fields of a server error a user can see, from a postgres.js or a node-postgres error. */
function fields(e: Record<string, unknown>) {
  return {
    severity: e.severity,
    code: e.code,
    message: e.message,
    detail: e.detail,
    hint: e.hint,
    position: e.position,
    routine: e.routine,
    table: e.table_name ?? e.table,
    constraint: e.constraint_name ?? e.constraint,
  };
}

function pjs(url: string, opts: postgres.Options<{}> = {}): postgres.Sql {
  return postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10, ...opts });
}

async function pgClient(url: string, opts: pg.ClientConfig = {}): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000, ...opts });
  await c.connect();
  return c;
}

/** Waits until the primary runs a statement starting with `prefix` for `application_name`. */
function waitActive(appName: string, prefix: string): Promise<void> {
  return eventually(`"${prefix}" to be running for ${appName}`, async () => {
    const rows = await admin`
      select 1 from pg_stat_activity
      where application_name = ${appName} and state = 'active' and starts_with(query, ${prefix})`;
    return rows.length === 1;
  });
}

// --- errors ------------------------------------------------------------------------------------------------------

describe("errors", () => {
  const FAILING = {
    "42P01 undefined table": "select * from pgroute_no_such_table",
    "22012 division by zero": "select 1 / 0",
  } as const;

  for (const [name, text] of Object.entries(FAILING)) {
    test(`${name}: the same error through pgroute as direct, and the session stays usable`, async () => {
      const code = name.slice(0, 5);
      for (const client of ["postgres.js", "node-postgres"] as const) {
        const errs = {} as Record<Side, ReturnType<typeof fields>>;
        for (const s of SIDES) {
          if (client === "postgres.js") {
            const sql = pjs(side[s]());
            try {
              errs[s] = fields(await rejection(sql.unsafe(text)));
              expect([...(await sql`select 1 as one`)]).toEqual([{ one: 1 }]);
            } finally {
              await sql.end({ timeout: 1 });
            }
          } else {
            const c = await pgClient(side[s]());
            try {
              errs[s] = fields(await rejection(c.query(text)));
              expect((await c.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
            } finally {
              await c.end();
            }
          }
        }
        expect(errs.proxy.code).toBe(code);
        expect(errs.proxy).toEqual(errs.direct);
      }
    });
  }

  test("23505 unique violation carries its detail, table and constraint", async () => {
    const errs = {} as Record<Side, ReturnType<typeof fields>>;
    for (const s of SIDES) {
      const c = await pgClient(side[s]());
      try {
        await c.query("create temp table uniq (id int constraint uniq_pk primary key)");
        await c.query("insert into uniq values (1)");
        errs[s] = fields(await rejection(c.query("insert into uniq values ($1)", [1])));
        expect((await c.query("select count(*)::int as n from uniq")).rows).toEqual([{ n: 1 }]);
      } finally {
        await c.end();
      }
    }
    expect(errs.proxy).toMatchObject({ code: "23505", detail: "Key (id)=(1) already exists.", constraint: "uniq_pk", table: "uniq" });
    expect(errs.proxy).toEqual(errs.direct);
  });

  test("an error inside a transaction gives 25P02 on every statement until ROLLBACK", async () => {
    const c = await pgClient(side.proxy());
    try {
      await c.query("begin");
      expect((await rejection(c.query("select 1 / 0"))).code).toBe("22012");
      for (const text of ["select 1", "select now()"]) {
        const e = await rejection(c.query(text));
        expect(fields(e)).toMatchObject({
          code: "25P02",
          message: "current transaction is aborted, commands ignored until end of transaction block",
        });
      }
      // The extended protocol gets the same answer.
      expect((await rejection(c.query("select $1::int", [1]))).code).toBe("25P02");
      await c.query("rollback");
      expect((await c.query("select 2 as two")).rows).toEqual([{ two: 2 }]);
    } finally {
      await c.end();
    }
  });

  test("postgres.js sees 25P02 after an error in a transaction, and a clean session after ROLLBACK", async () => {
    const sql = pjs(side.proxy());
    try {
      await sql.unsafe("begin");
      expect((await rejection(sql.unsafe("select 1 / 0"))).code).toBe("22012");
      expect((await rejection(sql`select ${1}::int as x`)).code).toBe("25P02");
      await sql.unsafe("rollback");
      expect([...(await sql`select ${3}::int as x`)]).toEqual([{ x: 3 }]);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});

// --- NOTICEs and ParameterStatus -----------------------------------------------------------------------------

describe("NOTICE and ParameterStatus", () => {
  const DO = "do $$ begin raise notice 'hello % from pgroute', 'wörld'; raise warning 'careful' using hint = 'a hint'; end $$";

  test("postgres.js onnotice gets the same notices through pgroute as direct", async () => {
    const got = {} as Record<Side, unknown[]>;
    for (const s of SIDES) {
      const notices: unknown[] = [];
      const sql = pjs(side[s](), { onnotice: (n) => notices.push({ severity: n.severity, code: n.code, message: n.message, hint: n.hint }) });
      try {
        await sql.unsafe(DO);
        got[s] = notices;
      } finally {
        await sql.end({ timeout: 1 });
      }
    }
    expect(got.proxy).toEqual([
      { severity: "NOTICE", code: "00000", message: "hello wörld from pgroute", hint: undefined },
      { severity: "WARNING", code: "01000", message: "careful", hint: "a hint" },
    ]);
    expect(got.proxy).toEqual(got.direct);
  });

  test("node-postgres emits the same 'notice' events through pgroute as direct", async () => {
    const got = {} as Record<Side, unknown[]>;
    for (const s of SIDES) {
      const c = await pgClient(side[s]());
      const notices: unknown[] = [];
      c.on("notice", (n) => notices.push({ severity: n.severity, code: n.code, message: n.message, hint: n.hint }));
      try {
        await c.query(DO);
        // Notices are delivered before the command's result, so they are all here now.
        got[s] = notices;
      } finally {
        await c.end();
      }
    }
    expect(got.proxy.map((n) => (n as { message: string }).message)).toEqual(["hello wörld from pgroute", "careful"]);
    expect(got.proxy).toEqual(got.direct);
  });

  test("the startup application_name reaches the server", async () => {
    const app = unique("pgroute_app");
    const sql = pjs(side.proxy(), { connection: { application_name: app } });
    const c = await pgClient(side.proxy(), { application_name: `${app}_pg` });
    try {
      expect([...(await sql`select current_setting('application_name') as a`)]).toEqual([{ a: app }]);
      expect((await c.query("select current_setting('application_name') as a")).rows).toEqual([{ a: `${app}_pg` }]);
      // And the server's own view of the connection says the same.
      const seen = await admin`select application_name from pg_stat_activity where application_name like ${`${app}%`} order by 1`;
      expect(seen.map((r) => r.application_name)).toEqual([app, `${app}_pg`]);
    } finally {
      await sql.end({ timeout: 1 });
      await c.end();
    }
  });

  test("the ParameterStatus values at login are the server's, the same as direct", async () => {
    const got = {} as Record<Side, Record<string, unknown>>;
    for (const s of SIDES) {
      const sql = pjs(side[s](), { connection: { application_name: "pgroute-params" } });
      try {
        await sql`select 1`;
        got[s] = { ...sql.parameters };
      } finally {
        await sql.end({ timeout: 1 });
      }
    }
    expect(got.proxy).toMatchObject({ application_name: "pgroute-params", client_encoding: "UTF8", server_version: expect.any(String) });
    expect(got.proxy).toEqual(got.direct);
  });

  test("SET application_name is reflected in postgres.js sql.parameters", async () => {
    const sql = pjs(side.proxy());
    try {
      await sql.unsafe("set application_name = 'renamed_through_pgroute'");
      expect(sql.parameters.application_name).toBe("renamed_through_pgroute");
      expect([...(await sql`select current_setting('application_name') as a`)]).toEqual([{ a: "renamed_through_pgroute" }]);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });

  test("SET client_encoding sends the server's ParameterStatus to the client, as direct", async () => {
    const got = {} as Record<Side, unknown>;
    for (const s of SIDES) {
      const raw = await RawClient.connect(s === "proxy" ? tp.port : cluster.primary.port);
      try {
        await raw.loginTrust({ user: AUTH_USERS.trust.user, database: APP_DATABASE });
        raw.send(query("set client_encoding = 'LATIN1'"));
        const msgs = await raw.readUntil("Z");
        raw.send(query("show client_encoding"));
        const shown = await raw.readUntil("Z");
        // ReadyForQuery's body is one status byte, not a string.
        const view = (m: BackendMessage) => [m.type, m.type === "Z" ? [String.fromCharCode(m.body[0]!)] : cstrings(m.body)];
        got[s] = { set: msgs.map(view), shown: shown.filter((m) => m.type === "D").map(dataRow) };
      } finally {
        raw.close();
      }
    }
    expect(got.proxy).toEqual({
      set: [
        ["C", ["SET"]],
        ["S", ["client_encoding", "LATIN1"]],
        ["Z", ["I"]],
      ],
      shown: [["LATIN1"]],
    });
    expect(got.proxy).toEqual(got.direct);
  });
});

// --- LISTEN / NOTIFY -------------------------------------------------------------------------------------------

describe("LISTEN/NOTIFY in session mode", () => {
  test("a node-postgres client listening through pgroute gets NOTIFYs sent direct and through pgroute", async () => {
    const channel = unique("chan");
    const listener = await pgClient(side.proxy());
    const got: pg.Notification[] = [];
    listener.on("notification", (n) => got.push(n));
    const sender = await pgClient(side.proxy());
    try {
      await listener.query(`listen ${channel}`);
      const directPid = (await admin`select pg_notify(${channel}, 'from direct ü'), pg_backend_pid() as pid`)[0]!.pid as number;
      await eventually("the first notification", () => got.length === 1);
      const senderPid = (await sender.query("select pg_notify($1, 'through pgroute') , pg_backend_pid() as pid", [channel])).rows[0].pid;
      await eventually("the second notification", () => got.length === 2);
      expect(got.map((n) => ({ channel: n.channel, payload: n.payload, processId: n.processId }))).toEqual([
        { channel, payload: "from direct ü", processId: directPid },
        { channel, payload: "through pgroute", processId: senderPid },
      ]);
    } finally {
      await listener.end();
      await sender.end();
    }
  });

  test("postgres.js sql.listen through pgroute gets sql.notify through pgroute", async () => {
    const channel = unique("chan");
    const sql = pjs(side.proxy(), { max: 2 });
    const got: string[] = [];
    try {
      await sql.listen(channel, (payload) => got.push(payload));
      await sql.notify(channel, "one");
      await sql.notify(channel, "two 🐘");
      await eventually("both notifications", () => got.length === 2);
      expect(got).toEqual(["one", "two 🐘"]);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});

// --- COPY --------------------------------------------------------------------------------------------------------

describe("COPY", () => {
  const ROWS = 100_000;
  const line = (i: number) => `${i}\t${i % 10 === 0 ? "\\N" : `row ${i} ü\\ttab`}\n`;

  test("COPY FROM STDIN with 100k rows loads every row; COPY TO STDOUT returns the same bytes as direct", async () => {
    const table = unique("copy_t");
    await admin.unsafe(`create table ${table} (id int primary key, t text)`);
    const sql = pjs(side.proxy());
    const direct = pjs(side.direct());
    try {
      const w = await sql.unsafe(`copy ${table} from stdin`).writable();
      await pipeline(
        Readable.from(
          (function* () {
            // Batches of lines, so the data arrives in CopyData messages of many sizes.
            for (let i = 1; i <= ROWS; i += 1000) {
              let s = "";
              for (let j = i; j < i + 1000; j++) s += line(j);
              yield s;
            }
          })(),
        ),
        w,
      );
      const [stats] = await admin.unsafe(`select count(*)::int as n, sum(id)::bigint::text as s, count(t)::int as t from ${table}`);
      expect({ ...stats }).toEqual({ n: ROWS, s: String((ROWS * (ROWS + 1)) / 2), t: ROWS - ROWS / 10 });

      const read = async (client: postgres.Sql) => {
        const r = await client.unsafe(`copy (select * from ${table} order by id) to stdout`).readable();
        const chunks: Buffer[] = [];
        for await (const chunk of r) chunks.push(chunk as Buffer);
        return Buffer.concat(chunks);
      };
      const [viaProxy, straight] = await Promise.all([read(sql), read(direct)]);
      expect(viaProxy.equals(straight)).toBe(true);
      let expected = "";
      for (let i = 1; i <= ROWS; i++) expected += line(i);
      expect(viaProxy.toString("utf8")).toBe(expected);
      // Not reused: postgres.js can stall a connection after a .readable() COPY, even straight against Postgres
      // (it pauses its socket under backpressure and may not resume it); the raw test below covers what follows.
    } finally {
      await sql.end({ timeout: 1 });
      await direct.end({ timeout: 1 });
      await admin.unsafe(`drop table if exists ${table}`);
    }
  });

  test("COPY TO STDOUT relays every CopyData as direct, and the session answers the next query", async () => {
    const got = {} as Record<Side, { types: string; data: string; after: unknown }>;
    for (const s of SIDES) {
      const raw = await RawClient.connect(s === "proxy" ? tp.port : cluster.primary.port);
      try {
        await raw.loginTrust({ user: AUTH_USERS.trust.user, database: APP_DATABASE });
        raw.send(query("copy (select i, repeat('ü', i % 50) from generate_series(1, 50000) i) to stdout"));
        const msgs = await raw.readUntil("Z", 20_000);
        const counts = new Map<string, number>();
        for (const m of msgs) counts.set(m.type, (counts.get(m.type) ?? 0) + 1);
        const data = Buffer.concat(msgs.filter((m) => m.type === "d").map((m) => m.body)).toString("utf8");
        expect([...counts]).toEqual([["H", 1], ["d", 50_000], ["c", 1], ["C", 1], ["Z", 1]]);
        raw.send(query("select 'next'"));
        const after = (await raw.readUntil("Z")).filter((m) => m.type === "D").map(dataRow);
        got[s] = { types: msgs.map((m) => m.type).join(""), data: digest(data), after };
      } finally {
        raw.close();
      }
    }
    expect(got.proxy.after).toEqual([["next"]]);
    expect(got.proxy).toEqual(got.direct);
  });

  test("a COPY with a bad row fails with the server's 22P02, and the session stays usable", async () => {
    // Raw messages: postgres.js loses the error of a failed COPY FROM STDIN (its stream waits for a
    // CommandComplete that never comes), even straight against Postgres.
    const got = {} as Record<Side, unknown>;
    for (const s of SIDES) {
      const raw = await RawClient.connect(s === "proxy" ? tp.port : cluster.primary.port);
      try {
        await raw.loginTrust({ user: AUTH_USERS.trust.user, database: APP_DATABASE });
        raw.send(query("create temp table copy_bad (id int)"));
        await raw.readUntil("Z");
        raw.send(query("copy copy_bad from stdin"));
        expect((await raw.next()).type).toBe("G"); // CopyInResponse
        raw.send(copyData("1\n2\n"));
        raw.send(copyData("not-a-number\n"));
        raw.send(copyData("4\n"));
        raw.send(new Uint8Array(serialize.copyDone()));
        const reply = await raw.readUntil("Z");
        const errors = reply.filter((m) => m.type === "E").map(errorOf);
        expect(reply.map((m) => m.type)).toEqual(["E", "Z"]);
        expect(errors[0]).toMatchObject({ code: "22P02", message: 'invalid input syntax for type integer: "not-a-number"' });
        expect(errors[0]!.fields.get(0x57 /* 'W' where */)).toBe("COPY copy_bad, line 3, column id: \"not-a-number\"");
        expect(reply.at(-1)!.body).toEqual(Uint8Array.of(0x49)); // 'I': idle, no transaction left open
        raw.send(query("select count(*) from copy_bad"));
        const after = await raw.readUntil("Z");
        expect(after.filter((m) => m.type === "D").map(dataRow)).toEqual([["0"]]);
        got[s] = { reply: reply.map((m) => (m.type === "E" ? [...errorOf(m).fields] : m.type)), after: after.map((m) => m.type) };
      } finally {
        raw.close();
      }
    }
    expect(got.proxy).toEqual(got.direct);
  });

  test("CopyFail from the client ends the COPY with the server's 57014, and the session stays usable", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      await raw.loginTrust({ user: AUTH_USERS.trust.user, database: APP_DATABASE });
      raw.send(query("create temp table copy_fail (id int)"));
      await raw.readUntil("Z");
      raw.send(query("copy copy_fail from stdin"));
      expect((await raw.next()).type).toBe("G");
      raw.send(copyData("1\n"));
      raw.send(new Uint8Array(serialize.copyFail("client changed its mind")));
      const reply = await raw.readUntil("Z");
      expect(reply.map((m) => m.type)).toEqual(["E", "Z"]);
      expect(errorOf(reply[0]!)).toMatchObject({ code: "57014", message: "COPY from stdin failed: client changed its mind" });
      raw.send(query("select 'alive'"));
      expect((await raw.readUntil("Z")).filter((m) => m.type === "D").map(dataRow)).toEqual([["alive"]]);
    } finally {
      raw.close();
    }
  });

  test("psql \\copy with a bad row prints the same error as direct", async () => {
    const table = unique("copy_psql_bad");
    await admin.unsafe(`create table ${table} (id int)`);
    try {
      const run = async (url: string) => {
        const proc = Bun.spawn(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", `\\copy ${table} from pstdin`], {
          stdin: new Blob(["1\n2\nbad\n"]),
          stdout: "pipe",
          stderr: "pipe",
          env: { ...process.env, LC_ALL: "C.UTF-8" },
        });
        const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
        return { stdout, stderr, code };
      };
      const viaProxy = await run(side.proxy());
      expect(viaProxy).toEqual({
        stdout: "",
        stderr: `ERROR:  invalid input syntax for type integer: "bad"\nCONTEXT:  COPY ${table}, line 3, column id: "bad"\n`,
        code: 1,
      });
      expect(viaProxy).toEqual(await run(side.direct()));
    } finally {
      await admin.unsafe(`drop table if exists ${table}`);
    }
  });
});

// --- pipelining ---------------------------------------------------------------------------------------------------

describe("pipelining", () => {
  test("100 queries in flight on one postgres.js connection each get their own answer, in order", async () => {
    for (const prepare of [true, false]) {
      const sql = pjs(side.proxy(), { max: 1, prepare });
      try {
        const results = await Promise.all(
          Array.from({ length: 100 }, (_, i) => sql`select ${i}::int as i, repeat('x', ${i * 100}) as pad, pg_backend_pid() as pid`),
        );
        expect(results.map((r) => r[0]!.i)).toEqual(Array.from({ length: 100 }, (_, i) => i));
        expect(results.every((r, i) => (r[0]!.pad as string).length === i * 100)).toBe(true);
        expect(new Set(results.map((r) => r[0]!.pid)).size).toBe(1);
      } finally {
        await sql.end({ timeout: 1 });
      }
    }
  });

  test("an error in the middle of a pipeline fails only its own query", async () => {
    const sql = pjs(side.proxy(), { max: 1 });
    try {
      const settled = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) => (i === 10 ? sql`select 1 / ${0}::int as i` : sql`select ${i}::int as i`)),
      );
      settled.forEach((r, i) => {
        if (i === 10) expect(r.status === "rejected" && (r.reason as { code: string }).code).toBe("22012");
        else expect(r.status === "fulfilled" && r.value[0]!.i).toBe(i);
      });
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});

// --- cancel -------------------------------------------------------------------------------------------------------

describe("cancel", () => {
  test("postgres.js query.cancel() stops pg_sleep(30) with 57014 quickly; the session works after", async () => {
    const app = unique("cancel_pjs");
    const sql = pjs(side.proxy(), { connection: { application_name: app } });
    try {
      await sql`select 1`;
      const started = Date.now();
      const q = sql`select pg_sleep(30)`;
      const outcome = rejection(q);
      await waitActive(app, "select pg_sleep(30)");
      q.cancel();
      const err = await outcome;
      expect(fields(err)).toMatchObject({ code: "57014", message: "canceling statement due to user request" });
      expect(Date.now() - started).toBeLessThan(10_000);
      expect([...(await sql`select ${"after"}::text as s`)]).toEqual([{ s: "after" }]);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });

  test("a CancelRequest with the BackendKeyData pgroute sent cancels a node-postgres query", async () => {
    const app = unique("cancel_pg");
    const c = await pgClient(side.proxy(), { application_name: app });
    try {
      const key = c as unknown as { processID: number; secretKey: number };
      const serverPid = (await c.query("select pg_backend_pid() as pid")).rows[0].pid as number;
      // The key is pgroute's own, not the server's: clients never learn the server's secret.
      expect(key.processID).not.toBe(serverPid);
      const started = Date.now();
      const outcome = rejection(c.query("select pg_sleep(30)"));
      await waitActive(app, "select pg_sleep(30)");
      const raw = await RawClient.connect(tp.port);
      raw.send(cancelRequest(key.processID, key.secretKey));
      // pgroute closes the cancel connection without a reply, as Postgres does.
      await raw.waitClosed();
      const err = await outcome;
      expect(err.code).toBe("57014");
      expect(Date.now() - started).toBeLessThan(10_000);
      expect((await c.query("select 'after' as s")).rows).toEqual([{ s: "after" }]);
    } finally {
      await c.end();
    }
  });

  test("a CancelRequest with a wrong secret does nothing: the query completes normally", async () => {
    const app = unique("cancel_wrong");
    const c = await pgClient(side.proxy(), { application_name: app });
    try {
      const key = c as unknown as { processID: number; secretKey: number };
      const outcome = c.query("select pg_sleep(1), 'done' as s");
      await waitActive(app, "select pg_sleep(1)");
      for (const [pid, secret] of [
        [key.processID, (key.secretKey + 1) | 0],
        [(key.processID + 1) | 0, key.secretKey],
      ] as const) {
        const raw = await RawClient.connect(tp.port);
        raw.send(cancelRequest(pid, secret));
        await raw.waitClosed();
      }
      expect((await outcome).rows).toEqual([{ pg_sleep: "", s: "done" }]);
    } finally {
      await c.end();
    }
  });
});

// --- session lifecycle ------------------------------------------------------------------------------------------

describe("session lifecycle", () => {
  const backendsOf = async (app: string) =>
    (await admin<{ pid: number }[]>`select pid from pg_stat_activity where application_name = ${app}`).map((r) => r.pid);

  test("concurrent clients each get a server backend of their own", async () => {
    const app = unique("many");
    const clients = Array.from({ length: 20 }, () => pjs(side.proxy(), { connection: { application_name: app } }));
    try {
      const pids = await Promise.all(
        clients.map(async (sql, i) => {
          const [row] = await sql`select pg_backend_pid() as pid, ${i}::int as i`;
          expect(row!.i).toBe(i);
          return row!.pid as number;
        }),
      );
      expect(new Set(pids).size).toBe(20);
      expect((await backendsOf(app)).sort()).toEqual([...pids].sort());
    } finally {
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    }
  });

  const LEAVING = ["Terminate", "an abrupt close", "an abrupt close inside a transaction"] as const;
  for (const how of LEAVING) {
    test(`a client leaving by ${how} takes its session state with it: the next client starts clean`, async () => {
      // One server connection at most, so the next client gets the very same one if pgroute keeps it.
      const single = await startTestProxy({ pool: { size: 1 } });
      const app = unique("leave");
      const lock = 7_000_000 + seq;
      const raw = await RawClient.connect(single.port);
      try {
        await raw.loginTrust({ user: AUTH_USERS.trust.user, database: APP_DATABASE, application_name: app });
        raw.send(
          query(
            `create temp table left_behind (x int); set search_path = pg_catalog; listen left_channel; ` +
              `prepare left_stmt as select 1; select pg_advisory_lock(${lock})` +
              (how === "an abrupt close inside a transaction" ? `; begin; insert into pg_temp.left_behind values (1)` : ""),
          ),
        );
        const setup = await raw.readUntil("Z");
        expect(setup.some((m) => m.type === "E")).toBe(false);
        expect(setup.at(-1)!.body).toEqual(Uint8Array.of(how === "an abrupt close inside a transaction" ? 0x54 : 0x49));
        expect((await backendsOf(app)).length).toBe(1);
        if (how === "Terminate") {
          raw.send(new Uint8Array(serialize.end()));
          await raw.waitClosed();
        } else {
          raw.close();
        }
        // The server connection is closed, or reset before anyone else may use it: either way nothing shows the
        // departed client's settings or holds its lock any more.
        await eventually("the client's settings to be gone from the server", async () => (await backendsOf(app)).length === 0);
        await eventually("the client's advisory lock to be released", async () => {
          const [row] = await admin`select count(*)::int as n from pg_locks where locktype = 'advisory' and objid = ${lock}`;
          return row!.n === 0;
        });
        const next = await RawClient.connect(single.port);
        try {
          const { messages } = await next.loginTrust({ user: AUTH_USERS.trust.user, database: APP_DATABASE });
          expect(messages.at(-1)!.body).toEqual(Uint8Array.of(0x49)); // idle, not inside someone's transaction
          next.send(
            query(
              "select to_regclass('pg_temp.left_behind') is null as no_temp, current_setting('search_path') as path, " +
                "(select count(*) from pg_listening_channels()) as channels, (select count(*) from pg_prepared_statements) as prepared",
            ),
          );
          const rows = (await next.readUntil("Z")).filter((m) => m.type === "D").map(dataRow);
          expect(rows).toEqual([["t", '"$user", public', "0", "0"]]);
        } finally {
          next.close();
        }
      } finally {
        raw.close();
        await single.stop();
      }
    });
  }

  test("startup settings apply to their own client only, even on a server connection used before", async () => {
    const single = await startTestProxy({ pool: { size: 1 } });
    const SPECIAL = { client_encoding: "LATIN1", TimeZone: "Asia/Tokyo", DateStyle: "SQL, DMY" };
    const probe = "select 'é' as e, current_setting('TimeZone') as tz, current_setting('DateStyle') as ds, date '2024-02-29' as d";
    /** Logs in with `extra` startup parameters; returns its ParameterStatus values and the probe's raw row. */
    const session = async (port: number, extra: Record<string, string>) => {
      const raw = await RawClient.connect(port);
      try {
        const { messages } = await raw.loginTrust({ user: AUTH_USERS.trust.user, database: APP_DATABASE, ...extra });
        const params = Object.fromEntries(messages.filter((m) => m.type === "S").map((m) => cstrings(m.body)));
        raw.send(query(probe));
        const row = (await raw.readUntil("Z")).find((m) => m.type === "D")!;
        return { params, row: [...row.body] };
      } finally {
        raw.close();
      }
    };
    try {
      for (const order of [
        [SPECIAL, {}],
        [{}, SPECIAL],
      ] as const) {
        for (const extra of order) {
          const [viaProxy, direct] = [await session(single.port, extra), await session(cluster.primary.port, extra)];
          // Byte for byte the same row (LATIN1 'é' is one byte, UTF8 two) and the same reported settings.
          expect(viaProxy).toEqual(direct);
          expect(viaProxy.params).toMatchObject(extra);
        }
      }
    } finally {
      await single.stop();
    }
  });

  test("a server backend terminated by an administrator: the client gets the server's FATAL 57P01, as direct", async () => {
    const got = {} as Record<Side, unknown>;
    for (const s of SIDES) {
      const app = unique("terminated");
      const raw = await RawClient.connect(s === "proxy" ? tp.port : cluster.primary.port);
      try {
        await raw.loginTrust({ user: AUTH_USERS.trust.user, database: APP_DATABASE, application_name: app });
        const [pid] = await backendsOf(app);
        await admin`select pg_terminate_backend(${pid!})`;
        const m = await raw.next();
        await raw.waitClosed();
        const e = errorOf(m);
        got[s] = { type: m.type, severity: e.severity, code: e.code, message: e.message };
      } finally {
        raw.close();
      }
    }
    expect(got.proxy).toEqual({ type: "E", severity: "FATAL", code: "57P01", message: "terminating connection due to administrator command" });
    expect(got.proxy).toEqual(got.direct);
  });
});
