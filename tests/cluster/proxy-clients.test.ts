// Invariant: postgres.js (simple protocol, prepare: true, prepare: false), node-postgres (plain and named
// queries) and psql get exactly the same results through pgroute as straight from the primary — NULLs, bytea
// with every byte value, numeric edges, unicode, arrays, json, time zones, 10 MB values, a 1,000,000-row result,
// multi-statement and empty queries, and psql's \copy in both directions.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash } from "node:crypto";
import pg from "pg";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { APP_DATABASE } from "../support/cluster.ts";
import { startTestProxy, type TestProxy } from "../support/proxy.ts";

// Bun 1.4.5 applies the preload's setDefaultTimeout to the first test file only; this file sets its own.
setDefaultTimeout(60_000);

let tp: TestProxy;
let cluster: DevCluster;
/** Connection URLs for the two sides compared: through pgroute and straight to the primary. */
const side = {
  proxy: () => tp.url({ database: APP_DATABASE }),
  direct: () => cluster.url(cluster.primary, { database: APP_DATABASE }),
};
type Side = keyof typeof side;

beforeAll(async () => {
  tp = await startTestProxy();
  cluster = tp.cluster;
});
afterAll(async () => {
  await tp?.stop();
});

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const TEN_MB = 10 * 1024 * 1024;
/** 10 MB of every byte value, and about 10 MB of text with multi-byte characters. */
const BIG_BYTES = Buffer.alloc(TEN_MB, ALL_BYTES);
const BIG_TEXT = "pgroute ü 🐘 ".repeat(TEN_MB / 13);
/** Characters as Postgres counts them (the elephant is one character but two UTF-16 code units). */
const BIG_TEXT_CHARS = [...BIG_TEXT].length;

interface Case {
  name: string;
  text: string;
  params?: unknown[];
  /** Only the simple query protocol can run it (several statements, or none). */
  simpleOnly?: boolean;
  /** What the client must see, beyond being equal on both sides (so an empty comparison cannot pass). */
  check?: (results: Record<string, unknown>[][]) => void;
}

