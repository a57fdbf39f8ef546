// Invariant: every statement of the explain table (tests/cli/explain.test.ts), sent through `pgroute serve` in
// transaction mode to a real primary + 2 streaming replicas — one session per script, in order, simple query
// protocol, byte for byte — is received by exactly the node kind `pgroute explain` names: a `replica` row by exactly
// one replica and not the primary, a `primary` row by the primary and no replica, a `refused`/`pgroute` row by no
// node. So no statement that fails on a standby reaches one unless explain said so. What a node received is read
// from its own server log (log_statement = all), not from what pgroute says it did.
//
// Also, with inet_server_port()/pg_is_in_recovery(): reads run on a replica, hints/transactions move them, the
// extended protocol routes as the simple one does; a "read" that writes is retried on the primary (25006); with
// both replicas down, reads run on the primary without a client error.
//
// The cluster is this file's own (log_statement = all, so every node's log lists what it received), stopped in
// afterAll. ROUTE_LANDS_ERRORS=1 prints every statement of the table that the server answered with an error.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, readSync, fstatSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { parse as parseToml } from "smol-toml";
import { explainScript, optionsFrom, type ExplainRow } from "../../src/cli/explain.ts";
import { configFrom } from "../../src/config/load.ts";
import type { Config } from "../../src/config/types.ts";
import { findPgBin, guardCluster, startCluster, stopCluster, waitForReplay, type DevCluster, type DevNode, type Watchdog } from "../../src/devcluster/index.ts";
import { runAs } from "../../src/devcluster/exec.ts";
import { stopNode } from "../../src/devcluster/node.ts";
import { createLogger } from "../../src/log.ts";
import { loadParser } from "../../src/router/parser.ts";
import { Proxy } from "../../src/server.ts";
import { pollUntil } from "../support/wait.ts";
import { RawClient, errorOf, type BackendMessage } from "../support/raw-client.ts";
import { query, serialize } from "../support/wire-frames.ts";

const ROOT = join(import.meta.dir, "../..");
const DB = "lands";

// --- the explain table, taken from its one source --------------------------------------------------------

type Row = readonly [sql: string, target: string, reason: string];
interface Group {
  name: string;
  rows: Row[];
  flags: string[];
  exit: number;
}

/**
 * The groups of tests/cli/explain.test.ts, evaluated from that file's own text, so the statements sent here are
 * the table's byte for byte and cannot drift from it.
 */
async function explainTable(): Promise<{ groups: Group[]; tomls: Record<string, string> }> {
  const src = await Bun.file(join(ROOT, "tests/cli/explain.test.ts")).text();
  const from = src.indexOf("// The reasons that recur");
  const to = src.indexOf("/** The script for");
  if (from < 0 || to < from) throw new Error("tests/cli/explain.test.ts changed shape: the table is no longer between its markers");
  const js = new Bun.Transpiler({ loader: "ts" }).transformSync(src.slice(from, to));
  const t = new Function(`${js}\nreturn { GROUPS, LISTS_TOML, FIRST_TOML };`)() as { GROUPS: Group[]; LISTS_TOML: string; FIRST_TOML: string };
  return { groups: t.GROUPS, tomls: { "lists.toml": t.LISTS_TOML, "first.toml": t.FIRST_TOML } };
}

/** The script of a group, as explain.test.ts writes it. */
function script(rows: readonly Row[]): string {
  return rows.map(([sql]) => (sql.startsWith("\\") || sql.trimEnd().endsWith(";") ? sql : `${sql};`)).join("\n") + "\n";
}

// --- node logs ---------------------------------------------------------------------------------------------

/** One entry of a server log: `%m [%p] %q%u@%d LEVEL:  message`, continuation lines (tab-led) joined back. */
interface LogEntry {
  pid: number;
  db: string;
  level: string;
  message: string;
}

const PREFIX = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[(\d+)\] (?:(\S*)@(\S*) )?([A-Z]+):  (.*)$/;

/** Reads a node's log incrementally (whole lines only), keeping every entry of database {@link DB}. */
class NodeLog {
  private offset = 0;
  private partial = "";
  private last: LogEntry | null = null;
  readonly entries: LogEntry[] = [];

  constructor(readonly node: DevNode) {}

