/**
 * `cluster.json`: what a later process (`pgroute cluster down`/`status`, an exit handler) needs to find and stop
 * the nodes. Written before the first node starts and updated as nodes come up, so a half-started cluster can
 * still be torn down.
 */
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DevClusterError } from "./errors.ts";
import type { DevNode } from "./types.ts";

/** The state file's name inside the cluster directory. */
export const STATE_FILE = "cluster.json";

/** One node as recorded in cluster.json; `pid` is the postmaster's once it has started. */
export interface NodeState extends DevNode {
  pid?: number;
}

/** The contents of cluster.json. */
export interface ClusterState {
  version: 1;
  dir: string;
  pgBin: string;
  /** Whether the binaries run as the `postgres` user via runuser (we were root). */
  asPostgres: boolean;
  superuser: string;
  password: string;
  proxyPort: number;
  configPath: string;
  createdAt: string;
  nodes: NodeState[];
}

/** Write cluster.json atomically (rename), readable only by us since it holds the superuser password. */
export function writeState(state: ClusterState): void {
  const path = join(state.dir, STATE_FILE);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** cluster.json of `dir`, or undefined when there is none. @throws DevClusterError if it is unreadable. */
export function readState(dir: string): ClusterState | undefined {
  const path = join(dir, STATE_FILE);
  if (!existsSync(path)) return undefined;
  let state: ClusterState;
  try {
    state = JSON.parse(readFileSync(path, "utf8")) as ClusterState;
  } catch (err) {
    throw new DevClusterError(`${path} is not a valid pgroute cluster state file: ${(err as Error).message}`);
  }
  if (state?.version !== 1 || !Array.isArray(state.nodes)) {
    throw new DevClusterError(`${path} is not a pgroute cluster state file (unknown version)`);
  }
  return state;
}
