// Invariant: with transaction pooling a CancelRequest cancels the query its client is running (57014, within a
// couple of seconds) and never a query of another client — not when the canceller's query already finished and
// another client now runs on the same server connection, and not when the cancel is still on its way while the
// connection is handed on.
import { afterAll, beforeAll, expect, test } from "bun:test";
import postgres from "postgres";
import { AUTH_USERS } from "../support/cluster.ts";
import { ownDatabase, waitFor, type OwnDatabase } from "../support/pool-db.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import { exchange, rawLogin, views } from "../support/pool-raw.ts";
import { RawClient } from "../support/raw-client.ts";
import type { TestProxy } from "../support/proxy.ts";
import { cancelRequest, query } from "../support/wire-frames.ts";

let tp: TestProxy;
let db: OwnDatabase;

beforeAll(async () => {
  tp = await startPoolProxy({ mode: "transaction", size: 1, checkout_timeout: "20s" });
  db = await ownDatabase(tp.cluster, "pool_cancel");
});
afterAll(async () => {
  await tp?.stop();
  await db?.drop();
});

const trustUrl = () => `postgres://${AUTH_USERS.trust.user}@127.0.0.1:${tp.port}/${db.name}`;

/** Sends a CancelRequest on a connection of its own and waits until pgroute closes it (it never answers). */
async function sendCancel(pid: number, secret: number): Promise<void> {
  const c = await RawClient.connect(tp.port);
  c.send(cancelRequest(pid, secret));
  await c.waitClosed();
}

/** The backend running `text` for the database, once the server shows it active. */
const activeQuery = (text: string) =>
  waitFor(
    `"${text}" to be running`,
    async () => (await db.admin`select pid from pg_stat_activity where datname = ${db.name} and state = 'active' and query = ${text}`)[0]?.pid as number | undefined,
    (pid) => pid !== undefined,
  );

test("postgres.js .cancel() on select pg_sleep(10) gets 57014 within a couple of seconds; the client goes on", async () => {
  const sql = postgres(trustUrl(), { max: 1, onnotice: () => {} });
  try {
    await sql`select 1`;
    const started = Date.now();
    const running = sql`select pg_sleep(10)`;
    const outcome = running.then(
      () => null,
      (e) => e as postgres.PostgresError,
    );
    await activeQuery("select pg_sleep(10)");
    running.cancel();
    const err = await outcome;
    expect(err?.code).toBe("57014");
    expect(Date.now() - started).toBeLessThan(3000);
    expect([...(await sql`select 'after' as s`)]).toEqual([{ s: "after" }]);
  } finally {
    await sql.end({ timeout: 1 });
  }
});

test("pool of 1: A's cancel sent after A's query finished does not cancel B's query on the same connection", async () => {
  const a = await RawClient.connect(tp.port);
  // A's BackendKeyData, as pgroute gave it at login: what A's driver would send a cancel with.
  const aKey = await a.loginTrust({ user: AUTH_USERS.trust.user, database: db.name });
  const b = await rawLogin(tp.port, db.name);
  try {
    expect(views(await exchange(a, [query("select pg_backend_pid()")])).at(-1)).toEqual(["Z", "I"]);

    b.send(query("select pg_sleep(1) as slept"));
    await activeQuery("select pg_sleep(1) as slept");
    await sendCancel(aKey.pid, aKey.secret);
    const replies = views(await b.readUntil("Z", 5000));
    expect(replies).toEqual([["T"], ["D", [""]], ["C", "SELECT 1"], ["Z", "I"]]);
  } finally {
    a.close();
    b.close();
  }
});

test("a cancel racing with the end of its query never reaches the next client's query (25 rounds)", async () => {
  const a = await RawClient.connect(tp.port);
  const aKey = await a.loginTrust({ user: AUTH_USERS.trust.user, database: db.name });
  const b = await rawLogin(tp.port, db.name);
  try {
    const outcomes: string[] = [];
    // A's query lengths vary so its cancel lands before, during, and just after the query's end.
    const lengths = [0, 0.001, 0.005, 0.02, 0.1];
    for (let round = 0; round < 25; round++) {
      a.send(query(`select pg_sleep(${lengths[round % lengths.length]})`));
      // B queues behind A for the only connection; it gets it the moment A's query ends.
      b.send(query(`select ${round} as round, pg_sleep(0.01)`));
      await sendCancel(aKey.pid, aKey.secret);
      const aReplies = views(await a.readUntil("Z", 5000));
      const aError = aReplies.find((m) => m[0] === "E");
      outcomes.push(aError ? String(aError[2]) : "done");
      const bReplies = views(await b.readUntil("Z", 5000));
      expect({ round, b: bReplies }).toEqual({ round, b: [["T"], ["D", [String(round), ""]], ["C", "SELECT 1"], ["Z", "I"]] });
    }
    // A's own cancels do work: the long rounds at least were cancelled.
    expect(outcomes.every((o) => o === "done" || o === "57014")).toBe(true);
    expect(outcomes.filter((o) => o === "57014").length).toBeGreaterThan(0);
  } finally {
    a.close();
    b.close();
  }
});
