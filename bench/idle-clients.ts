#!/usr/bin/env bun
/**
 * pgroute's memory with many idle clients: start pgroute (transaction mode) as a separate process, log in
 * 10,000 clients with SCRAM from a separate load-generator process (bench/lib/idle-worker.ts), leave them idle,
 * and read pgroute's RSS from /proc/<pid>/status before, during and after; also how long the logins took, how
 * many server connections pgroute holds meanwhile, and that the idle clients still work. See bench/README.md.
 *
 *   bun bench/idle-clients.ts [--clients 10000] [--concurrency 200] [--pool 20] [--idle 10] [--json FILE]
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { Subprocess } from "bun";
import { onCleanup } from "./lib/cleanup.ts";
import { startBenchCluster } from "./lib/cluster.ts";
import { freePort } from "../src/devcluster/index.ts";
import { bunVersion, err, gitState, loadavg, machine, machineLine, openFilesLimit, out, which, intOption } from "./lib/env.ts";
import type { Percentiles, WorkerCommand, WorkerReply } from "./lib/idle-worker.ts";
import { addDiagnostic, guard, parseCommandLine, runMain } from "./lib/main.ts";
import { measure } from "./lib/measure.ts";
import { psqlValue } from "./lib/pgbench.ts";
import { clientEnv, cpuSeconds, fdCount, killNow, memoryOf, sleep, stopChild } from "./lib/proc.ts";
import { ROOT, logProblems, startPgroute, type ProxyProcess } from "./lib/proxies.ts";
import { fmt, table } from "./lib/stats.ts";

const USAGE = `Usage: bun bench/idle-clients.ts [options]

Starts pgroute (transaction mode) as a separate process, opens many client connections to it that log in with
SCRAM-SHA-256 through to ReadyForQuery and then stay idle, and reports pgroute's RSS (VmRSS from
/proc/<pid>/status) before, with the idle clients and after, the time the logins took, the server connections
pgroute holds meanwhile (pg_stat_activity), and a query through the idle clients. The clients are opened by a
separate Bun process, so the load generator's memory is not counted.

Options:
  --clients N      idle client connections (default 10000)
  --concurrency C  logins in flight at a time (default 200)
  --pool N         pgroute's pool size (default 20)
  --workers W      load-generator processes sharing the clients (default 1)
  --idle S         seconds to leave the clients idle before measuring again (default 10)
  --warmup N       clients opened and closed before the "at rest" reading (default 200; 0 = none)
  --churn N        afterwards, N more cycles of logging in all clients and closing them again, with pgroute's
                   RSS after each (default 0): memory that is not reclaimed after clients leave shows up here
  --json FILE      also write the results as JSON
  -h, --help       show this help

Needs an open-files limit above the client count in this process (pgroute and the load generator inherit it);
if the soft limit is too low the script re-runs itself under \`ulimit -n 65536\`.`;

/** The issue's target for pgroute's RSS with 10,000 idle clients (MB = 10^6 bytes). */
const RSS_TARGET_MB = 250;
const MB = 1e6;
const REEXEC_ENV = "PGROUTE_BENCH_ULIMIT_RAISED";

interface Options {
  clients: number;
  concurrency: number;
  pool: number;
  workers: number;
  idle: number;
  warmup: number;
  churn: number;
  json: string | undefined;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      clients: { type: "string" },
      concurrency: { type: "string" },
      pool: { type: "string" },
      workers: { type: "string" },
      idle: { type: "string" },
      warmup: { type: "string" },
      churn: { type: "string" },
      json: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return undefined;
  const int = intOption;
  return {
    clients: int("clients", values.clients, 10_000, 1),
    concurrency: int("concurrency", values.concurrency, 200, 1),
    pool: int("pool", values.pool, 20, 1),
    workers: int("workers", values.workers, 1, 1),
    idle: int("idle", values.idle, 10, 0),
    warmup: int("warmup", values.warmup, 200, 0),
    churn: int("churn", values.churn, 0, 0),
    json: values.json,
  };
}

/** File descriptors a process needs: the client sockets plus room for everything else. */
const fdsNeeded = (clients: number) => clients + 1000;

