#!/usr/bin/env bun
/**
 * Transaction-mode benchmark: four `pgbench -S` workloads (10 and 100 clients, prepared statements, a new
 * connection per transaction) against PostgreSQL directly, through pgroute and through PgBouncer, both proxies
 * in transaction mode with the same pool size, interleaved round by round, with each proxy's CPU seconds per
 * 10,000 queries read from /proc/<pid>/stat, and the issue's targets checked. See bench/README.md.
 *
 *   bun bench/transaction-mode.ts [--rounds 3] [--duration 10] [--pool 20] [--only ROW[,ROW]] [--json FILE]
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { onCleanup } from "./lib/cleanup.ts";
import { freePorts, startBenchCluster } from "./lib/cluster.ts";
import { bunVersion, err, gitState, loadavg, machine, machineLine, out, pgbenchVersion, which, intOption, choiceOption } from "./lib/env.ts";
import { addDiagnostic, runMain, startPgbenchScript } from "./lib/main.ts";
import { measure } from "./lib/measure.ts";
import {
  firstError,
  initPgbench,
  pgbenchArgv,
  pgbenchFigures,
  psqlValue,
  runPgbench,
  stopPgbench,
  stopPgbenchSync,
  type Endpoint,
  type RunOptions,
} from "./lib/pgbench.ts";
import { sleep, tail } from "./lib/proc.ts";
import { ROOT, logProblems, pgbouncerVersion, startBunRelay, startPgbouncer, startPgroute, type ProxyProcess } from "./lib/proxies.ts";
import { fmt, max, median, min, table } from "./lib/stats.ts";

const USAGE = `Usage: bun bench/transaction-mode.ts [options]

Runs four pgbench -S (select-only) workloads against PostgreSQL directly, through pgroute and through PgBouncer
(both in transaction mode with the same pool size, as separate processes), rounds interleaved, and reports
tps, latency and each proxy's CPU seconds per 10,000 queries, with the issue's targets checked.

Rows (workloads):
  c10        pgbench -S -c 10
  c100       pgbench -S -c 100
  prepared   pgbench -S -M prepared -c 100
  connect    pgbench -S -C -c 10      (a new connection per transaction)

Options:
  --rounds N     interleaved rounds (default 3)
  --duration S   seconds per pgbench run (default 10)
  --pool N       server connections per pool, both proxies (default 20)
  --threads J    pgbench threads (default 2)
  --scale S      pgbench -i scale factor (default 10)
  --warmup S     seconds of unrecorded pgbench per row and target before round 1 (default 2; 0 = none)
  --only ROWS    comma-separated rows to run (default all), e.g. --only prepared,connect
  --secret KIND  what both proxies are given to check SCRAM logins: "plain" (default) the password, or
                 "verifier" PostgreSQL's stored SCRAM verifier (then both log in to PostgreSQL by SCRAM
                 pass-through). PgBouncer 1.18 runs PBKDF2 on every client login with a plaintext password.
  --no-floor     leave out the references: the runtime's floor (bun-relay: a plain Bun TCP relay, no protocol
                 work) beside the three targets, and in the prepared row PgBouncer in session mode (C, a
                 server connection per client, statements untouched), which otherwise run
  --profile DIR  run pgroute under Bun's CPU profiler (--cpu-prof --cpu-prof-md); the profile is written
                 into DIR when pgroute stops at the end (profiling slows pgroute down: not for the numbers)
  --json FILE    also write the results as JSON
  -h, --help     show this help`;

/**
 * `bun-relay` is the runtime's floor (bench/lib/relay.ts): a plain TCP relay on Bun's sockets, one server
 * connection per client and no protocol work — what any proxy running on Bun pays per query on this machine before
 * it does anything of its own. It is not a contender; it shows which targets are within reach of the runtime.
 * `pgbouncer-session` runs only in the prepared row, where PgBouncer fails in transaction mode: PgBouncer in
 * session mode with a server connection per client, passing statements through as they are — what a proxy written
 * in C reaches on this machine with prepared statements, against the issue's "≥ 0.75× direct".
 */
type TargetName = "direct" | "pgroute" | "pgbouncer" | "bun-relay" | "pgbouncer-session";
const CONTENDERS: readonly TargetName[] = ["direct", "pgroute", "pgbouncer"];

