// Invariant: firewall rules judge the parse tree — a statement matches a rule however it is spelled (comments,
// quoting, case, nesting in CTEs / EXPLAIN ANALYZE / PREPARE / COPY / set operations, any statement of a
// multi-statement string) and never because of what a literal or comment says; command tags and SQL names follow
// Postgres's rules; verdicts are cached by statement shape and judged again when table sizes are reloaded.
import { beforeAll, describe, expect, test } from "bun:test";
import { configFrom } from "../../src/config/load.ts";
import { TableSnapshot, type TableRow } from "../../src/monitor/tables.ts";
import { factsOf } from "../../src/policy/facts.ts";
import { compileRules, RuleSet } from "../../src/policy/firewall.ts";
import { nameMatches, parseName } from "../../src/policy/names.ts";
import { judge, Policies } from "../../src/policy/policy.ts";
import { commandTag, knownTag, normalizeTag, tagMatches } from "../../src/policy/tags.ts";
import { DEFAULT_FUNCTIONS } from "../../src/router/classify.ts";
import { shape } from "../../src/router/lexer.ts";
import { loadParser, parseSql } from "../../src/router/parser.ts";

beforeAll(loadParser);

function stmts(sql: string) {
  const p = parseSql(sql);
  if (!p.ok) throw new Error(p.message);
  return p.tree.stmts ?? [];
}

const tags = (sql: string) => factsOf(stmts(sql)).tags;

describe("command tags", () => {
  test("the tag of each statement, as psql prints it", () => {
    const cases: [string, string][] = [
      ["select 1", "SELECT"],
      ["select * from t for update", "SELECT FOR UPDATE"],
      ["select * from t for no key update", "SELECT FOR NO KEY UPDATE"],
      ["select * into x from t", "SELECT INTO"],
      ["insert into t values (1)", "INSERT"],
      ["drop table a", "DROP TABLE"],
      ["drop materialized view m", "DROP MATERIALIZED VIEW"],
      ["drop foreign data wrapper w", "DROP FOREIGN DATA WRAPPER"],
      ["drop database d", "DROP DATABASE"],
      ["drop role r", "DROP ROLE"],
      ["drop function f(int)", "DROP FUNCTION"],
      ["truncate t", "TRUNCATE TABLE"],
      ["alter system set work_mem = '1MB'", "ALTER SYSTEM"],
      ["alter table t add column c int", "ALTER TABLE"],
      ["alter index i rename to j", "ALTER INDEX"],
      ["alter table t rename column a to b", "ALTER TABLE"],
      ["vacuum t", "VACUUM"],
      ["analyze t", "ANALYZE"],
      ["create table t (a int)", "CREATE TABLE"],
      ["create table t as select 1", "CREATE TABLE AS"],
      ["create materialized view m as select 1", "CREATE MATERIALIZED VIEW"],
      ["create procedure p() language sql as 'select 1'", "CREATE PROCEDURE"],
      ["do $$ begin end $$", "DO"],
      ["begin", "BEGIN"],
      ["start transaction", "START TRANSACTION"],
      ["rollback to savepoint s", "ROLLBACK"],
      ["grant select on t to r", "GRANT"],
      ["revoke r from u", "REVOKE ROLE"],
      ["discard all", "DISCARD ALL"],
      ["reset all", "RESET"],
      ["close all", "CLOSE CURSOR ALL"],
      ["move next from c", "MOVE"],
      ["lock t", "LOCK TABLE"],
      ["merge into t using s on t.a = s.a when matched then delete", "MERGE"],
    ];
    for (const [sql, tag] of cases) {
      const [s] = stmts(sql);
      const [type, node] = Object.entries(s!.stmt as Record<string, unknown>)[0]!;
      expect({ sql, tag: commandTag(type, node as Record<string, unknown>) }).toEqual({ sql, tag });
      expect({ tag, known: knownTag(tag) }).toEqual({ tag, known: true });
    }
  });

  test("an entry matches its tag and the tags it begins as whole words", () => {
    expect(tagMatches("DROP TABLE", "DROP")).toBe(true);
    expect(tagMatches("DROP TABLE", "DROP TABLE")).toBe(true);
    expect(tagMatches("DROP TABLESPACE", "DROP TABLE")).toBe(false);
    expect(tagMatches("DROPX", "DROP")).toBe(false);
    expect(normalizeTag("  alter\tsystem ")).toBe("ALTER SYSTEM");
    expect([knownTag("DROP"), knownTag("ALTER SYS"), knownTag("DELETE FROM")]).toEqual([true, false, false]);
  });

  test("nested statements that run count; definitions and plain EXPLAIN do not", () => {
    expect(tags("with d as (delete from t returning *) select * from d")).toEqual(["SELECT", "DELETE"]);
    expect(tags("explain analyze delete from t")).toEqual(["EXPLAIN", "DELETE"]);
    expect(tags("explain delete from t")).toEqual(["EXPLAIN"]);
    expect(tags("prepare p as update t set a = 1")).toEqual(["PREPARE", "UPDATE"]);
    expect(tags("copy (delete from t returning *) to stdout")).toEqual(["COPY", "DELETE"]);
    expect(tags("create view v as select * from t")).toEqual(["CREATE VIEW"]);
    expect(tags("create rule r as on insert to t do also delete from u")).toEqual(["CREATE RULE"]);
    expect(tags("select 1; drop table t; select 2")).toEqual(["SELECT", "DROP TABLE", "SELECT"]);
  });
});

