/**
 * pgroute in-process for tests: a {@link Proxy} on port 0 in front of the shared test cluster, configured with one
 * user per authentication path (SCRAM with a password, SCRAM pass-through from a verifier, md5, cleartext, trust).
 */
import { configFrom } from "../../src/config/load.ts";
import type { Config } from "../../src/config/types.ts";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { createLogger, type Logger } from "../../src/log.ts";
import { Proxy } from "../../src/server.ts";
import { AUTH_USERS, testCluster } from "./cluster.ts";

export interface TestProxy {
  proxy: Proxy;
  cluster: DevCluster;
  host: string;
  port: number;
  config: Config;
  /** postgres:// URL through pgroute (superuser by default). */
  url(opts?: { user?: string; password?: string; database?: string }): string;
  stop(): Promise<void>;
}

/** Every node of the test cluster, as `[[nodes]]` entries (the primary first). */
export function clusterNodes(cluster: DevCluster): Record<string, unknown>[] {
  return [cluster.primary, ...cluster.replicas].map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role }));
}

/** Users pgroute knows in tests, beyond the superuser. Passwords match the roles in the cluster. */
export function testUsers(cluster: DevCluster): Record<string, unknown>[] {
  return [
    { name: cluster.superuser, password: cluster.password },
    { name: AUTH_USERS.md5.user, password: AUTH_USERS.md5.password, auth: "md5" },
    { name: AUTH_USERS.cleartext.user, password: AUTH_USERS.cleartext.password },
    { name: AUTH_USERS.trust.user, auth: "trust" },
  ];
}

/**
 * Starts pgroute against the test cluster. `raw` is merged over a default config (the primary only, so every
 * statement lands there; pass `nodes: clusterNodes(cluster)` for read/write splitting), in the shape of the TOML
 * file.
 */
export async function startTestProxy(raw: Record<string, unknown> = {}, log?: Logger): Promise<TestProxy> {
  const cluster = await testCluster();
  const config = configFrom({
    listen: { host: "127.0.0.1", port: 0 },
    nodes: clusterNodes(cluster).slice(0, 1),
    users: testUsers(cluster),
    log: { level: process.env.PGROUTE_TEST_LOG ?? "error" },
    ...raw,
    // Session pooling unless a test says otherwise: the protocol and client tests are about the relay itself;
    // transaction pooling has its own tests (tests/cluster/pool-*), which always name their mode.
    pool: { mode: "session", ...((raw.pool as Record<string, unknown> | undefined) ?? {}) },
  });
  const proxy = new Proxy({ config, log: log ?? createLogger(config.log) });
  const { host, port } = await proxy.listen();
  return {
    proxy,
    cluster,
    host,
    port,
    config,
    url: (o = {}) =>
      `postgres://${encodeURIComponent(o.user ?? cluster.superuser)}:${encodeURIComponent(o.password ?? cluster.password)}@${host}:${port}/${o.database ?? "postgres"}`,
    stop: () => proxy.stop(),
  };
}
