#!/usr/bin/env bun
/**
 * Where pgroute's CPU goes per query, measured in place: pgroute serving `pgbench -S` while `perf record -g`
 * samples it, with JavaScriptCore's generated code named (bench/lib/jitprof.ts). Prints microseconds per query by
 * where the samples landed (kernel, JavaScript, Bun's runtime, libraries), by JavaScript function (its own code),
 * what called into the runtime, and which functions were on the stack. In-process microbenchmarks miss what a
 * busy server pays for cold caches between queries; this shows it. See bench/README.md.
 *
 *   bun bench/profile.ts [--mode transaction] [--replicas 0] [--protocol simple] [--clients 10] [--duration 8]
 */
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../src/devcluster/index.ts";
import { onCleanup, removeOnCleanup } from "./lib/cleanup.ts";
import { startBenchCluster } from "./lib/cluster.ts";
import { bunVersion, err, gitState, choiceOption, intOption, machine, machineLine, out, which } from "./lib/env.ts";
import { attribute, parseJitdump, perfMapText, type Attribution } from "./lib/jitprof.ts";
import { guard, parseCommandLine, runMain } from "./lib/main.ts";
import { initPgbench, runPgbench, stopPgbench, stopPgbenchSync, type RunOptions } from "./lib/pgbench.ts";
import { cpuSeconds } from "./lib/proc.ts";
import { ROOT, startPgroute, type PoolMode } from "./lib/proxies.ts";
import { fmt, table } from "./lib/stats.ts";

const USAGE = `Usage: bun bench/profile.ts [options]

Profiles pgroute in place: pgbench -S through pgroute while perf samples it (with JavaScript functions named),
then prints pgroute's CPU in µs per query by where it went and by function. Needs perf (apt-get install linux-perf).

Options:
  --mode M        pool mode: transaction (default) or session
  --replicas N    streaming replicas to route reads to (default 0: the primary only)
  --protocol P    pgbench -M: simple (default), extended or prepared
  --clients N     pgbench clients (default 10)
  --duration S    seconds sampled (default 8), after a warm-up of --warmup S (default 3)
  --warmup S
  --frequency HZ  perf's sampling rate (default 999; each sample interrupts pgroute, so more samples slow it more)
  --top N         rows per table (default 25)
  --keep DIR      keep perf.data, the perf map and perf script's output in DIR
  -h, --help      show this help`;

interface Options {
  mode: PoolMode;
  replicas: number;
  protocol: NonNullable<RunOptions["protocol"]>;
  clients: number;
  duration: number;
  warmup: number;
  top: number;
  frequency: number;
  keep: string | undefined;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      mode: { type: "string" },
      replicas: { type: "string" },
      protocol: { type: "string" },
      clients: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      top: { type: "string" },
      frequency: { type: "string" },
      keep: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return undefined;
  return {
    mode: choiceOption("mode", values.mode, ["transaction", "session"] as const, "transaction"),
    replicas: intOption("replicas", values.replicas, 0, 0),
    protocol: choiceOption("protocol", values.protocol, ["simple", "extended", "prepared"] as const, "simple"),
    clients: intOption("clients", values.clients, 10, 1),
    duration: intOption("duration", values.duration, 8, 1),
    warmup: intOption("warmup", values.warmup, 3, 0),
    top: intOption("top", values.top, 25, 1),
    frequency: intOption("frequency", values.frequency, 999, 1),
    keep: values.keep,
  };
}

function report(a: Attribution, queries: number, top: number, frequency: number): void {
  const samplePeriodUs = 1e6 / frequency;
  const us = (n: number) => fmt((n * samplePeriodUs) / queries, 3);
  const rows = (m: Map<string, number>) => [...m].sort((x, y) => y[1] - x[1]).slice(0, top).map(([k, v]) => [us(v), k]);
  out(`pgroute's CPU, µs per query (${a.samples} samples, one per ${fmt(samplePeriodUs, 0)} µs of CPU, over ${queries} queries):`);
  out(
    table([
      ["kernel", "JavaScript", "Bun runtime", "libraries", "all"],
      [us(a.kernel), us(a.js), us(a.runtime), us(a.libraries), us(a.samples)],
    ]),
  );
  out();
  out("JavaScript functions, own code (µs per query):");
  out(table([["µs/q", "function"], ...rows(a.jsSelf)], [1]));
  out();
  out("Bun's runtime and libraries, by the JavaScript function that called in ((event loop): none on the stack):");
  out(table([["µs/q", "caller"], ...rows(a.nativeByCaller)], [1]));
  out();
  out("on the stack (µs per query the function or anything it called was running, kernel included where the stack shows it):");
  out(table([["µs/q", "function"], ...rows(a.inclusive)], [1]));
}

