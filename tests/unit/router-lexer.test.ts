// Invariant: statements that differ only in their literals, comments or the case of unquoted words share one shape
// key, and statements that differ in anything else (quoted identifiers, parameters, words inside dollar quotes'
// surroundings) do not; comment texts are collected in order; the lexer never throws, whatever the input.
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { shape, shapeOf } from "../../src/router/lexer.ts";

const key = (sql: string) => shape(sql).key;

describe("shape: the same key", () => {
  const same: [string, string, string][] = [
    ["numbers", "select * from t where id = 42", "select * from t where id = 7"],
    ["numeric forms", "select 1, 1.5, .5, 1e10, 2.5E-3, 0x1F, 1_000", "select 9, 9, 9, 9, 9, 9, 9"],
    ["strings", "select * from t where b = 'x'", "select * from t where b = 'it''s; delete from t'"],
    ["E strings with escaped quotes", "select E'a\\'b; delete'", "select e'plain'"],
    ["prefixed strings", "select B'101', X'1f', N'abc', U&'d\\0061t'", "select 'a', 'b', 'c', 'd'"],
    ["dollar quotes", "select $$delete from t$$", "select 'x'"],
    ["tagged dollar quotes", "select $fn$ $$ delete; $$ $fn$", "select $a$b$a$"],
    ["keyword case", "SELECT * FROM T WHERE ID = 1", "select * from t where id = 2"],
    ["block comments", "/* delete from t */ select 1", "select 1"],
    ["line comments", "-- delete from t\nselect 1", "select 1"],
    ["nested comments", "/* a /* b */ delete */ select 1", "select 1"],
    ["comments between tokens", "select/* x */1/* y */from t", "select 1 from t"],
    ["whitespace runs", "select   1\n\tfrom  t", "select 1 from t"],
    ["typed literals", "select date '2024-01-01', interval '1 day'", "select date '1999-12-31', interval '2 hours'"],
  ];
  for (const [name, a, b] of same) {
    test(name, () => {
      expect(key(a)).toBe(key(b));
    });
  }
});

describe("shape: different keys", () => {
  const different: [string, string, string][] = [
    ["quoted identifiers keep their case", `select "MyCol" from t`, `select "mycol" from t`],
    ["a quoted identifier is not a string", `select "x" from t`, `select 'x' from t`],
    ["parameters keep their number", "select $1", "select $2"],
    ["a parameter is not a literal", "select $1", "select 1"],
    ["words outside the dollar quote", "select $q$ x $q$ from t", "select $q$ x $q$ from u"],
    ["another statement after a string", "select 'a'; delete from t", "select 'a'"],
    ["a keyword in a quoted identifier", `select "delete" from t`, "select delete from t"],
    // Postgres ends a -- comment at \r as well as \n (scan.l): the code after a lone \r is code.
    ["a carriage return ends a line comment", "select 1 -- c\r, nextval('s')", "select 1"],
    // In 0x1e the e is a hex digit, so the + after it is an operator, not an exponent sign.
    ["no exponent in a hex number", "select 0x1e+nextval('s')", "select 0x1e"],
  ];
  for (const [name, a, b] of different) {
    test(name, () => {
      expect(key(a)).not.toBe(key(b));
    });
  }
});

describe("shape: exact keys", () => {
  const cases: [string, string][] = [
    ["SELECT * FROM t WHERE id = 42", "select * from t where id = ?"],
    [`select "MyCol", "a""b" from "T"`, `select "MyCol", "a""b" from "T"`],
    ["select $$a$$, $tag$ b $$ c $tag$, $1, $12", "select ?, ?, $1, $12"],
    ["select a$b, $x", "select a$b, $x"],
    ["select ünïcödé from tåble", "select ünïcödé from tåble"],
    ["SELECT Ä FROM T", "select Ä from t"],
    ["select 1; delete from t", "select ?; delete from t"],
    ["-- only a comment", ""],
    ["   ", ""],
  ];
  for (const [sql, expected] of cases) {
    test(JSON.stringify(sql), () => {
      expect(key(sql)).toBe(expected);
    });
  }
});

describe("shape: comments", () => {
  test("collected in order, block and line, the text between the markers", () => {
    expect(shape("/* pgroute: replica */ select 1 -- trailing\n/* a /* nested */ b */").comments).toEqual([
      " pgroute: replica ",
      " trailing",
      " a /* nested */ b ",
    ]);
  });

  test("never from inside strings, dollar quotes or quoted identifiers", () => {
    expect(shape(`select '/* a */', $$-- b$$, "/* c */", E'\\' /* d */'`).comments).toEqual([]);
  });

  test("an unterminated comment runs to the end", () => {
    expect(shape("select 1 /* open").comments).toEqual([" open"]);
  });
});

describe("shape: unterminated input ends the shape", () => {
  for (const sql of ["select 'open", "select $$open", "select $t$open $$", `select "open`, "select E'\\'", "select 1 /* open"]) {
    test(JSON.stringify(sql), () => {
      expect(() => shape(sql)).not.toThrow();
      expect(key(sql).startsWith("select ")).toBe(true);
    });
  }
});

