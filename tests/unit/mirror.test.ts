// Invariant: a result tallies to the same row count and checksum whatever the order of its rows, and to a different
// one when a value, a row or a command tag differs; errors compare by SQLSTATE; an extended-protocol batch is
// rebuilt for the shadow with the unnamed statement and the client's own Bind body, or not at all; statistics
// count per fingerprint with a bounded number of fingerprints; sampling draws from the injected randomness.
import { describe, expect, test } from "bun:test";
import { serialize } from "pg-protocol";
import { configFrom } from "../../src/config/load.ts";
import { parseShadowUrl } from "../../src/config/policy.ts";
import { silentLogger } from "../../src/log.ts";
import { Mirror } from "../../src/policy/mirror.ts";
import { mirrorable, shadowBatch, shadowQuery } from "../../src/policy/mirror-request.ts";
import { MAX_FINGERPRINTS, MirrorStats, OTHER } from "../../src/policy/mirror-stats.ts";
import { ReplyTally, compare } from "../../src/policy/tally.ts";
import { F } from "../../src/wire/codes.ts";
import { FrameReader } from "../../src/wire/frame.ts";
import { commandComplete, dataRowOf, errorResponse, query } from "../support/wire-frames.ts";

/** Feeds whole backend messages (type, length, body) to a tally, as the demultiplexer would. */
function tally(...messages: Uint8Array[]): ReplyTally {
  const t = new ReplyTally();
  for (const m of messages) t.reply(m[0]!, m, 5, m.length);
  return t;
}

const rows = (...vals: string[][]) => vals.map((v) => dataRowOf(...v));

describe("ReplyTally and compare", () => {
  test("the same rows in another order: equal", () => {
    const a = tally(...rows(["1", "a"], ["2", "b"], ["3", null as unknown as string]), commandComplete("SELECT 3"));
    const b = tally(...rows(["3", null as unknown as string], ["1", "a"], ["2", "b"]), commandComplete("SELECT 3"));
    expect(a.rows).toBe(3);
    expect(a.tagged).toBe(3);
    expect(a.checksum).toBe(b.checksum);
    expect(compare(a, b)).toEqual({ kind: "match" });
  });

  test("a changed value: checksum; a missing row: row count", () => {
    const base = tally(...rows(["1", "a"], ["2", "b"]), commandComplete("SELECT 2"));
    const changed = tally(...rows(["1", "a"], ["2", "B"]), commandComplete("SELECT 2"));
    const missing = tally(...rows(["1", "a"]), commandComplete("SELECT 1"));
    expect(compare(base, changed)).toEqual({ kind: "mismatch", what: "checksum", primary: `checksum ${base.checksum}`, shadow: `checksum ${changed.checksum}` });
    expect(compare(base, missing)).toMatchObject({ kind: "mismatch", what: "row_count", primary: "2 rows", shadow: "1 rows" });
  });

  test("duplicate rows do not cancel out, and a NULL is not an empty string", () => {
    const twice = tally(...rows(["x"], ["x"]), commandComplete("SELECT 2"));
    const other = tally(...rows(["y"], ["y"]), commandComplete("SELECT 2"));
    expect(compare(twice, other).kind).toBe("mismatch");
    expect(compare(tally(dataRowOf(null)), tally(dataRowOf(""))).kind).toBe("mismatch");
  });

  test("command tags count rows of writes and are part of the result", () => {
    const a = tally(commandComplete("INSERT 0 3"));
    expect(a.tagged).toBe(3);
    expect(compare(a, tally(commandComplete("INSERT 0 2")))).toMatchObject({ what: "row_count", primary: "3 rows affected" });
    expect(compare(tally(commandComplete("UPDATE 0")), tally(commandComplete("DELETE 0"))).kind).toBe("mismatch");
    expect(tally(commandComplete("CREATE TABLE")).tagged).toBe(0);
  });

  test("errors: the same SQLSTATE matches, one side only or another code does not", () => {
    const e42P01 = tally(errorResponse({ severity: "ERROR", code: "42P01", message: 'relation "t" does not exist' }));
    const e42703 = tally(errorResponse({ severity: "ERROR", code: "42703", message: "no column" }));
    const ok = tally(...rows(["1"]), commandComplete("SELECT 1"));
    expect(compare(e42P01, tally(errorResponse({ severity: "ERROR", code: "42P01", message: "other text" })))).toEqual({ kind: "match" });
    expect(compare(ok, e42P01)).toEqual({ kind: "mismatch", what: "error", primary: "no error", shadow: 'ERROR 42P01: relation "t" does not exist' });
    expect(compare(e42703, e42P01).kind).toBe("mismatch");
  });
});