async function main(): Promise<number> {
  const o = parseCommandLine(USAGE, parseOptions);
  if (typeof o === "number") return o;
  const missing = ["perf", "pgbench", "psql"].filter((c) => !which(c));
  if (missing.length > 0) {
    err(`not found: ${missing.join(", ")} (apt-get install linux-perf postgresql-client)`);
    return 2;
  }
  guard();
  onCleanup({ name: "pgbench", first: true, run: stopPgbench, sync: stopPgbenchSync });

  const dir = o.keep ?? removeOnCleanup("profile temp dir", mkdtempSync(join(tmpdir(), "pgroute-profile-")));
  const jitDir = removeOnCleanup("jitdump dir", mkdtempSync(join(tmpdir(), "pgroute-jitdump-")));

  out(`pgroute in-place profile — ${new Date().toISOString()}`);
  out(machineLine(machine()));
  out(`versions: Bun ${bunVersion()}; pgroute ${gitState(ROOT).text}`);
  err(`starting PostgreSQL (primary${o.replicas > 0 ? ` + ${o.replicas} replica(s)` : ""})…`);
  const { up, direct, cluster } = await startBenchCluster({ shared_buffers: "256MB" }, o.replicas);
  await initPgbench(direct, 10);
  const replicas = cluster.replicas.map((r, i) => ({ name: `replica${i + 1}`, host: r.host, port: r.port }));
  const pgroute = await startPgroute(await freePort(), up, 20, {
    mode: o.mode,
    replicas,
    env: { BUN_JSC_useJITDump: "true", BUN_JSC_jitDumpDirectory: jitDir },
  });
  const mapFile = removeOnCleanup("perf map", `/tmp/perf-${pgroute.pid}.map`);
  const ep = { ...up, host: pgroute.host, port: pgroute.port };
  const runOpts = (durationS: number): RunOptions => ({ clients: o.clients, threads: Math.min(2, o.clients), durationS, protocol: o.protocol });
  out(`workload: pgbench -S -M ${o.protocol} -c ${o.clients} through pgroute (${o.mode} pooling, pool 20, ${o.replicas} replica(s)), ${o.warmup} s warm-up, ${o.duration} s sampled`);

  if (o.warmup > 0) await runPgbench(ep, runOpts(o.warmup));
  // perf samples for the whole pgbench run; `sleep` bounds it even if pgbench stops early.
  const perfData = join(dir, "perf.data");
  const perf = Bun.spawn(["perf", "record", "-g", "-k", "mono", "-e", "cpu-clock", "-F", String(o.frequency), "-p", String(pgroute.pid), "-o", perfData, "--", "sleep", String(o.duration)], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  const cpu0 = cpuSeconds(pgroute.pid);
  const r = await runPgbench(ep, runOpts(o.duration));
  const cpuS = cpuSeconds(pgroute.pid) - cpu0;
  const perfCode = await perf.exited;
  if (perfCode !== 0) throw new Error(`perf record exited ${perfCode}: ${(await new Response(perf.stderr).text()).trim().slice(-500)}`);
  out(`pgbench: ${fmt(r.tps, 0)} tps, ${r.transactions} queries; pgroute used ${fmt((cpuS * 1e6) / r.transactions, 2)} µs of CPU per query (/proc, utime + stime)`);

  // JSC names it jit-<a>-<b>.dump, one of the numbers being the process id; pgroute is the only writer here.
  const dumps = readdirSync(jitDir).filter((f) => /^jit-[\d-]+\.dump$/.test(f));
  if (dumps.length !== 1) throw new Error(`expected one jitdump from pgroute in ${jitDir} (BUN_JSC_useJITDump), found ${dumps.length}: JavaScript functions cannot be named`);
  writeFileSync(mapFile, perfMapText(parseJitdump(readFileSync(join(jitDir, dumps[0]!)))));
  const ps = Bun.spawnSync(["perf", "script", "-i", perfData, "--pid", String(pgroute.pid)], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  if (ps.exitCode !== 0) throw new Error(`perf script exited ${ps.exitCode}: ${ps.stderr.toString().trim().slice(-1000)}`);
  const script = ps.stdout.toString();
  if (o.keep) {
    writeFileSync(join(dir, "perf-script.txt"), script);
    writeFileSync(join(dir, `perf-${pgroute.pid}.map`), readFileSync(mapFile));
  }
  out();
  report(attribute(script), r.transactions, o.top, o.frequency);
  await pgroute.stop();
  return 0;
}

await runMain(main);
