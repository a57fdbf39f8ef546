// Invariant: with transaction pooling, protocol-level prepared statements behave for every client as if it had a
// server connection of its own — postgres.js (prepare: true), node-postgres named queries and pgbench -M prepared
// get their own results with many clients on few connections; the same name with different text in two clients
// keeps each client's text; 42P05 (name in use) and 26000 (unknown name) come with Postgres's own SQLSTATE and
// message at the same position; the unnamed statement is untouched; Parse and Close skipped after an earlier error
// change nothing, whether the next batches wait for the replies or are pipelined; and with a per-connection cache of
// 2 a connection never holds more than 2 server-side statements while a client cycles through 5, and a batch using
// more than 2 at once still gets what Postgres gives.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { AUTH_USERS } from "../support/cluster.ts";
import { ownDatabase, type OwnDatabase } from "../support/pool-db.ts";
import { exchange, pbe, rawLogin, sync, views, type View } from "../support/pool-raw.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import type { TestProxy } from "../support/proxy.ts";
import { serialize } from "../support/wire-frames.ts";

let cluster: DevCluster;
let db: OwnDatabase;
/** Pool of 2: many clients, few connections. */
let tp: TestProxy;

beforeAll(async () => {
  tp = await startPoolProxy({ mode: "transaction", size: 2, checkout_timeout: "20s" });
  cluster = tp.cluster;
  db = await ownDatabase(cluster, "pool_prep");
});
afterAll(async () => {
  await tp?.stop();
  await db?.drop();
});

const trustUrl = (port: number) => `postgres://${AUTH_USERS.trust.user}@127.0.0.1:${port}/${db.name}`;

