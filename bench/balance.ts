/**
 * What cluster awareness costs on the serving path, in-process: ns per replica pick for each balancing strategy
 * (`Topology.pickReplica`, which a read's lease calls once: the strategy over the candidate arrays built at the
 * last snapshot, plus live counters), ns per pick bound to a WAL position (read-your-writes), ns per
 * `replicaAvailable` (asked for every statement), ns per completed
 * request reported to the monitor (latency window, moving average, breaker bookkeeping), and µs per snapshot
 * publication (assembling the snapshot and rebuilding the candidate lists: a few times a second).
 *
 *   bun bench/balance.ts                # about 10 s
 *   bun bench/balance.ts --rounds 25
 *
 * Each figure is a timed loop repeated over rounds after an untimed warm-up; `best` is the fastest round (the cost
 * itself), `median` what the (shared, busy) machine made of it. Target: a pick well under 1 µs with no allocation.
 */
import { cpus, loadavg, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { LiveNodes } from "../src/cluster/live.ts";
import type { RequestSample } from "../src/cluster/observe.ts";
import { SnapshotHolder } from "../src/cluster/state.ts";
import { Topology } from "../src/cluster/topology.ts";
import { configFrom } from "../src/config/load.ts";
import type { BalanceStrategy } from "../src/config/types.ts";
import { silentLogger } from "../src/log.ts";
import { Monitor } from "../src/monitor/monitor.ts";
import { timeCalls, type Figure } from "./lib/stats.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "15" } } });
const ROUNDS = Math.max(1, Number(values.rounds) || 15);
const STRATEGIES: BalanceStrategy[] = ["weighted", "least_connections", "latency", "round_robin", "random"];



/** ns per call of `body(i)`, over rounds, after one untimed pass. */
const measure = (n: number, body: (i: number) => void): Figure => timeCalls(n, ROUNDS, body);

/** A cluster of a primary and `replicas` replicas (weights 1, 2, 3, …), published once, with the monitor not probing. */
function world(strategy: BalanceStrategy, replicas: number) {
  const config = configFrom({
    nodes: [{ name: "p", role: "primary" }, ...Array.from({ length: replicas }, (_, i) => ({ name: `r${i}`, role: "replica", port: 6000 + i, weight: 1 + (i % 3) }))],
    users: [{ name: "u", password: "pw" }],
    balance: { strategy },
  });
  const lives = new LiveNodes(config);
  const holder = new SnapshotHolder({ at: 0, version: 0, nodes: [], primary: null });
  const monitor = new Monitor({ config, holder, lives, log: silentLogger });
  const topology = new Topology({ holder, lives, balance: config.balance, onTrial: (n) => monitor.trial(n) });
  // Something observed on every replica, so the latency strategy compares real averages.
  const sample: RequestSample = { target: "replica", kind: "read", fingerprint: "select ?", reason: "read_only", startedAt: 0, ms: 1, failed: false, errorCode: null, txEnd: true };
  config.nodes.forEach((n, i) => monitor.request(n, { ...sample, ms: 0.5 + i * 0.1 }));
  monitor.publish();
  return { config, monitor, topology, sample };
}

const fmt = (f: Figure, digits = 1) => `${f.best.toFixed(digits).padStart(9)} ${f.median.toFixed(digits).padStart(9)}`;

function main(): void {
  const load = () => loadavg().map((x) => x.toFixed(2)).join(" ");
  console.log(`machine: ${cpus()[0]?.model ?? "unknown"}, nproc ${navigator.hardwareConcurrency}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Bun ${Bun.version}; ${ROUNDS} rounds; load average ${load()}`);
  console.log(`ns per pick (Topology.pickReplica)       best    median`);
  for (const replicas of [2, 4, 16]) {
    for (const strategy of STRATEGIES) {
      const { topology } = world(strategy, replicas);
      let sink = 0;
      const f = measure(200_000, () => {
        sink += topology.pickReplica()!.port;
      });
      if (sink === 0) throw new Error("no picks");
      console.log(`  ${String(replicas).padStart(2)} replicas, ${strategy.padEnd(18)} ${fmt(f)}`);
    }
  }
  // Read-your-writes: a pick bound to a WAL position (every replica caught up; half of them, the subset made once).
  for (const [label, behind] of [["all replicas caught up", 0], ["half behind (subset)", 2]] as const) {
    const { topology: t, config: c } = world("weighted", 4);
    const lives = (t as unknown as { opts: { lives: LiveNodes } }).opts.lives;
    c.nodes.slice(1).forEach((n, i) => (lives.get(n.name).replayLsn = i < behind ? 100 : 1_000));
    let sink = 0;
    const f = measure(200_000, () => {
      sink += t.pickReplica(undefined, 500)!.port;
    });
    if (sink === 0) throw new Error("no picks");
    console.log(`ns per bound pick, 4 replicas, ${label.padEnd(22)} ${fmt(f)}`);
  }
  const { topology, monitor, config, sample } = world("weighted", 4);
  let available = 0;
  console.log(`ns per replicaAvailable (every statement)  ${fmt(measure(1_000_000, () => void (available += Number(topology.replicaAvailable()))))}`);
  const node = config.nodes[1]!;
  console.log(`ns per request reported to the monitor     ${fmt(measure(500_000, (i) => monitor.request(node, { ...sample, ms: 0.2 + (i % 50) / 10 })))}`);
  const publish = measure(2_000, () => monitor.publish());
  console.log(`µs per snapshot publication (4 replicas)   ${(publish.best / 1000).toFixed(1).padStart(9)} ${(publish.median / 1000).toFixed(1).padStart(9)}`);
  if (available === 0) throw new Error("no replica available");
  console.log(`load average at the end ${load()}`);
}

main();
