#!/usr/bin/env bun
/**
 * Session-mode benchmark: `pgbench -S` (select-only, simple protocol) against PostgreSQL directly, through
 * pgroute and through PgBouncer, interleaved round by round in one run on one machine, with each proxy's CPU
 * seconds per 10,000 queries read from /proc/<pid>/stat. See bench/README.md.
 *
 *   bun bench/session-mode.ts [--rounds 3] [--duration 15] [--clients 10] [--json FILE]
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { onCleanup } from "./lib/cleanup.ts";
import { freePorts, startBenchCluster } from "./lib/cluster.ts";
import { bunVersion, err, loadavg, machine, machineLine, out, pgbenchVersion, which, intOption, PGBENCH_OPTIONS } from "./lib/env.ts";
import { addDiagnostic, runMain, startPgbenchScript } from "./lib/main.ts";
import { measure } from "./lib/measure.ts";
import {
  initPgbench,
  pgbenchArgv,
  pgbenchFigures,
  psqlValue,
  runPgbench,
  stopPgbench,
  stopPgbenchSync,
  type Endpoint,
} from "./lib/pgbench.ts";
import { sleep, tail } from "./lib/proc.ts";
import { logProblems, pgbouncerVersion, startPgbouncer, startPgroute, type ProxyProcess } from "./lib/proxies.ts";
import { fmt, max, median, min, table } from "./lib/stats.ts";

const USAGE = `Usage: bun bench/session-mode.ts [options]

Runs pgbench -S (select-only, simple protocol) against PostgreSQL directly, through pgroute and through
PgBouncer (both in session mode, as separate processes), rounds interleaved, and reports tps, latency and
each proxy's CPU seconds per 10,000 queries.

Options:
  --rounds N     interleaved rounds (default 3)
  --duration S   seconds per pgbench run (default 15)
  --clients C    pgbench clients (default 10)
  --threads J    pgbench threads (default 2)
  --scale S      pgbench -i scale factor (default 10)
  --warmup S     seconds of unrecorded pgbench per target before round 1 (default 3; 0 = none)
  --json FILE    also write the results as JSON
  -h, --help     show this help`;

type TargetName = "direct" | "pgroute" | "pgbouncer";
const TARGETS: readonly TargetName[] = ["direct", "pgroute", "pgbouncer"];
/** Server connections per pool in both proxies (each needs at least --clients for session mode). */
const POOL_SIZE_MIN = 20;

interface Options {
  rounds: number;
  duration: number;
  clients: number;
  threads: number;
  scale: number;
  warmup: number;
  json: string | undefined;
}

interface RunRecord {
  round: number;
  target: TargetName;
  tps: number;
  latencyMs: number;
  transactions: number;
  failed: number;
  connectMs: number | undefined;
  exitCode: number;
  wallS: number;
  /** Proxy CPU seconds (user + system) during the run; undefined for direct. */
  proxyCpuS: number | undefined;
  /** Proxy CPU seconds per 10,000 transactions (= queries: -S runs one SELECT per transaction). */
  cpuPer10k: number | undefined;
  /** CPU seconds of pgbench itself and of the PostgreSQL server (postmaster and backends) during the run. */
  pgbenchCpuS: number | undefined;
  postgresCpuS: number | undefined;
  /**
   * CPU the rest of the machine used during the run, in cores (CPU seconds per wall second): machine-wide
   * user+system time minus the benchmark's own processes. Near 0 on a quiet machine.
   */
  otherCores: number;
  problems: string[];
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: { ...PGBENCH_OPTIONS, threads: { type: "string" }, warmup: { type: "string" } },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return undefined;
  const int = intOption;
  const o: Options = {
    rounds: int("rounds", values.rounds, 3, 1),
    duration: int("duration", values.duration, 15, 1),
    clients: int("clients", values.clients, 10, 1),
    threads: int("threads", values.threads, 2, 1),
    scale: int("scale", values.scale, 10, 1),
    warmup: int("warmup", values.warmup, 3, 0),
    json: values.json,
  };
  // pgbench refuses more threads than clients.
  o.threads = Math.min(o.threads, o.clients);
  return o;
}

function runLine(r: RunRecord): string {
  const parts = [
    `round ${r.round}`,
    r.target.padEnd(9),
    `tps ${fmt(r.tps, 1).padStart(9)}`,
    `lat ${fmt(r.latencyMs, 3).padStart(7)} ms`,
    `txns ${String(r.transactions).padStart(8)}`,
  ];
  if (r.proxyCpuS !== undefined) {
    parts.push(`proxy cpu ${fmt(r.proxyCpuS, 2).padStart(6)} s (${fmt((r.proxyCpuS / r.wallS) * 100, 0).padStart(3)}%)`);
    parts.push(`${fmt(r.cpuPer10k, 3)} s/10k q`);
  }
  parts.push(`others ${fmt(Math.max(0, r.otherCores), 2)} cores`);
  if (r.failed > 0) parts.push(`FAILED ${r.failed}`);
  if (r.exitCode !== 0) parts.push(`pgbench exit ${r.exitCode}`);
  return parts.join("  ");
}

