// Invariant: after a known workload through pgroute — 300 reads and 100 writes — /metrics counts exactly those
// requests per kind and per node that ran them (the node `inet_server_port()` named: most reads on the replicas, the
// first use of a prepared statement on a connection on the primary), each latency histogram holds
// exactly that many observations, /queries lists both fingerprints with those counts and ordered quantiles, and the
// admin console's SHOW STATS and SHOW QUERIES print the same numbers.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { adminPsql, startAdminProxy, type AdminProxy, type Metrics } from "../support/admin.ts";
import { eventually } from "../support/wait.ts";

/** What the workload's statements look like normalized (postgres.js prepares tagged templates with $n). */
const READ = "select inet_server_port() as port, $1::int as i";
const WRITE = "insert into admin_metrics_w (i) values ($1) returning inet_server_port() as port";

let ap: AdminProxy;
let sql: postgres.Sql;

beforeAll(async () => {
  ap = await startAdminProxy();
  // No type lookups: postgres.js would run one on every new connection, in the middle of the workload.
  sql = postgres(ap.tp.url(), { max: 4, onnotice: () => {}, fetch_types: false });
  await sql.unsafe("create table if not exists admin_metrics_w (i int)");
});
afterAll(async () => {
  await sql?.unsafe("drop table if exists admin_metrics_w").catch(() => {});
  await sql?.end({ timeout: 1 });
  await ap?.stop();
});

const kinds = ["read", "write", "other", "unclassified"] as const;

/** Requests per (node, kind) and observations per latency series, from one scrape. */
function counts(m: Metrics) {
  const out: Record<string, number> = {};
  for (const node of ap.tp.cluster.nodes) {
    for (const kind of kinds) out[`${node.name}/${kind}`] = m.value("pgroute_queries_total", { node: node.name, kind });
    for (const kind of ["read", "write", "other"]) out[`${node.name}/${kind}/observed`] = m.value("pgroute_query_duration_seconds_count", { node: node.name, kind });
    out[`${node.name}/transactions`] = m.value("pgroute_transactions_total", { node: node.name });
  }
  return out;
}

