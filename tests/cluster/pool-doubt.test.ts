// Invariant: a server connection in doubt is never handed to another client — in both pool modes, a client
// killed mid-transaction leaves no `idle in transaction` backend, its writes are rolled back and the connection is
// reused; a client killed while a large result streams, or mid-COPY, costs that server connection (the next client
// gets a new backend); a backend terminated under a client in a transaction ends that client only (session pooling)
// or only its transaction (transaction pooling: 08006, 25P02 until ROLLBACK, then a new backend). With
// transaction pooling, a pipeline with an error in the middle gets exactly the replies Postgres itself gives,
// after which the connection is clean for the next client.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { AUTH_USERS } from "../support/cluster.ts";
import { backends, ownDatabase, waitFor, type OwnDatabase } from "../support/pool-db.ts";
import { exchange, pbe, rawLogin, sync, views } from "../support/pool-raw.ts";
import { dataRow, type RawClient } from "../support/raw-client.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import type { TestProxy } from "../support/proxy.ts";
import { query, serialize } from "../support/wire-frames.ts";

let cluster: DevCluster;
let db: OwnDatabase;
/** Pool of 1: whatever a client leaves behind, the next client gets. */
let tp: TestProxy;

beforeAll(async () => {
  tp = await startPoolProxy({ mode: "transaction", size: 1, checkout_timeout: "10s" });
  cluster = tp.cluster;
  db = await ownDatabase(cluster, "pool_doubt");
  const setup = postgres(cluster.url(cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
  try {
    await setup.unsafe("create table marks (tag text); grant all on marks to public");
  } finally {
    await setup.end({ timeout: 1 });
  }
});
afterAll(async () => {
  await tp?.stop();
  await db?.drop();
});

/** A client through pgroute (trust role) that reports its backend pid. */
async function nextClientPid(port: number): Promise<number> {
  const sql = postgres(`postgres://${AUTH_USERS.trust.user}@127.0.0.1:${port}/${db.name}`, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql`select pg_backend_pid() as pid, 1 + 1 as two`;
    expect(row!.two).toBe(2);
    return row!.pid as number;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

const pidOf = async (raw: RawClient) => Number(dataRow((await exchange(raw, [query("select pg_backend_pid()")])).find((m) => m.type === "D")!)[0]);
async function markCount(tag: string): Promise<number> {
  const sql = postgres(cluster.url(cluster.primary, { database: db.name }), { max: 1, onnotice: () => {} });
  try {
    return (await sql`select count(*)::int as n from marks where tag = ${tag}`)[0]!.n as number;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

describe.each(["session", "transaction"] as const)("pool.mode = %s, pool of 1: a client that disappears", (mode) => {
  let mp: TestProxy;
  beforeAll(async () => {
    mp = await startPoolProxy({ mode, size: 1, checkout_timeout: "10s" });
  });
  afterAll(async () => {
    await mp?.stop();
  });

  test("killed mid-transaction: rolled back, no idle-in-transaction backend remains, the next client works", async () => {
    const raw = await rawLogin(mp.port, db.name);
    const pid = await pidOf(raw);
    const replies = views(await exchange(raw, [query(`begin; insert into marks values ('mid-tx-${mode}')`)]));
    expect(replies.at(-1)).toEqual(["Z", "T"]);
    const during = await backends(db.admin, db.name);
    expect(during.find((b) => b.pid === pid)?.state).toBe("idle in transaction");

    raw.close();
    await waitFor(
      "no idle-in-transaction backend",
      () => backends(db.admin, db.name),
      (bs) => bs.every((b) => !b.state?.startsWith("idle in transaction")),
    );
    expect(await markCount(`mid-tx-${mode}`)).toBe(0);
    // The connection was clean after ROLLBACK, so it is reused.
    expect(await nextClientPid(mp.port)).toBe(pid);
  });

  test("killed while a large result streams: that server connection is closed, the next client gets a new one", async () => {
    const raw = await rawLogin(mp.port, db.name);
    const pid = await pidOf(raw);
    raw.send(query("select g, repeat('x', 100) from generate_series(1, 5000000) g"));
    // Rows are flowing.
    for (let m = await raw.next(); m.type !== "D"; m = await raw.next()) expect(m.type).toBe("T");
    raw.close();
    await waitFor("the streaming backend to go away", () => backends(db.admin, db.name), (bs) => !bs.some((b) => b.pid === pid), 15_000);
    const next = await nextClientPid(mp.port);
    expect(next).not.toBe(pid);
  });

  test("killed mid-COPY FROM STDIN: nothing is written and the next client gets a new backend", async () => {
    const raw = await rawLogin(mp.port, db.name);
    const pid = await pidOf(raw);
    raw.send(query("copy marks (tag) from stdin"));
    const m = await raw.next();
    expect(m.type).toBe("G"); // CopyInResponse
    raw.send(new Uint8Array(serialize.copyData(Buffer.from(`mid-copy-${mode}\nmid-copy-${mode}\n`))));
    raw.close();
    await waitFor("the copying backend to go away", () => backends(db.admin, db.name), (bs) => !bs.some((b) => b.pid === pid), 15_000);
    expect(await nextClientPid(mp.port)).not.toBe(pid);
    expect(await markCount(`mid-copy-${mode}`)).toBe(0);
  });

  test(
    mode === "session"
      ? "a backend terminated under a client mid-transaction: that client gets the server's FATAL, the next one a new backend"
      : "a backend terminated under a client mid-transaction: its transaction fails (08006, then 25P02 until ROLLBACK), the session goes on with a new backend",
    async () => {
      const raw = await rawLogin(mp.port, db.name);
      const pid = await pidOf(raw);
      expect(views(await exchange(raw, [query("begin")])).at(-1)).toEqual(["Z", "T"]);
      const [killed] = await db.admin`select pg_terminate_backend(${pid}) as ok`;
      expect(killed!.ok).toBe(true);
      if (mode === "session") {
        await raw.waitClosed();
        const got = views(raw.drain());
        // Exactly what Postgres sends such a client: its own FATAL, then the close.
        expect(got).toEqual([["E", "FATAL", "57P01", "terminating connection due to administrator command"]]);
        expect(await nextClientPid(mp.port)).not.toBe(pid);
        return;
      }
      // Transaction pooling keeps the client (a failover's fast shutdown ends backends just so): the transaction is
      // lost, and it learns so at its next statement.
      try {
        const lost = views(await exchange(raw, [query("select 1")]));
        expect(lost).toEqual([["E", "ERROR", "08006", `server connection to node "primary" was lost: terminating connection due to administrator command`], ["Z", "E"]]);
        expect(views(await exchange(raw, [query("select 2")]))).toEqual([["E", "ERROR", "25P02", "current transaction is aborted, commands ignored until end of transaction block"], ["Z", "E"]]);
        expect(views(await exchange(raw, [query("rollback")]))).toEqual([["C", "ROLLBACK"], ["Z", "I"]]);
        expect(await pidOf(raw)).not.toBe(pid);
      } finally {
        raw.close();
      }
    },
  );
});

describe("a pipeline with an error in the middle gets Postgres's own replies, message by message", () => {
  async function compare(frames: (Uint8Array | Buffer)[], readyCount = 1) {
    const out = {} as Record<"proxy" | "direct", unknown[]>;
    for (const side of ["proxy", "direct"] as const) {
      const raw = await rawLogin(side === "proxy" ? tp.port : cluster.primary.port, db.name);
      try {
        out[side] = views(await exchange(raw, frames, readyCount));
        // The session (and, through pgroute, the pool's only connection) is usable afterwards.
        expect(views(await exchange(raw, [query("select 'after'")]))).toEqual([["T"], ["D", ["after"]], ["C", "SELECT 1"], ["Z", "I"]]);
      } finally {
        raw.close();
      }
    }
    expect(out.proxy).toEqual(out.direct);
    return out.direct;
  }

  test("unnamed Parse/Bind/Execute ×3, the middle one failing, then Sync", async () => {
    const direct = await compare([...pbe("select 1"), ...pbe("select 1/0"), ...pbe("select 3"), sync()]);
    // Postgres folds 1/0 when it plans the statement, so the error comes at the second Bind; the third is skipped.
    expect(direct).toEqual([["1"], ["2"], ["D", ["1"]], ["C", "SELECT 1"], ["1"], ["E", "ERROR", "22012", "division by zero"], ["Z", "I"]]);
  });

  test("named statements ×3, the middle one failing at Bind, then Sync, then the same names again", async () => {
    const direct = await compare(
      [
        ...pbe("select $1::int as a", ["1"], "m1"),
        ...pbe("select $1::int as b", ["not a number"], "m2"),
        ...pbe("select $1::int as c", ["3"], "m3"),
        sync(),
        // m1 and m2 exist, m3 was never parsed (skipped after the error).
        serialize.bind({ statement: "m1", values: ["10"] }),
        serialize.execute({}),
        serialize.bind({ statement: "m2", values: ["20"] }),
        serialize.execute({}),
        serialize.bind({ statement: "m3", values: ["30"] }),
        serialize.execute({}),
        sync(),
      ],
      2,
    );
    expect(direct.filter((m) => (m as unknown[])[0] === "E").map((m) => (m as unknown[])[2])).toEqual(["22P02", "26000"]);
  });

  test("inside a transaction: the error aborts it, later statements fail with 25P02, ROLLBACK ends it", async () => {
    await compare(
      [query("begin"), ...pbe("insert into marks values ('pipe')"), ...pbe("select 1/0"), ...pbe("select 3"), sync(), ...pbe("select 4"), sync(), query("rollback")],
      4,
    );
    expect(await markCount("pipe")).toBe(0);
  });

  test("a simple Query with several statements, the middle one failing", async () => {
    const direct = await compare([query("select 1; select 1/0; select 3")]);
    expect(direct).toEqual([["T"], ["D", ["1"]], ["C", "SELECT 1"], ["E", "ERROR", "22012", "division by zero"], ["Z", "I"]]);
  });

  test("a simple Query in an explicit transaction with a failing statement, then more queries pipelined", async () => {
    await compare([query("begin; insert into marks values ('simple-pipe'); select 1/0"), query("select 2"), query("rollback"), query("select 3")], 4);
    expect(await markCount("simple-pipe")).toBe(0);
  });
});
