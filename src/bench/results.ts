/**
 * The results of a benchmark run — what `--json` writes and the table and HTML report are drawn from — and how
 * rounds are combined: each figure is the median over rounds, with the min–max it came from.
 */
import type { CounterSource } from "./counters.ts";
import type { DatasetReport } from "./dataset.ts";
import type { Counts, WorkerResult } from "./protocol.ts";
import { Histogram, spread, summarizeLatencies, type LatencySummary, type Spread } from "./stats.ts";
import type { TargetKind } from "./targets.ts";
import type { Protocol, WorkloadName } from "./workloads.ts";

/** Counts a phase produced on the client side. */
export type { Counts };

export interface RoundResult extends Counts {
  round: number;
  elapsedS: number;
  tps: number;
  latencyMs: LatencySummary;
  /** Work per node during the round, from the servers' counters (see `counters` at the top level); null when unknown. */
  nodes: Record<string, number> | null;
  /** Share of that work done by replicas, 0–1; null when unknown or when nothing was counted. */
  replicaShare: number | null;
}

export interface TargetSummary {
  tps: Spread;
  latencyMs: { mean: Spread; p50: Spread; p95: Spread; p99: Spread; max: Spread };
  /** Errors over all measured rounds. */
  errors: number;
  replicaShare: Spread | null;
  /** Median tps over the direct target's median tps; null without a direct target. */
  vsDirect: number | null;
}

export interface TargetResult {
  target: string;
  /** Counts of the unrecorded warm-up run, null when there was none. */
  warmup: Counts | null;
  rounds: RoundResult[];
  summary: TargetSummary;
  /** Latencies of every measured round, log-spaced: `[lower ms, upper ms, transactions]`, non-empty bins only. */
  histogram: [number, number, number][];
}

export interface ScenarioResult {
  id: string;
  workload: WorkloadName;
  protocol: Protocol;
  churn: boolean;
  scripts: { name: string; weight: number; readOnly: boolean; statements: number }[];
  targets: TargetResult[];
}

/** How a bench run was set up, as its report records it (`threads`: the load generator's actual thread count). */
export interface BenchSettings {
  clients: number;
  threads: number;
  durationS: number;
  warmupS: number;
  rounds: number;
  scale: number;
  readRatio: number;
  seed: number;
  applicationName: string;
}

export interface BenchResults {
  format: "pgroute-bench/1";
  pgroute: string;
  startedAt: string;
  finishedAt: string;
  command: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; os: string; bun: string };
  server: { version: string | null };
  settings: BenchSettings;
  cluster: { kind: string; description: string; nodes: { name: string; role: string; host: string; port: number }[] };
  /** Where per-node work comes from: exact statement counts, approximate transaction counts, or nothing. */
  counters: CounterSource | null;
  dataset: DatasetReport | null;
  targets: { name: string; kind: TargetKind; description: string }[];
  scenarios: ScenarioResult[];
}

/** Adds worker results into one set of counts. */
export function addCounts(results: readonly Omit<WorkerResult, "elapsedMs" | "latencies">[]): Counts {
  const c: Counts = { transactions: 0, statements: 0, errors: 0, errorCodes: {}, rollbacks: 0, probes: 0 };
  for (const r of results) {
    c.transactions += r.transactions;
    c.statements += r.statements;
    c.errors += r.errors;
    c.rollbacks += r.rollbacks;
    c.probes += r.probes;
    for (const [code, n] of Object.entries(r.errorCodes)) c.errorCodes[code] = (c.errorCodes[code] ?? 0) + n;
  }
  return c;
}

/** Joins the threads' latency arrays into one. */
export function joinLatencies(results: readonly WorkerResult[]): Uint32Array {
  const all = new Uint32Array(results.reduce((n, r) => n + r.latencies.length, 0));
  let at = 0;
  for (const r of results) {
    all.set(r.latencies, at);
    at += r.latencies.length;
  }
  return all;
}

/** Share of the counted work done by nodes with role replica; null when nothing was counted. */
export function replicaShare(nodes: Record<string, number>, replicas: ReadonlySet<string>): number | null {
  let total = 0;
  let onReplicas = 0;
  for (const [name, n] of Object.entries(nodes)) {
    total += n;
    if (replicas.has(name)) onReplicas += n;
  }
  return total === 0 ? null : onReplicas / total;
}

/** One measured round from its threads' results; `histogram` collects its latencies for the report. */
export function roundResult(round: number, results: readonly WorkerResult[], nodes: Record<string, number> | null, replicas: ReadonlySet<string>, histogram: Histogram): RoundResult {
  const counts = addCounts(results);
  const latencies = joinLatencies(results);
  histogram.add(latencies);
  const elapsedS = Math.max(...results.map((r) => r.elapsedMs)) / 1000;
  return {
    round,
    ...counts,
    elapsedS,
    tps: elapsedS > 0 ? counts.transactions / elapsedS : Number.NaN,
    latencyMs: summarizeLatencies(latencies),
    nodes,
    replicaShare: nodes ? replicaShare(nodes, replicas) : null,
  };
}

/** Median and range of every figure over the rounds. `directTps` is the direct target's median, if there is one. */
export function summarize(rounds: readonly RoundResult[], directTps: number | null): TargetSummary {
  const of = (f: (r: RoundResult) => number) => spread(rounds.map(f));
  const shares = rounds.map((r) => r.replicaShare).filter((s): s is number => s !== null);
  const tps = of((r) => r.tps);
  return {
    tps,
    latencyMs: {
      mean: of((r) => r.latencyMs.mean),
      p50: of((r) => r.latencyMs.p50),
      p95: of((r) => r.latencyMs.p95),
      p99: of((r) => r.latencyMs.p99),
      max: of((r) => r.latencyMs.max),
    },
    errors: rounds.reduce((n, r) => n + r.errors, 0),
    replicaShare: shares.length === 0 ? null : spread(shares),
    vsDirect: directTps === null || !(directTps > 0) || Number.isNaN(tps.median) ? null : tps.median / directTps,
  };
}