describe("a known workload, seen through /metrics, /queries and the console", () => {
  /** Requests of each kind that each node answered, as the client saw it. */
  const ran = { read: new Map<string, number>(), write: new Map<string, number>() };
  const ranOn = (kind: "read" | "write", node: string) => ran[kind].get(node) ?? 0;
  let before: Record<string, number>;
  let after: Record<string, number>;
  let metrics: Metrics;

  beforeAll(async () => {
    before = counts(await ap.metrics());
    const tally = (kind: "read" | "write", port: number) => ran[kind].set(ap.nodeAt.get(port)!, ranOn(kind, ap.nodeAt.get(port)!) + 1);
    for (let batch = 0; batch < 10; batch++) {
      const reads = Array.from({ length: 30 }, (_, i) => sql<{ port: number }[]>`select inet_server_port() as port, ${batch * 30 + i}::int as i`);
      const writes = Array.from({ length: 10 }, (_, i) => sql<{ port: number }[]>`insert into admin_metrics_w (i) values (${batch * 10 + i}) returning inet_server_port() as port`);
      for (const [r] of await Promise.all(reads)) tally("read", r!.port);
      for (const [r] of await Promise.all(writes)) tally("write", r!.port);
    }
    metrics = await ap.metrics();
    after = counts(metrics);
  });

  test("the writes ran on the primary and most reads on the replicas (what the counts below are checked against)", () => {
    const { primary, replicas } = ap.tp.cluster;
    expect(ranOn("write", primary.name)).toBe(100);
    expect([...ran.read.values()].reduce((a, b) => a + b, 0)).toBe(300);
    expect(replicas.reduce((s, r) => s + ranOn("read", r.name), 0)).toBeGreaterThan(250);
  });

  test("pgroute_queries_total and the latency histograms count exactly the workload, per node and kind", () => {
    const delta = (k: string) => after[k]! - before[k]!;
    for (const node of ap.tp.cluster.nodes) {
      const n = node.name;
      expect({ node: n, read: delta(`${n}/read`), readObserved: delta(`${n}/read/observed`), write: delta(`${n}/write`), writeObserved: delta(`${n}/write/observed`) }).toEqual({
        node: n,
        read: ranOn("read", n),
        readObserved: ranOn("read", n),
        write: ranOn("write", n),
        writeObserved: ranOn("write", n),
      });
      expect({ node: n, transactions: delta(`${n}/transactions`), other: delta(`${n}/other`), unclassified: delta(`${n}/unclassified`) }).toEqual({
        node: n,
        transactions: ranOn("read", n) + ranOn("write", n),
        other: 0,
        unclassified: 0,
      });
    }
  });

  test("each fingerprint's histogram holds exactly its requests; buckets are cumulative up to +Inf", () => {
    const read = metrics.all("pgroute_fingerprint_duration_seconds_count").find((s) => s.labels.query === READ);
    expect(read?.value).toBe(300);
    const write = metrics.all("pgroute_fingerprint_duration_seconds_count").find((s) => s.labels.query === WRITE);
    expect(write?.value).toBe(100);
    const buckets = metrics.all("pgroute_fingerprint_duration_seconds_bucket", { query_id: read!.labels.query_id! });
    const values = buckets.map((b) => b.value);
    expect(values).toEqual([...values].sort((a, b) => a - b));
    expect(buckets.at(-1)).toMatchObject({ labels: { le: "+Inf" }, value: 300 });
    expect(metrics.value("pgroute_fingerprint_duration_seconds_sum", { query_id: read!.labels.query_id! })).toBeGreaterThan(0);
  });

  test("/queries lists both fingerprints, busiest first, with counts, nodes and ordered quantiles", async () => {
    const body = await ap.json<{ queries: { fingerprint: string; count: number; errors: number; p50Ms: number; p95Ms: number; p99Ms: number; nodes: Record<string, number>; kinds: Record<string, number> }[] }>("/queries");
    const read = body.queries.find((q) => q.fingerprint === READ)!;
    const write = body.queries.find((q) => q.fingerprint === WRITE)!;
    expect(read).toMatchObject({ count: 300, errors: 0, kinds: { read: 300, write: 0, other: 0 } });
    expect(write).toMatchObject({ count: 100, errors: 0, kinds: { read: 0, write: 100, other: 0 }, nodes: { [ap.tp.cluster.primary.name]: 100 } });
    expect(read.nodes).toEqual(Object.fromEntries(ran.read));
    for (const q of [read, write]) {
      expect(q.p50Ms).toBeGreaterThan(0);
      expect(q.p50Ms).toBeLessThanOrEqual(q.p95Ms);
      expect(q.p95Ms).toBeLessThanOrEqual(q.p99Ms);
    }
    expect(body.queries.indexOf(read)).toBeLessThan(body.queries.indexOf(write));
  });

  test("SHOW STATS and SHOW QUERIES in the admin console print the same numbers", async () => {
    const stats = await adminPsql(ap.tp.port, "SHOW STATS");
    expect(stats.stderr).toBe("");
    const m = await ap.metrics(); // no traffic since: the console answers without a server
    for (const node of ap.tp.cluster.nodes) {
      const row = stats.rows.find((r) => r.node === node.name)!;
      expect({ reads: Number(row.reads), writes: Number(row.writes), transactions: Number(row.transactions) }).toEqual({
        reads: m.value("pgroute_queries_total", { node: node.name, kind: "read" }),
        writes: m.value("pgroute_queries_total", { node: node.name, kind: "write" }),
        transactions: m.value("pgroute_transactions_total", { node: node.name }),
      });
    }
    const queries = await adminPsql(ap.tp.port, "SHOW QUERIES");
    expect(queries.rows.find((r) => r.fingerprint === READ)?.count).toBe("300");
    expect(queries.rows.find((r) => r.fingerprint === WRITE)?.count).toBe("100");
  });

  test("prepared statements and the classifier cache count their hits", () => {
    expect(metrics.value("pgroute_prepared_cache_hits_total")).toBeGreaterThan(0);
    expect(metrics.value("pgroute_classifier_cache_hits_total")).toBeGreaterThan(0);
    expect(metrics.value("pgroute_routing_decisions_total", { target: "replica", reason: "read_only" })).toBeGreaterThanOrEqual(300);
    expect(metrics.value("pgroute_routing_decisions_total", { target: "primary", reason: "not_read_only" })).toBeGreaterThanOrEqual(100);
  });
});

