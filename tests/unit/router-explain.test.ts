// Invariant: `pgroute explain` returns 0 when every statement parsed, 1 when one did not, 2 (or a UsageError, which
// main turns into 2) for bad usage; its text report has one line per statement, no colour off a terminal, and a
// summary line that counts exactly what the rows say.
import { afterAll, afterEach, beforeAll, describe, expect, spyOn, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UsageError } from "../../src/cli/command.ts";
import { explain, explainScript, renderExplain, type ExplainOptions, type ExplainRow } from "../../src/cli/explain.ts";
import { DEFAULT_FUNCTIONS } from "../../src/router/classify.ts";
import { loadParser } from "../../src/router/parser.ts";

let dir = "";
beforeAll(async () => {
  await loadParser();
  dir = await mkdtemp(join(tmpdir(), "pgroute-explain-unit-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const opts: ExplainOptions = { functions: DEFAULT_FUNCTIONS, transactions: "primary", userTarget: "auto", replicas: true };
const row = (target: string, o: Partial<ExplainRow> = {}): ExplainRow => ({ line: 1, sql: "select 1;", target, reason: "r", transaction: null, ...o });

describe("renderExplain", () => {
  test("the summary line counts every kind of row", () => {
    const rows = [
      row("primary"),
      row("primary", { transaction: "primary" }),
      row("replica"),
      row("refused"),
      row("deferred"),
      row("pgroute"),
      row("pgroute"),
      row("skipped"),
    ];
    const lines = renderExplain(rows, false).split("\n");
    expect(lines.at(-1)).toBe(
      "7 statements: 2 to the primary, 1 to replicas, 1 refused, 1 BEGIN held back, 2 answered by pgroute; 1 psql meta-commands skipped; 1 inside transactions",
    );
    expect(lines.at(-2)).toBe("");
    expect(lines).toHaveLength(rows.length + 2);
  });

  test("only the kinds present are named", () => {
    expect(renderExplain([row("replica")], false).split("\n").at(-1)).toBe("1 statements: 0 to the primary, 1 to replicas; 0 inside transactions");
    expect(renderExplain([], false).split("\n").at(-1)).toBe("0 statements: 0 to the primary, 0 to replicas; 0 inside transactions");
  });

  test("a statement line: line number, target, the SQL on one shortened line, the reason", () => {
    const long = `select ${"a, ".repeat(40)}b\nfrom t;`;
    const [line] = renderExplain([row("replica", { line: 12, sql: long, reason: "read-only query" })], false).split("\n");
    expect(line).toStartWith("   12  replica   select a, a,");
    expect(line).toContain("…  read-only query");
    expect(line).not.toContain("\n");
  });

  test("parse errors: a line under the statement, and a count, each on one line", () => {
    const error = { message: "unterminated quoted string at or near \"'open;\nselect 2;\"", position: 8 };
    const text = renderExplain([row("primary", { sql: "select 'open;\nselect 2;", reason: `parse error: ${error.message}`, error })], false);
    const lines = text.split("\n");
    expect(lines[0]).toEndWith(`parse error: unterminated quoted string at or near "'open; select 2;"`);
    expect(lines[1]).toBe(`       parse error at character 8 of the statement: unterminated quoted string at or near "'open; select 2;"`);
    expect(lines.at(-1)).toBe("1 statement(s) failed to parse");
  });

  test("colours only on a terminal", () => {
    const rows = explainScript("select 1;\ndelete from t;\n/* pgroute: replica */ delete from t;\n", opts);
    expect(renderExplain(rows, false)).not.toContain("\x1b[");
    const plain = renderExplain(rows, false);
    // picocolors may be disabled in this environment (NO_COLOR, no TTY); when enabled, the TTY text differs only by colour.
    expect(renderExplain(rows, true).replace(/\x1b\[[0-9;]*m/g, "")).toBe(plain);
  });
});

describe("explain.run: exit codes", () => {
  let out: string[] = [];
  let err: string[] = [];
  const logSpy = spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  const errSpy = spyOn(console, "error").mockImplementation((...a: unknown[]) => void err.push(a.join(" ")));
  afterEach(() => {
    out = [];
    err = [];
  });
  afterAll(() => {
    logSpy.mockRestore();
    errSpy.mockRestore();
  });

  const file = async (name: string, text: string) => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };

  test("0 when every statement parses, with JSON rows", async () => {
    const path = await file("ok.sql", "select 1;\nbegin;\ndelete from t;\ncommit;\n");
    expect(await explain.run([path, "--json"])).toBe(0);
    const rows = JSON.parse(out.join("\n")) as ExplainRow[];
    expect(rows.map((r) => [r.line, r.target, r.transaction])).toEqual([
      [1, "replica", null],
      [2, "primary", "primary"],
      [3, "primary", "primary"],
      [4, "primary", "primary"],
    ]);
    expect(rows.some((r) => "error" in r)).toBe(false);
  });

  test("1 when a statement does not parse; the others are still reported", async () => {
    const path = await file("bad.sql", "select 1;\nselect from where;\nselect 2;\n");
    expect(await explain.run([path])).toBe(1);
    const text = out.join("\n");
    expect(text).toContain(`parse error at character 13 of the statement: syntax error at or near "where"`);
    expect(text).toContain("3 statements: 1 to the primary, 2 to replicas; 0 inside transactions");
    expect(text).toContain("1 statement(s) failed to parse");
  });

  test("an empty script: 0, nothing to route", async () => {
    const path = await file("empty.sql", "-- nothing here\n");
    expect(await explain.run([path, "--json"])).toBe(0);
    expect(JSON.parse(out.join("\n"))).toEqual([]);
  });

  test("2 for a file that cannot be read or a config that does not load", async () => {
    expect(await explain.run([join(dir, "missing.sql")])).toBe(2);
    expect(err.join("\n")).toContain("cannot read");
    const path = await file("ok2.sql", "select 1;");
    const config = await file("bad.toml", "[routing]\ntransactions = 'sometimes'\n");
    expect(await explain.run([path, "--config", config])).toBe(2);
  });

  test("usage errors", async () => {
    const path = await file("ok3.sql", "select 1;");
    await expect(explain.run([])).rejects.toThrow(UsageError);
    await expect(explain.run([path, path])).rejects.toThrow(UsageError);
    await expect(explain.run([path, "--user", "app"])).rejects.toThrow("--user needs --config");
    await expect(explain.run([path, "--bogus"])).rejects.toThrow(UsageError);
  });
});
