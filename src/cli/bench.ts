/**
 * `pgroute bench`: the same workload against the cluster directly, through pgroute and through any other endpoint,
 * interleaved round by round. Parse → plan → run (src/bench) → render: a progress bar per round on a terminal
 * (plain lines otherwise), then a table per workload; `--json` and `--html` write the results.
 */
import { log, progress } from "@clack/prompts";
import pc from "picocolors";
import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { basename } from "node:path";
import type { InitMode } from "../bench/dataset.ts";
import { ConfigLoadError } from "../config/load.ts";
import { BenchError } from "../bench/errors.ts";
import { renderHtml } from "../bench/report/html.ts";
import { renderJson } from "../bench/report/json.ts";
import { renderTable } from "../bench/report/table.ts";
import type { BenchEvent, BenchOptions } from "../bench/runner.ts";
import { runBench } from "../bench/runner.ts";
import { parseTargetFlag } from "../bench/targets.ts";
import { PROTOCOLS, WORKLOADS, type Protocol, type WorkloadName } from "../bench/workloads.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";

const help = `Usage: pgroute bench [targets] [cluster] [workload options] [--json FILE] [--html FILE]

Runs the same workload against the cluster directly, through pgroute and through other PostgreSQL endpoints
(PgBouncer, Pgpool-II, …) in one run, targets interleaved round by round (A B C, A B C, …), and shows tps,
latency percentiles, errors and the share of work the replicas did, as the median over rounds with min–max.

Targets:
  -c, --config FILE        pgroute with this config: the one already listening at its address, else started
                           in-process on a free port; the config's nodes are the cluster
      --direct             the servers themselves: writes and transactions to the primary, read-only scripts
                           to the replicas (client n → replica n mod R), as an application splitting reads would
      --target NAME=URL    any other endpoint, e.g. pgbouncer=postgres://app:pw@127.0.0.1:6433/app (repeatable)

Cluster (default: the nodes of --config):
      --local              start a throwaway primary + replicas (as \`pgroute cluster up\`, with pg_stat_statements)
                           and pgroute in front of it; with --config, that file's pool and routing settings
      --replicas N         replicas for --local (default 2)
      --compose FILE       bring a docker-compose cluster up for the run and down afterwards (e.g.
                           examples/docker-compose.yml; needs a Docker engine with Compose)
  -U, --user NAME          who to log in as (default: the config's first user with a password, else postgres)
      --password PW        its password (default: from the config, else $PGPASSWORD)
  -d, --database DB        database holding the pgbench tables (default postgres; with --local, a new
                           pgroute_bench); in a database of its own the per-node counts hold the benchmark's
                           statements only

Workload:
  -w, --workload LIST      read-only (default: point selects), read-write (mix, see --read-ratio), tpcb
                           (pgbench's TPC-B-like transaction), churn (read-only, a new connection per
                           transaction); comma-separated or repeated
      --read-ratio R       share of reads in read-write, 0–1 (default 0.8)
      --sql FILE           a custom pgbench-style script (\\set NAME EXPR, \\sleep, :variables); one run of it
                           is one transaction
      --protocol LIST      simple (Query with the values inline; default) and/or prepared (named statements)
      --clients N          concurrent clients, each with its own connection (default 10)
      --threads N          load-generator threads (default: the number of CPUs, at most --clients)
  -T, --duration S         seconds per measured round (default 10)
      --warmup S           unrecorded seconds per target and workload before round 1 (default 2; 0 = none)
      --rounds N           measured rounds per target (default 3)
  -s, --scale N            pgbench scale factor: 100,000 accounts per unit (default 10)
      --init MODE          auto: create the pgbench tables unless present at this scale (default);
                           force: always recreate them; skip: trust they are there
      --seed N             random seed (default: random, recorded in the results)
      --application-name S application_name the clients send (default pgroute-bench; "" sends none)
      --no-counters        do not read the servers' counters (no "on replicas" column)

Output:
      --json FILE          write the results as JSON (- for standard output)
      --html FILE          write a self-contained HTML report with charts

On replicas: the share of the work the replica nodes did during each round, read from the servers' own counters
— pg_stat_statements when it is loaded on every node (exact), else pg_stat_database (approximate: PostgreSQL
publishes those counts up to 10 s late). Nothing is added to the workload to find out.

Examples:
  pgroute bench --local --direct --workload read-only,tpcb --rounds 3 --duration 10
  pgroute bench -c pgroute.toml --direct --target pgbouncer=postgres://app:pw@127.0.0.1:6433/app --html report.html

Exit codes: 0 done, 1 the run failed, 2 usage, 130 interrupted.`;

