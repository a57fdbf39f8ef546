// Invariant: in both pool modes a client sees what Postgres gives it — simple-query rows, extended-protocol
// results with parameters, COPY in and COPY out round-tripping the same rows (and a COPY with a bad row failing with
// its SQLSTATE), a NOTICE raised by the server, and an error's SQLSTATE — and the session stays usable after errors.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { pipeline } from "node:stream/promises";
import { Readable, Writable } from "node:stream";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { testCluster } from "../support/cluster.ts";
import { ownDatabase, type OwnDatabase } from "../support/pool-db.ts";
import { exchange, rawLogin, views, type View } from "../support/pool-raw.ts";
import { concat, query, serialize } from "../support/wire-frames.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import type { TestProxy } from "../support/proxy.ts";

let cluster: DevCluster;
let db: OwnDatabase;

beforeAll(async () => {
  cluster = await testCluster();
  db = await ownDatabase(cluster, "pool_smoke");
});
afterAll(async () => {
  await db?.drop();
});

describe.each(["session", "transaction"] as const)("pool.mode = %s", (mode) => {
  let tp: TestProxy;
  let sql: postgres.Sql;
  const notices: postgres.Notice[] = [];
  const table = `smoke_${mode}`;

  beforeAll(async () => {
    tp = await startPoolProxy({ mode, size: 2 });
    sql = postgres(tp.url({ database: db.name }), { max: 1, onnotice: (n) => notices.push(n) });
    await sql.unsafe(`create table ${table} (id int primary key, name text)`);
    await sql.unsafe(`grant all on ${table} to public`);
  });
  afterAll(async () => {
    await sql?.end({ timeout: 1 });
    await tp?.stop();
  });

  test("simple query: several statements, rows of the last one", async () => {
    // postgres.js returns one result per statement for a multi-statement simple query.
    const results = (await sql.unsafe("select 1 as a; select g as n, 'x' || g as s from generate_series(1, 3) g").simple()) as unknown as postgres.RowList<postgres.Row[]>[];
    expect(results.length).toBe(2);
    expect([...results[0]!]).toEqual([{ a: 1 }]);
    expect([...results[1]!]).toEqual([
      { n: 1, s: "x1" },
      { n: 2, s: "x2" },
      { n: 3, s: "x3" },
    ]);
  });

  test("extended query with parameters, prepared and unprepared", async () => {
    for (const prepare of [true, false]) {
      const rows = await sql.unsafe("select $1::int * 2 as doubled, $2::text as t", [21, "ü"], { prepare });
      expect(rows.map((r) => ({ ...r }) as Record<string, unknown>)).toEqual([{ doubled: 42, t: "ü" }]);
    }
  });

  test("COPY in then COPY out returns the same rows", async () => {
    const lines = Array.from({ length: 1000 }, (_, i) => `${i}\tname ${i}\n`);
    await pipeline(Readable.from(lines), await sql.unsafe(`copy ${table} from stdin`).writable());
    const [count] = await sql.unsafe(`select count(*)::int as n from ${table}`);
    expect(count!.n).toBe(1000);

    const chunks: Buffer[] = [];
    await pipeline(
      await sql.unsafe(`copy (select * from ${table} order by id) to stdout`).readable(),
      new Writable({
        write(chunk, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
      }),
    );
    expect(Buffer.concat(chunks).toString()).toBe(lines.join(""));
  });

  test("COPY FROM STDIN with a bad row: the same replies as from Postgres, nothing written, the session goes on", async () => {
    const out = {} as Record<"proxy" | "direct", View[]>;
    for (const side of ["proxy", "direct"] as const) {
      const raw = await rawLogin(side === "proxy" ? tp.port : cluster.primary.port, db.name);
      try {
        raw.send(query(`copy ${table} from stdin`));
        const started = views([await raw.next()]);
        raw.send(concat(new Uint8Array(serialize.copyData(Buffer.from("5000\tok\nnot-a-number\tbad\n"))), new Uint8Array(serialize.copyDone())));
        out[side] = [...started, ...views(await raw.readUntil("Z"))];
        expect(views(await exchange(raw, [query(`select count(*) from ${table} where id >= 5000`)]))).toEqual([["T"], ["D", ["0"]], ["C", "SELECT 1"], ["Z", "I"]]);
      } finally {
        raw.close();
      }
    }
    expect(out.proxy.map((m) => m.slice(0, 3))).toEqual([["G"], ["E", "ERROR", "22P02"], ["Z", "I"]]);
    expect(out.proxy).toEqual(out.direct);
  });

  test("a NOTICE raised by the server reaches the client", async () => {
    notices.length = 0;
    await sql.unsafe("do $$ begin raise notice 'hello from %', 'plpgsql'; end $$");
    expect(notices.map((n) => [n.severity, n.code, n.message])).toEqual([["NOTICE", "00000", "hello from plpgsql"]]);
  });

  test("an error carries its SQLSTATE and the session stays usable", async () => {
    const err = await sql.unsafe("select 1/0").catch((e) => e);
    expect(err).toBeInstanceOf(postgres.PostgresError);
    expect((err as postgres.PostgresError).code).toBe("22012");
    const dup = await sql.unsafe(`insert into ${table} values (1, 'again')`).catch((e) => e);
    expect((dup as postgres.PostgresError).code).toBe("23505");
    const undefinedTable = await sql.unsafe("select * from no_such_table", [], { prepare: true }).catch((e) => e);
    expect((undefinedTable as postgres.PostgresError).code).toBe("42P01");
    expect([...(await sql`select 'still here' as s`)]).toEqual([{ s: "still here" }]);
  });
});