  poll(): void {
    const fd = openSync(this.node.logFile, "r");
    try {
      const size = fstatSync(fd).size;
      if (size <= this.offset) return;
      const buf = Buffer.alloc(size - this.offset);
      const n = readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const text = this.partial + buf.subarray(0, n).toString("utf8");
      const cut = text.lastIndexOf("\n");
      this.partial = text.slice(cut + 1);
      for (const line of text.slice(0, cut + 1).split("\n").slice(0, -1)) this.line(line);
    } finally {
      closeSync(fd);
    }
  }

  private line(line: string): void {
    if (line.startsWith("\t")) {
      // Postgres puts a tab after every newline of a message it writes to stderr (elog.c, append_with_tabs).
      if (this.last) this.last.message += `\n${line.slice(1)}`;
      return;
    }
    const m = PREFIX.exec(line);
    const e = m ? { pid: Number(m[1]), db: m[3] ?? "", level: m[4]!, message: m[5]! } : null;
    this.last = e?.db === DB ? e : null;
    if (this.last) this.entries.push(this.last);
  }

  /**
   * The simple Queries this node received from entry `from` on, in order. A statement counts once: at its
   * `statement:` line, or — when the server's own parser refused it, so it was never logged as a statement — at
   * the `STATEMENT:` line after the error (which otherwise repeats the backend's last `statement:`).
   */
  received(from: number): string[] {
    const out: string[] = [];
    const pending = new Map<number, string>();
    for (const e of this.entries.slice(from)) {
      if (e.level === "LOG" && e.message.startsWith("statement: ")) {
        pending.set(e.pid, e.message.slice(11));
        out.push(e.message.slice(11));
      } else if (e.level === "STATEMENT") {
        if (pending.get(e.pid) !== e.message) out.push(e.message);
        pending.delete(e.pid);
      }
    }
    return out;
  }
}

// --- the cluster and pgroute -------------------------------------------------------------------------------

let cluster: DevCluster;
let guard: Watchdog | undefined;
let logs: { primary: NodeLog; replicas: NodeLog[] };
const proxies: Proxy[] = [];

/** pgroute in front of the dedicated cluster: transaction mode, the given nodes, users and `[routing]`. */
async function startProxy(opts: { replicas: boolean; users?: Record<string, unknown>[]; routing?: Record<string, unknown> }): Promise<{ proxy: Proxy; port: number }> {
  const nodes = [cluster.primary, ...(opts.replicas ? cluster.replicas : [])].map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role }));
  // Clients log in to pgroute with trust; pgroute logs in to the servers with the password.
  const users = [{ name: cluster.superuser, password: cluster.password }, ...(opts.users ?? [])].map((u) => ({ ...u, auth: "trust" }));
  const config: Config = configFrom({
    listen: { host: "127.0.0.1", port: 0 },
    nodes,
    users,
    pool: { mode: "transaction", size: 4 },
    routing: opts.routing ?? {},
    log: { level: process.env.PGROUTE_TEST_LOG ?? "error" },
  });
  const proxy = new Proxy({ config, log: createLogger(config.log) });
  const { port } = await proxy.listen();
  proxies.push(proxy);
  return { proxy, port };
}

/** Roles of the explain table's lists.toml, created as superusers so that as many statements as possible run. */
const TABLE_ROLES = ["app", "admin", "reporting"];