function num(name: string, v: string | undefined, def: number, lo: number, hi: number, integer = true): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < lo || n > hi) {
    throw new UsageError(`--${name}: expected ${integer ? "an integer" : "a number"} from ${lo} to ${hi}, got "${v}"`);
  }
  return n;
}

function list<T extends string>(name: string, values: readonly string[] | undefined, allowed: readonly T[], def: T[]): T[] {
  if (!values || values.length === 0) return def;
  const out: T[] = [];
  for (const item of values.flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean)) {
    if (!allowed.includes(item as T)) throw new UsageError(`--${name}: unknown "${item}" (expected ${allowed.join(", ")})`);
    if (!out.includes(item as T)) out.push(item as T);
  }
  return out;
}

/** The command line for the report, with passwords masked. */
export function redactedCommand(argv: readonly string[]): string {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--password" && i + 1 < argv.length) {
      out.push(a, "***");
      i++;
    } else if (a.startsWith("--password=")) out.push("--password=***");
    else out.push(a.replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)[^@\s]*@/g, "$1***@"));
  }
  return ["pgroute", "bench", ...out].map((w) => (/^[\w@%+=:,./*-]+$/.test(w) ? w : JSON.stringify(w))).join(" ");
}

/** Parses argv into the run's options and where to write results. */
export function planBench(argv: string[]): { options: BenchOptions; json?: string; html?: string } {
  const { values } = parseFlags(argv, {
    config: { type: "string", short: "c" },
    direct: { type: "boolean" },
    target: { type: "string", multiple: true },
    local: { type: "boolean" },
    replicas: { type: "string" },
    compose: { type: "string" },
    user: { type: "string", short: "U" },
    password: { type: "string" },
    database: { type: "string", short: "d" },
    workload: { type: "string", short: "w", multiple: true },
    "read-ratio": { type: "string" },
    sql: { type: "string" },
    protocol: { type: "string", multiple: true },
    clients: { type: "string" },
    threads: { type: "string" },
    duration: { type: "string", short: "T" },
    warmup: { type: "string" },
    rounds: { type: "string" },
    scale: { type: "string", short: "s" },
    init: { type: "string" },
    seed: { type: "string" },
    "application-name": { type: "string" },
    "no-counters": { type: "boolean" },
    json: { type: "string" },
    html: { type: "string" },
  });
  if (values.local && values.compose !== undefined) throw new UsageError("--local and --compose are two different clusters: give one");
  if (values.replicas !== undefined && !values.local) throw new UsageError("--replicas applies to --local only");
  const workloads = list<WorkloadName>("workload", values.workload, WORKLOADS, values.sql !== undefined ? [] : ["read-only"]);
  let custom: BenchOptions["custom"];
  if (values.sql !== undefined) {
    let text: string;
    try {
      text = readFileSync(values.sql, "utf8");
    } catch (err) {
      throw new UsageError(`--sql ${values.sql}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message}`);
    }
    custom = { name: basename(values.sql), text };
    if (!workloads.includes("custom")) workloads.push("custom");
  } else if (workloads.includes("custom")) {
    throw new UsageError("--workload custom needs --sql FILE");
  }
  const init = (values.init ?? "auto") as InitMode;
  if (!["auto", "force", "skip"].includes(init)) throw new UsageError(`--init: expected auto, force or skip, got "${values.init}"`);
  const clients = num("clients", values.clients, 10, 1, 10_000);
  const endpoints = (values.target ?? []).map((t) => {
    try {
      return parseTargetFlag(t);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  });
  const pgroute = values.config !== undefined || values.local === true || values.compose !== undefined;
  if (!values.direct && !pgroute && endpoints.length === 0) {
    throw new UsageError("nothing to measure: give --config FILE (pgroute), --local, --direct and/or --target NAME=URL");
  }
  if (values.direct && !pgroute) throw new UsageError("--direct needs the cluster's nodes: give --config FILE, --local or --compose FILE");
  const source: BenchOptions["environment"]["source"] = values.local
    ? { kind: "local", replicas: num("replicas", values.replicas, 2, 0, 8) }
    : values.compose !== undefined
      ? { kind: "compose", file: values.compose }
      : values.config !== undefined
        ? { kind: "config" }
        : { kind: "none" };
  const options: BenchOptions = {
    environment: { source, configPath: values.config, user: values.user, password: values.password, database: values.database },
    targets: { direct: values.direct === true, pgroute, endpoints },
    workloads,
    protocols: list<Protocol>("protocol", values.protocol, PROTOCOLS, ["simple"]),
    readRatio: num("read-ratio", values["read-ratio"], 0.8, 0, 1, false),
    custom,
    clients,
    threads: num("threads", values.threads, Math.min(clients, availableParallelism()), 1, 256),
    durationS: num("duration", values.duration, 10, 0.1, 86_400, false),
    warmupS: num("warmup", values.warmup, 2, 0, 3600, false),
    rounds: num("rounds", values.rounds, 3, 1, 1000),
    scale: num("scale", values.scale, 10, 1, 100_000),
    init,
    seed: num("seed", values.seed, Math.floor(Math.random() * 2 ** 31), 0, 2 ** 32 - 1),
    applicationName: values["application-name"] ?? "pgroute-bench",
    counters: values["no-counters"] !== true,
    command: redactedCommand(argv),
  };
  return { options, json: values.json, html: values.html };
}

/** Draws the run's events: a clack progress bar per round on a terminal, one line per event otherwise (stderr). */
function renderer(fancy: boolean): { on: (e: BenchEvent) => void; fail: () => void } {
  const STEPS = 200;
  let bar: ReturnType<typeof progress> | null = null;
  let at = 0;
  let started = 0;
  let durationMs = 1;
  let label = "";
  const output = process.stderr;
  const line = (s: string) => output.write(`${s}\n`);
  const on = (e: BenchEvent) => {
    switch (e.type) {
      case "step":
        if (fancy) log.step(e.line, { output });
        else line(e.line);
        return;
      case "round":
        label = `${e.scenario} · ${e.target} · ${e.warmup ? "warm-up" : `round ${e.round}/${e.rounds}`}`;
        started = performance.now();
        durationMs = e.durationMs;
        at = 0;
        if (fancy) {
          bar = progress({ max: STEPS, size: 30, style: "heavy", output });
          bar.start(label);
        }
        return;
      case "progress": {
        const elapsed = performance.now() - started;
        const tps = elapsed > 0 ? Math.round((e.transactions / elapsed) * 1000) : 0;
        const step = Math.min(STEPS, Math.floor((elapsed / durationMs) * STEPS));
        if (bar && step > at) {
          bar.advance(step - at, `${label} · ${tps} tps${e.errors > 0 ? ` · ${e.errors} errors` : ""}`);
          at = step;
        }
        return;
      }
      case "settling":
        if (bar) bar.message(`${label} · waiting for the servers' counters (${e.source})`);
        return;
      case "round-done": {
        const r = e.result;
        const text = r
          ? `${label}: ${Math.round(r.tps)} tps, p99 ${r.latencyMs.p99.toFixed(2)} ms, ${r.errors} errors${r.replicaShare === null ? "" : `, ${Math.round(r.replicaShare * 100)} % on replicas`}`
          : `${label}: ${e.counts.transactions} transactions, ${e.counts.errors} errors (not recorded)`;
        if (bar) bar.stop(text);
        else line(text);
        bar = null;
        return;
      }
    }
  };
  return { on, fail: () => bar?.error("stopped") };
}

export const bench: Command = {
  name: "bench",
  summary: "measure a cluster directly and through proxies, side by side",
  help,
  async run(argv) {
    const plan = planBench(argv);
    const fancy = process.stderr.isTTY === true;
    const draw = renderer(fancy);
    const abort = new AbortController();
    const onSignal = () => abort.abort();
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    let results;
    try {
      results = await runBench(plan.options, draw.on, abort.signal);
    } catch (err) {
      draw.fail();
      if (abort.signal.aborted) {
        console.error("pgroute bench: interrupted; everything it started has been stopped");
        return 130;
      }
      if (err instanceof ConfigLoadError) {
        console.error(pc.red(err.message));
        return 2;
      }
      if (err instanceof BenchError) {
        console.error(pc.red(`pgroute bench: ${err.message}`));
        return 1;
      }
      throw err;
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
    if (plan.json !== undefined) {
      if (plan.json === "-") process.stdout.write(renderJson(results));
      else writeFileSync(plan.json, renderJson(results));
    }
    if (plan.html !== undefined) writeFileSync(plan.html, renderHtml(results));
    if (plan.json !== "-") {
      console.log(`\n${renderTable(results)}`);
      for (const [what, file] of [["JSON", plan.json], ["HTML report", plan.html]] as const) if (file) console.log(`${what}: ${file}`);
    }
    return 0;
  },
};
