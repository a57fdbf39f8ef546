/**
 * pgroute for pool tests: only the primary is configured, so every statement — read or write — runs there and
 * pgroute's pool on the primary is the only source of a test database's backends (what the tests count in
 * pg_stat_activity). Routing between nodes is tested elsewhere.
 */
import { testCluster } from "./cluster.ts";
import { startTestProxy, type TestProxy } from "./proxy.ts";

/** Starts pgroute with the given `[pool]` settings (mode included: tests say which one they mean) and more keys. */
export async function startPoolProxy(pool: Record<string, unknown> & { mode: "session" | "transaction" }, extra: Record<string, unknown> = {}): Promise<TestProxy> {
  const cluster = await testCluster();
  const p = cluster.primary;
  return startTestProxy({ nodes: [{ name: p.name, host: p.host, port: p.port, role: "primary" }], pool, ...extra });
}