describe("SQL names", () => {
  test("parsed as SQL does: unquoted parts fold, quoted ones keep their case", () => {
    expect(parseName("accounts")).toEqual({ schema: null, name: "accounts" });
    expect(parseName("Billing.Invoices")).toEqual({ schema: "billing", name: "invoices" });
    expect(parseName('"Mixed Case"')).toEqual({ schema: null, name: "Mixed Case" });
    expect(parseName('app."a""b"')).toEqual({ schema: "app", name: 'a"b' });
    expect(parseName("db.s.t")).toEqual({ schema: "s", name: "t" });
    for (const bad of ["", "a.", ".a", "a b", '"unterminated', '""', "a.b.c.d", "1abc"]) expect({ bad, p: parseName(bad) }).toEqual({ bad, p: null });
  });

  test("matching is conservative about schemas", () => {
    const unqualified = parseName("t")!;
    const qualified = parseName("app.t")!;
    expect([nameMatches(unqualified, null, "t"), nameMatches(unqualified, "other", "t")]).toEqual([true, true]);
    expect([nameMatches(qualified, "app", "t"), nameMatches(qualified, null, "t"), nameMatches(qualified, "other", "t")]).toEqual([true, true, false]);
    expect(nameMatches(unqualified, null, "T")).toBe(false);
  });
});