interface Row {
  id: string;
  /** How the issue names it. */
  label: string;
  clients: number;
  protocol: "simple" | "prepared";
  reconnect: boolean;
}

const ROWS: readonly Row[] = [
  { id: "c10", label: "-S -c 10", clients: 10, protocol: "simple", reconnect: false },
  { id: "c100", label: "-S -c 100", clients: 100, protocol: "simple", reconnect: false },
  { id: "prepared", label: "-S -M prepared -c 100", clients: 100, protocol: "prepared", reconnect: false },
  { id: "connect", label: "-S -C -c 10", clients: 10, protocol: "simple", reconnect: true },
];

/** Targets from the issue. */
const PREPARED_VS_DIRECT_MIN = 0.75;
const CPU_VS_PGBOUNCER_MAX = 1.2;

interface Options {
  rounds: number;
  duration: number;
  pool: number;
  threads: number;
  scale: number;
  warmup: number;
  rows: Row[];
  secret: "plain" | "verifier";
  /** Run the references (bun-relay; pgbouncer-session in the prepared row) beside the three targets. */
  floor: boolean;
  profile: string | undefined;
  json: string | undefined;
}

interface RunRecord {
  round: number;
  row: string;
  target: TargetName;
  /** pgbench exited 0 and printed its summary. A failed run's numbers are kept but not summarised. */
  ok: boolean;
  /** The first error line of a failed run. */
  error: string | undefined;
  tps: number;
  latencyMs: number;
  transactions: number;
  failed: number;
  /** Initial connection time, or with -C the average connection time (ms). */
  connectMs: number | undefined;
  exitCode: number;
  wallS: number;
  proxyCpuS: number | undefined;
  /** Proxy CPU seconds per 10,000 transactions (= queries: -S runs one SELECT per transaction). */
  cpuPer10k: number | undefined;
  pgbenchCpuS: number | undefined;
  postgresCpuS: number | undefined;
  otherCores: number;
  problems: string[];
}

interface Range {
  median: number;
  min: number;
  max: number;
}

interface Cell {
  row: string;
  target: TargetName;
  runs: number;
  failedRuns: number;
  /** First error line of the first failed run. */
  error: string | undefined;
  /** Over the runs that did not fail. */
  tps: Range | undefined;
  latencyMs: number | undefined;
  connectMs: number | undefined;
  cpuPer10k: Range | undefined;
  proxyCpuPercent: number | undefined;
  transactions: number;
  failedTransactions: number;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: "string" },
      duration: { type: "string" },
      pool: { type: "string" },
      threads: { type: "string" },
      scale: { type: "string" },
      warmup: { type: "string" },
      only: { type: "string" },
      secret: { type: "string" },
      "no-floor": { type: "boolean" },
      profile: { type: "string" },
      json: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return undefined;
  const int = intOption;
  let rows = [...ROWS];
  if (values.only !== undefined) {
    const ids = values.only.split(",").map((s) => s.trim()).filter((s) => s !== "");
    const unknown = ids.filter((id) => !ROWS.some((r) => r.id === id));
    if (unknown.length > 0 || ids.length === 0) {
      throw new Error(`--only: unknown row "${unknown.join(",")}"; rows are ${ROWS.map((r) => r.id).join(", ")}`);
    }
    rows = ROWS.filter((r) => ids.includes(r.id));
  }
  return {
    rounds: int("rounds", values.rounds, 3, 1),
    duration: int("duration", values.duration, 10, 1),
    pool: int("pool", values.pool, 20, 1),
    threads: int("threads", values.threads, 2, 1),
    scale: int("scale", values.scale, 10, 1),
    warmup: int("warmup", values.warmup, 2, 0),
    rows,
    secret: choiceOption("secret", values.secret, ["plain", "verifier"] as const, "plain"),
    floor: !values["no-floor"],
    profile: values.profile,
    json: values.json,
  };
}

function runOptions(row: Row, o: Options, durationS: number): RunOptions {
  return {
    clients: row.clients,
    threads: Math.min(o.threads, row.clients), // pgbench refuses more threads than clients
    durationS,
    protocol: row.protocol,
    reconnect: row.reconnect,
    tolerant: true,
  };
}

