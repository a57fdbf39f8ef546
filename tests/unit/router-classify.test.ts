// Invariant: a statement's classification depends on its shape only — a second statement of the same shape is
// answered from the cache without parsing, and the cached answer equals the full parse's — and a multi-statement
// string is read-only only when every statement is, with transaction control deciding only when nothing else does.
import { beforeAll, describe, expect, test } from "bun:test";
import { BUILTIN_FUNCTIONS } from "../../src/router/builtins.ts";
import {
  classifierStats,
  classify,
  classifyUncached,
  describeReason,
  functionLists,
  WRITE_FUNCTIONS,
  type FunctionLists,
  type StatementReason,
} from "../../src/router/classify.ts";
import { loadParser } from "../../src/router/parser.ts";

beforeAll(loadParser);

/** Function lists of their own, and so a cache of their own: each test starts cold. */
const fresh = (): FunctionLists => ({ write: new Set(), read: new Set() });

/** Cache misses (full parses) and hits while `f` runs. */
function counting(f: () => void): { misses: number; hits: number } {
  const before = { ...classifierStats };
  f();
  return { misses: classifierStats.misses - before.misses, hits: classifierStats.hits - before.hits };
}

describe("classify: the shape cache", () => {
  test("a statement of a shape already seen is not parsed again, and gets the same answer", () => {
    const lists = fresh();
    let first, second;
    const n = counting(() => {
      first = classify("select * from t where id = 1 and b = 'x'", lists);
      second = classify("SELECT *  FROM t /* again */ WHERE id = 99 AND b = 'it''s'", lists);
    });
    expect(n).toEqual({ misses: 1, hits: 1 });
    expect(second).toBe(first!);
  });

  test("writes are cached too", () => {
    const lists = fresh();
    const n = counting(() => {
      for (let i = 0; i < 5; i++) classify(`select nextval('seq_${i}')`, lists);
    });
    expect(n).toEqual({ misses: 1, hits: 4 });
    expect(classify("select nextval('other')", lists).reason).toEqual({ code: "write_function", name: "nextval" });
  });

  test("parse errors are not cached: they may depend on a literal", () => {
    const lists = fresh();
    const n = counting(() => {
      classify("select 'open", lists);
      classify("select 'open", lists);
    });
    expect(n).toEqual({ misses: 2, hits: 0 });
  });

  test("each set of function lists has its own cache (a reload with new lists starts afresh)", () => {
    const a = fresh();
    const b: FunctionLists = { write: new Set(), read: new Set(["my_func"]) };
    classify("select my_func()", a);
    const n = counting(() => {
      expect(classify("select my_func()", b).readOnly).toBe(true);
      expect(classify("select my_func()", a).readOnly).toBe(false);
    });
    expect(n).toEqual({ misses: 1, hits: 1 });
  });

  // Pairs of statements with one shape; the second hits the entry the first made, and must be judged as if parsed.
  const sameShape: [string, string][] = [
    ["select * from t where id = 1", "select * from t where id = 2"],
    ["select $$a$$", "select $$delete from t$$"],
    ["select 'x'", "select E'x\\'; delete from t'"],
    ["/* pgroute: primary */ select 1", "-- anything\nselect 2"],
    ["explain (analyze 'off') delete from t", "explain (analyze 'on') delete from t"],
    ["explain (analyze 0) delete from t", "explain (analyze 1) delete from t"],
    ["begin transaction isolation level serializable", "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE"],
    ["set default_transaction_read_only = 'on'", "set default_transaction_read_only = 'off'"],
    ["select set_config('a', 'b', false)", "select set_config('search_path', 'x', false)"],
    ["copy t to '/tmp/x'", "copy t to '/tmp/y'"],
  ];
  for (const [a, b] of sameShape) {
    test(`cached = parsed: ${JSON.stringify(b)} after ${JSON.stringify(a)}`, () => {
      const lists = fresh();
      classify(a, lists);
      const n = counting(() => expect(classify(b, lists)).toEqual(classifyUncached(b, lists)));
      expect(n.hits).toBe(1);
    });
  }

  test("a lexically invalid statement never hits the entry of a valid one: serve decides as explain does", () => {
    const lists = fresh();
    classify("select 1", lists);
    classify("select 'x'", lists);
    // `1abc` is trailing junk, `'open` an unterminated string: the lexer gives them keys no valid statement has, so
    // the parser runs and reports the error (and the statement goes to the primary, as explain says).
    for (const sql of ["select 1abc", "select 1.2.3", "select 'open", "select 1 /* open"]) {
      expect([sql, classify(sql, lists).reason.code]).toEqual([sql, "parse_error"]);
    }
    expect(classify("select 1abc", lists).reason).toMatchObject({ code: "parse_error", position: 8 });
  });
});

