/**
 * One benchmark run: bring up the environment and targets, prepare the data, then for each workload warm every
 * target up and run the measured rounds interleaved (A B C, A B C, …) so slow drift on the machine hits every
 * target alike. Reports progress as events; the CLI draws them.
 */
import { availableParallelism, cpus, release, totalmem, type } from "node:os";
import pkg from "../../package.json" with { type: "json" };
import { loadParser } from "../router/parser.ts";
import { connect, queryOne } from "./client.ts";
import { NodeCounters, type Reading } from "./counters.ts";
import { ensureStatements, prepareDataset, waitForReplicas, type DatasetReport, type InitMode } from "./dataset.ts";
import { openEnvironment, type Environment, type EnvironmentPlan } from "./environment.ts";
import { BenchError } from "./errors.ts";
import { LoadGenerator, type RoundProgress } from "./generator.ts";
import type { ConnSpec, RoundTask, WorkerResult } from "./protocol.ts";
import { addCounts, roundResult, summarize, type BenchResults, type BenchSettings, type Counts, type RoundResult, type ScenarioResult } from "./results.ts";
import { Histogram } from "./stats.ts";
import { directTarget, endpointTarget, pgrouteTarget, type Target } from "./targets.ts";
import { scenarios as buildScenarios, type Protocol, type Scenario, type WorkloadName } from "./workloads.ts";

/** The settings the report records (`threads`: how many were asked for), and what the run needs besides. */
export interface BenchOptions extends BenchSettings {
  environment: Omit<EnvironmentPlan, "log" | "signal">;
  targets: { direct: boolean; pgroute: boolean; endpoints: { name: string; url: string }[] };
  workloads: WorkloadName[];
  protocols: Protocol[];
  custom?: { name: string; text: string };
  init: InitMode;
  /** Read per-node work from the servers' counters (false: `--no-counters`). */
  counters: boolean;
  /** The command line, for the report. */
  command: string;
}

export type BenchEvent =
  | { type: "step"; line: string }
  | { type: "round"; warmup: boolean; scenario: string; target: string; round: number; rounds: number; durationMs: number }
  | { type: "progress"; transactions: number; errors: number }
  | { type: "settling"; source: string }
  | { type: "round-done"; warmup: boolean; target: string; counts: Counts; result: RoundResult | null };

function machine(): BenchResults["machine"] {
  return {
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model?.trim() ?? "unknown",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `${type()} ${release()}`,
    bun: `${Bun.version} (${Bun.revision.slice(0, 9)})`,
  };
}