const truncate = (s: string, n: number) => (s.length <= n ? s : `${s.slice(0, n - 1)}…`);
const ratio = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : "n/a");

function runLine(r: RunRecord, rowLabel: string, labelWidth: number): string {
  const parts = [`round ${r.round}`, rowLabel.padEnd(labelWidth), r.target.padEnd(9)];
  if (!r.ok) {
    parts.push(`FAILED (pgbench exit ${r.exitCode}, ${r.transactions} txns in ${fmt(r.wallS, 1)} s): ${truncate(r.error ?? "?", 110)}`);
    return parts.join("  ");
  }
  parts.push(`tps ${fmt(r.tps, 1).padStart(9)}`, `lat ${fmt(r.latencyMs, 3).padStart(7)} ms`, `txns ${String(r.transactions).padStart(8)}`);
  if (r.proxyCpuS !== undefined) {
    parts.push(`proxy cpu ${fmt(r.proxyCpuS, 2).padStart(6)} s (${fmt((r.proxyCpuS / r.wallS) * 100, 0).padStart(3)}%)`);
    parts.push(`${fmt(r.cpuPer10k, 3)} s/10k q`);
  }
  parts.push(`others ${fmt(Math.max(0, r.otherCores), 2)} cores`);
  if (r.failed > 0) parts.push(`FAILED TXNS ${r.failed}`);
  return parts.join("  ");
}

function range(xs: number[]): Range | undefined {
  return xs.length ? { median: median(xs), min: min(xs), max: max(xs) } : undefined;
}

function summarise(runs: RunRecord[], row: string, target: TargetName): Cell {
  const rs = runs.filter((r) => r.row === row && r.target === target);
  const good = rs.filter((r) => r.ok);
  const bad = rs.filter((r) => !r.ok);
  const util = good.flatMap((r) => (r.proxyCpuS === undefined ? [] : [(r.proxyCpuS / r.wallS) * 100]));
  const connect = good.flatMap((r) => (r.connectMs === undefined ? [] : [r.connectMs]));
  return {
    row,
    target,
    runs: rs.length,
    failedRuns: bad.length,
    error: bad[0]?.error,
    tps: range(good.map((r) => r.tps)),
    latencyMs: good.length ? median(good.map((r) => r.latencyMs)) : undefined,
    connectMs: connect.length ? median(connect) : undefined,
    cpuPer10k: range(good.flatMap((r) => (r.cpuPer10k === undefined ? [] : [r.cpuPer10k]))),
    proxyCpuPercent: util.length ? median(util) : undefined,
    transactions: rs.reduce((s, r) => s + r.transactions, 0),
    failedTransactions: rs.reduce((s, r) => s + r.failed, 0),
  };
}

