// Invariant: bench scripts follow pgbench's language — integer expressions with its precedence and truncating
// division, random() within its bounds, `:name` variables found by the real SQL scanner (never inside quotes or a
// `::` cast) — and anything a script uses but the generator does not support is refused when compiling, not at run time.
import { beforeAll, describe, expect, test } from "bun:test";
import { seededRandom } from "../../src/bench/client.ts";
import { BenchError } from "../../src/bench/errors.ts";
import { compileScript } from "../../src/bench/compile.ts";
import { evaluate, inlineSql, parseExpr, randomInt, type Step } from "../../src/bench/script.ts";
import { scenarios, SELECT_ONLY, TPCB_LIKE, workloadScripts } from "../../src/bench/workloads.ts";
import { loadParser } from "../../src/router/parser.ts";

beforeAll(async () => {
  await loadParser();
});

const never = () => {
  throw new Error("random() was not expected here");
};

describe("expressions", () => {
  test("precedence, parentheses, unary minus and truncating division", () => {
    const v = { scale: 10, aid: 250_001 };
    expect(evaluate(parseExpr("1 + 2 * 3"), v, never)).toBe(7);
    expect(evaluate(parseExpr("(1 + 2) * 3"), v, never)).toBe(9);
    expect(evaluate(parseExpr("100000 * :scale"), v, never)).toBe(1_000_000);
    expect(evaluate(parseExpr("(:aid - 1) / 100000 + 1"), v, never)).toBe(3);
    expect(evaluate(parseExpr("-7 / 2"), v, never)).toBe(-3);
    expect(evaluate(parseExpr("-7 % 3"), v, never)).toBe(-1);
    expect(evaluate(parseExpr("abs(-4) + least(3, :scale) + greatest(1, 2, 5)"), v, never)).toBe(12);
  });

  test("random(lo, hi) is inclusive at both ends", () => {
    expect(randomInt(1, 10, () => 0)).toBe(1);
    expect(randomInt(1, 10, () => 0.999999)).toBe(10);
    expect(evaluate(parseExpr("random(5, 5)"), {}, () => 0.5)).toBe(5);
    const rnd = seededRandom(42);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(evaluate(parseExpr("random(-2, 2)"), {}, rnd));
    expect([...seen].sort()).toEqual([-1, -2, 0, 1, 2].sort());
  });

  test("a seeded source repeats its sequence", () => {
    const a = seededRandom(7);
    const b = seededRandom(7);
    const xs = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
  });

  test("errors name the problem", () => {
    expect(() => parseExpr("random(1)", "f.sql:2")).toThrow("f.sql:2: random() takes 2 argument(s), got 1");
    expect(() => parseExpr("zipf(1, 2)", "f.sql:2")).toThrow('unknown function "zipf"');
    expect(() => parseExpr("1 +", "x")).toThrow("ends too early");
    expect(() => parseExpr("1 2", "x")).toThrow('unexpected "2"');
    expect(() => evaluate(parseExpr("1 / (2 - 2)"), {}, never)).toThrow("division by zero");
  });
});