describe("many clients on 2 server connections", () => {
  test("postgres.js with prepare: true: 40 clients × 10 rounds × 3 statements, each client's own results", async () => {
    const clients = Array.from({ length: 40 }, () => postgres(trustUrl(tp.port), { max: 1, prepare: true, onnotice: () => {} }));
    try {
      const results = await Promise.all(
        clients.map(async (sql, c) => {
          const out: unknown[] = [];
          for (let r = 0; r < 10; r++) {
            const [a] = await sql`select ${c}::int * 100 + ${r}::int as v`;
            const [b] = await sql`select ${`c${c}`}::text || '/' || ${`r${r}`}::text as s`;
            const [n] = await sql`select count(*)::int as n from generate_series(1, ${c + r}::int)`;
            out.push([a!.v, b!.s, n!.n]);
          }
          return out;
        }),
      );
      results.forEach((out, c) => {
        expect(out).toEqual(Array.from({ length: 10 }, (_, r) => [c * 100 + r, `c${c}/r${r}`, c + r]));
      });
    } finally {
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    }
  });

  test("node-postgres named queries: 40 clients × 10 rounds, same names, each client's own results", async () => {
    const clients = await Promise.all(
      Array.from({ length: 40 }, async () => {
        const c = new pg.Client({ connectionString: trustUrl(tp.port) });
        await c.connect();
        return c;
      }),
    );
    try {
      const results = await Promise.all(
        clients.map(async (c, i) => {
          const out: unknown[] = [];
          for (let r = 0; r < 10; r++) {
            const a = await c.query({ name: "plus", text: "select $1::int + $2::int as v", values: [i, r] });
            const b = await c.query({ name: "concat", text: "select $1::text || $2::text as s", values: [`c${i}`, `r${r}`] });
            out.push([a.rows[0].v, b.rows[0].s]);
          }
          return out;
        }),
      );
      results.forEach((out, i) => {
        expect(out).toEqual(Array.from({ length: 10 }, (_, r) => [i + r, `c${i}r${r}`]));
      });
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  test("the same statement name with different text in different clients returns each client's own results", async () => {
    const texts = ["select 'alpha:' || $1::text as v", "select 'beta:' || $1::text as v", "select upper($1::text) as v"];
    const expected = [(s: string) => `alpha:${s}`, (s: string) => `beta:${s}`, (s: string) => s.toUpperCase()];
    const clients = await Promise.all(
      texts.map(async () => {
        const c = new pg.Client({ connectionString: trustUrl(tp.port) });
        await c.connect();
        return c;
      }),
    );
    try {
      for (let round = 0; round < 10; round++) {
        // Interleaved, and concurrently, so the clients trade the two server connections.
        const got = await Promise.all(
          clients.map((c, i) => c.query({ name: "q", text: texts[i]!, values: [`x${round}`] }).then((r) => r.rows[0].v)),
        );
        expect(got).toEqual(expected.map((f) => f(`x${round}`)));
      }
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });
});

test("pgbench -S -M prepared, 50 clients, pool of 5: exit 0, every transaction processed, none failed", async () => {
  const bench = await startPoolProxy({ mode: "transaction", size: 5, checkout_timeout: "20s" });
  const env = { ...process.env, PGPASSWORD: cluster.password, PGCONNECT_TIMEOUT: "10", LC_ALL: "C.UTF-8" };
  const run = async (port: number, args: string[]) => {
    const proc = Bun.spawn(["pgbench", "-h", "127.0.0.1", "-p", String(port), "-U", cluster.superuser, ...args, db.name], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env,
    });
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    return { code, stdout, stderr };
  };
  try {
    // Initialised straight on the primary: what goes through pgroute is the run.
    const init = await run(cluster.primary.port, ["-i", "-s", "1", "-q"]);
    expect(init.code).toBe(0);
    const r = await run(bench.port, ["-S", "-M", "prepared", "-c", "50", "-j", "2", "-t", "40"]);
    const line = (prefix: string) => r.stdout.split("\n").find((l) => l.startsWith(prefix)) ?? `(no "${prefix}" line) ${r.stderr}`;
    expect({ code: r.code, processed: line("number of transactions actually processed"), failed: line("number of failed transactions") }).toEqual({
      code: 0,
      processed: "number of transactions actually processed: 2000/2000",
      failed: "number of failed transactions: 0 (0.000%)",
    });
    // pgbench's 50 clients ran on at most 5 server connections.
    const pool = bench.proxy.allPools.find((p) => p.database === db.name)!;
    expect(pool.size).toBeLessThanOrEqual(5);
  } finally {
    await bench.stop();
  }
});

describe("errors and names at the protocol level, compared with Postgres directly", () => {
  /** Runs the same exchanges through pgroute and straight against the primary; returns the replies of each. */
  async function compare(steps: { frames: (Uint8Array | Buffer)[]; ready?: number }[]) {
    const out: Record<"proxy" | "direct", View[][]> = { proxy: [], direct: [] };
    for (const side of ["proxy", "direct"] as const) {
      const raw = await rawLogin(side === "proxy" ? tp.port : cluster.primary.port, db.name);
      try {
        for (const s of steps) out[side].push(views(await exchange(raw, s.frames, s.ready ?? 1)));
      } finally {
        raw.close();
      }
    }
    return out;
  }

  test("Parse of a name the client already has: 42P05 with Postgres's message; the first statement still works", async () => {
    const got = await compare([
      { frames: [serialize.parse({ name: "s1", text: "select 1 as one" }), sync()] },
      // Again, in a later transaction: the name is the client's, even if this runs on another server connection.
      { frames: [serialize.parse({ name: "s1", text: "select 2 as two" }), serialize.bind({ statement: "s1" }), serialize.execute({}), sync()] },
      // In the same batch as a good Bind: the error is at the Parse, and the rest is skipped to Sync.
      {
        frames: [
          serialize.bind({ statement: "s1" }),
          serialize.execute({}),
          serialize.parse({ name: "s1", text: "select 3" }),
          serialize.bind({ statement: "s1" }),
          serialize.execute({}),
          sync(),
        ],
      },
      { frames: [serialize.bind({ statement: "s1" }), serialize.execute({}), sync()] },
    ]);
    expect(got.proxy).toEqual(got.direct);
    expect(got.direct).toEqual([
      [["1"], ["Z", "I"]],
      [["E", "ERROR", "42P05", 'prepared statement "s1" already exists'], ["Z", "I"]],
      [["2"], ["D", ["1"]], ["C", "SELECT 1"], ["E", "ERROR", "42P05", 'prepared statement "s1" already exists'], ["Z", "I"]],
      [["2"], ["D", ["1"]], ["C", "SELECT 1"], ["Z", "I"]],
    ]);
  });

  test("Bind or Describe of an unknown name: 26000 with Postgres's message; the session goes on", async () => {
    const got = await compare([
      { frames: [serialize.bind({ statement: "nope" }), serialize.execute({}), sync()] },
      { frames: [serialize.describe({ type: "S", name: "nope" }), sync()] },
      { frames: [...pbe("select 'after' as a"), sync()] },
    ]);
    expect(got.proxy).toEqual(got.direct);
    expect(got.direct[0]).toEqual([["E", "ERROR", "26000", 'prepared statement "nope" does not exist'], ["Z", "I"]]);
    expect(got.direct[1]).toEqual([["E", "ERROR", "26000", 'prepared statement "nope" does not exist'], ["Z", "I"]]);
  });

  test("the unnamed statement is untouched by named ones around it, and Close frees a name for reuse", async () => {
    const got = await compare([
      {
        frames: [
          serialize.parse({ name: "", text: "select 'unnamed' as u" }),
          serialize.parse({ name: "n1", text: "select 'named' as n" }),
          serialize.bind({ statement: "" }),
          serialize.execute({}),
          serialize.bind({ statement: "n1" }),
          serialize.execute({}),
          sync(),
        ],
      },
      // The unnamed statement survives a Sync (until the next Parse of ""), as in Postgres.
      { frames: [serialize.bind({ statement: "" }), serialize.execute({}), sync()] },
      { frames: [serialize.close({ type: "S", name: "n1" }), serialize.parse({ name: "n1", text: "select 'renamed' as n" }), sync()] },
      { frames: [serialize.bind({ statement: "n1" }), serialize.execute({}), serialize.close({ type: "S", name: "never-was" }), sync()] },
      // A Close skipped because of an earlier error in its batch leaves the statement in place.
      { frames: [serialize.bind({ statement: "nope" }), serialize.close({ type: "S", name: "n1" }), sync()] },
      { frames: [serialize.bind({ statement: "n1" }), serialize.execute({}), sync()] },
    ]);
    expect(got.proxy).toEqual(got.direct);
    expect(got.direct[0]!.filter((m) => m[0] === "D")).toEqual([
      ["D", ["unnamed"]],
      ["D", ["named"]],
    ]);
    expect(got.direct[3]!.filter((m) => m[0] === "D")).toEqual([["D", ["renamed"]]]);
    expect(got.direct[4]!.map((m) => m[0])).toEqual(["E", "Z"]);
    expect(got.direct[5]!.filter((m) => m[0] === "D")).toEqual([["D", ["renamed"]]]);
  });
});

/**
 * Runs `steps` (one batch each, ending in Sync) through `port` and straight on the primary: one batch at a time,
 * waiting for its ReadyForQuery, or `pipelined` — all written at once before any reply is read.
 */
async function compareSteps(port: number, steps: (Uint8Array | Buffer)[][], pipelined = false) {
  const out = {} as Record<"proxy" | "direct", View[][]>;
  for (const side of ["proxy", "direct"] as const) {
    const raw = await rawLogin(side === "proxy" ? port : cluster.primary.port, db.name);
    try {
      out[side] = [];
      if (pipelined) {
        const all = views(await exchange(raw, steps.flat(), steps.length));
        // Split the replies at each ReadyForQuery, one group per batch.
        let cur: View[] = [];
        for (const m of all) {
          cur.push(m);
          if (m[0] === "Z") {
            out[side].push(cur);
            cur = [];
          }
        }
      } else for (const frames of steps) out[side].push(views(await exchange(raw, frames)));
    } finally {
      raw.close();
    }
  }
  return out;
}

test("prepared_statements = 2: a batch using 3 statements at once, then again, gets what Postgres gives", async () => {
  const small = await startPoolProxy({ mode: "transaction", size: 1, prepared_statements: 2 });
  const useAll = [0, 1, 2].flatMap((k) => [serialize.bind({ statement: `b${k}`, values: [String(k)] }), serialize.execute({})]);
  const steps: (Uint8Array | Buffer)[][] = [
    [...[0, 1, 2].map((k) => serialize.parse({ name: `b${k}`, text: `select ${k} * 10 + $1::int as v` })), sync()],
    [...useAll, sync()],
    [...useAll, sync()],
    [serialize.bind({ statement: "b0", values: ["7"] }), serialize.execute({}), sync()],
  ];
  try {
    const out = {} as Record<"proxy" | "direct", View[][]>;
    for (const side of ["proxy", "direct"] as const) {
      const raw = await rawLogin(side === "proxy" ? small.port : cluster.primary.port, db.name);
      try {
        out[side] = [];
        for (const frames of steps) out[side].push(views(await exchange(raw, frames)));
      } finally {
        raw.close();
      }
    }
    expect(out.proxy).toEqual(out.direct);
    expect(out.direct[2]!.filter((m) => m[0] === "D")).toEqual([
      ["D", ["0"]],
      ["D", ["11"]],
      ["D", ["22"]],
    ]);
  } finally {
    await small.stop();
  }
});

describe.each([false, true])("statements named in a batch skipped after an error (pipelined: %p)", (pipelined) => {
  const use = (name: string, v: string) => [serialize.bind({ statement: name, values: [v] }), serialize.execute({}), sync()];

  test("a skipped Parse creates no name, even when the server connection already has that statement", async () => {
    const out = await compareSteps(
      tp.port,
      [
        [serialize.parse({ name: "k1", text: "select 'k:' || $1::text as v" }), sync()],
        // Same text as k1: pgroute answers this Parse itself — and must forget k2 when the server skips it.
        [serialize.bind({ statement: "nope" }), serialize.parse({ name: "k2", text: "select 'k:' || $1::text as v" }), sync()],
        use("k2", "a"),
        [serialize.parse({ name: "k2", text: "select 'k2:' || $1::text as v" }), ...use("k2", "b")],
        // A skipped Close leaves the statement in place; a skipped Parse after it does not replace it.
        [serialize.bind({ statement: "nope" }), serialize.close({ type: "S", name: "k2" }), serialize.parse({ name: "k2", text: "select 'other'" }), sync()],
        use("k2", "c"),
        use("k1", "d"),
      ],
      pipelined,
    );
    expect(out.proxy).toEqual(out.direct);
    expect(out.direct.map((r) => r.filter((m) => m[0] === "D" || m[0] === "E").map((m) => (m[0] === "D" ? m[1] : m[2])))).toEqual([
      [],
      ["26000"],
      ["26000"],
      [["k2:b"]],
      ["26000"],
      [["k2:c"]],
      [["k:d"]],
    ]);
  });
});

test("prepared_statements = 2: room made for a statement in a batch that fails earlier leaves every statement usable", async () => {
  const small = await startPoolProxy({ mode: "transaction", size: 1, prepared_statements: 2 });
  const use = (name: string, v: string) => [serialize.bind({ statement: name, values: [v] }), serialize.execute({}), sync()];
  const steps = [
    [serialize.parse({ name: "e1", text: "select 'e1:' || $1::text as v" }), sync()],
    [serialize.parse({ name: "e2", text: "select 'e2:' || $1::text as v" }), sync()],
    // Two statements already on the connection: this one makes pgroute close e1 there.
    [serialize.parse({ name: "e3", text: "select 'e3:' || $1::text as v" }), sync()],
    // The unknown name fails first, so whatever pgroute sends for e1 behind it (closing e2 to make room, then
    // preparing e1 again) is skipped by the server.
    [serialize.bind({ statement: "nope" }), ...use("e1", "x")],
    use("e2", "y"),
    use("e1", "z"),
    use("e3", "w"),
    [serialize.close({ type: "S", name: "e1" }), serialize.close({ type: "S", name: "e2" }), serialize.close({ type: "S", name: "e3" }), sync()],
  ];
  try {
    for (const pipelined of [false, true]) {
      const out = await compareSteps(small.port, steps, pipelined);
      expect(out.proxy).toEqual(out.direct);
      expect(out.direct.slice(4, 7).map((r) => r.filter((m) => m[0] === "D"))).toEqual([[["D", ["e2:y"]]], [["D", ["e1:z"]]], [["D", ["e3:w"]]]]);
    }
  } finally {
    await small.stop();
  }
});

test("prepared_statements = 2: 5 statements used round-robin give correct results; a connection never holds more than 2", async () => {
  const small = await startPoolProxy({ mode: "transaction", size: 1, prepared_statements: 2 });
  const client = new pg.Client({ connectionString: trustUrl(small.port) });
  await client.connect();
  try {
    const inspect = async () => {
      // Within a transaction, so both statements see the same server connection (pool size 1 anyway).
      await client.query("begin");
      const r = await client.query("select name from pg_prepared_statements order by name");
      await client.query("commit");
      return r.rows.map((x) => x.name as string);
    };
    const seen = new Set<string>();
    for (let round = 0; round < 4; round++) {
      for (let k = 0; k < 5; k++) {
        const r = await client.query({ name: `stmt${k}`, text: `select ${k} * 1000 + $1::int as v`, values: [round] });
        expect(r.rows).toEqual([{ v: k * 1000 + round }]);
        const held = await inspect();
        expect(held.length).toBeLessThanOrEqual(2);
        expect(held.length).toBeGreaterThan(0);
        for (const n of held) seen.add(n);
      }
    }
    // The server-side names are pgroute's own, never the client's.
    expect([...seen].every((n) => n.startsWith("pgroute_"))).toBe(true);
    expect(seen.size).toBeGreaterThanOrEqual(5);
  } finally {
    await client.end();
    await small.stop();
  }
});
