/**
 * A DNS name that points at the primary (kept up to date by an HA tool, a service registry, a cloud DNS record):
 * re-resolved while the primary is down or unknown, its addresses name the nodes that may be the new primary —
 * the configured nodes on those addresses (and on `failover.dns_port`, when set). Like Patroni's answer it is a
 * hint; a node still has to report being out of recovery before it gets writes.
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { NodeConfig } from "../config/types.ts";

/** Every address a name resolves to (tests inject a fake). */
export type Resolve = (name: string) => Promise<string[]>;

export const resolveAll: Resolve = async (name) => (await lookup(name, { all: true })).map((a) => a.address);

/** The names of the nodes `name` points at, and the addresses it resolved to. */
export async function nodesOfName(name: string, port: number, nodes: readonly NodeConfig[], resolve: Resolve = resolveAll): Promise<{ nodes: string[]; addresses: string[] }> {
  const addresses = await resolve(name);
  const wanted = new Set(addresses);
  const matched: string[] = [];
  for (const n of nodes) {
    if (port !== 0 && n.port !== port) continue;
    // A node configured by name is compared by its own addresses (resolved now, as a new connection would).
    const own = isIP(n.host) ? [n.host] : await resolve(n.host).catch(() => [] as string[]);
    if (own.some((a) => wanted.has(a))) matched.push(n.name);
  }
  return { nodes: matched, addresses };
}
