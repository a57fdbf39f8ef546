/**
 * Asking Patroni which member leads. `GET /cluster` (any member answers for the whole cluster) lists the members
 * with their role (`leader`, `replica`, `sync_standby`, `standby_leader`), state, and the host and port they take
 * connections on; `GET /leader` answers 200 only on the member holding the leader lock. Patroni's answer is a
 * hint: pgroute still writes only to a node that reports being out of recovery (src/monitor/roles.ts).
 */
import type { NodeConfig } from "../config/types.ts";

/** The member Patroni names as the leader: as much of it as the endpoint tells. */
export interface PatroniLeader {
  /** The member's name (`/cluster`); null when the endpoint does not say (`/leader`). */
  readonly name: string | null;
  /** Where it takes connections: `/cluster`'s host and port, or for `/leader` the host of the URL that answered 200. */
  readonly host: string;
  readonly port: number | null;
  /** The URL that answered. */
  readonly from: string;
}

export type PatroniFetch = (url: string, init: { signal: AbortSignal }) => Promise<{ status: number; json(): Promise<unknown> }>;

/** What came back: the leader (null when Patroni knows none: a failover under way), or why nobody answered. */
export type PatroniAnswer = { readonly ok: true; readonly leader: PatroniLeader | null } | { readonly ok: false; readonly error: string };

interface ClusterJson {
  members?: { name?: unknown; role?: unknown; state?: unknown; host?: unknown; port?: unknown }[];
}

const LEADER_ROLES = new Set(["leader", "master", "primary"]);

function endpoint(base: string, path: string): string {
  return `${base.replace(/\/+$/, "")}/${path}`;
}

/**
 * Asks the Patroni REST APIs at `urls`: `cluster` asks each in turn for `/cluster` until one answers; `leader` asks
 * every one for `/leader` and takes the one that answers 200. Each request has `timeoutMs`.
 */
export async function patroniLeader(urls: readonly string[], mode: "cluster" | "leader", timeoutMs: number, fetchImpl: PatroniFetch = fetch): Promise<PatroniAnswer> {
  const errors: string[] = [];
  if (mode === "cluster") {
    for (const base of urls) {
      const url = endpoint(base, "cluster");
      try {
        const res = await fetchImpl(url, { signal: AbortSignal.timeout(timeoutMs) });
        if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
        return { ok: true, leader: leaderOf((await res.json()) as ClusterJson, url) };
      } catch (err) {
        errors.push(`${url}: ${(err as Error).message}`);
      }
    }
    return { ok: false, error: errors.join("; ") || "no Patroni address configured" };
  }
  const answers = await Promise.all(
    urls.map(async (base) => {
      const url = endpoint(base, "leader");
      try {
        const res = await fetchImpl(url, { signal: AbortSignal.timeout(timeoutMs) });
        await res.json().catch(() => null);
        return res.status;
      } catch (err) {
        errors.push(`${url}: ${(err as Error).message}`);
        return 0;
      }
    }),
  );
  const i = answers.indexOf(200);
  if (i >= 0) return { ok: true, leader: { name: null, host: new URL(urls[i]!).hostname.replace(/^\[|\]$/g, ""), port: null, from: endpoint(urls[i]!, "leader") } };
  // Some answered (503: not the leader) and none leads: Patroni itself has no leader right now.
  if (answers.some((s) => s !== 0)) return { ok: true, leader: null };
  return { ok: false, error: errors.join("; ") || "no Patroni address configured" };
}

/** The running leader in a `/cluster` answer. */
function leaderOf(json: ClusterJson, from: string): PatroniLeader | null {
  for (const m of json.members ?? []) {
    if (typeof m.role !== "string" || !LEADER_ROLES.has(m.role) || m.state !== "running" || typeof m.host !== "string") continue;
    return { name: typeof m.name === "string" ? m.name : null, host: m.host, port: typeof m.port === "number" ? m.port : null, from };
  }
  return null;
}

/** The configured nodes that are Patroni's leader: the same name, or the same host (and port, when known). */
export function nodesOfLeader(nodes: readonly NodeConfig[], leader: PatroniLeader): string[] {
  const byName = nodes.filter((n) => leader.name !== null && n.name === leader.name);
  if (byName.length > 0) return byName.map((n) => n.name);
  return nodes.filter((n) => n.host === leader.host && (leader.port === null || n.port === leader.port)).map((n) => n.name);
}
