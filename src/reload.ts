/**
 * What a config reload changes (SIGHUP): a pure comparison of two validated snapshots, so `Proxy.reload` only
 * applies it. Clients keep their sessions; new logins see the new users, limits and routing; a pool whose
 * settings changed is rebuilt as its connections go idle, and one whose node was removed is retired.
 */
import type { Config, NodeConfig } from "./config/types.ts";
import { serverCredentials } from "./session/auth.ts";
import type { PoolOptions } from "./pool/pool.ts";

/** What happens to one existing pool. */
export type PoolAction =
  | { readonly kind: "keep" }
  /** Its node is gone from the config: no new leases, connections closed as they come back. */
  | { readonly kind: "retire" }
  /** New settings; connections opened under the old ones are closed as they go idle. `why` names the keys. */
  | {
      readonly kind: "reconfigure";
      readonly update: Partial<Pick<PoolOptions, "node" | "config" | "credentials">>;
      readonly why: readonly string[];
    };

export interface ReloadPlan {
  /** Top-level sections whose values changed (never the values themselves: users hold secrets). */
  readonly changed: readonly string[];
  /** Changes that take effect only after a restart, as `key.path: what`. */
  readonly warnings: readonly string[];
  readonly nodesChanged: boolean;
  readonly routingChanged: boolean;
  /** The action for the pool of (node, server user, database). */
  pool(node: string, user: string, database: string): PoolAction;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** A node's settings that shape its server connections (everything but how it is used: role, weight, zone). */
function connectionSettings(n: NodeConfig): unknown {
  const { name: _name, role: _role, weight: _weight, zone: _zone, ...rest } = n;
  return rest;
}

/** Server credentials by server user, as pgroute would present them (first configured user wins, as at login). */
function credentialsByServerUser(config: Config): Map<string, string> {
  const out = new Map<string, string>();
  for (const u of config.users) {
    const key = u.server_user ?? u.name;
    if (!out.has(key)) out.set(key, JSON.stringify(serverCredentials(u)));
  }
  return out;
}

export function planReload(prev: Config, next: Config): ReloadPlan {
  const sections = new Set([...Object.keys(prev), ...Object.keys(next)]) as Set<keyof Config>;
  const changed = [...sections].filter((k) => !same(prev[k], next[k]));
  const warnings: string[] = [];
  if (!same(prev.listen, next.listen)) {
    warnings.push(`listen: pgroute keeps listening on ${prev.listen.host}:${prev.listen.port} until it is restarted`);
  }
  if (!same(prev.admin.listen, next.admin.listen)) {
    const was = prev.admin.listen ? `${prev.admin.listen.host}:${prev.admin.listen.port}` : "off";
    warnings.push(`admin.listen: the admin listener stays as it was (${was}) until pgroute is restarted`);
  }
  const prevNodes = new Map(prev.nodes.map((n) => [n.name, n]));
  const nextNodes = new Map(next.nodes.map((n) => [n.name, n]));
  const poolChanged = !same(prev.pool, next.pool);
  const prevCreds = credentialsByServerUser(prev);
  const nextCreds = credentialsByServerUser(next);
  return {
    changed,
    warnings,
    nodesChanged: !same(prev.nodes, next.nodes),
    routingChanged: !same(prev.routing, next.routing),
    pool(nodeName, user, _database): PoolAction {
      const node = nextNodes.get(nodeName);
      if (!node) return { kind: "retire" };
      const old = prevNodes.get(nodeName);
      const update: { node?: NodeConfig; config?: Config["pool"]; credentials?: ReturnType<typeof serverCredentials> } = {};
      const why: string[] = [];
      if (!old || !same(connectionSettings(old), connectionSettings(node))) {
        update.node = node;
        why.push(`nodes.${nodeName}`);
      }
      if (poolChanged) {
        update.config = next.pool;
        why.push("pool");
      }
      const creds = nextCreds.get(user);
      if (creds !== undefined && creds !== prevCreds.get(user)) {
        update.credentials = JSON.parse(creds);
        why.push(`users.${user}`);
      }
      if (why.length === 0) return { kind: "keep" };
      // Keep the node object current even when only the pool settings changed (its weight may differ).
      update.node ??= node;
      return { kind: "reconfigure", update, why };
    },
  };
}