/** Never resolves; rejects once `signal` aborts. */
function abortion(signal: AbortSignal | undefined): Promise<never> {
  return new Promise((_, reject) => {
    if (!signal) return;
    const fail = () => reject(new BenchError("interrupted"));
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
}

async function buildTargets(o: BenchOptions, env: Environment): Promise<Target[]> {
  const targets: Target[] = [];
  try {
    if (o.targets.direct) {
      if (env.nodes.length === 0) throw new BenchError("--direct needs the cluster's nodes: give --config FILE, --local or --compose FILE");
      targets.push(directTarget(env.nodes));
    }
    if (o.targets.pgroute) targets.push(await pgrouteTarget(env));
    for (const e of o.targets.endpoints) targets.push(endpointTarget(e.name, e.url));
  } catch (err) {
    await Promise.all(targets.map((t) => t.stop()));
    throw err;
  }
  const names = new Set<string>();
  for (const t of targets) {
    if (names.has(t.name)) throw new BenchError(`two targets are named "${t.name}"`);
    names.add(t.name);
  }
  if (targets.length === 0) throw new BenchError("nothing to measure: give --direct, --config FILE, --local or --target NAME=URL");
  return targets;
}

async function serverVersion(spec: ConnSpec): Promise<string | null> {
  const sql = connect(spec, "pgroute-bench-setup");
  try {
    return (await queryOne<{ server_version: string }>(sql, "SHOW server_version")).server_version;
  } catch {
    return null;
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

/** Runs the whole benchmark; everything it started is stopped before it returns or throws. */
export async function runBench(o: BenchOptions, emit: (e: BenchEvent) => void, signal?: AbortSignal): Promise<BenchResults> {
  const startedAt = new Date().toISOString();
  const log = (line: string) => emit({ type: "step", line });
  await loadParser();
  const scenarios = buildScenarios(o.workloads, o.protocols, { readRatio: o.readRatio, custom: o.custom });
  const aborted = abortion(signal);
  aborted.catch(() => {});
  // Not raced with the abort: a cluster half started must be stopped by its own code (it watches the signal).
  const env = await openEnvironment({ ...o.environment, log, signal });
  if (signal?.aborted) {
    await env.stop();
    throw new BenchError("interrupted");
  }
  let targets: Target[] = [];
  let counters: NodeCounters | null = null;
  let generator: LoadGenerator | null = null;
  try {
    targets = await buildTargets(o, env);
    for (const t of targets) log(`target ${t.name}: ${t.description}`);
    const primary = env.nodes.find((n) => n.role === "primary");
    const replicas = env.nodes.filter((n) => n.role === "replica");
    const setup = primary ?? targets[0]!.route(1).writer;
    if (primary && (await ensureStatements(primary))) log(`created the pg_stat_statements extension in database ${primary.database}`);
    let dataset: DatasetReport | null = null;
    if (!o.workloads.every((w) => w === "custom")) {
      dataset = await prepareDataset(setup, { mode: o.init, scale: o.scale, log });
    }
    if (primary) await waitForReplicas(primary, replicas);
    const version = await serverVersion(setup);
    if (o.counters && env.nodes.length > 0) {
      counters = await NodeCounters.open(env.nodes);
      log(
        counters.source === "pg_stat_statements"
          ? "per-node work: pg_stat_statements (exact statement counts)"
          : "per-node work: pg_stat_database transactions (approximate; preload pg_stat_statements for exact counts)",
      );
    }
    generator = LoadGenerator.start(Math.min(o.threads, o.clients));
    const replicaNames = new Set(replicas.map((r) => r.name));
    const results: ScenarioResult[] = [];
    for (const scenario of scenarios) {
      results.push(await runScenario(o, scenario, targets, generator, counters, replicaNames, emit, aborted));
    }
    return {
      format: "pgroute-bench/1",
      pgroute: pkg.version,
      startedAt,
      finishedAt: new Date().toISOString(),
      command: o.command,
      machine: machine(),
      server: { version },
      settings: {
        clients: o.clients,
        threads: generator.size,
        durationS: o.durationS,
        warmupS: o.warmupS,
        rounds: o.rounds,
        scale: o.scale,
        readRatio: o.readRatio,
        seed: o.seed,
        applicationName: o.applicationName,
      },
      cluster: { kind: env.kind, description: env.description, nodes: env.nodes.map((n) => ({ name: n.name, role: n.role, host: n.host, port: n.port })) },
      counters: counters?.source ?? null,
      dataset,
      targets: targets.map((t) => ({ name: t.name, kind: t.kind, description: t.description })),
      scenarios: results,
    };
  } finally {
    generator?.terminate();
    await counters?.close();
    await Promise.all(targets.map((t) => t.stop().catch(() => {})));
    await env.stop();
  }
}

async function runScenario(
  o: BenchOptions,
  scenario: Scenario,
  targets: readonly Target[],
  generator: LoadGenerator,
  counters: NodeCounters | null,
  replicaNames: ReadonlySet<string>,
  emit: (e: BenchEvent) => void,
  aborted: Promise<never>,
): Promise<ScenarioResult> {
  const task = (t: Target, round: number, record: boolean): RoundTask => ({
    scripts: scenario.scripts,
    protocol: scenario.protocol,
    churn: scenario.churn,
    clients: Array.from({ length: o.clients }, (_, i) => t.route(i + 1)),
    scale: o.scale,
    // The same seed for every target in a round (they run the same key sequence), another one per round.
    seed: (o.seed + round * 1_000_003) >>> 0,
    applicationName: o.applicationName,
    recordLatencies: record,
  });
  const run = (t: RoundTask, durationMs: number, beforeStart?: () => Promise<void>): Promise<WorkerResult[]> =>
    Promise.race([generator.run(t, { durationMs, beforeStart, onProgress: (p: RoundProgress) => emit({ type: "progress", ...p }) }), aborted]);

  const warmups = new Map<string, Counts>();
  if (o.warmupS > 0) {
    for (const t of targets) {
      emit({ type: "round", warmup: true, scenario: scenario.id, target: t.name, round: 0, rounds: o.rounds, durationMs: o.warmupS * 1000 });
      const counts = addCounts(await run(task(t, 0, false), o.warmupS * 1000));
      warmups.set(t.name, counts);
      emit({ type: "round-done", warmup: true, target: t.name, counts, result: null });
    }
  }
  const rounds = new Map<string, RoundResult[]>(targets.map((t) => [t.name, []]));
  const histograms = new Map<string, Histogram>(targets.map((t) => [t.name, new Histogram()]));
  for (let r = 1; r <= o.rounds; r++) {
    for (const t of targets) {
      emit({ type: "round", warmup: false, scenario: scenario.id, target: t.name, round: r, rounds: o.rounds, durationMs: o.durationS * 1000 });
      const snap: { before: Reading | null } = { before: null };
      const results = await run(task(t, r, true), o.durationS * 1000, async () => {
        snap.before = counters ? await counters.read() : null;
      });
      let nodes: Record<string, number> | null = null;
      const before = snap.before;
      if (counters && before) {
        if (counters.source === "pg_stat_database") emit({ type: "settling", source: counters.source });
        const done = results.reduce((n, x) => n + x.transactions + x.errors, 0);
        nodes = await Promise.race([counters.since(before, done), aborted]);
      }
      const result = roundResult(r, results, nodes, replicaNames, histograms.get(t.name)!);
      rounds.get(t.name)!.push(result);
      emit({ type: "round-done", warmup: false, target: t.name, counts: result, result });
    }
  }
  const direct = targets.find((t) => t.kind === "direct");
  const directTps = direct ? summarize(rounds.get(direct.name)!, null).tps.median : null;
  return {
    id: scenario.id,
    workload: scenario.workload,
    protocol: scenario.protocol,
    churn: scenario.churn,
    scripts: scenario.scripts.map((s) => ({ name: s.name, weight: s.weight, readOnly: s.readOnly, statements: s.statements })),
    targets: targets.map((t) => ({
      target: t.name,
      warmup: warmups.get(t.name) ?? null,
      rounds: rounds.get(t.name)!,
      summary: summarize(rounds.get(t.name)!, directTps),
      histogram: histograms.get(t.name)!.bins(),
    })),
  };
}
