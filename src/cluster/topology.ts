/**
 * Which node is the primary and which are replicas, as far as pgroute knows: configured roles, and for
 * `role = "auto"` what the node itself reports (`in_hot_standby`, a ParameterStatus every server connection sends
 * at login since PostgreSQL 14). Replicas are taken in turn, weighted; a node whose logins fail is left out of
 * reads for a while. Operator overrides ({@link Overrides}: drained nodes, roles set by hand) win over both.
 * (Continuous health monitoring and scored balancing build on this.)
 */
import type { NodeConfig } from "../config/types.ts";
import { Overrides } from "./overrides.ts";

export type Role = "primary" | "replica" | "unknown";

const FAILURE_HOLD_MS = 5_000;

export class Topology {
  private readonly roles = new Map<string, Role>();
  private readonly failedUntil = new Map<string, number>();
  /** Smooth weighted round-robin state (nginx's algorithm): deterministic and proportional to weights. */
  private readonly current = new Map<string, number>();

  /** Called after what is known of a node changed (its role, or whether its logins fail). */
  onChange: (() => void) | null = null;

  constructor(
    public nodes: readonly NodeConfig[],
    private readonly now: () => number = Date.now,
    readonly overrides: Overrides = new Overrides(),
  ) {
    for (const n of nodes) this.roles.set(n.name, n.role === "auto" ? "unknown" : n.role);
  }

  /**
   * The node list of a reloaded config. A node whose address and role are unchanged keeps what was learned about
   * it; any other starts afresh.
   */
  update(nodes: readonly NodeConfig[]): void {
    const before = new Map(this.nodes.map((n) => [n.name, n]));
    this.nodes = nodes;
    for (const name of [...this.roles.keys()]) if (!nodes.some((n) => n.name === name)) this.forget(name);
    for (const n of nodes) {
      const old = before.get(n.name);
      if (old && old.host === n.host && old.port === n.port && old.role === n.role) continue;
      this.forget(n.name);
      this.roles.set(n.name, n.role === "auto" ? "unknown" : n.role);
    }
    this.overrides.retain(new Set(nodes.map((n) => n.name)));
    this.onChange?.();
  }

  private forget(name: string): void {
    this.roles.delete(name);
    this.failedUntil.delete(name);
    this.current.delete(name);
  }

  /** The role routing uses: the operator's, else the configured or learned one. */
  roleOf(node: NodeConfig): Role {
    return this.overrides.roleOf(node.name) ?? this.roles.get(node.name) ?? "unknown";
  }

  /** The role the config or the node itself says, ignoring overrides. */
  knownRoleOf(node: NodeConfig): Role {
    return this.roles.get(node.name) ?? "unknown";
  }

  /** What a server connection to `node` reported at login. */
  learn(node: NodeConfig, inHotStandby: string | undefined): void {
    if (node.role !== "auto" || inHotStandby === undefined) return;
    const role = inHotStandby === "on" ? "replica" : "primary";
    if (this.roles.get(node.name) === role) return;
    this.roles.set(node.name, role);
    this.onChange?.();
  }

  /** A login to `node` failed: no reads go there for a while. */
  failed(node: NodeConfig): void {
    const wasUp = this.up(node);
    this.failedUntil.set(node.name, this.now() + FAILURE_HOLD_MS);
    if (wasUp) this.onChange?.();
  }

  /** A login to `node` succeeded. */
  recovered(node: NodeConfig): void {
    if (this.failedUntil.delete(node.name)) this.onChange?.();
  }

  /** Whether `node`'s logins succeed (as far as pgroute knows). */
  up(node: NodeConfig): boolean {
    return (this.failedUntil.get(node.name) ?? 0) <= this.now();
  }

  /** Whether an operator drained `node` (no new leases). */
  drained(node: NodeConfig): boolean {
    return this.overrides.isDrained(node.name);
  }

  /** The known primary, if any (not a drained one: it takes no new transactions). */
  primary(): NodeConfig | null {
    const chosen = this.overrides.primary;
    if (chosen !== null) {
      const n = this.nodes.find((x) => x.name === chosen);
      if (n) return this.drained(n) ? null : n;
    }
    for (const n of this.nodes) if (this.roleOf(n) === "primary") return this.drained(n) ? null : n;
    return null;
  }

  /** The primary an operator drained, if that is why there is none. */
  drainedPrimary(): NodeConfig | null {
    for (const n of this.nodes) if (this.roleOf(n) === "primary" && this.drained(n)) return n;
    return null;
  }

  /** Nodes that might be the primary, in config order (known primary first). */
  primaryCandidates(): NodeConfig[] {
    const p = this.primary();
    if (p) return [p];
    if (this.drainedPrimary()) return [];
    return this.nodes.filter((n) => this.roleOf(n) === "unknown" && !this.drained(n));
  }

  private readyReplicas(): NodeConfig[] {
    return this.nodes.filter((n) => this.readable(n));
  }

  private readable(n: NodeConfig): boolean {
    return this.roleOf(n) === "replica" && this.up(n) && !this.drained(n);
  }

  get replicaAvailable(): boolean {
    // Asked for every statement: no array built here.
    for (const n of this.nodes) if (this.readable(n)) return true;
    return false;
  }

  /** The next replica for a read, in proportion to the nodes' weights; null when none is available. */
  pickReplica(): NodeConfig | null {
    return this.nextReplica(true);
  }

  /**
   * The replica {@link pickReplica} would return now, without taking the turn: a caller that may not use it (no
   * idle connection there) must not skip that replica for everyone.
   */
  peekReplica(): NodeConfig | null {
    return this.nextReplica(false);
  }

  private nextReplica(take: boolean): NodeConfig | null {
    const ready = this.readyReplicas();
    if (ready.length === 0) return null;
    let total = 0;
    let best: NodeConfig | null = null;
    let bestWeight = -Infinity;
    for (const n of ready) {
      const w = (this.current.get(n.name) ?? 0) + n.weight;
      if (take) this.current.set(n.name, w);
      total += n.weight;
      if (w > bestWeight) {
        bestWeight = w;
        best = n;
      }
    }
    if (take) this.current.set(best!.name, bestWeight - total);
    return best;
  }
}