describe("shape: properties", () => {
  test("never throws, on any string", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 200 }), (s) => {
        const sh = shape(s);
        expect(typeof sh.key).toBe("string");
      }),
      { numRuns: 2000 },
    );
  });

  test("never throws on SQL-ish noise (quotes, dollars, comment markers, backslashes)", () => {
    const piece = fc.constantFrom("'", '"', "$", "$$", "$a$", "/*", "*/", "--", "\n", "\\", "E'", "U&'", "select", " ", "1", ";", "é");
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 40 }), (parts) => {
        expect(() => shape(parts.join(""))).not.toThrow();
      }),
      { numRuns: 2000 },
    );
  });

  test("a literal's value never changes the key", () => {
    const literal = fc.oneof(
      fc.integer({ min: 0 }).map(String),
      fc.double({ min: 0, noNaN: true, noDefaultInfinity: true }).map((d) => String(d).replace("e+", "e")),
      fc.string().map((s) => `'${s.replaceAll("'", "''")}'`),
      fc.string().map((s) => `$$${s.replaceAll("$", "")}$$`),
    );
    fc.assert(
      fc.property(literal, literal, (a, b) => {
        expect(key(`select * from t where a = ${a} and b = ${b}`)).toBe(key("select * from t where a = 0 and b = 0"));
      }),
    );
  });

  test("a comment's text never changes the key", () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        const block = text.replace(/[*/]/g, ""); // no way to close (or open) a comment early
        const line = text.replace(/\n/g, " ");
        expect(key(`/* ${block} */ select 1 -- ${line}\n`)).toBe(key("select 1"));
      }),
    );
  });

  test("keys are reused across calls (the output buffer is shared) without leaking a longer earlier key", () => {
    const long = `select ${"a, ".repeat(5000)}b from t`;
    expect(key(long).length).toBeGreaterThan(15_000);
    expect(key("select 1")).toBe("select ?");
  });
});

describe("shapeOf: long statements remembered by their exact text", () => {
  const long = (n: number) => `select ${Array.from({ length: n }, (_, i) => `col_${i}`).join(", ")} from wide where id = 7 -- pgroute:replica`;

  test("gives the same shape as the lexer, for short, long and very long statements", () => {
    for (const sql of ["select 1", long(30), long(2000)]) expect(shapeOf(sql)).toEqual(shape(sql));
  });

  test("a long statement sent again verbatim (a fresh string of the same text) gets the remembered shape", () => {
    const sql = long(30);
    expect(sql.length).toBeGreaterThan(200);
    const first = shapeOf(sql);
    expect(shapeOf(Buffer.from(sql).toString())).toBe(first);
  });

  test("short and very long statements are lexed every time, not remembered", () => {
    // With a comment, each lexer pass makes its own shape (its comments are the statement's own).
    for (const sql of ["select 1 where x = 'a' -- c", long(2000)]) expect(shapeOf(sql)).not.toBe(shapeOf(sql));
  });

  test("the statement's own bytes (a Query frame's) give the shape its text gives", () => {
    for (const sql of ["SELECT 1 /* pgroute: replica */", "select ünïcödé, 'x' from tåble -- é", long(30), long(2000)]) {
      const frame = Buffer.concat([Buffer.from("Q\0\0\0\0"), Buffer.from(sql), Buffer.from([0])]);
      expect(shapeOf(sql, frame, 5, frame.length - 1)).toEqual(shape(sql));
    }
  });
});

describe("shape: interned keys", () => {
  test("statements of one shape without comments get one shape object", () => {
    expect(shape("SELECT * FROM t WHERE id = 1")).toBe(shape("select * from t where id = 2"));
  });

  test("keys whose hashes collide stay apart", () => {
    // The interning table is keyed by a hash of the key and compares the bytes: FNV-1a for keys up to 64 bytes,
    // CRC-32 for longer ones. Each pair here has the same hash.
    const fnv1a = (s: string) => [...Buffer.from(s)].reduce((h, b) => Math.imul(h ^ b, 0x01000193), 0x811c9dc5);
    const short = ["select erbadxps from t", "select snlyokol from t"] as const;
    const tail = " from a_table_with_a_rather_long_name_to_pass_the_short_key_limit";
    const long = [`select hznydjui${tail}`, `select qizmplpn${tail}`] as const;
    expect(fnv1a(short[0])).toBe(fnv1a(short[1]));
    expect(Bun.hash.crc32(long[0])).toBe(Bun.hash.crc32(long[1]));
    expect(long[0].length).toBeGreaterThan(64);
    for (const [a, b] of [short, long]) expect([key(a), key(b), key(a), key(b)]).toEqual([a, b, a, b]);
  });

  test("long keys are not interned, and a huge statement (over the reused buffers' size) lexes right", () => {
    const long = `select ${"a, ".repeat(3000)}b from t where x = 1`;
    expect(shape(long)).not.toBe(shape(long)); // over 8 KB: a shape of its own each time
    const huge = `/* pgroute: replica */ select '${"x".repeat(1_500_000)}', ${"é, ".repeat(200_000)}1 from t`;
    const sh = shape(huge);
    expect(sh.key).toBe(`select ?, ${"é, ".repeat(200_000)}? from t`);
    expect(sh.comments).toEqual([" pgroute: replica "]);
    const frame = Buffer.from(huge);
    expect(shapeOf(huge, frame, 0, frame.length).key).toBe(sh.key);
    expect(key("SELECT 2")).toBe("select ?");
  });

  test("keys stay right while far more shapes pass than the table keeps", () => {
    const sql = (i: number) => `select c${i}, ${"x".repeat((i % 300) + 1)} from t${i} where id = ${i}`;
    for (let i = 0; i < 30_000; i++) expect(key(sql(i))).toBe(`select c${i}, ${"x".repeat((i % 300) + 1)} from t${i} where id = ?`);
    expect(key(sql(7))).toBe(`select c7, xxxxxxxx from t7 where id = ?`);
  });
});
