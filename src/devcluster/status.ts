/** Whether each node of a dev cluster is up, and whether each replica streams from the primary. */
import type { DevCluster, DevNode } from "./types.ts";
import { controlClient } from "./control.ts";

/** One node's observed state. `inRecovery` and `streaming` are undefined when unknown (node or primary down). */
export interface NodeStatus {
  node: DevNode;
  up: boolean;
  inRecovery?: boolean;
  /** Replicas only: the primary's pg_stat_replication shows it as `streaming`. */
  streaming?: boolean;
  error?: string;
}

async function probe(cluster: DevCluster, node: DevNode): Promise<NodeStatus> {
  const sql = controlClient(cluster.url(node));
  try {
    const [row] = await sql<{ r: boolean }[]>`select pg_is_in_recovery() as r`;
    return { node, up: true, inRecovery: row?.r };
  } catch (err) {
    return { node, up: false, error: (err as Error).message };
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** Probe every node once (a query each, in parallel). */
export async function clusterStatus(cluster: DevCluster): Promise<NodeStatus[]> {
  const statuses = await Promise.all(cluster.nodes.map((n) => probe(cluster, n)));
  const primary = statuses.find((s) => s.node === cluster.primary);
  if (!primary?.up) return statuses;
  const sql = controlClient(cluster.url(cluster.primary));
  try {
    const rows = await sql<{ name: string; state: string }[]>`
      select application_name as name, state from pg_stat_replication`;
    const streaming = new Set(rows.filter((r) => r.state === "streaming").map((r) => r.name));
    for (const s of statuses) if (s.node.role === "replica") s.streaming = streaming.has(s.node.name);
  } catch {
    // The primary went away between the two queries; streaming stays unknown.
  } finally {
    await sql.end({ timeout: 1 });
  }
  return statuses;
}
