/**
 * Scripted nodes behind the monitor's connection interface, for unit tests of the monitor: each answers the ping,
 * the probe, the replication and replay queries from a few fields a test changes, records when it was asked, and
 * can refuse as a node that is down or one that refuses the monitor's login. Time is the test's clock.
 */
import { LiveNodes } from "../../src/cluster/live.ts";
import { SnapshotHolder, type NodeSnapshot } from "../../src/cluster/state.ts";
import { configFrom } from "../../src/config/load.ts";
import type { Config, NodeConfig } from "../../src/config/types.ts";
import { silentLogger, type Logger } from "../../src/log.ts";
import type { CheckConnection } from "../../src/monitor/connection.ts";
import type { FailoverDeps } from "../../src/monitor/failover.ts";
import { formatLsn } from "../../src/monitor/lag.ts";
import { Monitor } from "../../src/monitor/monitor.ts";
import { CheckError, PING_SQL, PROBE_SQL, PROMOTE_SQL, REPLAY_SQL, REPLICATION_SQL, type Row } from "../../src/monitor/probe.ts";

/** What a fake node answers. */
export interface FakeNode {
  standby: boolean;
  lsn: number;
  sinceReplay: number | null;
  /** The timeline a primary reports. */
  timeline: number;
  /** Refuse every query as a node that is down, or as one that refuses the monitor's login. */
  fail: "down" | "blind" | null;
  /** performance.now() of every query. */
  calls: number[];
  /** Every statement it was sent, in order. */
  sent: string[];
}

export function fakeNode(standby: boolean, lsn = 1_000, timeline = 1): FakeNode {
  return { standby, lsn, sinceReplay: standby ? 3_600 : null, timeline, fail: null, calls: [], sent: [] };
}

class FakeConnection implements CheckConnection {
  connects = 1;
  constructor(private readonly n: FakeNode) {}

  async query(text: string): Promise<Row[]> {
    this.n.calls.push(performance.now());
    this.n.sent.push(text);
    if (this.n.fail === "down") throw new CheckError("connect ECONNREFUSED", "down");
    if (this.n.fail === "blind") throw new CheckError('password authentication failed for user "mon" (28P01)', "blind", "28P01");
    const base = { standby: this.n.standby, lsn: formatLsn(this.n.lsn), since_replay: this.n.sinceReplay, timeline: this.n.standby ? null : this.n.timeline };
    if (text === PING_SQL) return [base];
    if (text === PROBE_SQL) return [{ ...base, receive_lsn: formatLsn(this.n.lsn), replay_paused: this.n.standby ? false : null, connections: 3, active: 1, max_connections: 100, cluster_name: "" }];
    if (text === REPLICATION_SQL) return [];
    if (text === REPLAY_SQL) return [{ lsn: this.n.standby ? formatLsn(this.n.lsn) : null }];
    if (text === PROMOTE_SQL) {
      this.n.standby = false;
      this.n.timeline++;
      return [{ promoted: true }];
    }
    throw new Error(`unexpected query ${text}`);
  }

  reset(): void {}
  async close(): Promise<void> {}
}

export interface Rig {
  monitor: Monitor;
  holder: SnapshotHolder;
  lives: LiveNodes;
  nodes: Record<string, FakeNode>;
  clock: { now: number; mono: number };
  node(name: string): NodeSnapshot;
  config: Config;
}

/** A monitor over `fakes` (nodes named by their keys, role auto unless `extra.nodes` says otherwise). */
export function rig(fakes: Record<string, FakeNode>, extra: Record<string, unknown> = {}, random = () => 0.5, opts: { failover?: FailoverDeps; log?: Logger } = {}): Rig {
  const config = configFrom({
    nodes: Object.keys(fakes).map((name, i) => ({ name, port: 5432 + i })),
    users: [{ name: "mon", password: "pw" }],
    ...extra,
  });
  const clock = { now: 1_000_000, mono: 1_000 };
  const holder = new SnapshotHolder({ at: 0, version: 0, nodes: [], primary: null });
  const lives = new LiveNodes(config);
  const monitor = new Monitor({
    config,
    holder,
    lives,
    log: opts.log ?? silentLogger,
    clock: { now: () => clock.now, mono: () => clock.mono },
    random,
    connect: (n: NodeConfig) => new FakeConnection(fakes[n.name]!),
    failover: opts.failover,
  });
  return { monitor, holder, lives, nodes: fakes, clock, config, node: (name) => holder.current.nodes.find((n) => n.name === name)! };
}

/** Time passes, then every node is pinged once. */
export async function tickAndPing(r: Rig, ms: number): Promise<void> {
  r.clock.now += ms;
  r.clock.mono += ms;
  await r.monitor.burst(1);
}
