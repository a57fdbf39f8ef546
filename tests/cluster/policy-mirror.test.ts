// Invariant: mirroring through the real proxy sends about `fraction` of the eligible requests to the shadow (counted
// on the shadow itself), compares the shadow's result with the one the client got and reports each difference
// (row count, checksum, error) per fingerprint; the shadow never delays or fails a client's statement — a blocked
// shadow fills the bounded queue and further samples are dropped and counted, a shadow past `timeout` is counted,
// a shadow that is down is counted; writes are mirrored only when asked, and only outside transactions; the
// client's session settings hold on the shadow too. In transaction and session pooling. The admin API (GET /mirror)
// and /metrics report the same counts.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { createLogger } from "../../src/log.ts";
import type { MirrorSnapshot } from "../../src/policy/mirror-stats.ts";
import { ADMIN_CONFIG, adminOn } from "../support/admin.ts";
import { testCluster } from "../support/cluster.ts";
import { freePort } from "../support/net.ts";
import { ownDatabase, type OwnDatabase } from "../support/pool-db.ts";
import { clusterNodes, startTestProxy, testUsers, type TestProxy } from "../support/proxy.ts";
import { waitFor } from "../support/wait.ts";

let primary: OwnDatabase;
let shadow: OwnDatabase;
/** A superuser connection to each database, straight to the server. */
let onPrimary: postgres.Sql;
let onShadow: postgres.Sql;

const LOCK = 4242;

beforeAll(async () => {
  const cluster = await testCluster();
  primary = await ownDatabase(cluster, "mirror_primary");
  shadow = await ownDatabase(cluster, "mirror_shadow");
  onPrimary = postgres(cluster.url(cluster.primary, { database: primary.name }), { max: 2, onnotice: () => {} });
  onShadow = postgres(cluster.url(cluster.primary, { database: shadow.name }), { max: 2, onnotice: () => {} });
  for (const sql of [onPrimary, onShadow]) {
    await sql.unsafe(`
      create table items(id int primary key, v text);
      insert into items select g, 'v' || g from generate_series(1, 10) g;
      create schema s1;
      create table s1.items(id int primary key, v text);
      insert into s1.items values (1, 'in s1');
      create table hits(n int);
      insert into hits values (0);
      create table log(id int);`);
  }
  // probe(i) and gate(i) return i on both; on the shadow, probe also counts its calls and gate waits while a test
  // holds an advisory lock.
  await onPrimary.unsafe(`
    create function probe(i int) returns int language sql as $$ select i $$;
    create function gate(i int) returns int language sql as $$ select i $$;`);
  await onShadow.unsafe(`
    create function probe(i int) returns int language plpgsql as $$
    begin
      update hits set n = n + 1;
      return i;
    end $$;
    create function gate(i int) returns int language plpgsql as $$
    begin
      perform pg_advisory_xact_lock_shared(${LOCK});
      return i;
    end $$;
    -- The shadow's data differs: row 10 is missing, row 3 changed, and a table exists only on the primary.
    delete from items where id = 10;
    update items set v = 'changed' where id = 3;`);
  await onPrimary.unsafe(`create table only_on_primary(x int); insert into only_on_primary values (1)`);
});

afterAll(async () => {
  await onPrimary?.end({ timeout: 1 });
  await onShadow?.end({ timeout: 1 });
  await primary?.drop();
  await shadow?.drop();
});

/** Log lines pgroute writes, kept for assertions. */
function capture(): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger({ level: "warn", format: "json" }, (l) => lines.push(l)) };
}

async function withMirror(
  mode: "transaction" | "session",
  mirror: Record<string, unknown>,
  run: (tp: TestProxy, lines: string[]) => Promise<void>,
): Promise<void> {
  const cluster = await testCluster();
  const { lines, log } = capture();
  const url = `postgres://${cluster.superuser}:${cluster.password}@${cluster.primary.host}:${cluster.primary.port}/${shadow.name}`;
  const tp = await startTestProxy(
    {
      nodes: clusterNodes(cluster).slice(0, 1).map((n) => ({ ...n, role: "primary" })),
      users: testUsers(cluster),
      pool: { mode, size: 4 },
      routing: { read_functions: ["probe", "gate"] },
      mirror: { url, ...mirror },
      admin: ADMIN_CONFIG,
    },
    log,
  );
  try {
    await run(tp, lines);
  } finally {
    await tp.stop();
  }
}

function client(tp: TestProxy, prepare = false): postgres.Sql {
  return postgres(tp.url({ database: primary.name }), { max: 1, onnotice: () => {}, prepare, fetch_types: false });
}