/** The objects the table's statements name, so that most of them run rather than fail. */
const SCHEMA = `
create schema app; create schema reports; create schema other;
create table t (id int, a int, b text, data jsonb, nextval int, dat int, "DELETE" int, "into" int, "-- pgroute: primary" int);
insert into t (id, a, b, data) select g, g % 3, 'b' || g, jsonb_build_object('a', g, 'b', 'x') from generate_series(1, 20) g;
create table u (id int); insert into u select generate_series(1, 10);
create table v (id int); create table w (id int);
create table "update" ("delete" int); create table tåble (ünïcödé int); create table 表 (名前 int);
create table side_effects (id int);
create sequence s;
create materialized view mv as select 1 as x; create unique index on mv (x);
create procedure p() language sql as $$ select 1 $$;
create procedure p(int, text) language sql as $$ select 1 $$;
create function my_func() returns int language sql as $$ select 1 $$;
create function app.my_func(int) returns int language sql as $$ select 1 $$;
create function my_srf() returns setof int language sql as $$ select 1 $$;
create function compute_score(int) returns int language sql as $$ select $1 $$;
create function my_read_func() returns int language sql stable as $$ select 1 $$;
create function app.my_read_func(int) returns int language sql stable as $$ select 1 $$;
create function reports.monthly(int) returns int language sql stable as $$ select 1 $$;
create function other.monthly(int) returns int language sql stable as $$ select 1 $$;
create function audit_log(text) returns int language sql as $$ insert into side_effects values (1) returning 1 $$;
create function app.touch(int) returns int language sql as $$ select 1 $$;
create function touch(int) returns int language sql as $$ select 1 $$;
-- A function the classifier is told is read-only but that writes: the 25006 retry test.
create function sneaky_insert() returns int language sql as $$ insert into side_effects values (7) returning 7 $$;
`;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "pgroute-route-lands-"));
  guard = guardCluster(dir);
  cluster = await startCluster({
    dir,
    replicas: 2,
    port: 0,
    // log_min_error_statement = error: a statement the server's own parser refuses is never logged as a
    // `statement:`; its `STATEMENT:` line after the error is how its node shows it received it.
    settings: { log_statement: "all", log_min_error_statement: "error", fsync: "off", synchronous_commit: "off" },
  });
  const admin = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {}, prepare: false });
  try {
    await admin.unsafe(`create database ${DB}`);
    for (const r of TABLE_ROLES) await admin.unsafe(`create role ${r} login superuser password 'x'`);
  } finally {
    await admin.end();
  }
  const db = postgres(cluster.url(cluster.primary, { user: cluster.superuser, password: cluster.password, database: DB }), { max: 1, onnotice: () => {}, prepare: false });
  try {
    await db.unsafe(SCHEMA);
  } finally {
    await db.end();
  }
  await waitForReplay(cluster);
  await loadParser();
  logs = { primary: new NodeLog(cluster.primary), replicas: cluster.replicas.map((n) => new NodeLog(n)) };
}, 90_000);

afterAll(async () => {
  for (const p of proxies) await p.stop().catch(() => {});
  if (cluster) await stopCluster(cluster.dir);
  guard?.dismiss();
});

// --- one session through pgroute ---------------------------------------------------------------------------

/** Sends one simple Query and reads to ReadyForQuery; a COPY FROM STDIN is answered with CopyFail. */
async function simpleQuery(c: RawClient, sql: string): Promise<BackendMessage[]> {
  c.send(query(sql));
  const out: BackendMessage[] = [];
  for (;;) {
    const m = await c.next(15_000);
    out.push(m);
    if (m.type === "G") c.send(new Uint8Array(serialize.copyFail("route-lands: no data")));
    if (m.type === "Z") return out;
  }
}

function allLogs(): NodeLog[] {
  return [logs.primary, ...logs.replicas];
}

/** Marks in every node's log, to see what arrives after. */
function mark(): number[] {
  return allLogs().map((l) => l.entries.length);
}

/** Where `sql` arrived since `at`: node names, once per receipt. */
function arrivals(at: number[], sql: string): string[] {
  const out: string[] = [];
  allLogs().forEach((l, i) => {
    for (const s of l.received(at[i]!)) if (s === sql) out.push(l.node.name);
  });
  return out;
}

/** Polls the logs until `done()` or `ms` pass (bounded; a server logs a statement before it answers it). */
async function pollLogs(done: () => boolean, ms = 2000): Promise<void> {
  await pollUntil(() => {
    for (const l of allLogs()) l.poll();
    return done();
  }, ms);
}

interface Landing {
  line: number;
  sql: string;
  explain: string;
  reason: string;
  /** Node names that received the statement. */
  landed: string[];
}

/** Whether `landed` is what explain's `target` promises. */
function agrees(target: string, landed: string[]): boolean {
  const primary = landed.filter((n) => n === cluster.primary.name).length;
  const replica = landed.filter((n) => n !== cluster.primary.name).length;
  switch (target) {
    case "primary":
      return primary === 1 && replica === 0;
    case "replica":
      return primary === 0 && replica === 1;
    default:
      return landed.length === 0; // refused, pgroute, deferred (its BEGIN is checked with the next statement)
  }
}

/**
 * Runs a group's script through pgroute on one connection and returns, per statement, explain's target and the
 * nodes that received it. A held-back BEGIN (`deferred`) must arrive with the next statement that reaches a node,
 * on that node.
 */