/** A cell that can be compared: every run succeeded. */
const works = (c: Cell) => c.failedRuns === 0 && c.tps !== undefined;

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
  const git = gitState(ROOT);

  // ---- the cluster ----
  out(`pgroute transaction-mode benchmark — ${startedAt.toISOString()}`);
  err("starting PostgreSQL (devcluster, no replicas)…");
  // The whole data set (~160 MB at scale 10) fits in shared_buffers, so runs measure the proxies, not I/O.
  const { up, direct, version: pgVersion, pmPid } = await startBenchCluster({ shared_buffers: "256MB" });
  if (o.secret === "verifier") {
    up.scramVerifier = await psqlValue(direct, `SELECT rolpassword FROM pg_authid WHERE rolname = current_user`);
    if (!up.scramVerifier.startsWith("SCRAM-SHA-256$")) throw new Error(`the role's password is not stored as a SCRAM verifier`);
  }
  const maxConnections = Number(await psqlValue(direct, "SHOW max_connections"));
  const preparedClients = o.floor ? Math.max(0, ...o.rows.filter((r) => r.protocol === "prepared").map((r) => r.clients)) : 0;
  // Direct runs (or the relay's) beside both pools and PgBouncer's session-mode pool, which stays open.
  const needConnections = Math.max(...o.rows.map((r) => r.clients)) + 2 * o.pool + preparedClients + 5;
  if (!(maxConnections >= needConnections)) {
    throw new Error(`PostgreSQL max_connections is ${maxConnections}; the direct runs and both pools need at least ${needConnections}`);
  }
  const versions = {
    bun: bunVersion(),
    postgresql: pgVersion,
    pgbouncer: bouncerVersion!.replace(/^PgBouncer\s+/, ""),
    pgbench: pgbenchVersion(),
    pgroute: git.text,
  };
  out(machineLine(mach));
  out(`versions: Bun ${versions.bun}, PostgreSQL ${versions.postgresql}, PgBouncer ${versions.pgbouncer}, pgbench ${versions.pgbench}`);
  out(`pgroute : ${git.text}`);

  err(`pgbench -i -s ${o.scale} on the primary (127.0.0.1:${up.port})…`);
  const t0 = performance.now();
  await initPgbench(direct, o.scale);
  err(`  done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  // ---- the proxies ----
  const [pgroutePort, bouncerPort, relayPort, sessionPort] = (await freePorts(4)) as [number, number, number, number];
  // Room for the 100-client rows plus stragglers of the previous run still closing.
  const maxClients = Math.max(1000, 4 * Math.max(...o.rows.map((r) => r.clients)));
  err(`starting pgroute on 127.0.0.1:${pgroutePort} and PgBouncer on 127.0.0.1:${bouncerPort} (transaction mode, pool ${o.pool})…`);
  if (o.profile) mkdirSync(o.profile, { recursive: true });
  const pgroute = await startPgroute(pgroutePort, up, o.pool, { mode: "transaction", profileDir: o.profile && resolve(o.profile) });
  addDiagnostic("pgroute log", pgroute.logFile);
  const bouncer = await startPgbouncer(bouncerPort, up, o.pool, { mode: "transaction", maxClients });
  addDiagnostic("pgbouncer log", bouncer.logFile);
  const relay = o.floor ? await startBunRelay(relayPort, up) : undefined;
  if (relay) addDiagnostic("bun-relay log", relay.logFile);
  const bouncerSession =
    preparedClients > 0 ? await startPgbouncer(sessionPort, up, preparedClients, { mode: "session", maxClients, name: "pgbouncer-session" }) : undefined;
  if (bouncerSession) addDiagnostic("pgbouncer-session log", bouncerSession.logFile);
  const targets: TargetName[] = [...CONTENDERS, ...(relay ? (["bun-relay"] as const) : []), ...(bouncerSession ? (["pgbouncer-session"] as const) : [])];
  /** The targets a row runs against: PgBouncer in session mode only where prepared statements are. */
  const targetsFor = (row: Row) => targets.filter((t) => t !== "pgbouncer-session" || row.protocol === "prepared");
  const references = [relay, bouncerSession].filter((p): p is ProxyProcess => p !== undefined);
  const proxies: Record<TargetName, ProxyProcess | undefined> = {
    direct: undefined,
    pgroute,
    pgbouncer: bouncer,
    "bun-relay": relay,
    "pgbouncer-session": bouncerSession,
  };
  const endpoint = (p: ProxyProcess | undefined): Endpoint => (p ? { ...up, host: p.host, port: p.port } : direct);
  const endpoints: Record<TargetName, Endpoint> = {
    direct,
    pgroute: endpoint(pgroute),
    pgbouncer: endpoint(bouncer),
    "bun-relay": endpoint(relay),
    "pgbouncer-session": endpoint(bouncerSession),
  };
  for (const t of targets) {
    const n = await psqlValue(endpoints[t], "SELECT count(*) FROM pgbench_branches");
    if (n !== String(o.scale)) throw new Error(`${t}: expected ${o.scale} pgbench_branches rows, got "${n}"`);
  }

  const labelWidth = Math.max(...o.rows.map((r) => r.label.length));
  const shownArgv = (row: Row) => {
    const argv = pgbenchArgv(direct, runOptions(row, o, o.duration));
    return argv.slice(0, argv.indexOf("-h")).join(" ");
  };
  out(`postgres: max_connections ${maxConnections}, shared_buffers 256MB, pgbench scale ${o.scale} (1 SELECT per transaction)`);
  out(
    `auth    : SCRAM-SHA-256 everywhere — clients → pgroute ([[users]] auth = "scram-sha-256") and → PgBouncer ` +
      `(auth_type = scram-sha-256), ` +
      (o.secret === "plain"
        ? `each with the plaintext password in its config (pgroute password =, PgBouncer userlist.txt); `
        : `each with PostgreSQL's SCRAM verifier from pg_authid in its config (pgroute scram_verifier =, PgBouncer userlist.txt), no plaintext; `) +
      `both proxies → PostgreSQL SCRAM-SHA-256${o.secret === "verifier" ? " (pass-through of the client's key)" : ""}; ` +
      `direct: PostgreSQL's own SCRAM-SHA-256 (pg_hba)`,
  );
  out(`pools   : pgroute [pool] mode = "transaction", size = ${o.pool}; PgBouncer pool_mode = transaction, default_pool_size = ${o.pool}, max_client_conn = ${maxClients}`);
  out(`targets : direct = PostgreSQL 127.0.0.1:${up.port}; pgroute pid ${pgroute.pid} (bun src/cli/main.ts serve); pgbouncer pid ${bouncer.pid}`);
  if (relay) {
    out(`floor   : bun-relay pid ${relay.pid} (bun bench/lib/relay.ts): a plain TCP relay on Bun's sockets, a server connection per client, no protocol work`);
  }
  if (bouncerSession) {
    out(
      `C ref.  : pgbouncer-session pid ${bouncerSession.pid} (prepared row only): PgBouncer pool_mode = session, default_pool_size = ${preparedClients} — ` +
        `a server connection per client, statements passed through as they are`,
    );
  }
  out("rows    :");
  for (const row of o.rows) out(`  ${row.id.padEnd(9)} ${shownArgv(row)}`);
  out(
    `${o.rounds} round(s), each running every row against ${targets.filter((t) => t !== "pgbouncer-session").join(", ")} in turn` +
      `${bouncerSession ? " (and the prepared row against pgbouncer-session)" : ""}; ` +
      `${o.warmup} s warm-up per row and target before round 1`,
  );
  out(`load avg: ${loadStart} (at start)`);
  if (o.profile) out(`PROFILING: pgroute runs under --cpu-prof (profile → ${resolve(o.profile)} at the end); its numbers are not comparable`);
  out();

  // ---- warm-up ----
  if (o.warmup > 0) {
    for (const row of o.rows) {
      for (const t of targetsFor(row)) {
        err(`warm-up: ${row.label}, ${t} ${o.warmup} s…`);
        const r = await runPgbench(endpoints[t], runOptions(row, o, o.warmup));
        if (r.exitCode !== 0 || r.noSummary) err(`  (warm-up failed: ${firstError(r) ?? `exit ${r.exitCode}`})`);
      }
    }
  }

  // ---- measured rounds ----
  const runs: RunRecord[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    for (const row of o.rows) {
      for (const t of targetsFor(row)) {
        const proxy = proxies[t];
        if (proxy && !proxy.alive()) throw new Error(`${proxy.name} (pid ${proxy.pid}) is no longer running\n${tail(proxy.logFile)}`);
        await sleep(500); // let the previous run's connections close
        const m = await measure({
          proxy,
          ours: [pgroute, bouncer, ...references],
          pmPid,
          run: () => runPgbench(endpoints[t], runOptions(row, o, o.duration)),
          clientCpuS: (x) => x.clientCpuS,
          label: `round ${round} (${row.label})`,
        });
        const r = m.result;
        const ok = r.exitCode === 0 && !r.noSummary;
        const rec: RunRecord = {
          round,
          row: row.id,
          target: t,
          ok,
          error: ok ? undefined : (firstError(r) ?? `pgbench exited ${r.exitCode}`),
          ...pgbenchFigures(r),
          wallS: m.wallS,
          proxyCpuS: m.proxyCpuS,
          cpuPer10k: m.proxyCpuS !== undefined && r.transactions > 0 ? (m.proxyCpuS / r.transactions) * 10_000 : undefined,
          pgbenchCpuS: r.clientCpuS,
          postgresCpuS: m.postgresCpuS,
          otherCores: m.otherCores,
          problems: r.problems,
        };
        runs.push(rec);
        out(runLine(rec, row.label, labelWidth));
        if (ok) for (const p of r.problems.slice(0, 3)) out(`    pgbench: ${p}`);
      }
    }
  }
  const loadEnd = loadavg();

  // ---- summary ----
  const cells = o.rows.flatMap((row) => targetsFor(row).map((t) => summarise(runs, row.id, t)));
  const cell = (row: string, t: TargetName) => cells.find((c) => c.row === row && c.target === t)!;
  const labelOf = (id: string) => ROWS.find((r) => r.id === id)!.label;

  out();
  out(`summary (median of ${o.rounds} run(s) of ${o.duration} s per row and target; transaction pooling, pool ${o.pool}):`);
  const rows: string[][] = [
    ["workload", "target", "tps (median)", "min – max", "vs direct", "avg latency ms", "proxy CPU s/10k q", "min – max", "proxy CPU %", "failed txns", "error (first line)"],
  ];
  for (const row of o.rows) {
    const directTps = cell(row.id, "direct").tps?.median ?? Number.NaN;
    for (const t of targetsFor(row)) {
      const c = cell(row.id, t);
      const first = t === targets[0] ? row.label : "";
      if (!works(c)) {
        rows.push([
          first,
          t,
          `FAILED (${c.failedRuns}/${c.runs} runs)`,
          "-",
          "-",
          "-",
          "-",
          "-",
          "-",
          String(c.failedTransactions),
          truncate(c.error ?? "", 100),
        ]);
        continue;
      }
      rows.push([
        first,
        t,
        fmt(c.tps!.median, 1),
        `${fmt(c.tps!.min, 1)} – ${fmt(c.tps!.max, 1)}`,
        `${fmt((c.tps!.median / directTps) * 100, 1)}%`,
        fmt(c.latencyMs, 3),
        c.cpuPer10k ? fmt(c.cpuPer10k.median, 3) : "-",
        c.cpuPer10k ? `${fmt(c.cpuPer10k.min, 3)} – ${fmt(c.cpuPer10k.max, 3)}` : "-",
        c.proxyCpuPercent === undefined ? "-" : fmt(c.proxyCpuPercent, 0),
        String(c.failedTransactions),
        "",
      ]);
    }
  }
  out(table(rows, [1, 10]));
  if (o.rows.some((r) => r.reconnect)) {
    out("(-C rows: tps and latency include each transaction's connection setup and SCRAM login, as pgbench reports them with -C)");
  }

  // ---- ratios ----
  /** The same ratios for the runtime's floor, and what pgroute's own work adds to it per query. */
  function floorOf(row: string) {
    const f = cell(row, "bun-relay");
    const d = cell(row, "direct");
    const pr = cell(row, "pgroute");
    const pb = cell(row, "pgbouncer");
    const ok = works(f);
    return {
      tpsVsPgbouncer: ok && works(pb) ? f.tps!.median / pb.tps!.median : Number.NaN,
      cpuVsPgbouncer: ok && works(pb) && f.cpuPer10k && pb.cpuPer10k ? f.cpuPer10k.median / pb.cpuPer10k.median : Number.NaN,
      tpsVsDirect: ok && works(d) ? f.tps!.median / d.tps!.median : Number.NaN,
      /** pgroute's CPU per query above the floor's, in µs. */
      pgrouteOwnUs: ok && works(pr) && f.cpuPer10k && pr.cpuPer10k ? ((pr.cpuPer10k.median - f.cpuPer10k.median) / 10_000) * 1e6 : Number.NaN,
    };
  }
  /** PgBouncer in session mode against direct, in a row that ran it (NaN elsewhere). */
  function sessionVsDirect(row: Row): number {
    if (!targetsFor(row).includes("pgbouncer-session")) return Number.NaN;
    const c = cell(row.id, "pgbouncer-session");
    const d = cell(row.id, "direct");
    return works(c) && works(d) ? c.tps!.median / d.tps!.median : Number.NaN;
  }
  const ratios = o.rows.map((row) => {
    const d = cell(row.id, "direct");
    const pr = cell(row.id, "pgroute");
    const pb = cell(row.id, "pgbouncer");
    const both = works(pr) && works(pb);
    return {
      row: row.id,
      tpsVsPgbouncer: both ? pr.tps!.median / pb.tps!.median : Number.NaN,
      cpuVsPgbouncer: both && pr.cpuPer10k && pb.cpuPer10k ? pr.cpuPer10k.median / pb.cpuPer10k.median : Number.NaN,
      tpsVsDirect: works(pr) && works(d) ? pr.tps!.median / d.tps!.median : Number.NaN,
      pgbouncerFailed: !works(pb),
      floor: relay ? floorOf(row.id) : undefined,
    };
  });
  out();
  out(
    table([
      ["workload", "pgroute/pgbouncer tps", "pgroute/pgbouncer CPU per query", "pgroute/direct tps"],
      ...ratios.map((r) => [labelOf(r.row), ratio(r.tpsVsPgbouncer), ratio(r.cpuVsPgbouncer), ratio(r.tpsVsDirect)]),
    ]),
  );
  if (ratios.some((r) => r.pgbouncerFailed)) out("(n/a: PgBouncer failed that workload, so there is nothing to compare with)");
  if (relay) {
    out();
    out("the runtime's floor (bun-relay: Bun's sockets relaying bytes, no protocol work, a server connection per client):");
    out(
      table([
        ["workload", "bun-relay/pgbouncer tps", "bun-relay/pgbouncer CPU per query", "bun-relay/direct tps", "pgroute CPU above the floor, µs/query"],
        ...ratios.map((r) => [
          labelOf(r.row),
          ratio(r.floor!.tpsVsPgbouncer),
          ratio(r.floor!.cpuVsPgbouncer),
          ratio(r.floor!.tpsVsDirect),
          // With -C the relay logs in to PostgreSQL for every connection, pgroute reuses its pool: not a floor.
          ROWS.find((x) => x.id === r.row)!.reconnect ? "n/a" : fmt(r.floor!.pgrouteOwnUs, 1),
        ]),
      ]),
    );
    if (o.rows.some((r) => r.reconnect)) out("(-C: the relay opens a server connection, with a SCRAM login, per client connection; pgroute and PgBouncer reuse their pools)");
  }
  for (const row of o.rows.filter((r) => targetsFor(r).includes("pgbouncer-session"))) {
    const pr = cell(row.id, "pgroute");
    const ps = cell(row.id, "pgbouncer-session");
    out(
      `a proxy in C on ${row.label}: PgBouncer in session mode (a server connection per client, statements untouched) ` +
        `${ratio(sessionVsDirect(row))} direct; pgroute (transaction mode, pool ${o.pool}) ${works(pr) && works(ps) ? ratio(pr.tps!.median / ps.tps!.median) : "n/a"} of it`,
    );
  }

  // ---- targets ----
  interface TargetCheck {
    workload: string;
    target: string;
    measured: string;
    met: boolean | undefined;
    /** What the runtime's floor measures on the same criterion ("" without one). */
    floor: string;
  }
  const checks: TargetCheck[] = [];
  for (const row of o.rows) {
    const r = ratios.find((x) => x.row === row.id)!;
    const pr = cell(row.id, "pgroute");
    const pb = cell(row.id, "pgbouncer");
    if (!works(pr)) {
      checks.push({ workload: row.label, target: "pgroute runs it without errors", measured: `failed ${pr.failedRuns}/${pr.runs}: ${truncate(pr.error ?? "", 70)}`, met: false, floor: "" });
    }
    if (works(pb)) {
      checks.push({
        workload: row.label,
        target: "tps ≥ PgBouncer's",
        measured: works(pr) ? `${ratio(r.tpsVsPgbouncer)} (${fmt(pr.tps!.median, 0)} vs ${fmt(pb.tps!.median, 0)})` : "pgroute failed",
        met: works(pr) ? r.tpsVsPgbouncer >= 1 : false,
        floor: r.floor ? ratio(r.floor.tpsVsPgbouncer) : "",
      });
      checks.push({
        workload: row.label,
        target: `CPU per query ≤ ${CPU_VS_PGBOUNCER_MAX}× PgBouncer's`,
        measured: Number.isFinite(r.cpuVsPgbouncer)
          ? `${ratio(r.cpuVsPgbouncer)} (${fmt(pr.cpuPer10k!.median, 3)} vs ${fmt(pb.cpuPer10k!.median, 3)} s/10k)`
          : "pgroute failed",
        met: Number.isFinite(r.cpuVsPgbouncer) ? r.cpuVsPgbouncer <= CPU_VS_PGBOUNCER_MAX : false,
        floor: r.floor ? ratio(r.floor.cpuVsPgbouncer) : "",
      });
    } else if (works(pr)) {
      checks.push({
        workload: row.label,
        target: "works where PgBouncer fails",
        measured: `pgroute ${pr.runs}/${pr.runs} runs ok, ${pr.failedTransactions} failed txns; PgBouncer failed ${pb.failedRuns}/${pb.runs}`,
        met: pr.failedTransactions === 0,
        floor: "",
      });
    }
    if (row.protocol === "prepared") {
      checks.push({
        workload: row.label,
        target: `tps ≥ ${PREPARED_VS_DIRECT_MIN}× direct`,
        measured: works(pr) ? `${ratio(r.tpsVsDirect)} (${fmt(pr.tps!.median, 0)} vs ${fmt(cell(row.id, "direct").tps?.median, 0)})` : "pgroute failed",
        met: works(pr) ? r.tpsVsDirect >= PREPARED_VS_DIRECT_MIN : false,
        floor: [r.floor ? ratio(r.floor.tpsVsDirect) : "", Number.isFinite(sessionVsDirect(row)) ? `PgBouncer session ${ratio(sessionVsDirect(row))}` : ""].filter(Boolean).join("; "),
      });
    }
  }
  const mark = (m: boolean | undefined) => (m === undefined ? "?" : m ? "✓" : "✗");
  out();
  out("targets from the issue:");
  const floorColumn = relay ? [bouncerSession ? "the floor (bun-relay); PgBouncer session" : "the floor (bun-relay)"] : [];
  out(
    table([["workload", "target", "measured", "met", ...floorColumn], ...checks.map((c) => [c.workload, c.target, c.measured, mark(c.met), ...(relay ? [c.floor] : [])])], [1, 2, 3]).replace(
      /^/gm,
      "  ",
    ),
  );
  if (relay) out("  (the floor column: the same criterion measured for a plain Bun relay; a target its floor misses is out of reach of any proxy on this runtime and machine)");
  if (bouncerSession) out("  (PgBouncer session: the same for PgBouncer in session mode, a proxy in C that leaves statements alone)");
  const metCount = checks.filter((c) => c.met).length;
  out(`  ${metCount} of ${checks.length} met`);

  const others = runs.map((r) => Math.max(0, r.otherCores));
  out();
  out(
    `rest of machine during runs (CPU not used by the benchmark's processes): median ${fmt(median(others), 2)}, ` +
      `max ${fmt(max(others), 2)} cores of ${mach.nproc}`,
  );
  out(`load avg: ${loadStart} (start) → ${loadEnd} (end; the benchmark's own processes count too)`);

  // ---- notes ----
  const notes: string[] = [];
  for (const p of [pgroute, bouncer, ...references]) {
    const lines = logProblems(p);
    if (lines.length > 0) {
      notes.push(`${p.name} logged ${lines.length} line(s)${p.name.startsWith("pgbouncer") ? " at WARNING or worse" : " at warn or worse"}:`);
      notes.push(...lines.slice(0, 10).map((l) => `    ${truncate(l, 200)}`));
    }
  }
  for (const c of cells) {
    if (c.failedRuns > 0) notes.push(`${c.target}, ${labelOf(c.row)}: ${c.failedRuns} of ${c.runs} run(s) failed; first error: ${c.error ?? "?"}`);
    if (c.failedTransactions > 0) notes.push(`${c.target}, ${labelOf(c.row)}: ${c.failedTransactions} failed transaction(s)`);
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
      git,
      options: { ...o, rows: o.rows.map((r) => r.id), json: undefined },
      postgres: { maxConnections, sharedBuffers: "256MB" },
      auth: `scram-sha-256 (clients → proxies, proxies → PostgreSQL, direct); proxies given the ${o.secret === "plain" ? "plaintext password" : "SCRAM verifier"}`,
      rows: o.rows.map((r) => ({ ...r, pgbench: shownArgv(r) })),
      loadavg: { start: loadStart, end: loadEnd },
      otherCores: { median: median(others), max: max(others) },
      runs,
      summary: cells,
      ratios,
      targets: checks,
      notes,
    };
    writeFileSync(o.json, `${JSON.stringify(doc, null, 2)}\n`);
    err(`wrote ${o.json}`);
  }
  return 0;
}

await runMain(main);
