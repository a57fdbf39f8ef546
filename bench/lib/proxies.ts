/**
 * The proxies under test, each as a separate process whose CPU time we can read: pgroute (`bun src/cli/main.ts
 * serve`) and PgBouncer, both in the same pool mode in front of the same PostgreSQL primary, and the runtime's floor
 * beside them (a plain Bun TCP relay).
 */
import { chmodSync, chownSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { onCleanup, removeOnCleanup } from "./cleanup.ts";
import { childrenOf, commOf, isAlive, killNow, postgresUser, sleep, stopChild, tail, terminate, waitForPort } from "./proc.ts";

/** A proxy process under test. */
export interface ProxyProcess {
  name: string;
  host: string;
  port: number;
  /** The process whose CPU time is measured (pgbouncer itself, not the runuser wrapping it). */
  pid: number;
  /** Where its stdout and stderr go. */
  logFile: string;
  /** Whether it is still running (a crash mid-benchmark must not go unnoticed). */
  alive(): boolean;
  stop(): Promise<void>;
}

/** The PostgreSQL server both proxies point at, and the one login they accept and use. */
export interface Upstream {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /**
   * The role's SCRAM verifier as in pg_authid. When set, the proxies are given it instead of the plaintext
   * password: they verify clients against it and log in to PostgreSQL with the key the client's proof reveals
   * (SCRAM pass-through, both pgroute and PgBouncer support it).
   */
  scramVerifier?: string;
}

/** Repository root (bench/lib/ → ../..), where `src/cli/main.ts` lives. */
export const ROOT = resolve(import.meta.dir, "..", "..");

const READY_TIMEOUT_MS = 20_000;

export type PoolMode = "session" | "transaction";

/** How a proxy is set up beyond its port, upstream and pool size. */
export interface ProxyOptions {
  /** Pool mode (default "session"). */
  mode?: PoolMode;
  /** Client connection limit: pgroute's `limits.max_client_connections` (default: pgroute's own, 10000), PgBouncer's `max_client_conn` (default 200). */
  maxClients?: number;
  /** pgroute only: write a CPU profile (Bun's --cpu-prof, .cpuprofile and .md) into this directory when it stops. */
  profileDir?: string;
  /** pgroute only: streaming replicas of the upstream, added as `role = "replica"` nodes (reads go there). */
  replicas?: { name: string; host: string; port: number }[];
  /** pgroute only: extra environment variables (e.g. JavaScriptCore options for a profile). */
  env?: Record<string, string>;
  /** PgBouncer only: its name in reports, when more than one runs (default "pgbouncer"). */
  name?: string;
}

function tomlString(v: string): string {
  return JSON.stringify(v); // a JSON string is a valid TOML basic string
}

/** The pgroute.toml for the benchmark: one primary, one SCRAM user, `poolSize` server connections. */
export function pgrouteToml(listenPort: number, up: Upstream, poolSize: number, o: ProxyOptions = {}): string {
  const lines = [
    "# Written by pgroute's bench/ scripts",
    "[listen]",
    `host = ${tomlString("127.0.0.1")}`,
    `port = ${listenPort}`,
    "",
    "[[nodes]]",
    `name = ${tomlString("primary")}`,
    `host = ${tomlString(up.host)}`,
    `port = ${up.port}`,
    `role = ${tomlString("primary")}`,
    "",
    ...(o.replicas ?? []).flatMap((r) => [
      "[[nodes]]",
      `name = ${tomlString(r.name)}`,
      `host = ${tomlString(r.host)}`,
      `port = ${r.port}`,
      `role = ${tomlString("replica")}`,
      "",
    ]),
    "[[users]]",
    `name = ${tomlString(up.user)}`,
    up.scramVerifier ? `scram_verifier = ${tomlString(up.scramVerifier)}` : `password = ${tomlString(up.password)}`,
    `auth = ${tomlString("scram-sha-256")}`,
    "",
    "[pool]",
    `mode = ${tomlString(o.mode ?? "session")}`,
    `size = ${poolSize}`,
    "",
  ];
  if (o.maxClients !== undefined) lines.push("[limits]", `max_client_connections = ${o.maxClients}`, "");
  return lines.join("\n");
}

/** Start pgroute as `bun src/cli/main.ts serve -c <config> --log-level warn` and wait until it accepts connections. */
export async function startPgroute(listenPort: number, up: Upstream, poolSize: number, o: ProxyOptions = {}): Promise<ProxyProcess & { configPath: string }> {
  // Kept until the end: the report reads the log.
  const dir = removeOnCleanup("pgroute temp dir", mkdtempSync(join(tmpdir(), "pgroute-bench-")));
  const configPath = join(dir, "pgroute.toml");
  writeFileSync(configPath, pgrouteToml(listenPort, up, poolSize, o), { mode: 0o600 });
  const logFile = join(dir, "pgroute.log");
  const profile = o.profileDir ? ["--cpu-prof", `--cpu-prof-dir=${o.profileDir}`, "--cpu-prof-md"] : [];
  const proc = Bun.spawn([process.execPath, ...profile, "src/cli/main.ts", "serve", "-c", configPath, "--log-level", "warn"], {
    cwd: ROOT,
    env: o.env ? { ...process.env, ...o.env } : undefined,
    stdin: "ignore",
    stdout: Bun.file(logFile),
    stderr: Bun.file(logFile),
  });
  const stop = () => stopChild(proc, 10_000);
  const unregister = onCleanup({ name: "pgroute", run: stop, sync: () => killNow(proc.pid) });
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  try {
    await waitForPort("pgroute", "127.0.0.1", listenPort, alive, READY_TIMEOUT_MS);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- ${logFile} ---\n${tail(logFile)}`);
  }
  return {
    name: "pgroute",
    configPath,
    host: "127.0.0.1",
    port: listenPort,
    pid: proc.pid,
    logFile,
    alive,
    async stop() {
      await stop();
      unregister();
    },
  };
}

/** `PgBouncer 1.18.0`, or undefined if pgbouncer is not installed. */
export function pgbouncerVersion(): string | undefined {
  try {
    const r = Bun.spawnSync(["pgbouncer", "--version"], { stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) return undefined;
    return r.stdout.toString().split("\n")[0]?.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** pgbouncer.ini for the benchmark: `poolSize` server connections, SCRAM for clients, TCP on loopback only. */
export function pgbouncerIni(dir: string, listenPort: number, up: Upstream, poolSize: number, o: ProxyOptions = {}): string {
  return [
    "; Written by pgroute's bench/ scripts",
    "[databases]",
    `${up.database} = host=${up.host} port=${up.port} dbname=${up.database}`,
    "",
    "[pgbouncer]",
    "listen_addr = 127.0.0.1",
    `listen_port = ${listenPort}`,
    "unix_socket_dir =",
    "auth_type = scram-sha-256",
    `auth_file = ${join(dir, "userlist.txt")}`,
    `pool_mode = ${o.mode ?? "session"}`,
    `default_pool_size = ${poolSize}`,
    `max_client_conn = ${o.maxClients ?? 200}`,
    `pidfile = ${join(dir, "pgbouncer.pid")}`,
    "log_connections = 0",
    "log_disconnections = 0",
    "ignore_startup_parameters = extra_float_digits",
    "",
  ].join("\n");
}

/** The pgbouncer process under `wrapper` (runuser forks and waits), found by its command name. */
async function findPgbouncer(wrapper: Subprocess): Promise<number> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    for (const pid of childrenOf(wrapper.pid)) if (commOf(pid) === "pgbouncer") return pid;
    if (wrapper.exitCode !== null) break;
    await sleep(25);
  }
  throw new Error("could not find the pgbouncer process started by runuser");
}

/**
 * Start PgBouncer in the foreground (not -d, so its pid is known and it dies with us), as the postgres user
 * when we are root (it refuses to run as root), and wait until it accepts connections.
 */
export async function startPgbouncer(listenPort: number, up: Upstream, poolSize: number, o: ProxyOptions = {}): Promise<ProxyProcess> {
  const asRoot = process.getuid?.() === 0;
  const pgUser = asRoot ? postgresUser() : undefined;
  if (asRoot && !pgUser) throw new Error("running as root but there is no 'postgres' user to run pgbouncer as");
  const dir = removeOnCleanup("pgbouncer temp dir", mkdtempSync(join(tmpdir(), "pgbouncer-bench-")));
  chmodSync(dir, 0o700);
  const iniPath = join(dir, "pgbouncer.ini");
  const userlist = join(dir, "userlist.txt");
  const q = (s: string) => `"${s.replaceAll('"', '""')}"`;
  writeFileSync(iniPath, pgbouncerIni(dir, listenPort, up, poolSize, o), { mode: 0o600 });
  writeFileSync(userlist, `${q(up.user)} ${q(up.scramVerifier ?? up.password)}\n`, { mode: 0o600 });
  if (pgUser) for (const p of [dir, iniPath, userlist]) chownSync(p, pgUser.uid, pgUser.gid);

  const argv = pgUser ? ["runuser", "-u", "postgres", "--", "pgbouncer", iniPath] : ["pgbouncer", iniPath];
  return superviseProxy({
    name: o.name ?? "pgbouncer",
    argv,
    dir,
    listenPort,
    asPostgres: pgUser !== undefined,
    stopSignal: "SIGTERM", // immediate shutdown
    find: (proc) => findPgbouncer(proc),
    readyTimeoutMs: READY_TIMEOUT_MS,
  });
}

/**
 * The runtime's floor (bench/lib/relay.ts): a plain Bun TCP relay to the upstream, one server connection per
 * client, no protocol work. What a proxy on Bun pays per query before it does anything of its own.
 */
export async function startBunRelay(listenPort: number, up: Upstream): Promise<ProxyProcess> {
  const dir = removeOnCleanup("bun-relay temp dir", mkdtempSync(join(tmpdir(), "bun-relay-bench-")));
  return superviseProxy({
    name: "bun-relay",
    argv: [process.execPath, join(ROOT, "bench", "lib", "relay.ts"), String(listenPort), up.host, String(up.port)],
    dir,
    listenPort,
    asPostgres: false,
    stopSignal: "SIGTERM",
    find: async (proc) => proc.pid,
    readyTimeoutMs: READY_TIMEOUT_MS,
  });
}

/** How to run one proxy process for {@link superviseProxy}. */
export interface ProxySpec {
  name: string;
  argv: string[];
  /** Working directory; `<name>.log` in it takes stdout and stderr. */
  dir: string;
  listenPort: number;
  /** Started through runuser: the measured process is the proxy under it, found with `find`. */
  asPostgres: boolean;
  stopSignal: NodeJS.Signals;
  find: (wrapper: Subprocess) => Promise<number>;
  readyTimeoutMs: number;
}

/**
 * Starts a proxy process, registers its cleanup, waits until it accepts connections (its log's tail in the error
 * if it does not) and returns it with the pid whose CPU is measured.
 */
export async function superviseProxy(spec: ProxySpec): Promise<ProxyProcess> {
  const logFile = join(spec.dir, `${spec.name}.log`);
  const proc = Bun.spawn(spec.argv, { cwd: spec.dir, stdin: "ignore", stdout: Bun.file(logFile), stderr: Bun.file(logFile) });
  let pid: number | undefined = spec.asPostgres ? undefined : proc.pid;
  const stop = async () => {
    if (pid !== undefined) await terminate(pid, 5000, spec.stopSignal);
    await stopChild(proc, 5000);
  };
  const unregister = onCleanup({
    name: spec.name,
    run: stop,
    sync: () => {
      if (pid !== undefined) killNow(pid);
      killNow(proc.pid);
    },
  });
  try {
    pid ??= await spec.find(proc);
    const measured = pid;
    await waitForPort(spec.name, "127.0.0.1", spec.listenPort, () => isAlive(measured), spec.readyTimeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- ${logFile} ---\n${tail(logFile)}`);
  }
  const measured = pid;
  return {
    name: spec.name,
    host: "127.0.0.1",
    port: spec.listenPort,
    pid: measured,
    logFile,
    alive: () => isAlive(measured),
    async stop() {
      await stop();
      unregister();
    },
  };
}

/** Lines of a proxy's log that are worth showing. */
export function logProblems(p: ProxyProcess): string[] {
  let text = "";
  try {
    text = readFileSync(p.logFile, "utf8");
  } catch {
    return [];
  }
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  // PgBouncer and Pgpool-II log routine LOG lines; pgroute runs at --log-level warn, so all of its lines count.
  if (p.name !== "pgroute") return lines.filter((l) => /\b(WARNING|ERROR|FATAL|PANIC)\b/.test(l));
  return lines;
}