/**
 * Re-runs this script under `ulimit -n 65536` (or the hard limit, if that is lower and we may not raise it)
 * when the soft open-files limit is too low; returns its exit code, or undefined if no re-run is needed.
 */
async function reexecWithMoreFiles(clients: number): Promise<number | undefined> {
  const lim = openFilesLimit();
  if (!lim || lim.soft >= fdsNeeded(clients)) return undefined;
  if (process.env[REEXEC_ENV]) {
    err(`the open-files limit is ${lim.soft} (hard ${lim.hard}) even after 'ulimit -n 65536'; ${fdsNeeded(clients)} are needed`);
    return 2;
  }
  err(`open-files limit ${lim.soft} < ${fdsNeeded(clients)}: re-running under 'ulimit -n 65536'…`);
  const script = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"';
  const proc = Bun.spawn(["bash", "-c", script, process.execPath, import.meta.path, ...process.argv.slice(2)], {
    stdio: ["inherit", "inherit", "inherit"],
    env: { ...process.env, [REEXEC_ENV]: "1" },
  });
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => {
      try {
        proc.kill(sig);
      } catch {
        // already gone
      }
    });
  }
  return await proc.exited;
}

/** One load-generator process and its IPC requests (one at a time, answered in order). */
class LoadWorker {
  readonly proc: Subprocess;
  private waiting: { type: WorkerReply["type"]; resolve: (r: WorkerReply) => void; reject: (e: Error) => void } | null = null;
  private readyP: Promise<WorkerReply & { type: "ready" }>;
  /** Latest progress report (clients logged in so far in the current `open`). */
  progress = { opened: 0, failed: 0 };

  constructor(readonly index: number) {
    let resolveReady!: (r: WorkerReply & { type: "ready" }) => void;
    this.readyP = new Promise((r) => (resolveReady = r));
    this.proc = Bun.spawn([process.execPath, "bench/lib/idle-worker.ts"], {
      cwd: ROOT,
      stdio: ["ignore", "inherit", "inherit"],
      serialization: "json",
      env: clientEnv(),
      ipc: (msg) => {
        const m = msg as WorkerReply;
        if (m.type === "ready") return resolveReady(m);
        if (m.type === "progress") {
          this.progress = { opened: m.opened, failed: m.failed };
          return;
        }
        const w = this.waiting;
        this.waiting = null;
        if (!w) return;
        if (m.type === "error") w.reject(new Error(`load generator ${this.index}: ${m.message}`));
        else if (m.type !== w.type) w.reject(new Error(`load generator ${this.index}: expected ${w.type}, got ${m.type}`));
        else w.resolve(m);
      },
    });
    void this.proc.exited.then((code) => {
      const w = this.waiting;
      this.waiting = null;
      w?.reject(new Error(`load generator ${this.index} (pid ${this.proc.pid}) exited with ${code}`));
    });
  }

  ready(): Promise<WorkerReply & { type: "ready" }> {
    return Promise.race([
      this.readyP,
      sleep(30_000).then(() => {
        throw new Error(`load generator ${this.index} did not start within 30 s`);
      }),
    ]);
  }

  request<T extends WorkerReply["type"]>(cmd: WorkerCommand, type: T): Promise<Extract<WorkerReply, { type: T }>> {
    if (this.waiting) throw new Error("one request at a time");
    return new Promise((resolve, reject) => {
      this.waiting = { type, resolve: resolve as (r: WorkerReply) => void, reject };
      this.proc.send(cmd);
    });
  }

  stop(): Promise<void> {
    return stopChild(this.proc, 3000);
  }
}

const mb = (bytes: number) => `${fmt(bytes / MB, 1)} MB`;

/** Client backends on the primary other than the one asking, by state: what pgroute's pool holds. */
async function serverConnections(direct: Parameters<typeof psqlValue>[0]): Promise<{ total: number; byState: string }> {
  const byState = await psqlValue(
    direct,
    `SELECT coalesce(string_agg(state || ' ' || n, ', ' ORDER BY state), '') FROM (` +
      `SELECT coalesce(state, '?') AS state, count(*) AS n FROM pg_stat_activity ` +
      `WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1) s`,
  );
  const total = byState === "" ? 0 : byState.split(", ").reduce((s, part) => s + Number(part.split(" ").at(-1)), 0);
  return { total, byState: byState || "none" };
}