const CASES: Case[] = [
  {
    name: "NULLs of several types",
    text: "select null::int as a, null::text as b, null::bytea as c, null::int[] as d, null::jsonb as e, 1 as f",
    check: ([rows = []]) => expect(rows).toEqual([{ a: null, b: null, c: null, d: null, e: null, f: 1 }]),
  },
  {
    name: "bytea with all 256 byte values",
    text: "select decode(string_agg(lpad(to_hex(i), 2, '0'), '' order by i), 'hex') as b from generate_series(0, 255) i",
    check: ([rows = []]) => expect(Buffer.from(rows[0]!.b as Uint8Array).equals(ALL_BYTES)).toBe(true),
  },
  {
    name: "integer edge values",
    text:
      "select 2147483647::int4 as a, (-2147483648)::int4 as b, 9223372036854775807::int8 as c, " +
      "(-9223372036854775808)::int8 as d, 32767::int2 as e, (-32768)::int2 as f, 0::int4 as g",
  },
  {
    name: "float edge values",
    text:
      "select 'NaN'::float8 as a, 'Infinity'::float8 as b, '-Infinity'::float8 as c, 1.7976931348623157e308::float8 as d, " +
      "5e-324::float8 as e, '-0'::float8 as f, 3.4028235e38::float4 as g, 0.1::float8 + 0.2::float8 as h",
  },
  {
    name: "numeric edge values",
    text:
      "select 0.1::numeric + 0.2::numeric as a, 'NaN'::numeric as b, " +
      "123456789012345678901234567890.123456789012345678901234567890::numeric as c, (-1e-30)::numeric as d, " +
      "'Infinity'::numeric as e, 1e1000::numeric as f",
  },
  {
    name: "text with unicode, escapes and quotes",
    text:
      "select 'héllo wörld ✓ 日本語 🐘 עברית' as a, E'tab\\there\\nnew line \\\\ \"double\" ''single''' as b, " +
      "'' as c, repeat('€', 1000) as d",
    check: ([rows = []]) => expect(rows[0]!.a).toBe("héllo wörld ✓ 日本語 🐘 עברית"),
  },
  {
    name: "arrays, nested and with NULLs",
    text:
      "select array[1, 2, null, 4] as a, array[[1, 2], [3, 4]] as b, array['a', null, 'c\"d', 'e,f', 'g h', '', 'NULL'] as c, " +
      "'{}'::int[] as d, array[array['x', 'y'], array[null, 'z']] as e, '{{{1,2},{3,4}},{{5,6},{7,8}}}'::int[] as f, " +
      "array[1.5, null]::float8[] as g, array['\\x00ff'::bytea, null] as h",
  },
  {
    name: "json and jsonb",
    text:
      `select '{"a": [1, 2, {"b": null}], "c": "ü\\u00e9", "d": 1.5e300}'::json as a, ` +
      `'{"z": 1, "a": [true, false, null], "n": 12345678901234567890}'::jsonb as b, 'null'::jsonb as c, '[]'::json as d`,
  },
  {
    name: "timestamps with time zones, dates, times and intervals",
    text:
      "select '2024-02-29 23:59:59.999999+05:30'::timestamptz as a, '1999-12-31 12:00:00'::timestamp as b, " +
      "'2000-01-01'::date as c, '12:34:56.789-08'::timetz as d, '1 year 2 mons 3 days 04:05:06.7'::interval as e, " +
      "'infinity'::timestamptz as f, '-infinity'::timestamp as g, '0044-03-15 12:00 BC'::timestamptz as h, " +
      "'2021-03-14 02:30:00 America/New_York'::timestamptz as i, now() at time zone 'UTC' > '2020-01-01' as j",
  },
  {
    name: "a 10 MB text value",
    text: `select repeat(md5('pgroute'), ${TEN_MB / 32}) as t`,
    check: ([rows = []]) => expect((rows[0]!.t as string).length).toBe(TEN_MB),
  },
  {
    name: "a 10 MB bytea value",
    text: `select decode(repeat(md5('pgroute'), ${TEN_MB / 16}), 'hex') as b`,
    check: ([rows = []]) => expect((rows[0]!.b as Uint8Array).length).toBe(TEN_MB),
  },
  {
    name: "many rows of mixed values",
    text:
      "select i, i::text || 'ü' as t, case when i % 3 = 0 then null else i * 1.5 end as f, " +
      "decode(md5(i::text), 'hex') as b from generate_series(1, 5000) i",
    check: ([rows = []]) => expect(rows.length).toBe(5000),
  },
  {
    name: "bound parameters of several types",
    text: "select $1::int4 as a, $2::text as b, $3::bytea as c, $4::text as d, $5::int8 as e, $6::float8 as f",
    params: [42, "ünï 🐘 'q'", ALL_BYTES, null, "9223372036854775807", 2.5],
    check: ([rows = []]) => {
      expect(rows[0]!.b).toBe("ünï 🐘 'q'");
      expect(Buffer.from(rows[0]!.c as Uint8Array).equals(ALL_BYTES)).toBe(true);
      expect(rows[0]!.d).toBeNull();
    },
  },
  {
    name: "10 MB parameters sent by the client",
    text: "select md5($1::bytea) as b, length($1::bytea) as bn, md5($2::text) as t, length($2::text) as tn",
    params: [BIG_BYTES, BIG_TEXT],
    check: ([rows = []]) =>
      expect(rows[0]).toEqual({
        b: createHash("md5").update(BIG_BYTES).digest("hex"),
        bn: TEN_MB,
        t: createHash("md5").update(BIG_TEXT).digest("hex"),
        tn: BIG_TEXT_CHARS,
      }),
  },
  {
    name: "several statements in one simple query",
    text:
      "select 1 as a; select 'two' as b; create temp table multi (x int); insert into multi values (1), (2), (null); " +
      "select x from multi order by x; drop table multi",
    simpleOnly: true,
    // Clients differ in which results they keep (postgres.js drops those without rows); both sides agree.
    check: (results) => expect(results.map((r) => JSON.stringify(r))).toContain(JSON.stringify([{ x: 1 }, { x: 2 }, { x: null }])),
  },
  {
    name: "an empty query",
    text: "",
    simpleOnly: true,
  },
];

