/** Running pgbench (initialise, measure) and reading its summary. */
import type { Subprocess } from "bun";
import { clientEnv, terminate } from "./proc.ts";

/** Where and as whom pgbench connects. */
export interface Endpoint {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** What one `pgbench -S` run reported. */
export interface PgbenchResult {
  /** `tps = … (without initial connection time)`. */
  tps: number;
  /** `latency average = … ms`. */
  latencyMs: number;
  /** `number of transactions actually processed: N`. */
  transactions: number;
  /** `number of failed transactions: N` (0 if the line is missing). */
  failed: number;
  /** `initial connection time = … ms`, or with `-C` `average connection time = … ms`, if printed. */
  connectMs: number | undefined;
  /** True when the summary was missing (pgbench failed before printing it): the numbers are NaN/0 then. */
  noSummary?: boolean;
  /** pgbench's exit code: 0 fine, 2 some clients aborted. */
  exitCode: number;
  /** stderr lines that report a problem (aborted clients, connection errors). */
  problems: string[];
  /** CPU seconds pgbench itself used (all its threads), from its rusage. */
  clientCpuS: number | undefined;
}

/** What a benchmark's run record keeps of a pgbench run. */
export type PgbenchFigures = Pick<PgbenchResult, "tps" | "latencyMs" | "transactions" | "failed" | "connectMs" | "exitCode">;

export function pgbenchFigures(r: PgbenchResult): PgbenchFigures {
  return { tps: r.tps, latencyMs: r.latencyMs, transactions: r.transactions, failed: r.failed, connectMs: r.connectMs, exitCode: r.exitCode };
}

/** The pgbench that is running right now, so an interrupt can stop it. */
let current: Subprocess | undefined;

/** Stop a pgbench run in progress (for cleanup). */
export async function stopPgbench(): Promise<void> {
  const proc = current;
  if (proc && proc.exitCode === null) await terminate(proc.pid, 2000, "SIGINT");
}

export function stopPgbenchSync(): void {
  const proc = current;
  if (proc && proc.exitCode === null) {
    try {
      process.kill(proc.pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

function connArgs(ep: Endpoint): string[] {
  return ["-h", ep.host, "-p", String(ep.port), "-U", ep.user];
}

async function run(
  argv: string[],
  ep: Endpoint,
  timeoutMs: number,
): Promise<{ code: number; stdout: string; stderr: string; timedOut: boolean; cpuS: number | undefined }> {
  const proc = Bun.spawn(argv, {
    env: clientEnv({ PGPASSWORD: ep.password, PGCONNECT_TIMEOUT: "10" }),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  current = proc;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void terminate(proc.pid, 2000, "SIGINT");
  }, timeoutMs);
  try {
    const [stdout, stderr, code] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    const cpu = proc.resourceUsage()?.cpuTime;
    return { code, stdout, stderr, timedOut, cpuS: cpu ? Number(cpu.user + cpu.system) / 1e6 : undefined };
  } finally {
    clearTimeout(timer);
    current = undefined;
  }
}

/** `pgbench -i -s <scale>` (quiet), which also vacuums and analyses the tables. */
export async function initPgbench(ep: Endpoint, scale: number): Promise<void> {
  const argv = ["pgbench", "-i", "-q", "-s", String(scale), ...connArgs(ep), ep.database];
  const r = await run(argv, ep, 600_000);
  if (r.code !== 0 || r.timedOut) {
    throw new Error(`pgbench -i failed (exit ${r.code}${r.timedOut ? ", timed out" : ""}):\n${(r.stderr || r.stdout).trim()}`);
  }
}

/** Options of one measured run. */
export interface RunOptions {
  clients: number;
  threads: number;
  durationS: number;
  /** `-M`: simple (the default), extended or prepared. */
  protocol?: "simple" | "extended" | "prepared";
  /** `-C`: a new connection for every transaction. */
  reconnect?: boolean;
  /**
   * Return a failed run (no summary printed) as a result with `noSummary` set instead of throwing: for targets
   * expected to fail some workloads.
   */
  tolerant?: boolean;
}

/** The argv of a measured run (shown in the report as well). */
export function pgbenchArgv(ep: Endpoint, o: RunOptions): string[] {
  return [
    "pgbench",
    "-S", // built-in select-only script: one SELECT per transaction
    "-M", o.protocol ?? "simple",
    "-n", // no vacuum before the run (pgbench -i did it; VACUUM through a proxy would only add noise)
    ...(o.reconnect ? ["-C"] : []),
    "-c", String(o.clients),
    "-j", String(o.threads),
    "-T", String(o.durationS),
    ...connArgs(ep),
    ep.database,
  ];
}

function num(text: string, re: RegExp): number | undefined {
  const m = re.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * Read pgbench's summary; throws (with its output) if the essential lines are missing, unless `tolerant`.
 * `tps = … (without initial connection time)` normally; with -C `tps = … (including reconnection times)`.
 */
export function parsePgbench(stdout: string, stderr: string, exitCode: number, clientCpuS?: number, tolerant = false): PgbenchResult {
  const tps = num(stdout, /^tps = ([\d.]+) \((?:without initial connection time|including reconnection times)\)/m);
  const latencyMs = num(stdout, /^latency average = ([\d.]+) ms/m);
  const transactions = num(stdout, /^number of transactions actually processed: (\d+)/m);
  const noSummary = tps === undefined || latencyMs === undefined || transactions === undefined;
  if (noSummary && !tolerant) {
    throw new Error(`could not read pgbench's summary (exit ${exitCode}):\n${(stdout + stderr).trim().slice(-2000)}`);
  }
  const problems = stderr
    .split("\n")
    .map((l) => l.trim().replace(/^pgbench: /, ""))
    .filter((l) => l !== "");
  const r: PgbenchResult = {
    tps: tps ?? Number.NaN,
    latencyMs: latencyMs ?? Number.NaN,
    transactions: transactions ?? 0,
    failed: num(stdout, /^number of failed transactions: (\d+)/m) ?? 0,
    connectMs: num(stdout, /^(?:initial|average) connection time = ([\d.]+) ms/m),
    exitCode,
    problems,
    clientCpuS,
  };
  if (noSummary) {
    r.noSummary = true;
    if (exitCode === 0) r.exitCode = -1; // no summary is a failure even if pgbench said otherwise
    if (problems.length === 0) problems.push(`no summary in pgbench's output: ${stdout.trim().split("\n").at(-1) ?? ""}`);
  }
  return r;
}

/**
 * The line that best says why a run failed: the first error (pgbench prints "client N script 0 aborted in
 * command 1 query 0: ERROR:  …" for an aborted client), with runs of spaces collapsed; undefined if none.
 */
export function firstError(r: PgbenchResult): string | undefined {
  const lines = r.problems;
  const line = lines.find((l) => /\b(ERROR|FATAL|PANIC)\b|error:|aborted/i.test(l)) ?? lines[0];
  return line?.replace(/\s+/g, " ").trim();
}

/** One measured `pgbench -S` run against `ep`. */
export async function runPgbench(ep: Endpoint, o: RunOptions): Promise<PgbenchResult> {
  const r = await run(pgbenchArgv(ep, o), ep, (o.durationS + 60) * 1000);
  if (r.timedOut) throw new Error(`pgbench against ${ep.host}:${ep.port} did not finish within ${o.durationS + 60} s`);
  if (r.code === 130 || r.code === 143) throw new Error(`pgbench was interrupted (exit ${r.code})`);
  return parsePgbench(r.stdout, r.stderr, r.code, r.cpuS, o.tolerant);
}

/** `psql -c <sql>` through `ep`, returning its trimmed unaligned output (a connectivity and auth check). */
export async function psqlValue(ep: Endpoint, sql: string): Promise<string> {
  const argv = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", ...connArgs(ep), "-d", ep.database, "-c", sql];
  const r = await run(argv, ep, 30_000);
  if (r.code !== 0 || r.timedOut) {
    throw new Error(`psql via ${ep.host}:${ep.port} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
  }
  return r.stdout.trim();
}