async function runGroup(g: Group, tomls: Record<string, string>): Promise<{ rows: ExplainRow[]; landings: Landing[]; problems: string[] }> {
  const at = (flag: string) => (g.flags.includes(flag) ? g.flags[g.flags.indexOf(flag) + 1] : undefined);
  const tomlName = at("--config")?.replace("{dir}/", "");
  const toml = tomlName ? (parseToml(tomls[tomlName]!) as Record<string, any>) : null;
  const user = at("--user");
  const replicas = !g.flags.includes("--no-replicas");
  const explainConfig = toml ? configFrom(toml) : null;
  const rows = explainScript(script(g.rows), optionsFrom(explainConfig, user, replicas));
  const tableUsers = ((toml?.users ?? []) as Record<string, unknown>[]).filter((u) => u.name !== cluster.superuser);
  const { proxy, port } = await startProxy({ replicas, users: tableUsers, routing: toml?.routing });
  const client = await RawClient.connect(port);
  const landings: Landing[] = [];
  const problems: string[] = [];
  try {
    await client.loginTrust({ user: user ?? cluster.superuser, database: DB });
    let deferred: ExplainRow | null = null;
    for (const l of allLogs()) l.poll();
    const groupStart = mark();
    for (const r of rows) {
      if (r.target === "skipped") continue; // a psql meta-command: not SQL, never sent
      for (const l of allLogs()) l.poll();
      const before = mark();
      const reply = await simpleQuery(client, r.sql);
      const fatal = reply.find((m) => m.type === "E" && errorOf(m).severity === "FATAL");
      const err = reply.find((m) => m.type === "E");
      if (err && process.env.ROUTE_LANDS_ERRORS) console.log(`${g.name}:${r.line} ${r.target} ${JSON.stringify(r.sql)} → ${errorOf(err).code} ${errorOf(err).message}`);
      if (fatal) throw new Error(`line ${r.line} ${JSON.stringify(r.sql)}: ${errorOf(fatal).message}`);
      const sendsSomething = r.target === "primary" || r.target === "replica";
      await pollLogs(() => arrivals(before, r.sql).length > 0, sendsSomething ? 2000 : 0);
      const landed = arrivals(before, r.sql);
      landings.push({ line: r.line, sql: r.sql, explain: r.target, reason: r.reason, landed });
      if (!agrees(r.target, landed)) {
        problems.push(`line ${r.line}: ${JSON.stringify(r.sql)} — explain: ${r.target} (${r.reason}); received by: ${landed.join(", ") || "no node"}`);
      }
      if (r.target === "deferred") deferred = r;
      else if (deferred && sendsSomething) {
        // The held-back BEGIN goes out just ahead of this statement, on the same node.
        const begins = arrivals(before, deferred.sql);
        if (begins.length !== 1 || begins[0] !== landed[0]) {
          problems.push(`line ${deferred.line}: held-back ${JSON.stringify(deferred.sql)} should arrive with line ${r.line} on ${landed[0]}; received by: ${begins.join(", ") || "no node"}`);
        }
        deferred = null;
      }
    }
    // Over the whole script, late arrivals included: each text reached the nodes exactly as often as explain sent
    // it somewhere (so nothing refused or answered by pgroute ever reached a node).
    await pollLogs(() => false, 0);
    const want = new Map<string, number>();
    for (const r of rows) if (["primary", "replica", "deferred"].includes(r.target)) want.set(r.sql, (want.get(r.sql) ?? 0) + 1);
    const got = new Map<string, number>();
    allLogs().forEach((l, i) => {
      for (const s of l.received(groupStart[i]!)) got.set(s, (got.get(s) ?? 0) + 1);
    });
    for (const r of rows) {
      if (r.target === "skipped" || (want.get(r.sql) ?? 0) === (got.get(r.sql) ?? 0)) continue;
      problems.push(`${JSON.stringify(r.sql)}: sent to a node ${want.get(r.sql) ?? 0} times by explain's account, received ${got.get(r.sql) ?? 0} times`);
      want.set(r.sql, got.get(r.sql) ?? 0); // once per text
    }
  } finally {
    client.close();
    await proxy.stop();
  }
  return { rows, landings, problems };
}

// --- the table ---------------------------------------------------------------------------------------------

