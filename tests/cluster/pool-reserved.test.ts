// Invariant: in transaction mode, over either protocol, the server-side names pgroute gives shared prepared statements ("pgroute_N")
// are not the clients' to EXECUTE, DEALLOCATE or PREPARE: such a statement gets 42939 and never reaches a server,
// so no client can run or remove a statement another client relies on.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { testCluster } from "../support/cluster.ts";
import { ownDatabase, type OwnDatabase } from "../support/pool-db.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import type { TestProxy } from "../support/proxy.ts";

let tp: TestProxy;
let db: OwnDatabase;

beforeAll(async () => {
  db = await ownDatabase(await testCluster(), "pool_reserved");
  tp = await startPoolProxy({ mode: "transaction", size: 1 });
});

afterAll(async () => {
  await tp?.stop();
  await db?.drop();
});

describe("pgroute's own statement names", () => {
  test("EXECUTE, DEALLOCATE and PREPARE of pgroute_N get 42939; the statement's owner keeps using it", async () => {
    const owner = postgres(tp.url({ database: db.name }), { max: 1, prepare: true, onnotice: () => {} });
    const other = postgres(tp.url({ database: db.name }), { max: 1, prepare: false, onnotice: () => {} });
    try {
      // The owner's protocol-level statement lives on the (only) server connection as pgroute_N.
      expect([...(await owner`select ${41}::int + 1 as n`)]).toEqual([{ n: 42 }]);
      const rows = await other.unsafe<{ name: string }[]>("select name from pg_prepared_statements where name like 'pgroute\\_%' order by prepare_time desc limit 1");
      const name = rows[0]!.name;
      expect(name).toMatch(/^pgroute_\d+$/);
      for (const sql of [`deallocate ${name}`, `execute ${name}(1)`, `prepare ${name}x as select 1`, `/* sneaky */ DEALLOCATE PREPARE ${name.toUpperCase()}`]) {
        const err = await other.unsafe(sql).then(
          () => null,
          (e: { code: string; message: string }) => e,
        );
        expect(err?.code).toBe("42939");
        expect(err?.message).toContain("is reserved by pgroute");
      }
      // The same over the extended protocol (postgres.js with prepare: true sends Parse/Bind/Execute/Sync).
      const viaParse = await owner.unsafe(`deallocate ${name}`).then(
        () => null,
        (e: { code: string }) => e,
      );
      expect(viaParse?.code).toBe("42939");
      // Nothing reached the server: the owner's statement is still there and still works.
      expect([...(await owner`select ${1}::int + 1 as n`)]).toEqual([{ n: 2 }]);
      const still = await other.unsafe<{ n: number }[]>(`select count(*)::int as n from pg_prepared_statements where name = '${name}'`);
      expect(still[0]!.n).toBe(1);
    } finally {
      await owner.end({ timeout: 1 });
      await other.end({ timeout: 1 });
    }
  });
});
