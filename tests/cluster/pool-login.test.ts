// Invariant: in transaction mode a client can log in while every server connection is busy (as with PgBouncer):
// it gets its ParameterStatus values and ReadyForQuery at once, its startup settings reach the server before its
// first statement, and that statement waits for a connection like any other.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { AUTH_USERS, testCluster } from "../support/cluster.ts";
import { ownDatabase, type OwnDatabase } from "../support/pool-db.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import { exchange, rawLogin, views } from "../support/pool-raw.ts";
import type { TestProxy } from "../support/proxy.ts";
import { RawClient, cstrings } from "../support/raw-client.ts";
import { query } from "../support/wire-frames.ts";

let tp: TestProxy;
let db: OwnDatabase;

beforeAll(async () => {
  const cluster = await testCluster();
  db = await ownDatabase(cluster, "pool_login");
  tp = await startPoolProxy({ mode: "transaction", size: 1, checkout_timeout: "5s" });
});

afterAll(async () => {
  await tp?.stop();
  await db?.drop();
});

describe("login while the pool is busy", () => {
  test("logs in without a server connection; the first statement runs once the holder commits, with the client's settings", async () => {
    const holder = await rawLogin(tp.port, db.name);
    const late = await RawClient.connect(tp.port);
    try {
      // The only server connection is taken by an open transaction.
      expect(views(await exchange(holder, [query("begin")])).at(-1)).toEqual(["Z", "T"]);

      const login = await late.loginTrust({ user: AUTH_USERS.trust.user, database: db.name, application_name: "late-client", options: "-c search_path=pg_catalog" });
      const status = new Map(login.messages.filter((m) => m.type === "S").map((m) => cstrings(m.body) as [string, string]));
      expect(status.get("application_name")).toBe("late-client");
      expect(status.get("server_version")).toBeString();
      expect(login.messages.at(-1)?.type).toBe("Z");

      // Its first statement needs the connection: it is answered only after the holder commits.
      late.send(query("select current_setting('application_name'), current_setting('search_path')"));
      expect(views(await exchange(holder, [query("commit")])).at(-1)).toEqual(["Z", "I"]);
      const replies = views(await late.readUntil("Z", 5000));
      expect(replies).toContainEqual(["D", ["late-client", "pg_catalog"]]);
    } finally {
      holder.close();
      late.close();
    }
  });
});