const table = await explainTable();

describe("explain's table through pgroute serve: each statement lands where explain says", () => {
  test("the table is all there", () => {
    expect(table.groups.reduce((n, g) => n + g.rows.length, 0)).toBeGreaterThanOrEqual(370);
  });

  for (const g of table.groups) {
    test(`${g.name} (${g.rows.length} statements)`, async () => {
      const { landings, problems } = await runGroup(g, table.tomls);
      expect(landings.length).toBe(g.rows.filter(([sql]) => !sql.startsWith("\\")).length);
      expect(problems).toEqual([]);
    });
  }
});

// --- inet_server_port(): where statements run, by the server's own account --------------------------------

/** A postgres.js client through pgroute: one connection; `prepare` true = named extended-protocol statements. */
function client(port: number, prepare: boolean, user = cluster.superuser): postgres.Sql {
  return postgres({ host: "127.0.0.1", port, user, database: DB, max: 1, prepare, fetch_types: false, onnotice: () => {}, idle_timeout: 0 });
}

const WHERE = "select inet_server_port() as port, pg_is_in_recovery() as standby";

/** The node that answered a `WHERE` query, by port. */
function nodeAt(rows: readonly { port: number; standby: boolean }[]): string {
  const node = cluster.nodes.find((n) => n.port === rows[0]!.port);
  if (!node) throw new Error(`no node on port ${rows[0]!.port}`);
  // The server's own view must agree with the port: a replica is in recovery, the primary is not.
  expect([node.name, rows[0]!.standby]).toEqual([node.name, node.role === "replica"]);
  return node.role;
}

/** How `sql` reached its node, from the node log: a simple Query or an extended-protocol Execute. */
function protocolOf(at: number[], sql: string): string[] {
  const out: string[] = [];
  allLogs().forEach((l, i) => {
    for (const e of l.entries.slice(at[i])) {
      if (e.level !== "LOG") continue;
      if (e.message === `statement: ${sql}`) out.push("simple");
      else if (/^execute [^:]*: /.test(e.message) && e.message.slice(e.message.indexOf(": ") + 2) === sql) out.push("extended");
    }
  });
  return out;
}

describe("inet_server_port() through pgroute", () => {
  for (const [name, prepare] of [["simple query protocol", false], ["extended protocol, named statements", true]] as const) {
    test(`${name}: reads on a replica, the hint and BEGIN on the primary, BEGIN READ ONLY on a replica`, async () => {
      const { port } = await startProxy({ replicas: true });
      const sql = client(port, prepare);
      // simple(): one Query message; `prepare: true`: Parse (a named statement)/Bind/Execute.
      type Where = { port: number; standby: boolean }[];
      const run = (q: string, on: postgres.Sql | postgres.TransactionSql = sql) => (prepare ? on.unsafe<Where>(q, [], { prepare: true, simple: false } as { prepare: boolean }) : on.unsafe<Where>(q).simple());
      try {
        for (const l of allLogs()) l.poll();
        const at = mark();
        const reads = [await run(WHERE), await run(WHERE), await run(WHERE), await run(WHERE)];
        expect(reads.map(nodeAt)).toEqual(["replica", "replica", "replica", "replica"]);
        // Replicas are taken in turn: both served some of the reads.
        expect(new Set(reads.map((r) => r[0]!.port)).size).toBe(2);
        expect(nodeAt(await run(`/* pgroute: primary */ ${WHERE}`))).toBe("primary");
        const [inTx, readOnlyTx] = [
          await sql.begin(async (tx) => run(WHERE, tx)),
          await sql.begin("read only", async (tx) => run(WHERE, tx)),
        ];
        expect(nodeAt(inTx)).toBe("primary");
        expect(nodeAt(readOnlyTx)).toBe("replica");
        // The node logs confirm the protocol: every run of WHERE arrived as the kind of message the client sent.
        await pollLogs(() => protocolOf(at, WHERE).length >= 6);
        expect(new Set(protocolOf(at, WHERE))).toEqual(new Set([prepare ? "extended" : "simple"]));
      } finally {
        await sql.end();
      }
    });
  }
});

// --- the 25006 retry -----------------------------------------------------------------------------------------