/** Waits until every sampled request not dropped has ended (compared, failed or timed out); returns the counters. */
function settled(tp: TestProxy): Promise<MirrorSnapshot> {
  return waitFor(
    "the mirror to account for every sampled request",
    () => tp.proxy.mirror.snapshot(),
    (s) => s.queue.depth === 0 && s.in_flight === 0 && s.totals.compared + s.totals.uncomparable + s.totals.shadow_errors + s.totals.timeouts === s.totals.sampled - s.totals.dropped,
    20_000,
  );
}

const byFingerprint = (s: MirrorSnapshot, fingerprint: string) => s.fingerprints.find((f) => f.fingerprint === fingerprint);

async function shadowHits(): Promise<number> {
  return (await onShadow`select n from hits`)[0]!.n as number;
}

for (const mode of ["transaction", "session"] as const) {
  describe(`mirroring (${mode} pooling)`, () => {
    test("about `fraction` of the reads reach the shadow, counted there; equal results compare equal", async () => {
      const N = 400;
      const P = 0.25;
      await withMirror(mode, { fraction: P, queue_size: 10_000, concurrency: 4 }, async (tp) => {
        const before = await shadowHits();
        const simple = client(tp);
        const extended = client(tp, true);
        try {
          for (let i = 0; i < N / 2; i++) {
            expect((await simple.unsafe(`select probe(${i}) as n`))[0]!.n).toBe(i);
            expect((await extended`select probe(${i}::int) as n`)[0]!.n).toBe(i);
          }
        } finally {
          await simple.end({ timeout: 1 });
          await extended.end({ timeout: 1 });
        }
        const s = await settled(tp);
        // Binomial(400, 0.25): mean 100, standard deviation 8.7; six deviations either side cannot flake.
        const sd = Math.sqrt(N * P * (1 - P));
        expect(s.totals.sampled).toBeGreaterThanOrEqual(Math.floor(N * P - 6 * sd));
        expect(s.totals.sampled).toBeLessThanOrEqual(Math.ceil(N * P + 6 * sd));
        expect(s.totals).toMatchObject({ dropped: 0, sent: s.totals.sampled, compared: s.totals.sampled, mismatches: 0, shadow_errors: 0, timeouts: 0 });
        // The shadow counted exactly what pgroute says it sent.
        expect((await shadowHits()) - before).toBe(s.totals.sent);
        // Per fingerprint: the simple Query's shape and the extended protocol's statement text.
        const a = byFingerprint(s, "select probe(?) as n");
        const b = byFingerprint(s, "select probe($1::int) as n");
        expect(a!.compared + b!.compared).toBe(s.totals.compared);
        expect(a!.compared).toBeGreaterThan(0);
        expect(b!.compared).toBeGreaterThan(0);
        expect(a!.latency_ratio).toBeGreaterThan(0);
        expect(a!.primary_ms_avg).toBeGreaterThan(0);
      });
    });

    test("differences are detected and reported per fingerprint: row count, checksum, error", async () => {
      await withMirror(mode, { fraction: 1 }, async (tp, lines) => {
        const simple = client(tp);
        const extended = client(tp, true);
        try {
          await simple.unsafe("select * from items order by id"); // 10 rows against 9
          await simple.unsafe("select v from items where id = 3"); // same count, other value
          await simple.unsafe("select v from items where id = 4"); // equal
          await simple.unsafe("select * from only_on_primary"); // an error on the shadow only
          await extended`select v from items where id = ${3}::int`; // extended protocol, text results
          await extended`select id, v from items where id between ${4}::int and ${9}::int`; // equal rows
        } finally {
          await simple.end({ timeout: 1 });
          await extended.end({ timeout: 1 });
        }
        const s = await settled(tp);
        expect(s.totals).toMatchObject({ sampled: 6, sent: 6, compared: 6, mismatches: 4, mismatch_row_count: 1, mismatch_checksum: 2, mismatch_error: 1 });
        expect(byFingerprint(s, "select * from items order by id")).toMatchObject({ compared: 1, mismatch_row_count: 1 });
        expect(byFingerprint(s, "select v from items where id = ?")).toMatchObject({ compared: 2, mismatches: 1, mismatch_checksum: 1 });
        expect(byFingerprint(s, "select * from only_on_primary")).toMatchObject({ mismatch_error: 1 });
        expect(byFingerprint(s, "select v from items where id = $1::int")).toMatchObject({ mismatch_checksum: 1 });
        expect(byFingerprint(s, "select id, v from items where id between $1::int and $2::int")).toMatchObject({ compared: 1, mismatches: 0 });
        // A user sees them in the log today, one line per fingerprint.
        const mismatches = lines.map((l) => JSON.parse(l)).filter((l) => l.event === "mirror_mismatch");
        expect(mismatches.map((l) => l.difference).sort()).toEqual(["checksum", "checksum", "error", "row_count"]);
        expect(mismatches.find((l) => l.difference === "row_count")).toMatchObject({ primary: "10 rows", shadow: "9 rows" });
        expect(mismatches.find((l) => l.difference === "error").shadow).toContain("ERROR 42P01");
        // The same counts through the admin API and /metrics (token-protected like the rest).
        const admin = adminOn(tp);
        try {
          expect((await admin.get("/mirror", "not-the-token")).status).toBe(401);
          const view = await admin.json<MirrorSnapshot>("/mirror");
          expect(view.totals).toMatchObject({ sampled: 6, compared: 6, mismatches: 4, mismatch_row_count: 1, mismatch_checksum: 2, mismatch_error: 1 });
          expect(byFingerprint(view, "select v from items where id = ?")).toMatchObject({ compared: 2, mismatch_checksum: 1 });
          const m = await admin.metrics();
          const byId = { query: "select v from items where id = ?" };
          expect(m.value("pgroute_mirror_sampled_total", byId)).toBe(2);
          expect(m.value("pgroute_mirror_compared_total", byId)).toBe(2);
          expect(m.value("pgroute_mirror_mismatches_total", { ...byId, difference: "checksum" })).toBe(1);
          expect(m.value("pgroute_mirror_mismatches_total", { ...byId, difference: "row_count" })).toBe(0);
          expect(m.value("pgroute_mirror_mismatches_total", { query: "select * from items order by id", difference: "row_count" })).toBe(1);
          expect(m.value("pgroute_mirror_mismatches_total", { query: "select * from only_on_primary", difference: "error" })).toBe(1);
          expect(m.all("pgroute_mirror_mismatches_total").reduce((sum, x) => sum + x.value, 0)).toBe(4);
          expect(m.all("pgroute_mirror_compared_total").reduce((sum, x) => sum + x.value, 0)).toBe(6);
          expect(m.value("pgroute_mirror_latency_ratio", byId)).toBeGreaterThan(0);
          expect({ enabled: m.value("pgroute_mirror_enabled"), depth: m.value("pgroute_mirror_queue_depth"), capacity: m.value("pgroute_mirror_queue_capacity") }).toEqual({
            enabled: 1,
            depth: 0,
            capacity: 1000,
          });
        } finally {
          admin.admin.stop();
        }
      });
    });

    test("a row larger than the client's buffer streams through whole; its request is counted uncomparable", async () => {
      await withMirror(mode, { fraction: 1 }, async (tp) => {
        const sql = client(tp);
        try {
          // 20 MB in one DataRow, over limits.client_buffer (16 MiB): an observer must not gather it whole.
          const [row] = await sql.unsafe("select length(x) as n, x from (select repeat('x', 20000000) as x) s");
          expect(row!.n).toBe(20_000_000);
          expect((row!.x as string).length).toBe(20_000_000);
        } finally {
          await sql.end({ timeout: 1 });
        }
        const s = await settled(tp);
        expect(s.totals).toMatchObject({ sampled: 1, uncomparable: 1, compared: 0, mismatches: 0 });
      });
    });

    test("a blocked shadow never delays the client: the queue fills, samples are dropped and counted", async () => {
      const holder = await onShadow.reserve();
      await holder`select pg_advisory_lock(${LOCK})`;
      let released = false;
      try {
        await withMirror(mode, { fraction: 1, concurrency: 1, queue_size: 2, timeout: "60s" }, async (tp) => {
          const sql = client(tp);
          try {
            // Twenty reads, each mirrored; the shadow is stuck on the first.
            for (let i = 0; i < 20; i++) expect((await sql.unsafe(`select gate(${i}) as n`))[0]!.n).toBe(i);
            // All twenty answered while the shadow still holds the first: one running, two queued, the rest dropped.
            const s = tp.proxy.mirror.snapshot();
            expect({ in_flight: s.in_flight, depth: s.queue.depth }).toEqual({ in_flight: 1, depth: 2 });
            expect(s.totals).toMatchObject({ sampled: 20, dropped: 17, compared: 0 });
            await holder`select pg_advisory_unlock(${LOCK})`;
            released = true;
            const done = await settled(tp);
            expect(done.totals).toMatchObject({ sent: 3, compared: 3, mismatches: 0, dropped: 17 });
          } finally {
            await sql.end({ timeout: 1 });
          }
        });
      } finally {
        if (!released) await holder`select pg_advisory_unlock(${LOCK})`;
        holder.release();
      }
    });

    test("a shadow past `timeout` is abandoned and counted; the client is unaffected", async () => {
      const holder = await onShadow.reserve();
      await holder`select pg_advisory_lock(${LOCK})`;
      try {
        await withMirror(mode, { fraction: 1, concurrency: 2, timeout: "200ms" }, async (tp, lines) => {
          const sql = client(tp);
          try {
            for (let i = 0; i < 4; i++) expect((await sql.unsafe(`select gate(${i}) as n`))[0]!.n).toBe(i);
          } finally {
            await sql.end({ timeout: 1 });
          }
          const s = await settled(tp);
          expect(s.totals).toMatchObject({ sent: 4, timeouts: 4, compared: 0 });
          expect(lines.some((l) => JSON.parse(l).event === "mirror_shadow_timeout")).toBe(true);
        });
      } finally {
        await holder`select pg_advisory_unlock(${LOCK})`;
        holder.release();
      }
    });

    test("a shadow that is down costs the client nothing; its errors are counted", async () => {
      const cluster = await testCluster();
      const port = await freePort();
      const { lines, log } = capture();
      const tp = await startTestProxy(
        {
          nodes: clusterNodes(cluster).slice(0, 1).map((n) => ({ ...n, role: "primary" })),
          pool: { mode, size: 2 },
          mirror: { url: `postgres://nobody:x@127.0.0.1:${port}/nothing`, fraction: 1, timeout: "2s" },
        },
        log,
      );
      const sql = client(tp);
      try {
        for (let i = 0; i < 10; i++) expect((await sql.unsafe(`select ${i} as n`))[0]!.n).toBe(i);
        const s = await settled(tp);
        expect(s.totals).toMatchObject({ sampled: 10, shadow_errors: 10, compared: 0 });
        expect(lines.some((l) => JSON.parse(l).event === "mirror_shadow_error")).toBe(true);
        // Never the shadow's password in a log line or the snapshot.
        expect(JSON.stringify(s)).not.toContain("nobody:x");
        expect(lines.join("\n")).not.toContain("nobody:x");
      } finally {
        await sql.end({ timeout: 1 });
        await tp.stop();
      }
    });

    test("writes: mirrored only when asked, and only outside transactions", async () => {
      await onShadow`delete from log`;
      await withMirror(mode, { fraction: 1, writes: false }, async (tp) => {
        const sql = client(tp);
        try {
          await sql.unsafe("insert into log values (1)");
        } finally {
          await sql.end({ timeout: 1 });
        }
        expect((await settled(tp)).totals.sampled).toBe(0);
      });
      await withMirror(mode, { fraction: 1, writes: true }, async (tp) => {
        const sql = client(tp);
        try {
          await sql.unsafe("insert into log values (2)");
          await sql.begin(async (tx) => {
            await tx.unsafe("insert into log values (3)");
            await tx.unsafe("select * from items");
          });
          await sql.unsafe("begin; insert into log values (4); commit");
          // Pipelined: the INSERT arrives before the server has answered the BEGIN ahead of it.
          await Promise.all([sql.unsafe("begin"), sql.unsafe("insert into log values (5)"), sql.unsafe("commit")]);
        } finally {
          await sql.end({ timeout: 1 });
        }
        const s = await settled(tp);
        expect(s.totals).toMatchObject({ sampled: 1, compared: 1, mismatches: 0 });
        expect((await onShadow`select id from log order by id`).map((r) => r.id)).toEqual([2]);
      });
    });

    test("the client's session settings hold on the shadow", async () => {
      await withMirror(mode, { fraction: 1 }, async (tp) => {
        const sql = client(tp);
        try {
          await sql.unsafe("set search_path = s1");
          expect((await sql.unsafe("select v from items"))[0]!.v).toBe("in s1");
          await sql.unsafe("reset search_path");
          await sql.unsafe("select v from items where id = 1");
        } finally {
          await sql.end({ timeout: 1 });
        }
        const s = await settled(tp);
        // With search_path = s1 the shadow reads s1.items too (one row, equal); without it, public.items.
        expect(byFingerprint(s, "select v from items")).toMatchObject({ compared: 1, mismatches: 0 });
        expect(byFingerprint(s, "select v from items where id = ?")).toMatchObject({ compared: 1, mismatches: 0 });
        expect(byFingerprint(s, "set search_path = s1")).toBeUndefined(); // session effects are not mirrored
      });
    });
  });
}
