// Invariant: a read-only user may run a request only when every statement of it is read-only or harmless session
// and transaction control (never turning transactions read-write), PREPARE bodies included; statement_timeout values
// are read as Postgres reads them, a change above the cap is flagged (and refused when more statements follow it);
// a session's settings carry the capped value, the client's lower value wins, and nothing is sent to a server
// connection that already carries them.
import { beforeAll, describe, expect, test } from "bun:test";
import { DEFAULT_FUNCTIONS, functionLists } from "../../src/router/classify.ts";
import { sessionEffects } from "../../src/router/effects.ts";
import { loadParser, parseSql } from "../../src/router/parser.ts";
import { isAdmin, isReadOnly, readOnlyFunctions, readOnlyViolation, roleOf, sessionTarget } from "../../src/policy/roles.ts";
import { timeoutChange, timeoutMs, withinCap, type TimeoutChange } from "../../src/policy/timeout.ts";
import { SessionSettings, type SettingsCarrier } from "../../src/session/settings.ts";
import type { UserConfig } from "../../src/config/types.ts";

beforeAll(loadParser);

const lists = readOnlyFunctions(functionLists({ write_functions: [], read_functions: ["app.report"] }));

function verdict(sql: string): string | null {
  const p = parseSql(sql);
  if (!p.ok) throw new Error(p.message);
  return readOnlyViolation(p.tree.stmts ?? [], lists, "r").refusal?.message.replace('pgroute: user "r" is read-only: ', "") ?? null;
}