describe("a read a replica refuses with 25006", () => {
  test("a function listed in read_functions that inserts: the client gets its row from the primary; the replica saw the attempt", async () => {
    const { port } = await startProxy({ replicas: true, routing: { read_functions: ["sneaky_insert"] } });
    const sql = client(port, false);
    const direct = postgres(cluster.url(cluster.primary, { user: cluster.superuser, password: cluster.password, database: DB }), { max: 1, onnotice: () => {} });
    const count = async () => Number((await direct.unsafe("select count(*) as n from side_effects where id = 7"))[0]!.n);
    const q = "select sneaky_insert() as v";
    try {
      const before = await count();
      for (const l of allLogs()) l.poll();
      const at = mark();
      const rows = await sql.unsafe<{ v: number }[]>(q).simple();
      expect(rows.map((r) => r.v)).toEqual([7]);
      const again = await sql.unsafe<{ v: number }[]>(q).simple();
      expect(again.map((r) => r.v)).toEqual([7]);
      expect(await count()).toBe(before + 2);
      // One attempt on one replica (refused: 25006), then the primary, where the row was inserted.
      await pollLogs(() => arrivals(at, q).length >= 4);
      const landed = arrivals(at, q);
      expect(landed.filter((n) => n === cluster.primary.name)).toEqual([cluster.primary.name, cluster.primary.name]);
      expect(landed.filter((n) => n !== cluster.primary.name)).toHaveLength(2);
      const refusals = logs.replicas.flatMap((l, i) => l.entries.slice(at[i + 1]).filter((e) => e.level === "ERROR" && e.message.startsWith("cannot execute INSERT in a read-only transaction")));
      expect(refusals).toHaveLength(2);
    } finally {
      await sql.end();
      await direct.end();
    }
  });

  test("through the extended protocol too", async () => {
    const { port } = await startProxy({ replicas: true, routing: { read_functions: ["sneaky_insert"] } });
    const sql = client(port, true);
    try {
      const rows = await sql.unsafe<{ v: number }[]>("select sneaky_insert() as v", [], { prepare: true, simple: false } as { prepare: boolean });
      expect(rows.map((r) => r.v)).toEqual([7]);
    } finally {
      await sql.end();
    }
  });

  test("byte for byte, the client sees one reply, as from one server", async () => {
    const { port } = await startProxy({ replicas: true, routing: { read_functions: ["sneaky_insert"] } });
    const raw = await RawClient.connect(port);
    try {
      await raw.loginTrust({ user: cluster.superuser, database: DB });
      const reply = await simpleQuery(raw, "select sneaky_insert() as v");
      expect(reply.map((m) => m.type)).toEqual(["T", "D", "C", "Z"]);
    } finally {
      raw.close();
    }
  });
});

// --- no replica left ---------------------------------------------------------------------------------------

describe("both replicas stopped", () => {
  // Last in this file: it stops the replicas of the dedicated cluster.
  test("reads go to the primary with no client error, on a pgroute that had replica connections pooled", async () => {
    const { port } = await startProxy({ replicas: true });
    const simple = client(port, false);
    const extended = client(port, true);
    type Where = { port: number; standby: boolean }[];
    const run = (sql: postgres.Sql, s: boolean) => (s ? sql.unsafe<Where>(WHERE).simple() : sql.unsafe<Where>(WHERE, [], { prepare: true, simple: false } as { prepare: boolean }));
    try {
      // Warm: both replicas' pools hold idle server connections.
      const warm = [await run(simple, true), await run(simple, true), await run(extended, false), await run(extended, false)];
      expect(warm.map(nodeAt)).toEqual(["replica", "replica", "replica", "replica"]);
      const ctx = { dir: cluster.dir, pgBin: findPgBin(), who: runAs(), superuser: cluster.superuser, password: cluster.password };
      await Promise.all(cluster.replicas.map((n) => stopNode(ctx, n)));
      const after: string[] = [];
      for (let i = 0; i < 6; i++) after.push(nodeAt(await run(simple, true)), nodeAt(await run(extended, false)));
      expect(after).toEqual(Array<string>(12).fill("primary"));
      // A fresh client too, and writes as ever.
      const fresh = client(port, false);
      try {
        expect(nodeAt(await run(fresh, true))).toBe("primary");
        await fresh.unsafe("insert into side_effects values (3)").simple();
      } finally {
        await fresh.end();
      }
    } finally {
      await simple.end();
      await extended.end();
    }
  });
});
