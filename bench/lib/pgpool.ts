/**
 * Pgpool-II (the Debian package, `apt-get install pgpool2`) as a benchmark target: streaming-replication mode in
 * front of a primary and its replicas, load balancing reads per statement to the replicas only (the primary's
 * weight is 0, as pgroute sends reads to replicas), SCRAM for clients and servers. Started in the foreground as
 * the postgres user, like PgBouncer.
 */
import { chmodSync, chownSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { removeOnCleanup } from "./cleanup.ts";
import { freePort } from "../../src/devcluster/index.ts";
import { childrenOf, commOf, postgresUser, sleep } from "./proc.ts";
import { superviseProxy, type ProxyProcess } from "./proxies.ts";

export interface PgpoolNode {
  host: string;
  port: number;
  role: "primary" | "replica";
  name: string;
}

/** `pgpool-II version 4.3.5 (tamahomeboshi)`, or undefined if pgpool is not installed. */
export function pgpoolVersion(): string | undefined {
  try {
    const r = Bun.spawnSync(["pgpool", "--version"], { stdout: "pipe", stderr: "pipe" });
    const text = `${r.stdout.toString()}${r.stderr.toString()}`.trim();
    return r.exitCode === 0 && text ? text.split("\n")[0] : undefined;
  } catch {
    return undefined;
  }
}

/** pgpool.conf for the benchmark: every node, reads balanced per statement over the replicas, no health checks. */
export function pgpoolConf(dir: string, listenPort: number, pcpPort: number, nodes: readonly PgpoolNode[], user: string, children: number): string {
  const q = (v: string | number) => (typeof v === "number" ? String(v) : `'${v.replaceAll("'", "''")}'`);
  const lines: [string, string | number][] = [
    ["backend_clustering_mode", "streaming_replication"],
    ["listen_addresses", "127.0.0.1"],
    ["port", listenPort],
    ["unix_socket_directories", dir],
    ["pcp_listen_addresses", ""],
    ["pcp_port", pcpPort],
    ["pcp_socket_dir", dir],
    ["enable_pool_hba", "on"],
    ["pool_passwd", join(dir, "pool_passwd")],
    ["num_init_children", children],
    ["max_pool", 1],
    ["child_life_time", 0],
    ["child_max_connections", 0],
    ["connection_life_time", 0],
    ["client_idle_limit", 0],
    ["load_balance_mode", "on"],
    ["statement_level_load_balance", "on"],
    ["sr_check_period", 0],
    ["sr_check_user", user],
    ["health_check_period", 0],
    ["failover_on_backend_error", "off"],
    ["use_watchdog", "off"],
    ["memory_cache_enabled", "off"],
    ["ssl", "off"],
    ["log_destination", "stderr"],
    ["log_min_messages", "warning"],
    ["logdir", dir],
    ["pid_file_name", join(dir, "pgpool.pid")],
  ];
  nodes.forEach((n, i) => {
    lines.push(
      [`backend_hostname${i}`, n.host],
      [`backend_port${i}`, n.port],
      [`backend_weight${i}`, n.role === "primary" ? 0 : 1],
      [`backend_flag${i}`, "DISALLOW_TO_FAILOVER"],
      [`backend_application_name${i}`, n.name],
    );
  });
  return `# Written by pgroute's bench/ scripts\n${lines.map(([k, v]) => `${k} = ${q(v)}`).join("\n")}\n`;
}

/** The pgpool parent process under `runuser` (it forks its children itself). */
async function findPgpool(wrapperPid: number, exited: () => boolean): Promise<number> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    for (const pid of childrenOf(wrapperPid)) if (commOf(pid) === "pgpool") return pid;
    if (exited()) break;
    await sleep(25);
  }
  throw new Error("could not find the pgpool process started by runuser");
}

/**
 * Starts Pgpool-II on `listenPort` in front of `nodes`, with `children` client slots (num_init_children: one
 * process per concurrent client), and waits until it accepts connections. The measured pid is pgpool's parent;
 * its children are found through the process tree.
 */
export async function startPgpool(listenPort: number, nodes: readonly PgpoolNode[], user: string, password: string, children: number): Promise<ProxyProcess> {
  const asRoot = process.getuid?.() === 0;
  const pgUser = asRoot ? postgresUser() : undefined;
  if (asRoot && !pgUser) throw new Error("running as root but there is no 'postgres' user to run pgpool as");
  const dir = removeOnCleanup("pgpool temp dir", mkdtempSync(join(tmpdir(), "pgpool-bench-")));
  chmodSync(dir, 0o700);
  const conf = join(dir, "pgpool.conf");
  const files: [string, string][] = [
    [conf, pgpoolConf(dir, listenPort, await freePort(), nodes, user, children)],
    [join(dir, "pool_hba.conf"), "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"],
    // Pgpool 4.x reads a plaintext password from pool_passwd when it is prefixed with TEXT.
    [join(dir, "pool_passwd"), `${user}:TEXT${password}\n`],
    [join(dir, "pcp.conf"), ""],
  ];
  for (const [path, text] of files) writeFileSync(path, text, { mode: 0o600 });
  if (pgUser) for (const p of [dir, ...files.map(([f]) => f)]) chownSync(p, pgUser.uid, pgUser.gid);

  const cmd = ["pgpool", "-n", "-D", "-f", conf, "-F", join(dir, "pcp.conf"), "-a", join(dir, "pool_hba.conf")];
  return superviseProxy({
    name: "pgpool",
    argv: pgUser ? ["runuser", "-u", "postgres", "--", ...cmd] : cmd,
    dir,
    listenPort,
    asPostgres: pgUser !== undefined,
    stopSignal: "SIGINT", // pgpool's fast shutdown (its children end their sessions)
    find: (proc) => findPgpool(proc.pid, () => proc.exitCode !== null),
    readyTimeoutMs: 30_000,
  });
}