async function main(): Promise<number> {
  const started = startPgbenchScript(USAGE, parseOptions, {
    which,
    pgbouncerVersion,
    onPgbenchCleanup: () => onCleanup({ name: "pgbench", first: true, run: stopPgbench, sync: stopPgbenchSync }),
  });
  if (typeof started === "number") return started;
  const { opts: o, bouncerVersion } = started;

  const startedAt = new Date();
  const mach = machine();
  const loadStart = loadavg();
  const poolSize = Math.max(POOL_SIZE_MIN, o.clients);

  // ---- the cluster ----
  out(`pgroute session-mode benchmark — ${startedAt.toISOString()}`);
  err("starting PostgreSQL (devcluster, no replicas)…");
  // The whole data set (~160 MB at scale 10) fits in shared_buffers, so runs measure the proxies, not I/O.
  const { up, direct, version: pgVersion, pmPid } = await startBenchCluster({ shared_buffers: "256MB" });

  const versions = {
    bun: bunVersion(),
    postgresql: pgVersion,
    pgbouncer: bouncerVersion!.replace(/^PgBouncer\s+/, ""),
    pgbench: pgbenchVersion(),
  };
  out(machineLine(mach));
  out(`versions: Bun ${versions.bun}, PostgreSQL ${versions.postgresql}, PgBouncer ${versions.pgbouncer}, pgbench ${versions.pgbench}`);

  err(`pgbench -i -s ${o.scale} on the primary (127.0.0.1:${up.port})…`);
  const t0 = performance.now();
  await initPgbench(direct, o.scale);
  err(`  done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  // ---- the proxies ----
  const [pgroutePort, bouncerPort] = (await freePorts(2)) as [number, number];
  err(`starting pgroute on 127.0.0.1:${pgroutePort} and PgBouncer on 127.0.0.1:${bouncerPort} (session mode, pool ${poolSize})…`);
  const pgroute = await startPgroute(pgroutePort, up, poolSize, { mode: "session" });
  addDiagnostic("pgroute log", pgroute.logFile);
  const bouncer = await startPgbouncer(bouncerPort, up, poolSize, { mode: "session" });
  addDiagnostic("pgbouncer log", bouncer.logFile);
  const proxies: Record<TargetName, ProxyProcess | undefined> = { direct: undefined, pgroute, pgbouncer: bouncer };
  const endpoints: Record<TargetName, Endpoint> = {
    direct,
    pgroute: { ...up, host: pgroute.host, port: pgroute.port },
    pgbouncer: { ...up, host: bouncer.host, port: bouncer.port },
  };
  for (const t of TARGETS) {
    const n = await psqlValue(endpoints[t], "SELECT count(*) FROM pgbench_branches");
    if (n !== String(o.scale)) throw new Error(`${t}: expected ${o.scale} pgbench_branches rows, got "${n}"`);
  }

  const runOpts = { clients: o.clients, threads: o.threads, durationS: o.duration };
  const argv = pgbenchArgv(direct, runOpts);
  const shown = argv.slice(0, argv.indexOf("-h")).join(" ");
  out(
    `workload: ${shown} (scale ${o.scale}, 1 SELECT per transaction), ` +
      `${o.rounds} round(s) interleaved, ${o.warmup} s warm-up per target`,
  );
  out(`targets : direct = PostgreSQL 127.0.0.1:${up.port}; pgroute pid ${pgroute.pid} (bun src/cli/main.ts serve); pgbouncer pid ${bouncer.pid}; pools session/${poolSize}`);
  out(`load avg: ${loadStart} (at start)`);
  out();

  // ---- warm-up ----
  if (o.warmup > 0) {
    for (const t of TARGETS) {
      err(`warm-up: ${t} ${o.warmup} s…`);
      const r = await runPgbench(endpoints[t], { ...runOpts, durationS: o.warmup });
      if (r.transactions === 0) throw new Error(`warm-up against ${t} processed no transactions:\n${r.problems.join("\n")}`);
    }
  }

  // ---- measured rounds ----
  const runs: RunRecord[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    for (const t of TARGETS) {
      const proxy = proxies[t];
      if (proxy && !proxy.alive()) throw new Error(`${proxy.name} (pid ${proxy.pid}) is no longer running\n${tail(proxy.logFile)}`);
      await sleep(500); // let the previous run's connections close
      const { result: r, wallS, proxyCpuS, postgresCpuS, otherCores } = await measure({
        proxy,
        ours: [pgroute, bouncer],
        pmPid,
        run: () => runPgbench(endpoints[t], runOpts),
        clientCpuS: (x) => x.clientCpuS,
        label: `round ${round}`,
      });
      const rec: RunRecord = {
        round,
        target: t,
        ...pgbenchFigures(r),
        wallS,
        proxyCpuS,
        cpuPer10k: proxyCpuS !== undefined && r.transactions > 0 ? (proxyCpuS / r.transactions) * 10_000 : undefined,
        pgbenchCpuS: r.clientCpuS,
        postgresCpuS,
        otherCores,
        problems: r.problems,
      };
      runs.push(rec);
      out(runLine(rec));
      for (const p of r.problems.slice(0, 5)) out(`    pgbench: ${p}`);
    }
  }
  const loadEnd = loadavg();

  // ---- summary ----
  const summary = TARGETS.map((t) => {
    const rs = runs.filter((r) => r.target === t);
    const tps = rs.map((r) => r.tps);
    const cpu = rs.flatMap((r) => (r.cpuPer10k === undefined ? [] : [r.cpuPer10k]));
    const util = rs.flatMap((r) => (r.proxyCpuS === undefined ? [] : [(r.proxyCpuS / r.wallS) * 100]));
    return {
      target: t,
      tps: { median: median(tps), min: min(tps), max: max(tps) },
      latencyMs: median(rs.map((r) => r.latencyMs)),
      cpuPer10k: cpu.length ? { median: median(cpu), min: min(cpu), max: max(cpu) } : undefined,
      proxyCpuPercent: util.length ? median(util) : undefined,
      transactions: rs.reduce((s, r) => s + r.transactions, 0),
      failed: rs.reduce((s, r) => s + r.failed, 0),
      abortedRuns: rs.filter((r) => r.exitCode !== 0).length,
    };
  });
  const by = (t: TargetName) => summary.find((s) => s.target === t)!;
  const directTps = by("direct").tps.median;
  out();
  out(`summary (median of ${o.rounds} run(s) of ${o.duration} s, ${o.clients} clients):`);
  out(
    table([
      ["target", "tps (median)", "min – max", "vs direct", "avg latency ms", "proxy CPU s/10k queries", "min – max", "proxy CPU %", "failed"],
      ...summary.map((s) => [
        s.target,
        fmt(s.tps.median, 1),
        `${fmt(s.tps.min, 1)} – ${fmt(s.tps.max, 1)}`,
        `${fmt((s.tps.median / directTps) * 100, 1)}%`,
        fmt(s.latencyMs, 3),
        s.cpuPer10k ? fmt(s.cpuPer10k.median, 3) : "-",
        s.cpuPer10k ? `${fmt(s.cpuPer10k.min, 3)} – ${fmt(s.cpuPer10k.max, 3)}` : "-",
        s.proxyCpuPercent === undefined ? "-" : fmt(s.proxyCpuPercent, 0),
        String(s.failed),
      ]),
    ]),
  );
  const pr = by("pgroute");
  const pb = by("pgbouncer");
  const tpsRatio = pr.tps.median / pb.tps.median;
  const cpuRatio = pr.cpuPer10k && pb.cpuPer10k ? pr.cpuPer10k.median / pb.cpuPer10k.median : Number.NaN;
  out();
  out(`pgroute / pgbouncer: tps ${fmt(tpsRatio, 2)}×, CPU per query ${fmt(cpuRatio, 2)}×`);
  const others = runs.map((r) => Math.max(0, r.otherCores));
  out(
    `rest of machine during runs (CPU not used by the benchmark's processes): median ${fmt(median(others), 2)}, ` +
      `max ${fmt(max(others), 2)} cores of ${mach.nproc}`,
  );
  out(`load avg: ${loadStart} (start) → ${loadEnd} (end; the benchmark's own processes count too)`);

  const notes: string[] = [];
  for (const p of [pgroute, bouncer]) {
    const lines = logProblems(p);
    if (lines.length > 0) {
      notes.push(`${p.name} logged ${lines.length} line(s)${p.name === "pgbouncer" ? " at WARNING or worse" : " at warn or worse"}:`);
      notes.push(...lines.slice(0, 10).map((l) => `    ${l}`));
    }
  }
  for (const s of summary) {
    if (s.failed > 0) notes.push(`${s.target}: ${s.failed} failed transaction(s)`);
    if (s.abortedRuns > 0) notes.push(`${s.target}: pgbench exited non-zero in ${s.abortedRuns} run(s) (clients aborted)`);
  }
  if (notes.length > 0) {
    out();
    out("notes:");
    for (const n of notes) out(`  ${n}`);
  }

  if (o.json) {
    const doc = {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine: mach,
      versions,
      options: { ...o, poolSize, json: undefined },
      pgbench: shown,
      loadavg: { start: loadStart, end: loadEnd },
      otherCores: { median: median(others), max: max(others) },
      runs,
      summary,
      ratios: { pgrouteOverPgbouncer: { tps: tpsRatio, cpuPerQuery: cpuRatio } },
      notes,
    };
    writeFileSync(o.json, `${JSON.stringify(doc, null, 2)}\n`);
    err(`wrote ${o.json}`);
  }
  return 0;
}

await runMain(main);
