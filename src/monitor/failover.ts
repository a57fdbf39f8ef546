/**
 * What the monitor does when the primary is lost. The election itself (src/monitor/roles.ts) already follows the
 * cluster: a node that failed `failover.failures` checks in a row is down and never elected, and a node that left
 * recovery is elected as soon as the monitor sees it. This adds the outside sources and the last resort:
 *
 * - **Discovery**, while no primary is elected, the elected one cannot be reached, or two nodes claim to be the
 *   primary: every `failover.discovery_interval`, Patroni's REST API (`failover.patroni`) and the DNS name
 *   (`failover.dns_name`) are asked where the primary is. The nodes they name become hints — preferred by the
 *   election, and checked at once so their leaving recovery is seen without waiting for the next check.
 * - **Promotion** (`failover.promote`, off by default): when the elected primary went down and no other node is
 *   primary, pgroute runs pg_promote() on the reachable replica that replayed the most WAL — once per outage. If
 *   the old primary was only cut off from pgroute rather than dead, that makes a second primary (split brain);
 *   an HA manager (Patroni, repmgr, pg_auto_failover) that fences the old one is the safer choice.
 */
import type { Config, NodeConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import { nodesOfName, resolveAll, type Resolve } from "./dns.ts";
import type { NodeState } from "./assemble.ts";
import { nodesOfLeader, patroniLeader, type PatroniFetch } from "./patroni.ts";
import { NO_HINTS, isDown, roleOf } from "./roles.ts";

/** What the failover logic asks of the monitor. */
export interface FailoverHost {
  readonly config: Config;
  readonly log: Logger;
  /** Checks the node now (a hint named it). */
  checkNow(name: string): void;
  /** Runs pg_promote() on the node, over the monitor's own connection to it. */
  promote(name: string): Promise<void>;
  /** The hints changed: elect and publish again. */
  hintsChanged(): void;
}

/** Where the election stands after a publication. */
export interface ElectionStatus {
  readonly states: readonly NodeState[];
  /** The elected primary, if any. */
  readonly elected: NodeState | undefined;
  /** The primary elected before this election, if any. */
  readonly previous: string | null;
}

export interface FailoverDeps {
  fetch?: PatroniFetch;
  resolve?: Resolve;
}

export class Failover {
  /** Nodes the outside sources name as the primary (the election prefers them). */
  hinted: ReadonlySet<string> = NO_HINTS;
  private timer: ReturnType<typeof setInterval> | null = null;
  private asking = false;
  /** The primary that went down while no other node is primary; null otherwise. */
  private lost: string | null = null;
  /** pg_promote() was run (or is running) during this outage. */
  private promoting = false;
  /** That no replica could be promoted was logged during this outage. */
  private impossibleLogged = false;
  private lastAnswer = "";
  private stopped = false;

  constructor(
    private readonly host: FailoverHost,
    private readonly deps: FailoverDeps = {},
  ) {}

  private get discoverable(): boolean {
    const f = this.host.config.failover;
    return f.patroni.length > 0 || f.dns_name !== "";
  }

  /** After every election: start or stop discovery, notice a lost primary, promote when asked to. */
  update(e: ElectionStatus): void {
    if (this.stopped) return;
    const f = this.host.config.failover;
    const claimants = e.states.filter((s) => roleOf(s) === "primary" && !isDown(s, f.failures)).length;
    const needed = e.elected === undefined || e.elected.reachable === false || claimants > 1;
    if (needed && this.discoverable) this.startDiscovery();
    else this.stopDiscovery();
    if (e.elected) {
      this.lost = null;
      this.promoting = this.impossibleLogged = false;
      return;
    }
    if (e.previous !== null && this.lost === null) {
      const was = e.states.find((s) => s.node.name === e.previous);
      if (was && isDown(was, f.failures)) {
        this.lost = was.node.name;
        this.host.log.warn("primary_down", { node: was.node.name, failures: was.failures, error: was.error ?? "no answer" });
      }
    }
    if (this.lost !== null && f.promote && !this.promoting) void this.promote(e.states);
  }

  /** New settings (a reload): discovery, if it runs, starts again at the next election with them. */
  reconfigure(): void {
    this.stopDiscovery();
  }

  /** Stops discovery for good (the monitor stops). */
  stop(): void {
    this.stopped = true;
    this.stopDiscovery();
  }

  private startDiscovery(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.discover(), this.host.config.failover.discovery_interval_ms);
    this.timer.unref?.();
    void this.discover();
  }

  private stopDiscovery(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Asks Patroni and the DNS name once; new hints are checked at once and trigger a new election. */
  async discover(): Promise<ReadonlySet<string>> {
    if (this.asking) return this.hinted;
    this.asking = true;
    const f = this.host.config.failover;
    const nodes = this.host.config.nodes;
    const found = new Set<string>();
    const said: string[] = [];
    try {
      if (f.patroni.length > 0) {
        const answer = await patroniLeader(f.patroni, f.patroni_endpoint, this.host.config.monitor.ping_timeout_ms, this.deps.fetch);
        if (!answer.ok) said.push(`patroni: ${answer.error}`);
        else if (!answer.leader) said.push("patroni: no leader");
        else {
          const names = nodesOfLeader(nodes, answer.leader);
          for (const n of names) found.add(n);
          said.push(`patroni: leader ${answer.leader.name ?? answer.leader.host}${answer.leader.port === null ? "" : `:${answer.leader.port}`} = ${names.join(",") || "no configured node"}`);
        }
      }
      if (f.dns_name !== "") {
        try {
          const r = await nodesOfName(f.dns_name, f.dns_port, nodes, this.deps.resolve ?? resolveAll);
          for (const n of r.nodes) found.add(n);
          said.push(`dns: ${f.dns_name} = ${r.addresses.join(",")} = ${r.nodes.join(",") || "no configured node"}`);
        } catch (err) {
          said.push(`dns: ${f.dns_name}: ${(err as Error).message}`);
        }
      }
    } finally {
      this.asking = false;
    }
    const line = said.join("; ");
    if (line !== this.lastAnswer) {
      this.lastAnswer = line;
      this.host.log.info("primary_discovery", { answer: line });
    }
    if (!sameSet(found, this.hinted) && !this.stopped) {
      this.hinted = found;
      for (const n of found) this.host.checkNow(n);
      this.host.hintsChanged();
    }
    return this.hinted;
  }

  /** pg_promote() on the reachable replica that replayed the most WAL (the first in config order among equals). */
  private async promote(states: readonly NodeState[]): Promise<void> {
    const f = this.host.config.failover;
    let best: NodeState | undefined;
    for (const s of states) {
      if (roleOf(s) !== "replica" || s.reachable !== true || isDown(s, f.failures) || s.node.role === "replica") continue;
      if (!best || (s.lsn ?? -1) > (best.lsn ?? -1)) best = s;
    }
    if (!best) {
      // Tried again after every check, until a replica can be reached.
      if (!this.impossibleLogged) this.host.log.error("promote_impossible", { lost: this.lost ?? "", reason: "no reachable replica that may become the primary (role auto or primary)" });
      this.impossibleLogged = true;
      return;
    }
    this.promoting = true;
    const node: NodeConfig = best.node;
    this.host.log.warn("promoting", { node: node.name, lost: this.lost ?? "", replayed: best.lsn ?? -1 });
    try {
      await this.host.promote(node.name);
      this.host.checkNow(node.name);
    } catch (err) {
      this.host.log.error("promote_failed", { node: node.name, error: (err as Error).message });
    }
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
