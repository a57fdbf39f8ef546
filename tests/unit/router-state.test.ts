// Invariant: SET/RESET/SHOW pgroute.* are recognised (and nothing else is), `SET pgroute.target = primary` included
// although PRIMARY is reserved in Postgres; RouterState carries a session's transaction, target setting,
// default_transaction_read_only and held-back BEGIN from one statement to the next, and decide() changes none of it.
import { beforeAll, describe, expect, test } from "bun:test";
import { classifierStats, DEFAULT_FUNCTIONS } from "../../src/router/classify.ts";
import { loadParser } from "../../src/router/parser.ts";
import { RouterState, virtualSetting, type RouterOptions, type Virtual } from "../../src/router/state.ts";

beforeAll(loadParser);

describe("virtualSetting", () => {
  const rows: [string, Virtual | null][] = [
    ["set pgroute.target = replica", { op: "set", name: "pgroute.target", value: "replica" }],
    ["SET pgroute.target TO 'Replica'", { op: "set", name: "pgroute.target", value: "Replica" }],
    ["set pgroute.target = primary", { op: "set", name: "pgroute.target", value: "primary" }],
    ["SET PGROUTE.TARGET = PRIMARY;", { op: "set", name: "pgroute.target", value: "primary" }],
    ["/* why */ set session pgroute.target to primary", { op: "set", name: "pgroute.target", value: "primary" }],
    ["set pgroute.target = 'primary'", { op: "set", name: "pgroute.target", value: "primary" }],
    ["set pgroute.target = auto", { op: "set", name: "pgroute.target", value: "auto" }],
    ["set pgroute.colour = 1", { op: "set", name: "pgroute.colour", value: "1" }],
    ["reset pgroute.target", { op: "reset", name: "pgroute.target" }],
    ["set pgroute.target to default", { op: "reset", name: "pgroute.target" }],
    ["show pgroute.target", { op: "show", name: "pgroute.target" }],
    // Not pgroute's: ordinary settings, SET LOCAL (Postgres keeps it), other statements, several statements.
    ["set search_path = a", null],
    ["show search_path", null],
    ["set local pgroute.target = replica", null],
    ["select 'set pgroute.target = replica'", null],
    ["set pgroute.target = replica; select 1", null],
    ["set pgroute.target = primary replica", null],
    ["set pgroute.target = primary; delete from t", null],
  ];
  for (const [sql, expected] of rows) {
    test(JSON.stringify(sql), () => {
      expect(virtualSetting(sql)).toEqual(expected);
    });
  }
});

const options = (o: Partial<RouterOptions> = {}): RouterOptions => ({
  functions: DEFAULT_FUNCTIONS,
  transactions: "primary",
  userTarget: "auto",
  uncached: true,
  ...o,
});

/** Runs `sqls` as explain does (transaction control assumed to succeed); the routes, as target + reason code. */
function session(state: RouterState, sqls: string[], replicas = true): string[] {
  return sqls.map((sql) => {
    const v = virtualSetting(sql);
    if (v) return `pgroute ${state.setVirtual(v) ?? "ok"}`;
    const d = state.decide(sql, replicas);
    const r = d.route;
    if (r.target === "defer") state.deferredBegin = sql;
    else if (r.target !== "refuse") {
      if (state.deferredBegin) {
        state.transaction = r.target;
        state.deferredBegin = null;
      }
      state.executed(sql, d, r.target);
    }
    return `${r.target} ${r.reason.code}`;
  });
}