// --- normalisation: what a client received, in a form toEqual compares exactly -----------------------------

const digest = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");

/** Values as compared: Dates by their time (Invalid Date included), big strings and buffers by digest. */
function norm(v: unknown): unknown {
  if (v instanceof Date) return { date: Number.isNaN(v.getTime()) ? "invalid" : v.toISOString() };
  if (typeof v === "string") return v.length > 65536 ? { string: v.length, sha256: digest(v) } : v;
  if (typeof v === "number") return Number.isNaN(v) ? { number: "NaN" } : Object.is(v, -0) ? { number: "-0" } : v;
  if (v instanceof Uint8Array) return { bytes: v.length, sha256: digest(v), head: Buffer.from(v.subarray(0, 64)).toString("hex") };
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

interface Outcome {
  /** One entry per statement result. */
  results: { command: string | null; count: number | null; columns: { name: string; type: number }[]; rows: unknown[] }[];
  /** The raw rows per result, for the case's own check. */
  raw: Record<string, unknown>[][];
}

function postgresJsOutcome(r: postgres.RowList<postgres.Row[]>): Outcome {
  // A multi-statement simple query resolves to an array of results, each an array with `command`.
  const list = (r.length > 0 && Array.isArray(r[0]) ? r : [r]) as unknown as postgres.RowList<postgres.Row[]>[];
  return {
    results: list.map((x) => ({
      command: x.command ?? null,
      count: x.count ?? null,
      columns: (x.columns ?? []).map((c) => ({ name: c.name, type: c.type })),
      rows: norm([...x]) as unknown[],
    })),
    raw: list.map((x) => [...x] as Record<string, unknown>[]),
  };
}

function pgOutcome(r: pg.QueryResult | pg.QueryResult[]): Outcome {
  const list = Array.isArray(r) ? r : [r];
  return {
    results: list.map((x) => ({
      command: x.command ?? null,
      count: x.rowCount ?? null,
      columns: (x.fields ?? []).map((f) => ({ name: f.name, type: f.dataTypeID })),
      rows: norm(x.rows) as unknown[],
    })),
    raw: list.map((x) => x.rows as Record<string, unknown>[]),
  };
}

// --- postgres.js ----------------------------------------------------------------------------------------------

type PjsMode = "simple" | "prepare: true" | "prepare: false";

/**
 * postgres.js options for the extended protocol: `unsafe()` without parameters uses the simple protocol unless
 * told `simple: false`, an option postgres.js reads but its type definitions omit.
 */
const extended = (prepare: boolean) => ({ prepare, simple: false }) as postgres.UnsafeQueryOptions;

describe.each(["simple", "prepare: true", "prepare: false"] as PjsMode[])("postgres.js (%s)", (mode) => {
  const clients = {} as Record<Side, postgres.Sql>;
  beforeAll(() => {
    for (const s of ["proxy", "direct"] as Side[]) {
      clients[s] = postgres(side[s](), { max: 1, prepare: mode === "prepare: true", onnotice: () => {}, connect_timeout: 10 });
    }
  });
  afterAll(async () => {
    await Promise.all(Object.values(clients).map((c) => c.end({ timeout: 1 })));
  });

  const run = async (s: Side, c: Case): Promise<Outcome> => {
    const sql = clients[s];
    const q =
      mode === "simple"
        ? sql.unsafe(c.text)
        : sql.unsafe(c.text, (c.params ?? []) as postgres.ParameterOrJSON<never>[], extended(mode === "prepare: true"));
    return postgresJsOutcome(await q);
  };

  for (const c of CASES) {
    if (mode === "simple" ? c.params : c.simpleOnly) continue;
    test(c.name, async () => {
      // Prepared statements run twice: parsed the first time, reused the second.
      for (let round = 0; round < (mode === "prepare: true" ? 2 : 1); round++) {
        const [viaProxy, direct] = await Promise.all([run("proxy", c), run("direct", c)]);
        expect(viaProxy.results).toEqual(direct.results);
        c.check?.(viaProxy.raw);
      }
    });
  }

  test("a 1,000,000-row result arrives complete and in order", async () => {
    const read = async (s: Side) => {
      let n = 0;
      let sum = 0;
      let outOfOrder = 0;
      const q = "select i from generate_series(1, 1000000) i";
      const rows = mode === "simple" ? clients[s].unsafe(q) : clients[s].unsafe(q, [], extended(mode === "prepare: true"));
      await rows.forEach((row) => {
        const i = row.i as number;
        if (i !== ++n) outOfOrder++;
        sum += i;
      });
      return { n, sum, outOfOrder };
    };
    const [viaProxy, direct] = await Promise.all([read("proxy"), read("direct")]);
    expect(viaProxy).toEqual({ n: 1_000_000, sum: 500_000_500_000, outOfOrder: 0 });
    expect(viaProxy).toEqual(direct);
  });
});

// --- node-postgres ----------------------------------------------------------------------------------------------

type PgMode = "plain" | "named";

describe.each(["plain", "named"] as PgMode[])("node-postgres (%s queries)", (mode) => {
  const clients = {} as Record<Side, pg.Client>;
  beforeAll(async () => {
    for (const s of ["proxy", "direct"] as Side[]) {
      const c = new pg.Client({ connectionString: side[s](), connectionTimeoutMillis: 10_000 });
      c.on("notice", () => {});
      await c.connect();
      clients[s] = c;
    }
  });
  afterAll(async () => {
    await Promise.all(Object.values(clients).map((c) => c.end()));
  });

  let counter = 0;
  const names = new Map<Case, string>();
  const run = async (s: Side, c: Case): Promise<Outcome> => {
    const client = clients[s];
    if (mode === "plain") {
      return pgOutcome(c.params ? await client.query(c.text, c.params) : ((await client.query(c.text)) as unknown as pg.QueryResult));
    }
    if (!names.has(c)) names.set(c, `pgroute_stmt_${++counter}`);
    return pgOutcome(await client.query({ name: names.get(c)!, text: c.text, values: c.params ?? [] }));
  };

  for (const c of CASES) {
    if (mode === "named" && c.simpleOnly) continue;
    test(c.name, async () => {
      // Named queries run twice: the second run sends only Bind/Execute for the statement parsed the first time.
      for (let round = 0; round < (mode === "named" ? 2 : 1); round++) {
        const [viaProxy, direct] = await Promise.all([run("proxy", c), run("direct", c)]);
        expect(viaProxy.results).toEqual(direct.results);
        c.check?.(viaProxy.raw);
      }
    });
  }

  test("a 1,000,000-row result arrives complete and in order", async () => {
    const read = async (s: Side) => {
      const text = "select i from generate_series(1, 1000000) i";
      const r =
        mode === "plain"
          ? await clients[s].query({ text, rowMode: "array" })
          : await clients[s].query({ name: "pgroute_million", text, rowMode: "array" });
      let n = 0;
      let sum = 0;
      let outOfOrder = 0;
      for (const [i] of r.rows as [number][]) {
        if (i !== ++n) outOfOrder++;
        sum += i!;
      }
      return { n, sum, outOfOrder, rowCount: r.rowCount };
    };
    const [viaProxy, direct] = await Promise.all([read("proxy"), read("direct")]);
    expect(viaProxy).toEqual({ n: 1_000_000, sum: 500_000_500_000, outOfOrder: 0, rowCount: 1_000_000 });
    expect(viaProxy).toEqual(direct);
  });
});

// --- psql ---------------------------------------------------------------------------------------------------------

interface PsqlRun {
  code: number;
  stderr: string;
  stdout: Buffer;
}

async function psql(url: string, args: string[], stdin?: string): Promise<PsqlRun> {
  const proc = Bun.spawn(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, ...args], {
    stdin: stdin === undefined ? "ignore" : new Blob([stdin]),
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, PGCONNECT_TIMEOUT: "10", PGAPPNAME: "pgroute-test-psql", LC_ALL: "C.UTF-8" },
  });
  const [out, stderr, code] = await Promise.all([new Response(proc.stdout).arrayBuffer(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stderr, stdout: Buffer.from(out) };
}

/** A psql run as compared: exit code, stderr, and stdout byte for byte (by digest when large). */
function psqlView(r: PsqlRun) {
  return {
    code: r.code,
    stderr: r.stderr,
    stdout: r.stdout.length > 65536 ? { bytes: r.stdout.length, sha256: digest(r.stdout) } : r.stdout.toString("latin1"),
  };
}

describe("psql -X -A -t -c", () => {
  for (const c of CASES) {
    if (c.params) continue;
    test(c.name, async () => {
      const [viaProxy, direct] = await Promise.all([psql(side.proxy(), ["-c", c.text]), psql(side.direct(), ["-c", c.text])]);
      expect(psqlView(viaProxy)).toEqual(psqlView(direct));
      expect(viaProxy.code).toBe(0);
    });
  }

  test("a 1,000,000-row result is byte for byte the same", async () => {
    const q = "select i from generate_series(1, 1000000) i";
    const [viaProxy, direct] = await Promise.all([psql(side.proxy(), ["-c", q]), psql(side.direct(), ["-c", q])]);
    expect(viaProxy.code).toBe(0);
    const lines = viaProxy.stdout.toString("latin1").split("\n");
    expect(lines.length).toBe(1_000_001); // a trailing newline after the last row
    expect(lines[999_999]).toBe("1000000");
    expect(psqlView(viaProxy)).toEqual(psqlView(direct));
  });

  test("\\copy to stdout is byte for byte the same", async () => {
    const q =
      "\\copy (select i, 'x,\"y\" ü ' || i as t, case when i % 4 = 0 then null else decode(md5(i::text), 'hex') end as b, " +
      "array[i, null] as a from generate_series(1, 20000) i) to stdout with (format csv, header)";
    const [viaProxy, direct] = await Promise.all([psql(side.proxy(), ["-c", q]), psql(side.direct(), ["-c", q])]);
    expect(viaProxy.code).toBe(0);
    expect(viaProxy.stdout.toString("utf8").split("\n").length).toBe(20_002); // header, rows, trailing newline
    expect(psqlView(viaProxy)).toEqual(psqlView(direct));
  });

  test("\\copy from stdin loads the same rows, which \\copy to stdout returns unchanged", async () => {
    const tag = `${process.pid}_${Date.now()}`;
    const tables = { proxy: `copy_in_proxy_${tag}`, direct: `copy_in_direct_${tag}` };
    const rows: string[] = [];
    for (let i = 1; i <= 10_000; i++) {
      const t = i % 5 === 0 ? "" : i % 7 === 0 ? `"comma, ""quote"" ${i}"` : `héllo ${i} 🐘`;
      const n = i % 3 === 0 ? "" : String(i * 2);
      rows.push(`${i},${t},\\x${createHash("md5").update(String(i)).digest("hex")},${n}`);
    }
    const data = `${rows.join("\n")}\n`;
    const ddl = (t: string) => `create table ${t} (id int primary key, t text, b bytea, n int)`;
    const setup = await psql(side.direct(), ["-c", ddl(tables.proxy), "-c", ddl(tables.direct)]);
    expect(setup.stderr).toBe("");
    try {
      const [proxyLoad, directLoad] = await Promise.all([
        psql(side.proxy(), ["-c", `\\copy ${tables.proxy} from pstdin with (format csv)`], data),
        psql(side.direct(), ["-c", `\\copy ${tables.direct} from pstdin with (format csv)`], data),
      ]);
      const loads = { proxy: proxyLoad, direct: directLoad };
      expect(psqlView(loads.proxy)).toEqual(psqlView(loads.direct));
      expect(loads.proxy.stdout.toString()).toBe("COPY 10000\n");
      // Read both tables back through pgroute: the same bytes, and what was loaded.
      const out = (t: string) => psql(side.proxy(), ["-c", `\\copy (select * from ${t} order by id) to stdout with (format csv)`]);
      const [a, b] = await Promise.all([out(tables.proxy), out(tables.direct)]);
      expect(a.code).toBe(0);
      expect(a.stdout.equals(b.stdout)).toBe(true);
      // Postgres writes an empty quoted string for '' and a bare empty field for NULL; the input used only NULLs.
      expect(a.stdout.toString("utf8")).toBe(data);
    } finally {
      await psql(side.direct(), ["-c", `drop table if exists ${tables.proxy}, ${tables.direct}`]);
    }
  });
});