describe("rules on facts", () => {
  const sizes = new TableSnapshot(
    [
      { schema: "public", name: "big", rows: 5000, columns: 3 },
      { schema: "archive", name: "small", rows: 9000, columns: 2 },
      { schema: "public", name: "small", rows: 10, columns: 2 },
      { schema: "public", name: "wide", rows: 1, columns: 40 },
    ] satisfies TableRow[],
    0,
  );
  const rule = (r: Record<string, unknown>) => new RuleSet(compileRules(configFrom({ nodes: [{ name: "p" }], users: [{ name: "u", password: "x" }], firewall: { rules: [{ name: "r", ...r }] } }).firewall.rules));
  const match = (r: RuleSet, sql: string) => r.evaluate(factsOf(stmts(sql)), sizes).deny?.detail ?? null;

  test("missing_where: DELETE/UPDATE without WHERE at any depth; WHERE CURRENT OF counts as a WHERE", () => {
    const r = rule({ kind: "missing_where" });
    expect(match(r, "delete from t")).toBe("DELETE without WHERE on table t");
    expect(match(r, "update s.t set a = 1")).toBe("UPDATE without WHERE on table s.t");
    expect(match(r, "with x as (update t set a = 1 returning 1) select 1")).toBe("UPDATE without WHERE on table t");
    expect(match(r, "delete from t where a = 1")).toBeNull();
    expect(match(r, "update t set a = 1 where current of c")).toBeNull();
    expect(match(rule({ kind: "missing_where", statements: ["DELETE"] }), "update t set a = 1")).toBeNull();
  });

  test("unbounded_select: big tables by name in any schema, bounded by WHERE or LIMIT (its own or its set operation's)", () => {
    const r = rule({ kind: "unbounded_select", min_rows: 1000 });
    expect(match(r, "select * from big")).toBe("SELECT without WHERE or LIMIT on table big (about 5000 rows, more than 1000)");
    // Unqualified: the largest table of that name anywhere (archive.small), since search_path is the session's.
    expect(match(r, "select * from small")).toBe("SELECT without WHERE or LIMIT on table small (about 9000 rows, more than 1000)");
    expect(match(r, "select * from public.small")).toBeNull();
    expect(match(r, "select * from big where true")).toBeNull();
    expect(match(r, "select * from big limit 1")).toBeNull();
    expect(match(r, "select * from big limit null")).not.toBeNull();
    expect(match(r, "(select * from big union select * from big) limit 3")).toBeNull();
    expect(match(r, "select * from big union select 1")).not.toBeNull();
    expect(match(r, "select 1 where exists (select 1 from big)")).not.toBeNull();
    expect(match(r, "select * from unknown_table")).toBeNull();
  });

  test("select_star: bare * covers every FROM table, t.* the one it names", () => {
    const r = rule({ kind: "select_star", max_columns: 10 });
    expect(match(r, "select * from wide")).toBe("SELECT * on table wide (40 columns, more than 10)");
    expect(match(r, "select w.* from wide w join big b on true")).not.toBeNull();
    expect(match(r, "select b.* from wide w join big b on true")).toBeNull();
    expect(match(r, "select a, b from wide")).toBeNull();
  });

  test("tables and functions: named anywhere, however quoted", () => {
    const t = rule({ kind: "tables", tables: ["app.secrets"] });
    for (const sql of ['select * from "secrets"', "select * from app.secrets", "insert into secrets values (1)", "drop table app.secrets", "truncate secrets", "grant select on secrets to r", "create view v as select * from secrets", "alter table secrets add c int"]) {
      expect({ sql, m: match(t, sql) }).toEqual({ sql, m: sql.includes("app.") ? "uses table app.secrets" : "uses table secrets" });
    }
    expect(match(t, "select * from other.secrets")).toBeNull();
    expect(match(t, "select 'secrets'")).toBeNull();
    const f = rule({ kind: "functions", functions: ["pg_sleep"] });
    for (const sql of ["select pg_sleep(1)", "select pg_catalog.pg_sleep(1)", 'select "pg_sleep"(1)', "select * from t where pg_sleep(1) is null", "drop function pg_sleep(float8)"]) {
      expect({ sql, m: match(f, sql) === null }).toEqual({ sql, m: false });
    }
    expect(match(f, "select 'pg_sleep(1)'")).toBeNull();
  });
});

describe("judge: verdicts cached by shape, per sizes snapshot", () => {
  const config = configFrom({
    nodes: [{ name: "p" }],
    users: [{ name: "u", password: "x" }],
    firewall: { rules: [{ name: "scan", kind: "unbounded_select", min_rows: 100 }, { name: "ddl", kind: "statement", statements: ["DROP"] }] },
  });
  const policy = new Policies(config, DEFAULT_FUNCTIONS).forUser(config.users[0]!);

  test("the same shape gets the same verdict object; literals and comments do not matter", () => {
    const empty = new TableSnapshot([], 1);
    const a = judge(policy, "drop table t", shape("drop table t").key, empty);
    const b = judge(policy, "/* x */ DROP TABLE t", shape("/* x */ DROP TABLE t").key, empty);
    expect(a.refusal?.code).toBe("42501");
    expect(b).toBe(a);
  });

  test("new sizes, new verdicts", () => {
    const before = new TableSnapshot([{ schema: "public", name: "t", rows: 10, columns: 1 }], 1);
    const after = new TableSnapshot([{ schema: "public", name: "t", rows: 1000, columns: 1 }], 2);
    expect(judge(policy, "select * from t", shape("select * from t").key, before).refusal).toBeNull();
    expect(judge(policy, "select * from t", shape("select * from t").key, after).refusal?.detail).toBe("SELECT without WHERE or LIMIT on table t (about 1000 rows, more than 100)");
  });

  test("what cannot be parsed is refused under deny rules (42601), and never cached", () => {
    const bad = judge(policy, "select 'unterminated", shape("select 'unterminated").key, new TableSnapshot([], 1));
    expect(bad.refusal?.code).toBe("42601");
    expect(bad.refusal?.hint).toContain('for user "u"');
  });
});