describe("session pooling", () => {
  test("requests and transactions are counted per node from message headers, as unclassified", async () => {
    const sp = await startAdminProxy({ pool: { mode: "session", size: 2 } });
    const c = postgres(sp.tp.url(), { max: 1, onnotice: () => {}, fetch_types: false });
    try {
      await c.unsafe("select 1").simple(); // the session's server connection is open from here on
      const before = await sp.metrics();
      const node = sp.tp.cluster.primary.name;
      for (let i = 0; i < 7; i++) await c.unsafe("select inet_server_port()").simple();
      await c.unsafe("begin; select 1; commit").simple(); // one request, one transaction
      await c.unsafe("begin").simple();
      await c.unsafe("select 2").simple();
      await c.unsafe("commit").simple(); // three requests, one transaction
      const after = await sp.metrics();
      const delta = (name: string, labels: Record<string, string>) => after.value(name, labels) - before.value(name, labels);
      expect(delta("pgroute_queries_total", { node, kind: "unclassified" })).toBe(11);
      expect(delta("pgroute_transactions_total", { node })).toBe(9);
      expect(delta("pgroute_queries_total", { node, kind: "read" })).toBe(0);
      expect(after.value("pgroute_clients", { state: "active" })).toBe(1);
      expect(after.value("pgroute_pool_server_connections", { node, state: "active" })).toBe(1);
    } finally {
      await c.end({ timeout: 1 });
      await sp.stop();
    }
  });
});

describe("checkout waits and connection churn", () => {
  test("a lease that waits for a busy pool is observed; server connections opened and closed are counted", async () => {
    const sp = await startAdminProxy({ pool: { mode: "transaction", size: 1 } });
    const primary = sp.tp.cluster.primary.name;
    const a = postgres(sp.tp.url(), { max: 1, onnotice: () => {}, fetch_types: false });
    const b = postgres(sp.tp.url(), { max: 1, onnotice: () => {}, fetch_types: false });
    try {
      await a.unsafe("select pg_advisory_xact_lock(1)").simple(); // a server connection on the primary exists now
      const before = await sp.metrics();
      let second: Promise<unknown> = Promise.resolve();
      await a.begin(async (tx) => {
        await tx.unsafe("select 1");
        second = b.unsafe("select pg_advisory_xact_lock(2)").simple().then(() => {}); // needs the primary's only connection (then() sends it)
        await eventually("the second client to wait", async () => (await sp.metrics()).value("pgroute_pool_waiting_clients", { node: primary }) === 1);
      });
      await second;
      const after = await sp.metrics();
      expect(after.value("pgroute_checkout_wait_seconds_count", { node: primary }) - before.value("pgroute_checkout_wait_seconds_count", { node: primary })).toBe(1);
      expect(after.value("pgroute_checkouts_total", { node: primary })).toBeGreaterThan(before.value("pgroute_checkouts_total", { node: primary }));
      expect(after.value("pgroute_server_connections_opened_total", { node: primary })).toBe(1);
      expect(after.value("pgroute_pool_max_server_connections", { node: primary })).toBe(1);
      sp.tp.proxy.allPools.filter((p) => p.node.name === primary).forEach((p) => p.drain(true)); // closes the idle one
      expect((await sp.metrics()).value("pgroute_server_connections_closed_total", { node: primary })).toBe(1);
    } finally {
      await Promise.all([a.end({ timeout: 1 }), b.end({ timeout: 1 })]);
      await sp.stop();
    }
  });
});
