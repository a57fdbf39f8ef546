// Invariant: rate limits hold through the real proxy for real clients: a user over its limit gets ERROR 53400
// while another user is unaffected; the limit holds across all of that user's connections (shared buckets, not
// per connection); a statement within max_wait waits its turn, in the order of the client's pipeline, and then
// runs; past max_wait it gets 53400 and the session stays usable (simple and extended protocol); transaction
// limits count transaction starts; fingerprint limits count statement shapes; a connection over
// connections_per_second gets FATAL 53300. A statement a policy refuses spends no token; one refused inside a
// transaction fails it, as any error does. In transaction and session pooling alike; a reload applies at once.
import { describe, expect, test } from "bun:test";
import postgres from "postgres";
import { ADMIN_CONFIG, adminOn } from "../support/admin.ts";
import { AUTH_USERS, testCluster } from "../support/cluster.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import { testUsers, type TestProxy } from "../support/proxy.ts";
import { eventually, waitFor } from "../support/wait.ts";

type Mode = "transaction" | "session";

/** pgroute with `[ratelimit]` and per-user overrides (by user name) on top of the test users, and `extra` keys. */
async function withLimits(
  mode: Mode,
  ratelimit: Record<string, unknown>,
  overrides: Record<string, Record<string, unknown>>,
  run: (tp: TestProxy) => Promise<void>,
  extra: Record<string, unknown> = {},
): Promise<void> {
  const cluster = await testCluster();
  const users = testUsers(cluster).map((u) => ({ ...u, ...(overrides[u.name as string] ?? {}) }));
  // Room for every connection a test opens, in session pooling too.
  const tp = await startPoolProxy({ mode, size: 8 }, { users, ratelimit, ...extra });
  try {
    await run(tp);
  } finally {
    await tp.stop();
  }
}

const MD5 = AUTH_USERS.md5;
const CLEAR = AUTH_USERS.cleartext;

/** One connection; no type fetch at connect (postgres.js would spend a statement of the limit on it). */
function client(tp: TestProxy, user?: { user: string; password: string }, opts: postgres.Options<{}> = {}): postgres.Sql {
  return postgres(tp.url(user ? { user: user.user, password: user.password } : {}), { max: 1, onnotice: () => {}, prepare: false, fetch_types: false, ...opts });
}

/** The SQLSTATE a statement fails with, or "ok". */
async function outcome(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "ok",
    (e: postgres.PostgresError) => e.code ?? String(e),
  );
}