describe("read-only role", () => {
  test("allowed: reads, session and transaction control, PREPARE of a read, set_config of other settings", () => {
    for (const sql of [
      "select 1",
      "select app.report()",
      "begin; select 1; commit",
      "begin read only",
      "start transaction isolation level repeatable read",
      "set search_path = app",
      "set local work_mem = '64MB'",
      "set default_transaction_read_only = on",
      "set transaction read only",
      "set session characteristics as transaction read only",
      "reset all",
      "show all",
      "prepare p as select 1",
      "execute p",
      "deallocate all",
      "declare c cursor for select 1",
      "fetch 1 from c",
      "listen ch",
      "explain select * from t",
      "copy (select 1) to stdout",
      "select set_config('app.tenant', '42', false)",
      "discard all",
    ]) {
      expect({ sql, v: verdict(sql) }).toEqual({ sql, v: null });
    }
  });

  test("refused, with the reason in words", () => {
    const cases: [string, string][] = [
      ["insert into t values (1)", "INSERT writes"],
      ["select 1; delete from t", "DELETE writes"],
      ["begin read only; commit; update t set a = 1", "UPDATE writes"],
      ["with x as (delete from t returning 1) select 1", "data-modifying CTE (DELETE)"],
      ["select nextval('s')", "calls nextval(), which needs the primary"],
      ["select app.other()", "calls app.other(), not known to be read-only"],
      ["select * from t for update", "locking clause FOR UPDATE"],
      ["copy t from stdin", "COPY FROM writes"],
      ["do $$ begin end $$", "DO writes"],
      ["call p()", "CALL writes"],
      ["prepare w as delete from t", "DELETE writes"],
      ["begin read write", "a read-write transaction (BEGIN READ WRITE)"],
      ["commit; begin isolation level serializable, read write", "a read-write transaction (BEGIN READ WRITE)"],
      ["set transaction read write", "SET TRANSACTION READ WRITE"],
      ["set default_transaction_read_only = off", "SET default_transaction_read_only = off"],
      ["set default_transaction_read_only to 'false'", "SET default_transaction_read_only = off"],
      ["set transaction_read_only = 0", "SET transaction_read_only = off"],
      ["set session characteristics as transaction read write", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"],
      ["select set_config('default_transaction_read_only', 'off', false)", "set_config('default_transaction_read_only', off)"],
      ["select set_config(current_user || '.x', 'y', false)", "set_config() with a computed setting name"],
      ["select * into t2 from t", "SELECT INTO creates a table"],
    ];
    for (const [sql, why] of cases) expect({ sql, v: verdict(sql) }).toEqual({ sql, v: why });
  });

  test("an unknown function's refusal says how to allow it; literal-dependent verdicts are flagged", () => {
    const p = parseSql("select mine()");
    const r = readOnlyViolation(p.ok ? p.tree.stmts! : [], lists, "r");
    expect(r.refusal?.hint).toBe("List the function in [routing] read_functions if it only reads.");
    expect(r.literal).toBe(false);
    const s = parseSql("select set_config('a.b', 'c', false)");
    expect(readOnlyViolation(s.ok ? s.tree.stmts! : [], lists, "r").literal).toBe(true);
  });

  test("read-only users route set_config to replicas; session pooling puts them on a replica unless told otherwise", () => {
    expect(readOnlyFunctions(DEFAULT_FUNCTIONS)).toBe(readOnlyFunctions(DEFAULT_FUNCTIONS));
    expect(readOnlyFunctions(DEFAULT_FUNCTIONS).read.has("set_config")).toBe(true);
    const user = (u: Partial<UserConfig>): UserConfig => ({ name: "u", auth: "trust", databases: [], target: "auto", ...u });
    expect([roleOf(user({})), isAdmin(user({ role: "admin" })), isAdmin(user({})), isReadOnly(user({ role: "admin" }))]).toEqual(["read-write", true, false, false]);
    expect([sessionTarget(user({ role: "read-only" })), sessionTarget(user({ role: "read-only", target: "primary" })), sessionTarget(user({})), sessionTarget(user({ target: "replica" }))]).toEqual([
      "replica",
      "primary",
      "primary",
      "replica",
    ]);
  });
});

describe("statement_timeout values", () => {
  test("read as Postgres reads them", () => {
    const cases: [string, number | null][] = [
      ["5000", 5000],
      ["5s", 5000],
      ["5 s", 5000],
      ["1.5min", 90_000],
      ["250ms", 250],
      ["1h", 3_600_000],
      ["1d", 86_400_000],
      ["1500us", 2],
      ["0", 0],
      ["-1", null],
      ["5 parsecs", null],
      ["", null],
      ["1e3", 1000],
    ];
    for (const [v, ms] of cases) expect({ v, ms: timeoutMs(v) }).toEqual({ v, ms });
    expect([withinCap("100", 300), withinCap("300ms", 300), withinCap("301", 300), withinCap("0", 300), withinCap(undefined, 300)]).toEqual([true, true, false, false, false]);
  });

  test("changes above the cap are flagged; one followed by more statements is refused", () => {
    const cases: [string, TimeoutChange][] = [
      ["set statement_timeout = 100", "none"],
      ["set statement_timeout = '10min'", "cap"],
      ["set local statement_timeout = 0", "cap"],
      ["reset statement_timeout", "cap"],
      ["reset all", "cap"],
      ["discard all", "cap"],
      ["set statement_timeout to default", "cap"],
      ["select set_config('statement_timeout', '0', false)", "cap"],
      ["select set_config('statement_timeout', '100', true)", "none"],
      ["select set_config(current_setting('x'), '0', false)", "cap"],
      ["set statement_timeout = 0; select 1", "refuse"],
      ["select 1; set statement_timeout = 0", "cap"],
      ["set statement_timeout = 100; select 1", "none"],
      ["set work_mem = '1GB'", "none"],
    ];
    for (const [sql, change] of cases) expect({ sql, c: timeoutChange(sql, 300) }).toEqual({ sql, c: change });
  });
});

describe("session settings under a statement_timeout cap", () => {
  const carrier = (): SettingsCarrier => ({ applied: new Map(), params: new Map(), appliedSignature: null });

  test("the cap is a setting of the session; a lower startup value wins, 0 does not", () => {
    expect(new SessionSettings(new Map(), { statementTimeoutMs: 300 }).diff(carrier())).toBe("SET statement_timeout = 300");
    expect(new SessionSettings(new Map([["statement_timeout", "100"]]), { statementTimeoutMs: 300 }).diff(carrier())).toBe("SET statement_timeout TO '100'");
    expect(new SessionSettings(new Map([["options", "-c statement_timeout=0"]]), { statementTimeoutMs: 300 }).diff(carrier())).toBe("SET statement_timeout = 300");
    expect(new SessionSettings(new Map(), { readOnly: true }).diff(carrier())).toBe("SET default_transaction_read_only TO 'on'");
    expect(new SessionSettings(new Map()).diff(carrier())).toBeNull();
  });

  test("nothing is sent to a connection that carries the settings already", () => {
    const s = new SessionSettings(new Map(), { statementTimeoutMs: 300 });
    const conn = carrier();
    expect(s.diff(conn)).not.toBeNull();
    s.markApplied(conn);
    expect(conn.appliedSignature).toBe(s.signature);
    expect(s.diff(conn)).toBeNull();
  });

  test("a client SET above the cap ran on the connection, so the cap is sent before its next request", () => {
    const s = new SessionSettings(new Map(), { statementTimeoutMs: 300 });
    const conn = carrier();
    s.markApplied(conn);
    s.ready(0x49, false, sessionEffects("set statement_timeout = 0"), conn);
    expect(s.diff(conn)).toBe("SET statement_timeout = 300");
    s.markApplied(conn);
    // A lower one is kept as the client wrote it, and is already what the connection carries.
    s.ready(0x49, false, sessionEffects("set statement_timeout = '100ms'"), conn);
    expect(s.diff(conn)).toBeNull();
    expect(s.signature).toContain("set statement_timeout = '100ms'");
  });
});