async function main(): Promise<number> {
  const o = parseCommandLine(USAGE, parseOptions);
  if (typeof o === "number") return o;
  const reexec = await reexecWithMoreFiles(o.clients + o.warmup);
  if (reexec !== undefined) return reexec;

  const missing: string[] = [];
  if (!which("psql")) missing.push("psql not found: apt-get install postgresql-client");
  if (process.platform !== "linux") missing.push("this benchmark reads /proc and needs Linux");
  if (missing.length > 0) {
    for (const m of missing) err(m);
    return 2;
  }
  guard();

  const startedAt = new Date();
  const mach = machine();
  const loadStart = loadavg();
  const git = gitState(ROOT);
  const selfLimit = openFilesLimit();

  out(`pgroute idle-clients benchmark — ${startedAt.toISOString()}`);
  err("starting PostgreSQL (devcluster, no replicas)…");
  const { up, direct, version: pgVersion, pmPid } = await startBenchCluster({});
  out(machineLine(mach));
  out(`versions: Bun ${bunVersion()}, PostgreSQL ${pgVersion}`);
  out(`pgroute : ${git.text}`);

  // ---- pgroute ----
  const port = await freePort();
  const maxClients = Math.max(10_000, o.clients + o.warmup + 100);
  err(`starting pgroute on 127.0.0.1:${port} (transaction mode, pool ${o.pool})…`);
  const pgroute: ProxyProcess = await startPgroute(port, up, o.pool, { mode: "transaction", maxClients });
  addDiagnostic("pgroute log", pgroute.logFile);
  const endpoint = { ...up, host: pgroute.host, port: pgroute.port };
  const pgrouteLimit = openFilesLimit(pgroute.pid);
  if (pgrouteLimit && pgrouteLimit.soft < fdsNeeded(o.clients)) {
    throw new Error(`pgroute's open-files limit is ${pgrouteLimit.soft}; ${fdsNeeded(o.clients)} are needed`);
  }
  if ((await psqlValue(endpoint, "SELECT 1")) !== "1") throw new Error("SELECT 1 through pgroute failed");

  // ---- load generators ----
  const workers = Array.from({ length: Math.min(o.workers, o.clients) }, (_, i) => new LoadWorker(i));
  onCleanup({
    name: "load generators",
    first: true,
    run: async () => {
      await Promise.all(workers.map((w) => w.stop()));
    },
    sync: () => {
      for (const w of workers) killNow(w.proc.pid);
    },
  });
  const readies = await Promise.all(workers.map((w) => w.ready()));
  const share = (total: number, i: number) => Math.floor(total / workers.length) + (i < total % workers.length ? 1 : 0);
  const perWorkerConcurrency = Math.max(1, Math.ceil(o.concurrency / workers.length));
  const openCmd = (count: number): WorkerCommand => ({
    cmd: "open",
    host: endpoint.host,
    port: endpoint.port,
    user: up.user,
    password: up.password,
    database: up.database,
    count,
    concurrency: perWorkerConcurrency,
    timeoutMs: 60_000,
  });

  out(
    `setup   : pgroute pid ${pgroute.pid} (bun src/cli/main.ts serve), [pool] mode = "transaction", size = ${o.pool}, ` +
      `[limits] max_client_connections = ${maxClients} (default 10000); users: ${up.user}, auth = "scram-sha-256" with the plaintext password`,
  );
  out(
    `clients : ${o.clients} raw-socket connections from ${workers.length} load-generator process(es) (pid ${readies.map((r) => r.pid).join(", ")}), ` +
      `each StartupMessage → SCRAM-SHA-256 → ReadyForQuery, ${o.concurrency} logins in flight at a time, then idle`,
  );
  out(
    `ulimit -n: this script ${selfLimit?.soft ?? "?"} (hard ${selfLimit?.hard ?? "?"}), pgroute ${pgrouteLimit?.soft ?? "?"}, ` +
      `load generator(s) ${readies.map((r) => r.fdLimit).join(", ")}${process.env[REEXEC_ENV] ? " (raised by re-running under ulimit -n 65536)" : ""}`,
  );
  out(`load avg: ${loadStart} (at start)`);
  out();

  const readings: { what: string; rssBytes: number; fds: number }[] = [];
  const reading = (what: string) => {
    const r = { what, rssBytes: memoryOf(pgroute.pid).rssBytes, fds: fdCount(pgroute.pid) };
    readings.push(r);
    out(`  ${what.padEnd(46)} RSS ${mb(r.rssBytes).padStart(9)}   open fds ${String(r.fds).padStart(6)}`);
    return r;
  };
  const openAll = async (total: number) => {
    const replies = await Promise.all(workers.map((w, i) => w.request(openCmd(share(total, i)), "opened")));
    return replies;
  };
  const closeAll = () => Promise.all(workers.map((w) => w.request({ cmd: "close", timeoutMs: 60_000 }, "closed")));
  /** Polls until pgroute's open descriptors drop to `fds` (+ slack), so the closed clients are really gone. */
  const waitForFds = async (fds: number, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && fdCount(pgroute.pid) > fds + 5) await sleep(200);
    return fdCount(pgroute.pid);
  };

  out("pgroute memory (VmRSS from /proc/<pid>/status; MB = 10^6 bytes):");
  await sleep(1000);
  const fresh = reading("just started (after one psql login)");

  // ---- warm-up: the pool fills, code paths are compiled ----
  let rest = fresh;
  if (o.warmup > 0) {
    const w = await openAll(o.warmup);
    const okW = w.reduce((s, r) => s + r.ok, 0);
    if (okW !== o.warmup) throw new Error(`warm-up: only ${okW} of ${o.warmup} logins succeeded: ${JSON.stringify(w.flatMap((r) => r.errors))}`);
    await closeAll();
    await waitForFds(fresh.fds + o.pool, 30_000);
    await sleep(2000);
    rest = reading(`at rest (after ${o.warmup} clients logged in and out)`);
  }

  // ---- the idle clients ----
  err(`opening ${o.clients} clients…`);
  const progressTimer = setInterval(() => {
    const opened = workers.reduce((s, w) => s + w.progress.opened, 0);
    const failed = workers.reduce((s, w) => s + w.progress.failed, 0);
    err(`  … ${opened} logged in${failed ? `, ${failed} failed` : ""}; pgroute RSS ${mb(memoryOf(pgroute.pid).rssBytes)}`);
  }, 2000);
  const opening = await measure({
    proxy: pgroute,
    ours: [pgroute],
    pmPid,
    run: () => openAll(o.clients),
    clientCpuS: (rs) => rs.reduce((s, r) => s + r.cpuS, 0),
    label: "the logins",
  }).finally(() => clearInterval(progressTimer));
  const opened = opening.result;
  const ok = opened.reduce((s, r) => s + r.ok, 0);
  const failed = opened.reduce((s, r) => s + r.failed, 0);
  const loginErrors = opened.flatMap((r) => r.errors);
  const worst = (k: keyof Percentiles) => Math.max(...opened.map((r) => r.loginMs[k]));
  const loggedIn = reading(`${ok} idle clients, just logged in`);
  const serversDuring = await serverConnections(direct);
  await sleep(o.idle * 1000);
  const idle = reading(`${ok} idle clients, after ${o.idle} s idle`);
  const peakDuring = memoryOf(pgroute.pid).hwmBytes;
  const serversIdle = await serverConnections(direct);
  const status = await Promise.all(workers.map((w) => w.request({ cmd: "status" }, "status")));
  const stillOpen = status.reduce((s, r) => s + r.open, 0);
  const generatorRss = status.reduce((s, r) => s + r.rssBytes, 0);

  // ---- they work ----
  const one = await workers[0]!.request(
    { cmd: "query", index: 0, sql: "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'" },
    "query",
  );
  const cpuQ0 = cpuSeconds(pgroute.pid);
  const all = await Promise.all(workers.map((w) => w.request({ cmd: "queryAll", sql: "SELECT 1", concurrency: perWorkerConcurrency }, "queryAll")));
  const cpuQ = cpuSeconds(pgroute.pid) - cpuQ0;
  const allOk = all.reduce((s, r) => s + r.ok, 0);
  const allFailed = all.reduce((s, r) => s + r.failed, 0);
  const allMs = Math.max(...all.map((r) => r.ms));
  reading(`after SELECT 1 through each of them`);
  const serversAfterQueries = await serverConnections(direct);

  // ---- close ----
  const closed = await closeAll();
  // The pool may have grown up to its size meanwhile: those server connections stay open.
  const fdsAfterClose = await waitForFds(rest.fds + o.pool, 60_000);
  const closedMs = Math.max(...closed.map((r) => r.ms));
  await sleep(3000);
  const afterClose = reading(`all closed (+3 s)`);
  // ---- churn: the same clients come and go again ----
  const churn: { cycle: number; ok: number; openRssBytes: number; closedRssBytes: number }[] = [];
  for (let cycle = 1; cycle <= o.churn; cycle++) {
    err(`churn cycle ${cycle}/${o.churn}: ${o.clients} logins, then closing them…`);
    const again = await openAll(o.clients);
    const openRss = memoryOf(pgroute.pid).rssBytes;
    await closeAll();
    await waitForFds(rest.fds + o.pool, 60_000);
    await sleep(3000);
    const r = reading(`churn cycle ${cycle}: ${again.reduce((n, x) => n + x.ok, 0)} logged in and out (+3 s)`);
    churn.push({ cycle, ok: again.reduce((n, x) => n + x.ok, 0), openRssBytes: openRss, closedRssBytes: r.rssBytes });
  }
  const peak = memoryOf(pgroute.pid).hwmBytes;
  out(`  peak (VmHWM)                                   RSS ${mb(peak).padStart(9)}`);
  const loadEnd = loadavg();

  // ---- report ----
  const perClient = (idle.rssBytes - rest.rssBytes) / Math.max(1, ok);
  const loginS = opening.wallS;
  out();
  out("summary:");
  out(
    table(
      [
        ["", "value"],
        ["pgroute RSS at rest", mb(rest.rssBytes)],
        [`pgroute RSS with ${ok} idle clients`, `${mb(idle.rssBytes)} (just logged in: ${mb(loggedIn.rssBytes)})`],
        ["growth per idle client", `${fmt(perClient / 1024, 1)} KiB (${fmt(perClient, 0)} bytes)`],
        ["pgroute RSS peak (VmHWM) while they were open", mb(peakDuring)],
        [
          `logins (${o.concurrency} in flight)`,
          `${ok} ok, ${failed} failed in ${fmt(loginS, 1)} s = ${fmt(ok / loginS, 0)} logins/s; ` +
            `login latency p50 ${fmt(Math.max(...opened.map((r) => r.loginMs.p50)), 1)} ms, p90 ${fmt(worst("p90"), 1)} ms, p99 ${fmt(worst("p99"), 1)} ms, max ${fmt(worst("max"), 1)} ms`,
        ],
        [
          "pgroute CPU for the logins",
          `${fmt(opening.proxyCpuS, 2)} s (${fmt(((opening.proxyCpuS ?? 0) / loginS) * 100, 0)}% of a core) = ${fmt(((opening.proxyCpuS ?? 0) / Math.max(1, ok)) * 1000, 3)} ms per login`,
        ],
        ["server connections meanwhile (pg_stat_activity)", `${serversDuring.total} just after the logins (${serversDuring.byState}); ${serversIdle.total} after ${o.idle} s idle (${serversIdle.byState})`],
        [`clients still open after ${o.idle} s idle`, `${stillOpen} of ${ok}`],
        [
          "query through client #1",
          one.ok ? `${fmt(one.ms, 1)} ms; PostgreSQL saw ${one.value} client backends (pgroute's pool)` : `FAILED: ${one.error}`,
        ],
        [
          "SELECT 1 through every idle client",
          `${allOk} ok, ${allFailed} failed in ${fmt(allMs / 1000, 2)} s (${o.concurrency} at a time); pgroute CPU ${fmt(cpuQ, 2)} s; ` +
            `server connections afterwards ${serversAfterQueries.total}`,
        ],
        ["closing them", `${closed.reduce((s, r) => s + r.closed, 0)} closed in ${fmt(closedMs / 1000, 2)} s; pgroute fds ${afterClose.fds} (at rest ${rest.fds}; ${fdsAfterClose} when the wait ended)`],
        ["pgroute RSS after they closed", mb(afterClose.rssBytes)],
        ...(churn.length > 0
          ? [
              [
                `RSS after ${churn.length} more cycle(s) of ${o.clients} logins and closes`,
                `${churn.map((c) => mb(c.closedRssBytes)).join(" → ")} with no clients (after the first close: ${mb(afterClose.rssBytes)}); ` +
                  `${fmt((churn.at(-1)!.closedRssBytes - afterClose.rssBytes) / churn.length / 1e6, 1)} MB per cycle`,
              ],
            ]
          : []),
        ["load generator RSS (not counted)", mb(generatorRss)],
        ["rest of machine during the logins", `${fmt(Math.max(0, opening.otherCores), 2)} cores of ${mach.nproc}`],
      ],
      [1],
    ),
  );
  const targets = [
    {
      target: `pgroute RSS with ${o.clients} idle clients ≤ ${RSS_TARGET_MB} MB (after ${o.idle} s idle)`,
      measured: mb(idle.rssBytes),
      met: ok === o.clients && idle.rssBytes <= RSS_TARGET_MB * MB,
    },
    {
      target: `… and right after the last login (login garbage not yet collected)`,
      measured: mb(loggedIn.rssBytes),
      met: ok === o.clients && loggedIn.rssBytes <= RSS_TARGET_MB * MB,
    },
    {
      target: `server connections ≤ pool size (${o.pool}) while the clients are idle`,
      measured: `${Math.max(serversDuring.total, serversIdle.total, serversAfterQueries.total)}`,
      met: Math.max(serversDuring.total, serversIdle.total, serversAfterQueries.total) <= o.pool,
    },
    {
      target: "every client logged in and still works",
      measured: `${ok}/${o.clients} logged in, ${stillOpen} still open, ${allOk} answered SELECT 1`,
      met: ok === o.clients && stillOpen === ok && allOk === ok,
    },
  ];
  out();
  out("targets:");
  out(table([["target", "measured", "met"], ...targets.map((t) => [t.target, t.measured, t.met ? "✓" : "✗"])], [1, 2]).replace(/^/gm, "  "));
  out();
  out(`load avg: ${loadStart} (start) → ${loadEnd} (end; the benchmark's own processes count too)`);

  const notes: string[] = [];
  if (loginErrors.length > 0) notes.push(`login errors: ${loginErrors.map(([m, n]) => `${n}× ${m}`).join("; ")}`);
  for (const r of all) if (r.errors.length > 0) notes.push(`SELECT 1 errors: ${r.errors.map(([m, n]) => `${n}× ${m}`).join("; ")}`);
  const lines = logProblems(pgroute);
  if (lines.length > 0) {
    notes.push(`pgroute logged ${lines.length} line(s) at warn or worse:`);
    notes.push(...lines.slice(0, 10).map((l) => `    ${l.slice(0, 200)}`));
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
      versions: { bun: bunVersion(), postgresql: pgVersion, pgroute: git.text },
      git,
      options: { ...o, json: undefined, maxClients },
      ulimit: { self: selfLimit, pgroute: pgrouteLimit, workers: readies.map((r) => r.fdLimit) },
      loadavg: { start: loadStart, end: loadEnd },
      readings,
      peakBytes: peak,
      peakWhileOpenBytes: peakDuring,
      perClientBytes: perClient,
      logins: { ok, failed, wallS: loginS, proxyCpuS: opening.proxyCpuS, otherCores: opening.otherCores, perWorker: opened },
      serverConnections: { afterLogins: serversDuring, afterIdle: serversIdle, afterQueries: serversAfterQueries },
      stillOpen,
      queryOne: one,
      queryAll: { ok: allOk, failed: allFailed, ms: allMs, proxyCpuS: cpuQ, perWorker: all },
      close: { perWorker: closed, fdsAfter: fdsAfterClose },
      generatorRssBytes: generatorRss,
      churn,
      targets,
      notes,
    };
    writeFileSync(o.json, `${JSON.stringify(doc, null, 2)}\n`);
    err(`wrote ${o.json}`);
  }
  for (const w of workers) w.proc.send({ cmd: "exit" } satisfies WorkerCommand);
  return 0;
}

await runMain(main);
