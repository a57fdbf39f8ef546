/**
 * Running PostgreSQL binaries. initdb, pg_ctl and postgres refuse to run as root, so when we are root every
 * command runs as the `postgres` system user via `runuser`, and the files it touches must belong to that user.
 */
import { chownSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { DevClusterError } from "./errors.ts";

/** Who runs the PostgreSQL binaries: ourselves, or (when we are root) the `postgres` system user. */
export interface RunAs {
  /** True when commands are wrapped in `runuser -u postgres --`. */
  readonly asPostgres: boolean;
  readonly uid: number;
  readonly gid: number;
}

/** The identity PostgreSQL binaries will run under on this machine. */
export function runAs(): RunAs {
  const uid = process.getuid?.() ?? -1;
  if (uid !== 0) return { asPostgres: false, uid, gid: process.getgid?.() ?? -1 };
  const user = postgresUser();
  if (!user) {
    throw new DevClusterError(
      "running as root, but there is no 'postgres' system user to run PostgreSQL as (initdb and postgres refuse " +
        "to run as root); create one (useradd --system postgres) or run as a normal user",
    );
  }
  return { asPostgres: true, ...user };
}

function postgresUser(): { uid: number; gid: number } | undefined {
  let passwd: string;
  try {
    passwd = readFileSync("/etc/passwd", "utf8");
  } catch {
    return undefined;
  }
  for (const line of passwd.split("\n")) {
    const [name, , uid, gid] = line.split(":");
    if (name === "postgres" && uid && gid) return { uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}

/** Give `path` to the user running PostgreSQL (a no-op unless we are root). */
export function handOver(path: string, who: RunAs): void {
  if (who.asPostgres) chownSync(path, who.uid, who.gid);
}

/** The argv that runs `bin/name args…` as the right user. */
export function commandLine(bin: string, name: string, args: readonly string[], who: RunAs): string[] {
  const exe = join(bin, name);
  return who.asPostgres ? ["runuser", "-u", "postgres", "--", exe, ...args] : [exe, ...args];
}

/** Options of one PostgreSQL command run. */
export interface RunOptions {
  /** Working directory; must be accessible to the postgres user (our cwd may not be). */
  cwd: string;
  env?: Record<string, string>;
  /** Kill the command after this long; pg_basebackup can otherwise wait forever on an unreachable primary. */
  timeoutMs?: number;
  /** Aborting kills the command at once; the run then rejects with the abort reason. */
  signal?: AbortSignal;
  /** Human name of the step for the error message, e.g. "initdb primary". */
  what: string;
}

/** Output of a successful command. */
export interface RunResult {
  stdout: string;
  stderr: string;
}

/** The environment PostgreSQL commands see: ours, minus libpq variables that would redirect them elsewhere. */
function childEnv(extra: Record<string, string> | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^PG(HOST|PORT|USER|PASSWORD|DATABASE|SERVICE|PASSFILE|DATA|OPTIONS)$/.test(k)) continue;
    env[k] = v;
  }
  // initdb picks the cluster locale from the environment; an unset or uninstalled locale would fail it.
  env.LC_ALL = "C";
  return { ...env, ...extra };
}

/** Run a PostgreSQL binary to completion. @throws DevClusterError with its exit code and output on failure. */
export async function runPg(
  bin: string,
  name: string,
  args: readonly string[],
  who: RunAs,
  opts: RunOptions,
): Promise<RunResult> {
  opts.signal?.throwIfAborted();
  const proc = Bun.spawn(commandLine(bin, name, args, who), {
    cwd: opts.cwd,
    env: childEnv(opts.env),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  // SIGTERM, not SIGKILL: runuser forwards SIGTERM to the command but cannot forward a SIGKILL. (pg_basebackup's
  // WAL-streaming child survives its parent; it exits when the primary is stopped, which failure cleanup does.)
  const kill = () => proc.kill("SIGTERM");
  let timedOut = false;
  const timer = opts.timeoutMs
    ? setTimeout(() => {
        timedOut = true;
        kill();
      }, opts.timeoutMs)
    : undefined;
  opts.signal?.addEventListener("abort", kill);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  opts.signal?.removeEventListener("abort", kill);
  opts.signal?.throwIfAborted();
  if (code !== 0 || timedOut) {
    const why = timedOut ? `timed out after ${opts.timeoutMs} ms` : `exit code ${code}`;
    // pg_basebackup warns about the Unix socket living in the data dir; that is by design and only noise here.
    const out = (stderr.trim() || stdout.trim())
      .split("\n")
      .filter((l) => !l.includes("skipping special file"))
      .slice(-15)
      .join("\n");
    throw new DevClusterError(`${opts.what} failed (${why})${out ? `:\n${out}` : ""}`);
  }
  return { stdout, stderr };
}

/** Synchronous `runPg` for exit handlers, where nothing asynchronous runs any more. Returns the exit code. */
export function runPgSync(bin: string, name: string, args: readonly string[], who: RunAs, cwd: string): number {
  const proc = Bun.spawnSync(commandLine(bin, name, args, who), {
    cwd,
    env: childEnv(undefined),
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
  });
  return proc.exitCode ?? 1;
}
