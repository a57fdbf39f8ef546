// Invariant: with transaction pooling, 1,000 concurrent clients share a pool of 10 server connections — every
// client's transactions and autocommit statements succeed with its own results, and pg_stat_activity on the
// primary never shows more than 10 backends for the database (sampled throughout the run).
import { afterAll, beforeAll, expect, test } from "bun:test";
import postgres from "postgres";
import { AUTH_USERS } from "../support/cluster.ts";
import { backends, ownDatabase, sampleBackends, waitFor, type OwnDatabase } from "../support/pool-db.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import type { TestProxy } from "../support/proxy.ts";

const CLIENTS = 1000;
const POOL_SIZE = 10;
/** Each client: two explicit transactions and one autocommit statement. */
const ROUNDS = 3;

let tp: TestProxy;
let db: OwnDatabase;

beforeAll(async () => {
  tp = await startPoolProxy({ mode: "transaction", size: POOL_SIZE, checkout_timeout: "30s" }, { limits: { max_client_connections: CLIENTS + 50 } });
  db = await ownDatabase(tp.cluster, "pool_load");
});
afterAll(async () => {
  await tp?.stop();
  await db?.drop();
});

/** File descriptors this process may open: each client costs two here (its socket and pgroute's end of it). */
function fdLimit(): number {
  const r = Bun.spawnSync(["sh", "-c", "ulimit -n"]);
  const n = Number(r.stdout.toString().trim());
  return Number.isFinite(n) ? n : Infinity; // "unlimited"
}

test(
  `${CLIENTS} concurrent clients through a pool of ${POOL_SIZE}: all succeed, never more than ${POOL_SIZE} backends`,
  async () => {
    // 2 descriptors per client plus headroom for the cluster connections, Bun and the test runner.
    const needed = 2 * CLIENTS + 200;
    expect(fdLimit()).toBeGreaterThanOrEqual(needed);

    // The trust role: 1,000 SCRAM logins would spend the time budget on PBKDF2 rather than on pooling.
    const url = tp.url({ user: AUTH_USERS.trust.user, password: "", database: db.name });
    const clients = Array.from({ length: CLIENTS }, () =>
      postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 30, idle_timeout: 0, prepare: false }),
    );
    const sampler = sampleBackends(db.admin, db.name);
    const started = Date.now();
    const results = await Promise.allSettled(
      clients.map(async (sql, i) => {
        const seen: number[] = [];
        for (let r = 0; r < ROUNDS; r++) {
          if (r === ROUNDS - 1) {
            const [row] = await sql`select ${i}::int * 1000 + ${r}::int as v`;
            seen.push(row!.v as number);
          } else {
            const v = await sql.begin(async (tx) => {
              await tx`select pg_backend_pid()`;
              const [row] = await tx`select ${i}::int * 1000 + ${r}::int as v`;
              return row!.v as number;
            });
            seen.push(v);
          }
        }
        return seen;
      }),
    );
    const elapsed = Date.now() - started;
    const { max, samples } = await sampler.stop();
    await Promise.all(clients.map((c) => c.end({ timeout: 5 })));

    const failed = results.flatMap((r, i) => (r.status === "rejected" ? [`client ${i}: ${(r.reason as Error).message}`] : []));
    expect(failed.slice(0, 5)).toEqual([]);
    // Every client got its own values back, in order.
    results.forEach((r, i) => {
      expect((r as PromiseFulfilledResult<number[]>).value).toEqual(Array.from({ length: ROUNDS }, (_, k) => i * 1000 + k));
    });
    expect(samples).toBeGreaterThan(0);
    expect(max).toBeGreaterThan(0);
    expect(max).toBeLessThanOrEqual(POOL_SIZE);
    // The pool itself agrees, and the connections it has are all there is.
    const pools = tp.proxy.allPools.filter((p) => p.database === db.name);
    expect(pools.length).toBe(1);
    expect(pools[0]!.size).toBeLessThanOrEqual(POOL_SIZE);
    const after = await waitFor("idle pooled backends", () => backends(db.admin, db.name), (b) => b.every((x) => x.state === "idle"));
    expect(after.length).toBe(pools[0]!.size);
    expect(elapsed).toBeLessThan(30_000);
  },
  60_000,
);