describe("classify: one statement", () => {
  const rows: [string, StatementReason][] = [
    ["select 1", { code: "read_only" }],
    ["select * from t for no key update", { code: "locking_clause", clause: "FOR NO KEY UPDATE" }],
    ["select * from t for key share", { code: "locking_clause", clause: "FOR KEY SHARE" }],
    ["select 1 union (select 2 from t for update)", { code: "locking_clause", clause: "FOR UPDATE" }],
    ["select 1 as a into t2 union select 2", { code: "select_into" }],
    ["with d as (delete from t returning *) select * from d", { code: "writable_cte", statement: "DELETE" }],
    ["insert into t values (1)", { code: "write_statement", statement: "INSERT" }],
    ["copy (update t set a = 1 returning *) to stdout", { code: "write_statement", statement: "UPDATE" }],
    ["select pg_catalog.setval('s', 1)", { code: "write_function", name: "pg_catalog.setval" }],
    ["select app.f()", { code: "unknown_function", name: "app.f" }],
    ["savepoint a", { code: "transaction_control", statement: "SAVEPOINT" }],
    ["rollback to savepoint a", { code: "transaction_control", statement: "ROLLBACK TO" }],
    ["release savepoint a", { code: "transaction_control", statement: "RELEASE" }],
    ["declare c cursor with hold for select 1", { code: "session_command", statement: "DECLARE WITH HOLD" }],
    ["explain execute p", { code: "session_command", statement: "EXECUTE" }],
    ["explain analyze execute p", { code: "session_command", statement: "EXECUTE" }],
    ["explain delete from t", { code: "read_only" }],
    ["", { code: "empty" }],
    ["/* only a comment */", { code: "empty" }],
    ["-- only a comment", { code: "empty" }],
    [";", { code: "empty" }],
  ];
  for (const [sql, reason] of rows) {
    test(JSON.stringify(sql), () => {
      const c = classifyUncached(sql);
      expect(c.reason).toEqual(reason);
      expect(c.readOnly).toBe(reason.code === "read_only" || reason.code === "empty");
    });
  }

  test("an unterminated comment is a parse error, not an empty statement", () => {
    expect(classifyUncached("/* open").reason).toMatchObject({ code: "parse_error", position: 1 });
  });

  test("parse errors: message and 1-based character position", () => {
    expect(classifyUncached("select from where").reason).toEqual({ code: "parse_error", message: `syntax error at or near "where"`, position: 13 });
    // Characters, not bytes: é is two bytes in UTF-8.
    expect(classifyUncached("select 'é', from").reason).toMatchObject({ position: 13 });
  });
});

describe("classify: transaction control", () => {
  const rows: [string, unknown][] = [
    ["begin", { kind: "begin", readOnly: null, serializable: false }],
    ["begin read only", { kind: "begin", readOnly: true, serializable: false }],
    ["begin read write", { kind: "begin", readOnly: false, serializable: false }],
    ["start transaction isolation level repeatable read, read only", { kind: "begin", readOnly: true, serializable: false }],
    ["begin isolation level serializable", { kind: "begin", readOnly: null, serializable: true }],
    ["START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", { kind: "begin", readOnly: true, serializable: true }],
    ["commit", { kind: "commit" }],
    ["end", { kind: "commit" }],
    ["commit and chain", { kind: "commit" }],
    ["prepare transaction 'x'", { kind: "commit" }],
    ["commit prepared 'x'", { kind: "commit" }],
    ["rollback", { kind: "rollback" }],
    ["abort", { kind: "rollback" }],
    ["rollback prepared 'x'", { kind: "rollback" }],
    ["savepoint a", { kind: "savepoint" }],
    ["release a", { kind: "savepoint" }],
    ["rollback to a", { kind: "savepoint" }],
    ["set transaction read only", { kind: "set_transaction", readOnly: true }],
    ["set transaction isolation level serializable", { kind: "set_transaction", readOnly: null }],
    ["select 1", null],
    ["set search_path = a", null],
  ];
  for (const [sql, tx] of rows) {
    test(sql, () => {
      expect(classifyUncached(sql).tx).toEqual(tx as never);
    });
  }
});

