/**
 * The operator's commands, shared by the admin API and the console so both behave and log the same: drain and
 * enable a node, set its role, pause and resume, reload the config. Each returns an {@link Outcome} that the
 * HTTP side turns into a status code and the console into CommandComplete or an ErrorResponse with its SQLSTATE.
 */
import type { RoleOverride } from "../cluster/overrides.ts";
import type { Proxy } from "../server.ts";

export type Outcome =
  | { readonly ok: true; readonly message: string }
  | {
      readonly ok: false;
      /** The HTTP status of the refusal. */
      readonly status: 400 | 404 | 500;
      /** The SQLSTATE the console reports. */
      readonly code: string;
      readonly message: string;
    };

const ok = (message: string): Outcome => ({ ok: true, message });

export const ROLE_CHOICES = ["primary", "replica", "auto"] as const;

function unknownNode(proxy: Proxy, name: string): Outcome | null {
  if (proxy.config.nodes.some((n) => n.name === name)) return null;
  return { ok: false, status: 404, code: "42704", message: `no node named "${name}" (nodes: ${proxy.config.nodes.map((n) => n.name).join(", ")})` };
}

/** Server connections leased from the pools of node `name` (or of every node). */
function inUse(proxy: Proxy, name?: string): number {
  let n = 0;
  for (const p of proxy.allPools) if (name === undefined || p.node.name === name) n += p.size - p.idleCount;
  return n;
}

/** No new leases on `name`: idle server connections close now, leased ones as their transactions finish. */
export function drain(proxy: Proxy, name: string, by: string): Outcome {
  const missing = unknownNode(proxy, name);
  if (missing) return missing;
  const changed = proxy.overrides.drain(name);
  for (const p of proxy.allPools) if (p.node.name === name) p.drain(true);
  const busy = inUse(proxy, name);
  if (changed) proxy.log.info("node_drained", { node: name, by, in_use: busy });
  return ok(`node "${name}" is drained: no new transactions go there; ${busy} server connection(s) in use finish what they run`);
}

/** Undoes {@link drain}. */
export function enable(proxy: Proxy, name: string, by: string): Outcome {
  const missing = unknownNode(proxy, name);
  if (missing) return missing;
  const changed = proxy.overrides.enable(name);
  for (const p of proxy.allPools) if (p.node.name === name) p.drain(false);
  if (changed) proxy.log.info("node_enabled", { node: name, by });
  return ok(changed ? `node "${name}" is enabled again` : `node "${name}" was not drained`);
}

/** Sets the role routing uses for `name` (`auto` gives the decision back to the config and the node itself). */
export function setRole(proxy: Proxy, name: string, role: string, by: string): Outcome {
  const missing = unknownNode(proxy, name);
  if (missing) return missing;
  if (!(ROLE_CHOICES as readonly string[]).includes(role)) {
    return { ok: false, status: 400, code: "22023", message: `invalid role "${role}" (expected primary, replica or auto)` };
  }
  proxy.overrides.setRole(name, role as RoleOverride | "auto");
  proxy.log.info("node_role_override", { node: name, role, by });
  const now = proxy.cluster.current.nodes.find((n) => n.name === name)?.role ?? "unknown";
  return ok(role === "auto" ? `node "${name}" follows its configured or detected role again (now ${now})` : `node "${name}" is now used as the ${role}`);
}

/** New transactions wait until {@link resume}; transactions under way finish. */
export function pause(proxy: Proxy, by: string): Outcome {
  const changed = proxy.gate.pause();
  const busy = inUse(proxy);
  if (changed) proxy.log.info("paused", { by, in_use: busy });
  return ok(`paused: new transactions wait for RESUME; ${busy} server connection(s) in use finish what they run`);
}

export function resume(proxy: Proxy, by: string): Outcome {
  const waiting = proxy.gate.waiters;
  const changed = proxy.gate.resume();
  if (changed) proxy.log.info("resumed", { by, released: waiting });
  return ok(changed ? `resumed: ${waiting} waiting client(s) released` : "not paused");
}

/** Re-reads the config file (as SIGHUP does). */
export async function reload(proxy: Proxy, by: string): Promise<Outcome> {
  proxy.log.info("config_reload_requested", { by });
  const r = await proxy.reloadFromSource();
  if (r.ok) return ok(`configuration reloaded (version ${proxy.configVersion}; changed: ${r.plan.changed.join(", ") || "nothing"})`);
  return { ok: false, status: 400, code: "F0000", message: `configuration not reloaded, the running one stays:\n${r.errors.join("\n")}` };
}
