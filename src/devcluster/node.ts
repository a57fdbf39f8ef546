/** Creating, starting and stopping one node of the dev cluster. */
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { hbaConf, NODE_CONF, nodeConf, sharedConf } from "./conf.ts";
import { DevClusterError } from "./errors.ts";
import { handOver, runPg, runPgSync, type RunAs } from "./exec.ts";
import type { DevNode } from "./types.ts";

/** What every node operation needs to know about the cluster around it. */
export interface NodeContext {
  dir: string;
  pgBin: string;
  who: RunAs;
  superuser: string;
  password: string;
  /** Aborts a running initdb, pg_basebackup or pg_ctl start (stops are never aborted). */
  signal?: AbortSignal;
}

/** Seconds pg_ctl waits for a start or stop before giving up. */
const PG_CTL_WAIT_S = 30;

/** `initdb` the primary and write its configuration (shared settings, its own port/socket, pg_hba.conf). */
export async function initPrimary(
  ctx: NodeContext,
  node: DevNode,
  settings: Readonly<Record<string, string | number>>,
  hba: readonly string[],
): Promise<void> {
  const pwfile = join(ctx.dir, ".pwfile");
  writeFileSync(pwfile, `${ctx.password}\n`, { mode: 0o600 });
  handOver(pwfile, ctx.who);
  try {
    await runPg(
      ctx.pgBin,
      "initdb",
      [
        "-D", node.dataDir,
        "-U", ctx.superuser,
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        `--pwfile=${pwfile}`,
        "--no-sync", // durability of a throwaway cluster is not worth seconds of fsync
        "--no-locale",
        "--encoding=UTF8",
      ],
      ctx.who,
      { cwd: ctx.dir, what: `initdb ${node.name}`, timeoutMs: 120_000, signal: ctx.signal },
    );
  } finally {
    rmSync(pwfile, { force: true });
  }
  // Written as the postgres user would: root-owned files in a data dir make pg_basebackup fail to read them.
  writeOwned(join(node.dataDir, "postgresql.conf"), sharedConf(settings), ctx.who, true);
  writeOwned(join(node.dataDir, NODE_CONF), nodeConf(node), ctx.who);
  writeOwned(join(node.dataDir, "pg_hba.conf"), hbaConf(hba), ctx.who);
}

/**
 * Clone the primary into `node` with pg_basebackup. `-R` writes standby.signal and a primary_conninfo that
 * carries the application_name (so pg_stat_replication names the replica); `-S` uses its slot (see
 * `createSlots`), which keeps the WAL the replica has not received yet on the primary.
 */
export async function cloneReplica(ctx: NodeContext, primary: DevNode, node: DevNode): Promise<void> {
  const conninfo = `host=${primary.host} port=${primary.port} user=${ctx.superuser} application_name=${node.name}`;
  await runPg(
    ctx.pgBin,
    "pg_basebackup",
    ["-d", conninfo, "-D", node.dataDir, "-R", "-X", "stream", "-c", "fast", "-S", node.name, "--no-sync"],
    ctx.who,
    {
      cwd: ctx.dir,
      env: { PGPASSWORD: ctx.password },
      what: `pg_basebackup ${node.name}`,
      timeoutMs: 120_000,
      signal: ctx.signal,
    },
  );
  writeOwned(join(node.dataDir, NODE_CONF), nodeConf(node), ctx.who);
}

/** `pg_ctl start -w`; returns the postmaster pid. @throws DevClusterError with the tail of the node's log. */
export async function startNode(ctx: NodeContext, node: DevNode): Promise<number | undefined> {
  try {
    await runPg(
      ctx.pgBin,
      "pg_ctl",
      ["start", "-w", "-t", String(PG_CTL_WAIT_S), "-D", node.dataDir, "-l", node.logFile],
      ctx.who,
      { cwd: ctx.dir, what: `starting ${node.name}`, timeoutMs: (PG_CTL_WAIT_S + 10) * 1000, signal: ctx.signal },
    );
  } catch (err) {
    if (ctx.signal?.aborted) throw err;
    throw new DevClusterError(`${(err as Error).message}\n${logTail(node)}`);
  }
  return postmasterPid(node.dataDir);
}

/** The pid in `dataDir/postmaster.pid`, if the file exists (a server is running or died uncleanly). */
export function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0] ?? "", 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether `pid` is a live process (EPERM means it exists but belongs to someone else). A zombie counts as dead:
 * in containers whose init does not reap, a stopped postmaster can linger as one.
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    // /proc/<pid>/stat is "pid (comm) S …"; comm may contain spaces, so read the state after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true; // no /proc (macOS): trust kill(0)
  }
}

/**
 * Stop a node: `pg_ctl stop -m fast`, then `-m immediate` if that does not finish, then SIGKILL as a last resort,
 * so no postmaster outlives its directory. A node that is not running is fine (idempotent).
 */
export async function stopNode(ctx: NodeContext, node: DevNode, knownPid?: number): Promise<void> {
  const pid = postmasterPid(node.dataDir) ?? knownPid;
  if (pid === undefined || !isAlive(pid)) return;
  for (const mode of ["fast", "immediate"]) {
    try {
      await runPg(ctx.pgBin, "pg_ctl", ["stop", "-w", "-t", "15", "-m", mode, "-D", node.dataDir], ctx.who, {
        cwd: ctx.dir,
        what: `stopping ${node.name}`,
        timeoutMs: 25_000,
      });
    } catch {
      // Fall through to the next, harsher mode; the liveness check below decides.
    }
    if (!isAlive(pid)) return;
  }
  killHard(pid);
}

/** `stopNode` for exit handlers: synchronous, immediate mode (the process is going away anyway). */
export function stopNodeSync(ctx: NodeContext, node: DevNode, knownPid?: number): void {
  const pid = postmasterPid(node.dataDir) ?? knownPid;
  if (pid === undefined || !isAlive(pid)) return;
  runPgSync(ctx.pgBin, "pg_ctl", ["stop", "-w", "-t", "10", "-m", "immediate", "-D", node.dataDir], ctx.who, ctx.dir);
  if (isAlive(pid)) killHard(pid);
}

function killHard(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

/** The last lines of a node's server log, for error messages. */
export function logTail(node: DevNode, lines = 20): string {
  if (!existsSync(node.logFile)) return `(no log at ${node.logFile})`;
  const text = readFileSync(node.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  return `--- last lines of ${node.logFile} ---\n${text}`;
}

function writeOwned(path: string, text: string, who: RunAs, append = false): void {
  if (append) appendFileSync(path, text);
  else writeFileSync(path, text, { mode: 0o600 });
  handOver(path, who);
}
