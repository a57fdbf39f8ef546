#!/usr/bin/env bun
/**
 * pgroute vs PgBouncer vs Pgpool-II vs direct, measured by `pgroute bench` itself: sets up a throwaway primary with
 * two streaming replicas and the three proxies as separate processes, runs
 * `pgroute bench --config <pgroute.toml> --direct --target pgbouncer=… --target pgpool=…` against them, and adds
 * each proxy's CPU time per 1,000 transactions (from /proc). See bench/README.md.
 *
 *   bun bench/compare.ts [--rounds 3] [--duration 10] [--workload read-only,read-write,tpcb] [--json FILE] [--html FILE]
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { BenchResults } from "../src/bench/results.ts";
import { onCleanup } from "./lib/cleanup.ts";
import { freePorts, startBenchCluster } from "./lib/cluster.ts";
import { treeCpuSeconds } from "./lib/cpu.ts";
import { bunVersion, err, gitState, loadavg, machine, machineLine, out, which } from "./lib/env.ts";
import { addDiagnostic, guard, parseCommandLine, runMain } from "./lib/main.ts";
import { psqlValue } from "./lib/pgbench.ts";
import { pgpoolVersion, startPgpool } from "./lib/pgpool.ts";
import { cpuSeconds, stopChild } from "./lib/proc.ts";
import { ROOT, logProblems, pgbouncerVersion, startPgbouncer, startPgroute, type ProxyProcess } from "./lib/proxies.ts";
import { fmt, table } from "./lib/stats.ts";

const USAGE = `Usage: bun bench/compare.ts [options]

Starts a PostgreSQL primary with two streaming replicas (pg_stat_statements preloaded), pgroute (transaction
pooling, reads to the replicas), PgBouncer (transaction pooling, in front of the primary: it does not split reads)
and Pgpool-II (streaming-replication mode, reads balanced per statement over the replicas), each as a separate
process, and runs \`pgroute bench\` with them and the servers themselves (--direct) as targets, interleaved.

Options:
  --workload LIST  passed to pgroute bench (default read-only,read-write,tpcb)
  --protocol LIST  passed to pgroute bench (default simple)
  --rounds N       measured rounds (default 3)
  --duration S     seconds per round (default 10)
  --warmup S       warm-up seconds per target and workload (default 2)
  --clients N      clients (default 10)
  --scale N        pgbench scale factor (default 10)
  --pool N         server connections per pool for pgroute and PgBouncer (default 20)
  --json FILE      pgroute bench's JSON results (default: a temporary file)
  --html FILE      pgroute bench's HTML report
  -h, --help       show this help`;

/** The database the benchmark runs in. */
const DATABASE = "bench";

interface Options {
  workload: string;
  protocol: string;
  rounds: string;
  duration: string;
  warmup: string;
  clients: number;
  scale: string;
  pool: number;
  json?: string;
  html?: string;
}

