// Invariant: a routing hint is read only from comment text, in its documented forms and any letter case, with the
// last hint winning; look-alikes (longer words, other prefixes) are not hints.
import { describe, expect, test } from "bun:test";
import { hintIn } from "../../src/router/hints.ts";
import { shape } from "../../src/router/lexer.ts";

const hintOf = (sql: string) => hintIn(shape(sql).comments);

describe("hintIn", () => {
  const rows: [string, "primary" | "replica" | null][] = [
    ["/* pgroute: primary */ select 1", "primary"],
    ["/* pgroute: replica */ select 1", "replica"],
    ["/*pgroute:replica*/ select 1", "replica"],
    ["/* pgroute :  primary */ select 1", "primary"],
    ["-- pgroute: replica\nselect 1", "replica"],
    ["select 1 -- pgroute: primary", "primary"],
    ["select /* pgroute: primary */ 1", "primary"],
    ["/* read-primary */ select 1", "primary"],
    ["/* read-replica */ select 1", "replica"],
    ["/* PGROUTE: PRIMARY */ select 1", "primary"],
    ["/* Read-Replica */ select 1", "replica"],
    ["/* app=web, pgroute: replica, trace=abc */ select 1", "replica"],
    ["/* outer /* pgroute: replica */ */ select 1", "replica"],
    ["/* pgroute: primary */ /* pgroute: replica */ select 1", "replica"],
    ["/* pgroute: replica */ select 1 -- read-primary", "primary"],
    // Not hints.
    ["select 1", null],
    ["select '/* pgroute: primary */'", null],
    ["select $$ /* pgroute: primary */ $$", null],
    ["select $x$ -- pgroute: primary\n $x$", null],
    [`select "/* pgroute: primary */"`, null],
    ["select E'\\' /* pgroute: primary */'", null],
    ["/* pgroute: replicas */ select 1", null],
    ["/* pgroute: primary-only */ select 1", null],
    ["/* mypgroute: primary */ select 1", null],
    ["/* pg-read-replica */ select 1", null],
    ["/* read-replica2 */ select 1", null],
    ["/* pgroute: auto */ select 1", null],
    ["/* pgroute primary */ select 1", null],
  ];
  for (const [sql, expected] of rows) {
    test(JSON.stringify(sql), () => {
      expect(hintOf(sql)).toBe(expected);
    });
  }
});
