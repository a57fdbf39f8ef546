// Invariant: splitScript cuts a script where psql would — at semicolons outside strings, dollar quotes, comments,
// quoted identifiers and BEGIN ATOMIC bodies — keeps the comments before a statement with it, numbers each item by
// the line of its first code, sets psql meta-commands apart, and still splits around a statement the scanner rejects.
import { beforeAll, describe, expect, test } from "bun:test";
import { loadParser } from "../../src/router/parser.ts";
import { splitScript, type ScriptItem } from "../../src/router/split.ts";

beforeAll(loadParser);

const stmt = (line: number, sql: string): ScriptItem => ({ kind: "statement", line, sql });
const meta = (line: number, command: string): ScriptItem => ({ kind: "meta", line, command });

describe("splitScript", () => {
  const cases: [string, string, ScriptItem[]][] = [
    ["one statement per line", "select 1;\nselect 2;\n", [stmt(1, "select 1;"), stmt(2, "select 2;")]],
    ["several on one line", "select 1; select 2;", [stmt(1, "select 1;"), stmt(1, "select 2;")]],
    ["a last statement without a semicolon", "select 1;\nselect 2", [stmt(1, "select 1;"), stmt(2, "select 2")]],
    ["a statement over several lines", "\n\nselect a,\n  b\nfrom t;", [stmt(3, "select a,\n  b\nfrom t;")]],
    ["empty statements are dropped", ";;select 1;;\n;", [stmt(1, "select 1;")]],
    ["nothing but whitespace and comments", "  \n-- a\n/* b */\n", []],
    ["the empty script", "", []],
    [
      "comments before a statement stay with it; the line is the code's",
      "select 1;\n-- pgroute: replica\n/* why */\nselect 2;",
      [stmt(1, "select 1;"), stmt(4, "-- pgroute: replica\n/* why */\nselect 2;")],
    ],
    ["a comment after the last statement is not a statement", "select 1;\n-- the end\n", [stmt(1, "select 1;")]],
    ["a comment inside a statement", "select /* ; */ 1 -- ;\n, 2;", [stmt(1, "select /* ; */ 1 -- ;\n, 2;")]],
    ["semicolons in strings", "select 'a;b', E'c\\';d', 'e'';f';", [stmt(1, "select 'a;b', E'c\\';d', 'e'';f';")]],
    ["semicolons in dollar quotes", "select $$;$$, $t$ ; $$ ; $t$;\nselect 2;", [stmt(1, "select $$;$$, $t$ ; $$ ; $t$;"), stmt(2, "select 2;")]],
    ["semicolons in quoted identifiers", `select 1 as "a;b";`, [stmt(1, `select 1 as "a;b";`)]],
    ["semicolons in nested comments", "/* a /* ; */ ; */ select 1;", [stmt(1, "/* a /* ; */ ; */ select 1;")]],
    [
      "a DO body",
      "do $$ begin perform 1; perform 2; end $$;\nselect 1;",
      [stmt(1, "do $$ begin perform 1; perform 2; end $$;"), stmt(2, "select 1;")],
    ],
    [
      "a BEGIN ATOMIC body",
      "create function f() returns int language sql\nbegin atomic\n  select 1;\n  select 2;\nend;\nselect f();",
      [stmt(1, "create function f() returns int language sql\nbegin atomic\n  select 1;\n  select 2;\nend;"), stmt(6, "select f();")],
    ],
    [
      "CASE … END inside a BEGIN ATOMIC body",
      "create procedure p() begin atomic select case when true then 1 else 2 end; insert into t values (1); end; select 3;",
      [stmt(1, "create procedure p() begin atomic select case when true then 1 else 2 end; insert into t values (1); end;"), stmt(1, "select 3;")],
    ],
    ["BEGIN alone is a statement", "begin; select 1; end;", [stmt(1, "begin;"), stmt(1, "select 1;"), stmt(1, "end;")]],
    [
      "meta-commands are set apart, to the end of their line",
      "\\set id 1\nselect :id;\n\\d t\nselect 2;",
      [meta(1, "\\set id 1"), stmt(2, "select :id;"), meta(3, "\\d t"), stmt(4, "select 2;")],
    ],
    ["a meta-command ends the SQL before it", "select 1 \\gset\nselect 2;", [stmt(1, "select 1"), meta(1, "\\gset"), stmt(2, "select 2;")]],
    ["CRLF line ends", "select 1;\r\n\r\nselect 2;\r\n", [stmt(1, "select 1;"), stmt(3, "select 2;")]],
    ["non-ASCII text before a statement", "select 'é…€';\n-- ünïcödé\nselect 2;", [stmt(1, "select 'é…€';"), stmt(3, "-- ünïcödé\nselect 2;")]],
  ];
  for (const [name, script, expected] of cases) {
    test(name, () => {
      expect(splitScript(script)).toEqual(expected);
    });
  }
});

test("splitScript: a long script, every statement on its own line number", () => {
  const n = 3000;
  const items = splitScript(Array.from({ length: n }, (_, i) => `select ${i}, 'a;b';\n-- note ${i}`).join("\n"));
  expect(items).toHaveLength(n);
  items.forEach((item, i) => expect([item.line, item.kind]).toEqual([2 * i + 1, "statement"]));
});

describe("splitScript: statements the scanner rejects", () => {
  test("an unterminated quote runs to the end of the script, as in psql", () => {
    expect(splitScript("select 1;\nselect 'open;\nselect 2;\n")).toEqual([stmt(1, "select 1;"), stmt(2, "select 'open;\nselect 2;")]);
  });

  test("an unterminated comment, dollar quote or quoted identifier too", () => {
    expect(splitScript("select 1;\n/* open; select 2;")).toEqual([stmt(1, "select 1;"), stmt(2, "/* open; select 2;")]);
    expect(splitScript("select 1; select $$open; select 2;")).toEqual([stmt(1, "select 1;"), stmt(1, "select $$open; select 2;")]);
    expect(splitScript(`select 1; select "open; select 2;`)).toEqual([stmt(1, "select 1;"), stmt(1, `select "open; select 2;`)]);
  });

  test("the line of the bad statement is its code's, after the comments before it", () => {
    expect(splitScript("select 1;\n-- a comment\n/* and another */\nselect 'open")).toEqual([
      stmt(1, "select 1;"),
      stmt(4, "-- a comment\n/* and another */\nselect 'open"),
    ]);
  });

  test("any other lexical error ends at the next semicolon; the statements after it are split as usual", () => {
    expect(splitScript(`select 1abc;\nselect 'a;b';\nselect "";\nselect 2;`)).toEqual([
      stmt(1, "select 1abc;"),
      stmt(2, "select 'a;b';"),
      stmt(3, `select "";`),
      stmt(4, "select 2;"),
    ]);
  });

  test("semicolons in strings before the bad one are still inside their strings", () => {
    expect(splitScript("select 'a;b', $$;$$; select 'c;d', 'open")).toEqual([stmt(1, "select 'a;b', $$;$$;"), stmt(1, "select 'c;d', 'open")]);
  });

  test("meta-commands after a bad statement are part of it (psql reads them inside the quote)", () => {
    expect(splitScript("select 'open\n\\d t\n")).toEqual([stmt(1, "select 'open\n\\d t")]);
  });
});