describe("RouterState", () => {
  test("decide() changes nothing; executed() opens and closes transactions", () => {
    const s = new RouterState(options());
    const d = s.decide("begin read only", true);
    expect(d.route).toEqual({ target: "replica", reason: { code: "read_only_transaction" } });
    expect(s.transaction).toBeNull();
    s.executed("begin read only", d, "replica");
    expect(s.transaction).toBe("replica");
    expect(s.decide("select 1", true).route).toEqual({ target: "replica", reason: { code: "in_transaction", target: "replica" } });
    s.executed("commit", s.decide("commit", true), "replica");
    expect(s.transaction).toBeNull();
  });

  test("with a ReadyForQuery status, the status decides the transaction", () => {
    const s = new RouterState(options());
    s.executed("select 1", s.decide("select 1", true), "primary", 0x54 /* 'T' */);
    expect(s.transaction).toBe("primary");
    s.executed("commit", s.decide("commit", true), "primary", 0x49 /* 'I' */);
    expect(s.transaction).toBeNull();
  });

  test("default_transaction_read_only: set, spelled several ways, then reset", () => {
    const s = new RouterState(options());
    expect(
      session(s, [
        "set default_transaction_read_only = on",
        "begin",
        "commit",
        "set default_transaction_read_only to off",
        "begin",
        "commit",
        "SET default_transaction_read_only = 'true'",
        "begin",
        "commit",
        "set local default_transaction_read_only = off",
        "begin",
        "commit",
        "reset default_transaction_read_only",
        "begin",
        "commit",
      ]),
    ).toEqual([
      "primary not_read_only",
      "replica read_only_transaction",
      "replica in_transaction",
      "primary not_read_only",
      "primary transaction_begin",
      "primary in_transaction",
      "primary not_read_only",
      "replica read_only_transaction",
      "replica in_transaction",
      "primary not_read_only",
      "replica read_only_transaction", // SET LOCAL lasts a transaction: the session default is still on
      "replica in_transaction",
      "primary not_read_only",
      "primary transaction_begin",
      "primary in_transaction",
    ]);
  });

  test("SET pgroute.target: values in any case, bad values refused with the setting unchanged", () => {
    const s = new RouterState(options());
    expect(session(s, ["set pgroute.target = REPLICA", "select 1", "set pgroute.target = nowhere", "select 1", "set pgroute.other = 1"])).toEqual([
      "pgroute ok",
      "replica session_target",
      `pgroute invalid value for parameter "pgroute.target": "nowhere" (expected primary, replica or auto)`,
      "replica session_target",
      `pgroute unrecognized configuration parameter "pgroute.other"`,
    ]);
    expect(s.showVirtual("pgroute.target")).toBe("replica");
    expect(s.showVirtual("pgroute.other")).toBeNull();
  });

  test("first-statement: the held-back BEGIN's transaction goes where its first statement goes, with that reason", () => {
    const s = new RouterState(options({ transactions: "first-statement" }));
    expect(session(s, ["begin", "/* pgroute: replica */ delete from t", "select 1", "delete from t", "commit"])).toEqual([
      "defer transaction_begin",
      "refuse replica_refused", // refused: the BEGIN is still held back
      "replica first_statement",
      "replica in_transaction",
      "replica in_transaction",
    ]);
    const d = new RouterState(options({ transactions: "first-statement" }));
    d.deferredBegin = "begin";
    expect(d.decide("select 1", false).route).toEqual({
      target: "primary",
      reason: { code: "first_statement", target: "primary", why: { code: "no_replica", wanted: { code: "read_only" } } },
    });
  });

  test("multi-statement strings (one simple Query message) run on one node", () => {
    const decide = (sql: string, o: Partial<RouterOptions> = {}) => {
      const r = new RouterState(options(o)).decide(sql, true).route;
      return `${r.target} ${r.reason.code}`;
    };
    expect(decide("select 1; select 2")).toBe("replica read_only");
    expect(decide("select 1; delete from t")).toBe("primary not_read_only");
    expect(decide("select 1; select nextval('s')")).toBe("primary not_read_only");
    expect(decide("begin read only; select 1; commit")).toBe("replica read_only_transaction");
    // The DELETE runs after the read-only transaction ended: it must not go to a replica with it.
    expect(decide("begin read only; commit; delete from t")).toBe("primary not_read_only");
    expect(decide("/* pgroute: replica */ begin read only; commit; delete from t")).toBe("refuse replica_refused");
    expect(decide("select 1; begin")).toBe("primary not_read_only");
    // Only a lone BEGIN is held back: a string with more statements is answered by the server.
    expect(decide("begin", { transactions: "first-statement" })).toBe("defer transaction_begin");
    expect(decide("begin; select 1", { transactions: "first-statement" })).toBe("primary transaction_begin");
  });

  test("the shape cache is used unless the options say otherwise", () => {
    const cached = new RouterState(options({ uncached: false, functions: { write: new Set(), read: new Set() } }));
    cached.decide("select 1", true);
    // Same shape as `select 1`: the cache answers. Explain's options parse every statement.
    const hits = classifierStats.hits;
    cached.decide("select 2", true);
    expect(classifierStats.hits).toBe(hits + 1);
    const before = { ...classifierStats };
    new RouterState(options()).decide("select 2", true);
    expect(classifierStats).toEqual(before);
    // A lexically invalid statement has a shape of its own: the parser reports it either way.
    expect(cached.decide("select 1abc", true).classification.reason.code).toBe("parse_error");
  });
});
