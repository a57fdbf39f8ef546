/**
 * The local development cluster: a PostgreSQL primary plus streaming replicas on loopback, for
 * `pgroute cluster`, `pgroute demo`, tests and benchmarks.
 */
export { DevClusterError } from "./errors.ts";
export { findPgBin, PG_BINARIES, type FindPgBinOptions } from "./bin.ts";
export { freePort, isPortFree } from "./ports.ts";
export type { DevCluster, DevNode, StartOptions } from "./types.ts";
export {
  CONFIG_FILE,
  DEFAULT_PASSWORD,
  DEFAULT_PROXY_PORT,
  SUPERUSER,
  loadCluster,
  startCluster,
  stopCluster,
  stopClusterSync,
} from "./cluster.ts";
export { waitForReplay } from "./control.ts";
export { guardCluster, type Watchdog } from "./watchdog.ts";
export { clusterStatus, type NodeStatus } from "./status.ts";
