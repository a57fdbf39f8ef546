/** The throwaway PostgreSQL primary every benchmark measures against, from the project's dev cluster code. */
import { freePort, startCluster, stopClusterSync, type DevCluster } from "../../src/devcluster/index.ts";
import { onCleanup } from "./cleanup.ts";
import { postmasterPid } from "./cpu.ts";
import { addDiagnostic } from "./main.ts";
import type { Endpoint } from "./pgbench.ts";
import { psqlValue } from "./pgbench.ts";
import type { Upstream } from "./proxies.ts";

export interface BenchCluster {
  cluster: DevCluster;
  /** What the proxies point at and log in with. */
  up: Upstream;
  /** The primary itself, for direct runs and psql. */
  direct: Endpoint;
  /** `SHOW server_version`. */
  version: string;
  /** The postmaster (its process tree holds every backend), for CPU accounting. */
  pmPid: number | undefined;
}

/**
 * Starts a primary (and `replicas` streaming replicas) on free loopback ports (stopped and removed by the registered
 * tear-down), with extra postgresql.conf `settings`.
 */
export async function startBenchCluster(settings: Record<string, string | number>, replicas = 0): Promise<BenchCluster> {
  const abort = new AbortController();
  let cluster: DevCluster | undefined;
  const clusterP = startCluster({
    replicas,
    port: 0,
    proxyPort: await freePort(),
    settings,
    signal: abort.signal,
  });
  onCleanup({
    name: "cluster",
    run: async () => {
      abort.abort();
      const c = cluster ?? (await clusterP.catch(() => undefined));
      await c?.stop();
    },
    sync: () => {
      if (cluster) stopClusterSync(cluster.dir);
    },
  });
  cluster = await clusterP;
  addDiagnostic("PostgreSQL primary log", cluster.primary.logFile);
  const up: Upstream = {
    host: cluster.primary.host,
    port: cluster.primary.port,
    user: cluster.superuser,
    password: cluster.password,
    database: "postgres",
  };
  const direct: Endpoint = { ...up };
  const version = await psqlValue(direct, "SHOW server_version");
  return { cluster, up, direct, version, pmPid: postmasterPid(cluster.primary.dataDir) };
}

/** `n` distinct free ports (each probe may return one handed out just before: it is asked again). */
export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  return ports;
}