describe("scripts", () => {
  test("pgbench's select-only script: one read-only statement with :aid as $1", () => {
    const s = compileScript("select", SELECT_ONLY);
    expect(s.statements).toBe(1);
    expect(s.readOnly).toBe(true);
    expect(s.transactional).toBe(false);
    const sql = s.steps.find((x): x is Extract<Step, { kind: "sql" }> => x.kind === "sql")!;
    expect(sql.prepared).toBe("SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
    expect(sql.vars).toEqual(["aid"]);
    expect(inlineSql(sql, [42])).toBe("SELECT abalance FROM pgbench_accounts WHERE aid = 42;");
  });

  test("tpcb-like: seven statements in a transaction that writes", () => {
    const s = compileScript("tpcb", TPCB_LIKE);
    expect(s.statements).toBe(7);
    expect(s.readOnly).toBe(false);
    expect(s.transactional).toBe(true);
    const insert = s.steps.filter((x) => x.kind === "sql")[5] as Extract<Step, { kind: "sql" }>;
    expect(insert.vars).toEqual(["tid", "bid", "aid", "delta"]);
    expect(inlineSql(insert, [1, 2, 3, -4])).toContain("VALUES (1, 2, 3, -4, CURRENT_TIMESTAMP)");
  });

  test("variables inside quotes, comments and :: casts are left alone", () => {
    const s = compileScript("q.sql", "\\set a 1\nSELECT ':a', $$:a$$, 1::int, /* :a */ :a AS \":a\";");
    const sql = s.steps[1] as Extract<Step, { kind: "sql" }>;
    expect(sql.vars).toEqual(["a"]);
    expect(inlineSql(sql, [9])).toBe("SELECT ':a', $$:a$$, 1::int, /* :a */ 9 AS \":a\";");
  });

  test("\\sleep takes an expression and a unit", () => {
    const s = compileScript("s.sql", "\\sleep 2 ms\n\\sleep :scale\nSELECT 1;");
    expect(s.steps.slice(0, 2).map((x) => (x.kind === "sleep" ? x.micros : 0))).toEqual([1000, 1_000_000]);
  });

  test("refused when compiling: unknown meta-commands, unset variables, syntax errors, no SQL", () => {
    expect(() => compileScript("f.sql", "\\if :x\nSELECT 1;")).toThrow("f.sql:1: unsupported meta-command \\if");
    expect(() => compileScript("f.sql", "SELECT :nope;")).toThrow("f.sql:1: variable :nope is used before \\set gives it a value");
    expect(() => compileScript("f.sql", "\\set a :b + 1\nSELECT :a;")).toThrow("variable :b");
    expect(() => compileScript("f.sql", "SELEC 1;")).toThrow(BenchError);
    expect(() => compileScript("f.sql", "\\set a 1\n-- nothing\n")).toThrow("no SQL statement");
  });

  test("a custom script is read-only only if pgroute's classifier says every statement is", () => {
    expect(compileScript("r.sql", "SELECT 1;\nSELECT now();").readOnly).toBe(true);
    expect(compileScript("w.sql", "SELECT 1;\nSELECT nextval('s');").readOnly).toBe(false);
    expect(compileScript("l.sql", "SELECT * FROM t FOR UPDATE;").readOnly).toBe(false);
  });
});

describe("workloads", () => {
  test("read-write mixes the select and the update by --read-ratio, in thousandths", () => {
    const mix = workloadScripts("read-write", { readRatio: 0.8 });
    expect(mix.map((s) => [s.name, s.weight, s.readOnly])).toEqual([
      ["read", 800, true],
      ["write", 200, false],
    ]);
    expect(workloadScripts("read-write", { readRatio: 1 }).map((s) => s.name)).toEqual(["read"]);
    expect(workloadScripts("read-write", { readRatio: 0 }).map((s) => s.name)).toEqual(["write"]);
  });

  test("every workload runs with every protocol asked for; churn opens a connection per transaction", () => {
    const list = scenarios(["read-only", "churn", "custom"], ["simple", "prepared"], { readRatio: 0.5, custom: { name: "mine.sql", text: "SELECT 1;" } });
    expect(list.map((s) => s.id)).toEqual(["read-only/simple", "read-only/prepared", "churn/simple", "churn/prepared", "mine.sql/simple", "mine.sql/prepared"]);
    expect(list.map((s) => s.churn)).toEqual([false, false, true, true, false, false]);
    expect(list.find((s) => s.workload === "read-only")!.writes).toBe(false);
    expect(scenarios(["tpcb"], ["simple"], { readRatio: 0.8 })[0]!.writes).toBe(true);
    expect(() => workloadScripts("custom", { readRatio: 0.8 })).toThrow("--sql FILE");
  });
});