describe("FrameReader.wantAllMax", () => {
  test("wantAll gathers messages up to the limit and passes larger ones by, telling the sink; wanted types are always gathered", () => {
    const seen: string[] = [];
    const sink = {
      onFrame: (type: number, _b: Uint8Array, start: number, end: number) => void seen.push(`${String.fromCharCode(type)}${end - start}`),
      onPassed: (type: number, len: number) => void seen.push(`passed ${String.fromCharCode(type)}${len}`),
    };
    const r = new FrameReader([0x43], 1 << 20);
    r.wantAll = true;
    r.wantAllMax = 10;
    const small = dataRowOf("ab"); // body: 2 + 4 + 2 = 8
    const big = dataRowOf("0123456789"); // body 16
    const tag = commandComplete("SELECT 123456789012"); // body 20, but 'C' is asked for by type
    r.feed(new Uint8Array([...small, ...big, ...tag]), sink);
    expect(seen).toEqual(["D8", "passed D16", "C20"]);
    expect(r.heldFrom).toBe(small.length + big.length + tag.length);
  });
});

describe("shadow requests", () => {
  const msg = (b: Buffer) => ({ type: b[0]!, frame: new Uint8Array(b) });
  const parse = (name: string, text: string, types: number[] = []) => msg(serialize.parse({ name, text, types }));
  const bind = (statement: string, values: string[], portal = "") => msg(serialize.bind({ portal, statement, values }));
  const execute = (portal = "", rows = 0) => msg(serialize.execute({ portal, rows }));
  const sync = () => msg(serialize.sync());

  test("a simple Query goes as it came, in a copy of its own", () => {
    const q = query("select 1");
    const r = shadowQuery(q)!;
    expect(r.ends).toEqual(["query"]);
    expect([...r.bytes]).toEqual([...q]);
    expect(r.bytes.buffer).not.toBe(q.buffer);
  });

  test("a batch is rebuilt with the unnamed statement and the client's Bind body", () => {
    const r = shadowBatch([parse("s1", "select $1::int", [23]), bind("s1", ["7"]), msg(serialize.describe({ type: "P", name: "" })), execute(), sync()], () => undefined)!;
    const expected = Buffer.concat([serialize.parse({ name: "", text: "select $1::int", types: [23] }), serialize.bind({ portal: "", statement: "", values: ["7"] }), serialize.execute({ portal: "", rows: 0 }), serialize.sync()]);
    expect([...r.bytes]).toEqual([...expected]);
    expect(r.ends).toEqual(["parse", "bind", "execute", "sync"]);
  });

  test("a statement prepared earlier is found by name; unknown ones, row limits and Flush are not mirrored", () => {
    const known = { query: "select $1::text", types: new Uint8Array([0, 0]) };
    const r = shadowBatch([bind("old", ["x"]), execute(), sync()], (n) => (n === "old" ? known : undefined));
    expect(r?.ends).toEqual(["parse", "bind", "execute", "sync"]);
    expect(shadowBatch([bind("gone", ["x"]), execute(), sync()], () => undefined)).toBeNull();
    expect(shadowBatch([bind("", ["x"]), execute(), sync()], () => undefined)).toBeNull(); // unnamed from an earlier batch
    expect(shadowBatch([parse("", "select 1"), bind("", []), execute("", 10), sync()], () => undefined)).toBeNull();
    expect(shadowBatch([parse("", "select 1"), bind("", []), execute(), { type: F.Flush, frame: new Uint8Array(serialize.flush()) }], () => undefined)).toBeNull();
    expect(shadowBatch([parse("", "select 1"), sync()], () => undefined)).toBeNull(); // nothing executed
  });

  test("transaction control and COPY are not mirrorable", () => {
    expect(mirrorable("select ?")).toBe(true);
    expect(mirrorable("select ?; select ?")).toBe(true);
    expect(mirrorable("begin")).toBe(false);
    expect(mirrorable("insert into t values (?); commit")).toBe(false);
    expect(mirrorable("copy t from stdin")).toBe(false);
  });
});