function parse(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      workload: { type: "string", default: "read-only,read-write,tpcb" },
      protocol: { type: "string", default: "simple" },
      rounds: { type: "string", default: "3" },
      duration: { type: "string", default: "10" },
      warmup: { type: "string", default: "2" },
      clients: { type: "string", default: "10" },
      scale: { type: "string", default: "10" },
      pool: { type: "string", default: "20" },
      json: { type: "string" },
      html: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const int = (name: string, v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a positive integer, got "${v}"`);
    return n;
  };
  return { ...values, clients: int("clients", values.clients), pool: int("pool", values.pool) } as Options;
}

/** Transactions a target ran over the whole run (warm-ups included): what its CPU time was spent on. */
function transactionsOf(r: BenchResults, target: string): number {
  let n = 0;
  for (const s of r.scenarios) {
    const t = s.targets.find((x) => x.target === target);
    if (!t) continue;
    n += (t.warmup?.transactions ?? 0) + t.rounds.reduce((m, x) => m + x.transactions, 0);
  }
  return n;
}

async function main(): Promise<number> {
  const o = parseCommandLine(USAGE, parse);
  if (typeof o === "number") return o;
  const bouncer = which("pgbouncer") ? pgbouncerVersion() : undefined;
  const pgpool = which("pgpool") ? pgpoolVersion() : undefined;
  const missing = [!bouncer && "pgbouncer not found: apt-get install pgbouncer", !pgpool && "pgpool not found: apt-get install pgpool2", process.platform !== "linux" && "this benchmark reads /proc and needs Linux"].filter(Boolean);
  if (missing.length > 0) {
    for (const m of missing) err(String(m));
    return 2;
  }
  guard();

  const m = machine();
  const git = gitState(ROOT);
  out(`pgroute compare benchmark — ${new Date().toISOString()}`);
  out(machineLine(m));
  err("starting a primary and 2 replicas…");
  const bc = await startBenchCluster({ shared_buffers: "256MB", shared_preload_libraries: "pg_stat_statements" }, 2);
  // A database of its own, so the servers' per-node counts hold the benchmark's statements only (pgroute's monitor
  // and Pgpool-II's checks run in \`postgres\`).
  await psqlValue(bc.direct, `CREATE DATABASE ${DATABASE}`);
  const up = { ...bc.up, database: DATABASE };
  const nodes = bc.cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role }));
  for (const n of bc.cluster.replicas) addDiagnostic(`PostgreSQL ${n.name} log`, n.logFile);
  out(`versions: Bun ${bunVersion()}, PostgreSQL ${bc.version}, ${bouncer}, ${pgpool}`);
  out(`pgroute : ${git.text}`);

  const [pgroutePort, bouncerPort, pgpoolPort] = (await freePorts(3)) as [number, number, number];
  const pgroute = await startPgroute(pgroutePort, up, o.pool, {
    mode: "transaction",
    replicas: bc.cluster.replicas.map((r) => ({ name: r.name, host: r.host, port: r.port })),
  });
  addDiagnostic("pgroute log", pgroute.logFile);
  const pgbouncer = await startPgbouncer(bouncerPort, up, o.pool, { mode: "transaction" });
  addDiagnostic("pgbouncer log", pgbouncer.logFile);
  const pool = await startPgpool(pgpoolPort, nodes, up.user, up.password, o.clients + 8);
  addDiagnostic("pgpool log", pool.logFile);
  out(`setup   : pgroute pid ${pgroute.pid} (bun src/cli/main.ts serve, transaction pooling, pool ${o.pool}, reads to replicas); PgBouncer pid ${pgbouncer.pid} (transaction pooling, pool ${o.pool}, primary only); Pgpool-II pid ${pool.pid} (streaming replication, statement-level load balancing over the replicas, ${o.clients + 8} children)`);
  out(`load avg: ${loadavg()} (at start)`);

  const json = o.json ? resolve(o.json) : join(mkdtempSync(join(tmpdir(), "pgroute-compare-")), "results.json");
  const url = (port: number) => `postgres://${up.user}:${up.password}@127.0.0.1:${port}/${DATABASE}?sslmode=disable`;
  const argv = [
    "bench", "-c", pgroute.configPath, "--direct", "-d", DATABASE,
    "--target", `pgbouncer=${url(bouncerPort)}`, "--target", `pgpool=${url(pgpoolPort)}`,
    "--workload", o.workload, "--protocol", o.protocol, "--rounds", o.rounds, "--duration", o.duration, "--warmup", o.warmup,
    "--clients", String(o.clients), "--scale", o.scale, "--json", json, ...(o.html ? ["--html", resolve(o.html)] : []),
  ];
  out(`command : pgroute ${argv.join(" ").replaceAll(`:${up.password}@`, ":***@")}`);
  const cpu = (p: ProxyProcess, tree: boolean) => (tree ? treeCpuSeconds(p.pid) : cpuSeconds(p.pid));
  const proxies: [string, ProxyProcess, boolean][] = [["pgroute", pgroute, false], ["pgbouncer", pgbouncer, false], ["pgpool", pool, true]];
  const before = proxies.map(([, p, tree]) => cpu(p, tree));
  const child = Bun.spawn([process.execPath, "src/cli/main.ts", ...argv], { cwd: ROOT, stdin: "ignore", stdout: "inherit", stderr: "inherit" });
  onCleanup({ name: "pgroute bench", first: true, run: () => stopChild(child, 5000), sync: () => child.kill("SIGKILL") });
  const code = await child.exited;
  if (code !== 0) throw new Error(`pgroute bench exited with ${code}`);
  const results = JSON.parse(readFileSync(json, "utf8")) as BenchResults;
  const rows = [["proxy", "CPU s", "transactions", "CPU ms / 1k tx", "alive"]];
  proxies.forEach(([name, p, tree], i) => {
    const used = cpu(p, tree) - before[i]!;
    const tx = transactionsOf(results, name);
    rows.push([name, fmt(used, 2), String(tx), fmt(tx > 0 ? (used / tx) * 1e6 : Number.NaN, 2), p.alive() ? "yes" : "NO"]);
  });
  out("");
  out("proxy CPU over the whole run (warm-ups included; pgroute's and PgBouncer's own process, Pgpool-II's process tree):");
  out(table(rows));
  out(`load avg: ${loadavg()} (end; the benchmark's own processes count too)`);
  out(`results : ${json}`);
  const notes = proxies.flatMap(([name, p]) => logProblems(p).slice(0, 5).map((l) => `${name}: ${l}`));
  if (notes.length > 0) {
    out("notes:");
    for (const n of notes) out(`  ${n}`);
  }
  return 0;
}

await runMain(main);