for (const mode of ["transaction", "session"] as const) {
  describe(`rate limits (${mode} pooling)`, () => {
    test("a user over its limit gets 53400 across all its connections; another user is unaffected", async () => {
      // One token every 5 s after a burst of 5: within this test, hardly more than the burst can pass.
      await withLimits(mode, { max_wait: "0ms" }, { [MD5.user]: { queries_per_second: 0.2, queries_burst: 5 } }, async (tp) => {
        const limited = Array.from({ length: 6 }, () => client(tp, MD5));
        const other = client(tp);
        try {
          const started = performance.now();
          // Six connections of the same user, two statements each, all at once.
          const results = await Promise.all(limited.flatMap((c) => [outcome(c`select 1`), outcome(c`select 2`)]));
          const elapsedS = (performance.now() - started) / 1000;
          const ok = results.filter((r) => r === "ok").length;
          // The burst, plus what the rate earned while the test ran — not 5 per connection.
          expect(ok).toBeGreaterThanOrEqual(5);
          expect(ok).toBeLessThanOrEqual(5 + Math.ceil(elapsedS * 0.2));
          expect(results.filter((r) => r !== "ok").every((r) => r === "53400")).toBe(true);
          expect(results.filter((r) => r === "53400").length).toBe(12 - ok);
          // The superuser has no limit: twenty in a row all run.
          for (let i = 0; i < 20; i++) expect((await other`select ${i}::int as n`)[0]!.n).toBe(i);
          // The refused error names the limit and where it is set.
          const err = (await limited[0]!`select 3`.catch((e) => e)) as postgres.PostgresError;
          expect({ code: err.code, severity: err.severity }).toEqual({ code: "53400", severity: "ERROR" });
          expect(err.message).toContain(`user "${MD5.user}" is limited to 0.2 statements per second (burst 5)`);
          expect(err.hint).toContain("users[1].queries_per_second");
          // Counted for metrics, by the limit that refused.
          expect(tp.proxy.limiter.snapshot().refused.user_queries).toBe(12 - ok + 1);
        } finally {
          await Promise.all([...limited, other].map((c) => c.end({ timeout: 1 })));
        }
      });
    });

    test("within max_wait statements wait their turn and run, pipelined ones in order", async () => {
      await withLimits(mode, { max_wait: "5s" }, { [CLEAR.user]: { queries_per_second: 10, queries_burst: 1 } }, async (tp) => {
        const sql = client(tp, CLEAR);
        try {
          const started = performance.now();
          // Six statements sent at once on one connection (postgres.js pipelines them).
          const rows = await Promise.all(Array.from({ length: 6 }, (_, i) => sql`select ${i}::int as n`));
          const elapsed = performance.now() - started;
          expect(rows.map((r) => r[0]!.n)).toEqual([0, 1, 2, 3, 4, 5]);
          // One ran at once, each of the five others a tenth of a second after the one before.
          expect(elapsed).toBeGreaterThanOrEqual(450);
          expect(tp.proxy.limiter.snapshot()).toMatchObject({ active: true, waited: 5, refused: { user_queries: 0 } });
        } finally {
          await sql.end({ timeout: 1 });
        }
      });
    });

    test("past max_wait: 53400 after waiting; the session stays usable (simple and extended protocol)", async () => {
      await withLimits(mode, { max_wait: "300ms" }, { [CLEAR.user]: { queries_per_second: 1, queries_burst: 1 } }, async (tp) => {
        for (const prepare of [false, true]) {
          const sql = client(tp, CLEAR, { prepare });
          try {
            // Whatever an earlier round left in the bucket: wait until a statement runs.
            await eventually("a first statement to run", () => outcome(sql`select 1`).then((r) => r === "ok"));
            const started = performance.now();
            const [second, third] = await Promise.all([outcome(sql`select ${2}::int`), outcome(sql`select ${3}::int`)]);
            expect([second, third]).toEqual(["53400", "53400"]);
            // Refused after waiting max_wait, not at once.
            expect(performance.now() - started).toBeGreaterThanOrEqual(250);
            // The token comes back within a second: the same session runs statements again.
            await eventually("the session to run statements again", async () => (await outcome(sql`select ${4}::int`)) === "ok");
          } finally {
            await sql.end({ timeout: 1 });
          }
        }
      });
    });

    test("transaction limits count transaction starts: a block of many statements is one", async () => {
      await withLimits(mode, { max_wait: "0ms" }, { [MD5.user]: { transactions_per_second: 0.1, transactions_burst: 2 } }, async (tp) => {
        const sql = client(tp, MD5);
        try {
          for (let t = 0; t < 2; t++) {
            await sql.begin(async (tx) => {
              for (let i = 0; i < 10; i++) await tx`select ${i}::int`;
            });
          }
          const err = (await sql.begin(async (tx) => tx`select 1`).catch((e) => e)) as postgres.PostgresError;
          expect(err.code).toBe("53400");
          expect(err.message).toContain("transactions per second");
          // An autocommit statement is a transaction of its own: refused too.
          expect(await outcome(sql`select 1`)).toBe("53400");
        } finally {
          await sql.end({ timeout: 1 });
        }
      });
    });

    test("fingerprint limits count statement shapes, literals aside, across users", async () => {
      await withLimits(mode, { max_wait: "0ms", fingerprint_queries_per_second: 0.1, fingerprint_queries_burst: 3 }, {}, async (tp) => {
        const a = client(tp);
        const b = client(tp, MD5);
        try {
          for (const n of [1, 2, 3]) expect(await outcome(a.unsafe(`select ${n} /* run ${n} */`))).toBe("ok");
          // Same shape (select ?), other literal, other user, other comment: refused.
          const err = (await b.unsafe("SELECT 42").catch((e) => e)) as postgres.PostgresError;
          expect(err.code).toBe("53400");
          expect(err.message).toContain(`statement "select ?"`);
          // Another shape has its own bucket.
          expect(await outcome(b.unsafe("select 'x' || 'y'"))).toBe("ok");
        } finally {
          await Promise.all([a.end({ timeout: 1 }), b.end({ timeout: 1 })]);
        }
      });
    });

    test("a statement a firewall rule denies spends no token: policies and limits hold together", async () => {
      const firewall = { rules: [{ name: "no-drop", kind: "statement", statements: ["DROP"] }] };
      await withLimits(
        mode,
        { max_wait: "0ms" },
        { [CLEAR.user]: { queries_per_second: 0.1, queries_burst: 2 } },
        async (tp) => {
          const sql = client(tp, CLEAR);
          try {
            for (let i = 0; i < 5; i++) expect(await outcome(sql.unsafe("drop table if exists nothing_here"))).toBe("42501");
            expect(await outcome(sql`select 1`)).toBe("ok");
            expect(await outcome(sql`select 2`)).toBe("ok");
            expect(await outcome(sql`select 3`)).toBe("53400");
            // Counted by the limit that refused it, in the admin API and /metrics.
            const admin = adminOn(tp);
            try {
              expect((await admin.get("/ratelimit", null)).status).toBe(401);
              expect(await admin.json("/ratelimit")).toMatchObject({ active: true, waited: 0, refused: { user_queries: 1, address_queries: 0, connections: 0 } });
              const m = await admin.metrics();
              expect(m.value("pgroute_ratelimit_refused_total", { limit: "user_queries" })).toBe(1);
              expect(m.all("pgroute_ratelimit_refused_total").reduce((sum, x) => sum + x.value, 0)).toBe(1);
              expect(m.value("pgroute_ratelimit_waited_total")).toBe(0);
              expect(m.value("pgroute_ratelimit_active")).toBe(1);
              expect(m.value("pgroute_ratelimit_buckets", { limit: "user_queries" })).toBe(1);
            } finally {
              admin.admin.stop();
            }
          } finally {
            await sql.end({ timeout: 1 });
          }
        },
        { firewall, admin: ADMIN_CONFIG },
      );
    });

    test("a statement refused inside a transaction fails the transaction, as any error does in Postgres", async () => {
      await withLimits(mode, { max_wait: "0ms" }, { [CLEAR.user]: { queries_per_second: 1, queries_burst: 3 } }, async (tp) => {
        const sql = client(tp, CLEAR);
        try {
          // Pipelined: BEGIN and two statements take the burst; the third is over the limit.
          const results = await Promise.all(["begin", "select 1", "select 2", "select 3"].map((q) => outcome(sql.unsafe(q))));
          expect(results).toEqual(["ok", "ok", "ok", "53400"]);
          // Once a token is back, the server has the transaction failed: a COMMIT now could not commit half of it.
          const next = await waitFor("a token for the next statement", () => outcome(sql.unsafe("select 4")), (r) => r !== "53400", 10_000);
          expect(next).toBe("25P02");
          await eventually("the ROLLBACK to get its token", async () => (await outcome(sql.unsafe("rollback"))) === "ok");
          await eventually("the session to run statements again", async () => (await outcome(sql`select 5`)) === "ok");
        } finally {
          await sql.end({ timeout: 1 });
        }
      });
    });

    test("connections per address: over the rate a connection gets FATAL 53300 before authentication", async () => {
      await withLimits(mode, { connections_per_second: 0.1, connections_burst: 2 }, {}, async (tp) => {
        const first = client(tp);
        const second = client(tp, MD5);
        const third = client(tp);
        try {
          expect(await outcome(first`select 1`)).toBe("ok");
          expect(await outcome(second`select 1`)).toBe("ok");
          const err = (await third`select 1`.catch((e) => e)) as postgres.PostgresError;
          expect({ code: err.code, severity: err.severity }).toEqual({ code: "53300", severity: "FATAL" });
          expect(err.message).toContain("too many connections from 127.0.0.1");
          // Connections already open are not affected.
          expect(await outcome(first`select 2`)).toBe("ok");
          expect(tp.proxy.limiter.snapshot().refused.connections).toBe(1);
        } finally {
          await Promise.all([first, second, third].map((c) => c.end({ timeout: 1 })));
        }
      });
    });
  });
}

test("a reload turns limits on and off for sessions already connected (transaction pooling)", async () => {
  await withLimits("transaction", {}, {}, async (tp) => {
    const sql = client(tp);
    try {
      for (let i = 0; i < 5; i++) expect(await outcome(sql`select ${i}::int`)).toBe("ok");
      const limited = { ...tp.config, ratelimit: { ...tp.config.ratelimit, max_wait_ms: 0, user_queries_per_second: 0.1, user_queries_burst: 1 } };
      tp.proxy.reload(limited);
      expect(await outcome(sql`select 1`)).toBe("ok");
      expect(await outcome(sql`select 2`)).toBe("53400");
      tp.proxy.reload(tp.config);
      expect(await outcome(sql`select 3`)).toBe("ok");
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});