describe("MirrorStats", () => {
  test("counts per fingerprint and in total; latency averages and an EWMA ratio", () => {
    const s = new MirrorStats();
    s.count("a", "sampled");
    s.count("a", "sent");
    s.compared("a", null, 2, 4);
    s.count("b", "sampled");
    s.count("b", "dropped");
    s.compared("a", "checksum", 2, 2);
    const a = s.fingerprints().find((f) => f.fingerprint === "a")!;
    expect(a).toMatchObject({ sampled: 1, sent: 1, compared: 2, mismatches: 1, mismatch_checksum: 1, primary_ms_avg: 2, shadow_ms_avg: 3 });
    expect(a.latency_ratio).toBeCloseTo(2 + 0.1 * (1 - 2));
    expect(s.totals()).toMatchObject({ sampled: 2, dropped: 1, compared: 2 });
  });

  test("past the maximum, new fingerprints share one entry", () => {
    const s = new MirrorStats();
    for (let i = 0; i < MAX_FINGERPRINTS + 50; i++) s.count(`q${i}`, "sampled");
    const f = s.fingerprints();
    expect(f.length).toBe(MAX_FINGERPRINTS + 1);
    expect(f.find((x) => x.fingerprint === OTHER)!.sampled).toBe(50);
  });
});

describe("Mirror", () => {
  const config = (mirror: Record<string, unknown>) => configFrom({ nodes: [{ name: "p" }], mirror });

  test("off without a URL or with fraction 0; sampling draws from the injected randomness; writes only when asked", () => {
    expect(new Mirror({ config: config({}), log: silentLogger }).enabled).toBe(false);
    expect(new Mirror({ config: config({ url: "postgres://u@h/db", fraction: 0 }), log: silentLogger }).enabled).toBe(false);
    const draws = [0.05, 0.5, 0.05];
    const m = new Mirror({ config: config({ url: "postgres://u@h/db", fraction: 0.1 }), log: silentLogger, random: () => draws.shift()! });
    expect(m.enabled).toBe(true);
    expect(m.sample(false)).toBe(true);
    expect(m.sample(false)).toBe(false);
    expect(m.sample(true)).toBe(false); // writes are off: not even drawn
    expect(draws).toEqual([0.05]);
    const snap = m.snapshot();
    expect(snap).toMatchObject({ enabled: true, shadow: "h:5432/db", fraction: 0.1, writes: false, queue: { depth: 0, capacity: 1000 }, in_flight: 0, concurrency: 4 });
    m.close();
    expect(m.enabled).toBe(false);
  });

  test("the shadow URL: libpq's URI form, errors without the password", () => {
    expect(parseShadowUrl("postgres://app:s%40cret@db.example:6000/sales?sslmode=require")).toEqual({
      ok: true,
      target: { host: "db.example", port: 6000, user: "app", password: "s@cret", database: "sales", sslmode: "require" },
    });
    expect(parseShadowUrl("postgresql://app@[::1]/")).toEqual({ ok: true, target: { host: "::1", port: 5432, user: "app", sslmode: "prefer" } });
    for (const [url, error] of [
      ["postgres://:pw@h/db", "needs a user name"],
      ["postgres://app:pw@h/db?sslmode=always", "sslmode must be one of"],
      ["postgres://app:pw@h/db?application_name=x", 'unknown parameter "application_name"'],
      ["postgres://app:pw@h/db?sslmode=verify-ca", "needs sslrootcert"],
    ] as const) {
      const r = parseShadowUrl(url);
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.error).toContain(error);
        expect(r.error).not.toContain("pw");
      }
    }
  });
});
