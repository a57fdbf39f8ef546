/**
 * What the pools ask of the cluster, answered from the latest published snapshot: each node's role, the primary
 * (or the candidates for it while none is known), and the replica the next read goes to. Everything a read
 * needs is rebuilt when a snapshot is published ({@link ReadPlan}); a pick reads those arrays and the nodes' live
 * counters and allocates nothing. The monitor (src/monitor/) is the only writer of the snapshot; this class never
 * probes and never changes a node's health — it only tells the monitor when a half-open breaker's trial was used.
 */
import type { BalanceConfig, NodeConfig } from "../config/types.ts";
import type { PgError } from "../errors.ts";
import { createStrategy, restrict, type CandidateSet, type Strategy } from "./balance.ts";
import type { LiveNodes } from "./live.ts";
import { ReadPlan, type ZonePlan } from "./plan.ts";
import { Signal } from "./signal.ts";
import type { ClusterSnapshot, NodeRole, SnapshotHolder } from "./state.ts";

export type Role = NodeRole;

export interface TopologyOptions {
  holder: SnapshotHolder;
  lives: LiveNodes;
  balance: BalanceConfig;
  /** A read was sent to a replica whose breaker is half-open: one of its trials is used. */
  onTrial(node: NodeConfig): void;
  /** A read picked for `node` got no connection there. */
  onAcquireFailed?(node: NodeConfig, error: PgError): void;
  /** Randomness for the strategies that draw (tests inject it). */
  random?: () => number;
}

export class Topology {
  nodes: readonly NodeConfig[] = [];
  private roles = new Map<string, Role>();
  private primaryNode: NodeConfig | null = null;
  /** The primary, when an operator drained it (then there is no primary for new transactions). */
  private drainedPrimaryNode: NodeConfig | null = null;
  private candidates: readonly NodeConfig[] = [];
  private plan!: ReadPlan;
  private defaultPlan!: ZonePlan;
  private balance: BalanceConfig;
  private strategy: Strategy;
  /** The set and index of the last {@link peekReplica}, for {@link takePeeked}. */
  private peekedSet: CandidateSet | null = null;
  private peekedIndex = -1;
  /** Fired after every rebuild (a new snapshot or new settings): writes waiting for a primary look again. */
  readonly changed = new Signal();

  constructor(private readonly opts: TopologyOptions) {
    this.balance = opts.balance;
    this.strategy = createStrategy(opts.balance.strategy, opts.random);
    this.rebuild(opts.holder.current);
    opts.holder.subscribe((s) => this.rebuild(s));
  }

  /** New `[balance]` settings (a reload). */
  configure(balance: BalanceConfig): void {
    if (balance.strategy !== this.balance.strategy) this.strategy = createStrategy(balance.strategy, this.opts.random);
    this.balance = balance;
    this.rebuild(this.opts.holder.current, true);
  }

  private rebuild(s: ClusterSnapshot, fresh = false): void {
    this.nodes = s.nodes.map((n) => n.node);
    this.roles = new Map(s.nodes.map((n) => [n.name, n.role]));
    const primary = s.nodes.find((n) => n.name === s.primary);
    this.primaryNode = primary && !primary.drained ? primary.node : null;
    this.drainedPrimaryNode = primary?.drained ? primary.node : null;
    this.candidates = this.primaryNode
      ? [this.primaryNode]
      : this.drainedPrimaryNode
        ? []
        : s.nodes.filter((n) => n.role === "unknown" && !n.drained).map((n) => n.node);
    this.plan = new ReadPlan(s, this.opts.lives, this.balance, fresh ? undefined : this.plan);
    this.defaultPlan = this.plan.forZone(this.balance.prefer_zone);
    this.peekedSet = null;
    this.changed.fire();
  }

  /** Fired when the monitor read newer replay positions (see {@link peekReplica}'s `minLsn`). */
  get replay(): Signal {
    return this.opts.lives.replay;
  }

  roleOf(node: NodeConfig): Role {
    return this.roles.get(node.name) ?? "unknown";
  }

  /** The known primary, if any. */
  primary(): NodeConfig | null {
    return this.primaryNode;
  }

  /** The primary an operator drained, if that is why there is none (new transactions then get 57P03). */
  drainedPrimary(): NodeConfig | null {
    return this.drainedPrimaryNode;
  }

  /** Nodes that might be the primary, in config order: the known primary, else every node of unknown role. */
  primaryCandidates(): readonly NodeConfig[] {
    return this.candidates;
  }

  private zonePlan(zone: string | undefined): ZonePlan {
    return zone === undefined || zone === this.balance.prefer_zone ? this.defaultPlan : this.plan.forZone(zone);
  }

  /** Whether a read (of a client in `zone`, default `balance.prefer_zone`) has a replica to go to. */
  replicaAvailable(zone?: string): boolean {
    const p = this.zonePlan(zone);
    return p.local !== null || p.spill !== null;
  }

  /**
   * The replica the next read (of a client in `zone`) goes to, without taking the turn: a caller that cannot use it
   * (no idle connection there) must not skip that replica for everyone. {@link takePeeked} takes it. A read that
   * must see WAL position `minLsn` goes only to replicas that replayed it; one retried after a failure avoids the
   * node named `avoid`. Null when no replica may take it.
   */
  peekReplica(zone?: string, minLsn = 0, avoid: string | null = null): NodeConfig | null {
    const p = this.zonePlan(zone);
    let set = p.local ?? p.spill;
    if (set !== null && (minLsn > 0 || avoid !== null)) {
      set = (p.local && restrict(p.local, minLsn, avoid)) ?? (p.spill && restrict(p.spill, minLsn, avoid));
    }
    if (!set) {
      this.peekedSet = null;
      return null;
    }
    const i = this.strategy.pick(set);
    this.peekedSet = set;
    this.peekedIndex = i;
    return set.list[i]!.node;
  }

  /** The read goes to the replica {@link peekReplica} just returned. */
  takePeeked(): void {
    const set = this.peekedSet;
    if (!set) return;
    this.peekedSet = null;
    const c = set.list[this.peekedIndex]!;
    this.strategy.took(set, this.peekedIndex);
    // Last: the monitor may publish (the trial was the last one), which rebuilds the plan.
    if (c.trial) this.opts.onTrial(c.node);
  }

  /** A read picked for `node` got no connection there (the monitor judges what that means for its breaker). */
  acquireFailed(node: NodeConfig, error: PgError): void {
    this.opts.onAcquireFailed?.(node, error);
  }

  /** The replica the next read (of a client in `zone`) goes to; null when none may take it (see {@link peekReplica}). */
  pickReplica(zone?: string, minLsn = 0, avoid: string | null = null): NodeConfig | null {
    const node = this.peekReplica(zone, minLsn, avoid);
    if (node) this.takePeeked();
    return node;
  }
}