describe("classify: multi-statement strings (they run on one node)", () => {
  const rows: [string, { readOnly: boolean; reason: StatementReason; tx: unknown; statements: number }][] = [
    ["select 1; select 2", { readOnly: true, reason: { code: "read_only" }, tx: null, statements: 2 }],
    ["select 1; delete from t", { readOnly: false, reason: { code: "write_statement", statement: "DELETE" }, tx: null, statements: 2 }],
    ["delete from t; select 1", { readOnly: false, reason: { code: "write_statement", statement: "DELETE" }, tx: null, statements: 2 }],
    ["select 1; select nextval('s'); select 2", { readOnly: false, reason: { code: "write_function", name: "nextval" }, tx: null, statements: 3 }],
    ["select 1; set search_path = a", { readOnly: false, reason: { code: "session_command", statement: "SET" }, tx: null, statements: 2 }],
    [
      "begin; select 1; commit",
      { readOnly: false, reason: { code: "transaction_control", statement: "BEGIN" }, tx: { kind: "begin", readOnly: null, serializable: false }, statements: 3 },
    ],
    [
      "begin read only; select 1; commit",
      { readOnly: false, reason: { code: "transaction_control", statement: "BEGIN" }, tx: { kind: "begin", readOnly: true, serializable: false }, statements: 3 },
    ],
    // The write after the read-only transaction decides, not the BEGIN before it.
    [
      "begin read only; commit; delete from t",
      { readOnly: false, reason: { code: "write_statement", statement: "DELETE" }, tx: { kind: "begin", readOnly: true, serializable: false }, statements: 3 },
    ],
    ["select 1; begin", { readOnly: false, reason: { code: "transaction_control", statement: "BEGIN" }, tx: null, statements: 2 }],
    ["select 1;;", { readOnly: true, reason: { code: "read_only" }, tx: null, statements: 1 }],
  ];
  for (const [sql, expected] of rows) {
    test(sql, () => {
      expect(classifyUncached(sql)).toEqual(expected as never);
    });
  }
});

describe("classify: function lists", () => {
  test("config names are lower-cased; schema-qualified names match only with their schema, bare names any schema", () => {
    const lists = functionLists({ write_functions: ["App.Touch", "AUDIT"], read_functions: ["Reports.Monthly", "my_read"] });
    expect([...lists.write]).toEqual(["app.touch", "audit"]);
    expect(classifyUncached("select app.touch()", lists).reason).toEqual({ code: "write_function", name: "app.touch" });
    expect(classifyUncached("select touch()", lists).reason).toEqual({ code: "unknown_function", name: "touch" });
    expect(classifyUncached("select x.audit()", lists).reason).toEqual({ code: "write_function", name: "x.audit" });
    expect(classifyUncached("select reports.monthly()", lists).readOnly).toBe(true);
    expect(classifyUncached("select other.monthly()", lists).readOnly).toBe(false);
    expect(classifyUncached("select any_schema.my_read()", lists).readOnly).toBe(true);
  });

  test("the write list wins over the read list", () => {
    const lists = functionLists({ write_functions: ["f"], read_functions: ["f"] });
    expect(classifyUncached("select f()", lists).reason).toEqual({ code: "write_function", name: "f" });
  });

  test("every built-in write function is a known built-in, so it is reported as needing the primary", () => {
    for (const f of WRITE_FUNCTIONS) {
      expect([f, BUILTIN_FUNCTIONS.has(f)]).toEqual([f, true]);
      expect(classifyUncached(`select ${f}()`).reason).toEqual({ code: "write_function", name: f });
      expect(classifyUncached(`select pg_catalog.${f}()`).reason).toEqual({ code: "write_function", name: `pg_catalog.${f}` });
    }
  });
});

describe("describeReason", () => {
  test("every reason code in words", () => {
    const cases: [StatementReason, string][] = [
      [{ code: "read_only" }, "read-only query"],
      [{ code: "write_statement", statement: "INSERT" }, "INSERT writes"],
      [{ code: "locking_clause", clause: "FOR SHARE" }, "locking clause FOR SHARE"],
      [{ code: "select_into" }, "SELECT INTO creates a table"],
      [{ code: "writable_cte", statement: "DELETE" }, "data-modifying CTE (DELETE)"],
      [{ code: "write_function", name: "nextval" }, "calls nextval(), which needs the primary"],
      [{ code: "unknown_function", name: "f" }, "calls f(), not known to be read-only"],
      [{ code: "transaction_control", statement: "BEGIN" }, "transaction control (BEGIN)"],
      [{ code: "session_command", statement: "SET" }, "session command (SET)"],
      [{ code: "parse_error", message: "boom", position: 3 }, "parse error: boom"],
      [{ code: "empty" }, "empty statement"],
    ];
    for (const [r, text] of cases) expect(describeReason(r)).toBe(text);
  });
});
