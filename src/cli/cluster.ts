/**
 * `pgroute cluster up|down|status`: a local PostgreSQL primary + streaming replicas to try pgroute against.
 * Parse → run (src/devcluster) → render; progress is a spinner on a TTY and plain lines otherwise.
 */
import { spinner } from "@clack/prompts";
import pc from "picocolors";
import { existsSync } from "node:fs";
import { isAbsolute, relative, resolve } from "node:path";
import {
  clusterStatus,
  DEFAULT_PROXY_PORT,
  DevClusterError,
  loadCluster,
  startCluster,
  stopCluster,
  type DevCluster,
  type NodeStatus,
} from "../devcluster/index.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";

const DEFAULT_DIR = "./pgroute-cluster";
const DEFAULT_PORT = 15432;

const help = `Usage: pgroute cluster <up|down|status> [options]

Run a local PostgreSQL primary with streaming replicas (needs the PostgreSQL server binaries:
initdb, pg_ctl, postgres, pg_basebackup; set PGROUTE_PG_BIN to their directory if they are not found).

Commands:
  up       create and start the cluster, write <dir>/pgroute.toml
  down     stop the cluster and remove <dir>
  status   show each node as up or down (exit code 1 if any node is down)

Options:
  -d, --dir <path>        cluster directory (default ${DEFAULT_DIR})
  -r, --replicas <n>      up: number of replicas (default 2)
  -p, --port <port>       up: the primary's port; replicas take the next ones (default ${DEFAULT_PORT}; 0 = any free)
      --proxy-port <port> up: pgroute's listen port written into pgroute.toml (default ${DEFAULT_PROXY_PORT})
      --password <pw>     up: the postgres superuser's password (default postgres)
      --json              up, status: print JSON instead of a table
  -h, --help              show this help

Examples:
  pgroute cluster up --replicas 2
  pgroute serve -c ${DEFAULT_DIR}/pgroute.toml
  pgroute cluster down`;

const dirFlag = { dir: { type: "string", short: "d" } } as const;
const jsonFlag = { json: { type: "boolean" } } as const;

function intFlag(name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got "${value}"`);
  }
  return Number(value);
}

/** A path as the user would type it: relative to the cwd when inside it, else absolute. */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === "" ? "." : rel.startsWith("..") || isAbsolute(rel) ? path : `./${rel}`;
}

/** Progress reporting: a spinner on a TTY, one plain line per step otherwise (to stderr under --json). */
function progress(json: boolean) {
  if (process.stdout.isTTY && !json) {
    const s = spinner();
    s.start("Starting the dev cluster");
    return { line: (l: string) => s.message(l.replace(/…$/, "")), done: (m: string) => s.stop(m), fail: (m: string) => s.error(m) };
  }
  const out = json ? console.error : console.log;
  return { line: out, done: () => {}, fail: () => {} };
}

function nodeTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => `  ${r.map((c, i) => (i < r.length - 1 ? c.padEnd(widths[i]!) : c)).join("  ")}`).join("\n");
}

function renderUp(cluster: DevCluster, dirFlagGiven: boolean, seconds: string): string {
  const config = shown(cluster.configPath);
  const rows = [["NAME", "ROLE", "ADDRESS"], ...cluster.nodes.map((n) => [n.name, n.role, `${n.host}:${n.port}`])];
  return [
    `${pc.green("✔")} Dev cluster up in ${seconds}s: ${shown(cluster.dir)}`,
    "",
    nodeTable(rows),
    "",
    `  superuser  ${cluster.superuser} / ${cluster.password}`,
    `  config     ${config}`,
    "",
    `Next: ${pc.bold(`pgroute serve -c ${config}`)}`,
    `Stop: pgroute cluster down${dirFlagGiven ? ` --dir ${shown(cluster.dir)}` : ""}`,
  ].join("\n");
}

function clusterJson(cluster: DevCluster) {
  return {
    dir: cluster.dir,
    configPath: cluster.configPath,
    superuser: cluster.superuser,
    password: cluster.password,
    nodes: cluster.nodes.map((n) => ({ name: n.name, role: n.role, host: n.host, port: n.port, url: cluster.url(n) })),
  };
}

async function up(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    ...dirFlag,
    ...jsonFlag,
    replicas: { type: "string", short: "r" },
    port: { type: "string", short: "p" },
    "proxy-port": { type: "string" },
    password: { type: "string" },
  });
  const replicas = intFlag("replicas", values.replicas, 2, 0, 20);
  const port = intFlag("port", values.port, DEFAULT_PORT, 0, 65535);
  const proxyPort = intFlag("proxy-port", values["proxy-port"], DEFAULT_PROXY_PORT, 1, 65535);
  const dir = resolve(values.dir ?? DEFAULT_DIR);
  const json = values.json === true;

  // Ctrl-C mid-start: abort, let startCluster stop what it started and remove the directory, exit 130.
  // `on`, not `once`: a second Ctrl-C during that cleanup must not kill us halfway and orphan a postmaster.
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const report = progress(json);
  const t0 = performance.now();
  try {
    const cluster = await startCluster({
      replicas,
      dir,
      port,
      proxyPort,
      password: values.password,
      log: report.line,
      signal: abort.signal,
    });
    const seconds = ((performance.now() - t0) / 1000).toFixed(1);
    report.done(`Dev cluster started in ${seconds}s`);
    console.log(json ? JSON.stringify(clusterJson(cluster), null, 2) : renderUp(cluster, values.dir !== undefined, seconds));
    return 0;
  } catch (err) {
    if (abort.signal.aborted) {
      report.fail("Interrupted");
      console.error(`pgroute cluster: interrupted; nothing left running and ${shown(dir)} cleaned up`);
      return 130;
    }
    report.fail("Could not start the dev cluster");
    throw err;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

async function down(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, dirFlag);
  const dir = resolve(values.dir ?? DEFAULT_DIR);
  if (!existsSync(dir)) {
    console.log(`No dev cluster in ${shown(dir)}; nothing to stop.`);
    return 0;
  }
  await stopCluster(dir);
  console.log(`${pc.green("✔")} Stopped the dev cluster and removed ${shown(dir)}`);
  return 0;
}

function stateWord(s: NodeStatus): string {
  if (!s.up) return pc.red("down");
  if (s.node.role === "replica" && s.streaming === false) return pc.yellow("up, not streaming");
  if (s.node.role === "replica" && s.streaming) return `${pc.green("up")}, streaming`;
  return pc.green("up");
}

async function status(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { ...dirFlag, ...jsonFlag });
  const dir = resolve(values.dir ?? DEFAULT_DIR);
  const cluster = loadCluster(dir);
  if (!cluster) {
    throw new DevClusterError(
      `no dev cluster in ${shown(dir)} (start one with \`pgroute cluster up${values.dir ? ` --dir ${shown(dir)}` : ""}\`)`,
    );
  }
  const statuses = await clusterStatus(cluster);
  if (values.json) {
    const nodes = statuses.map((s) => ({
      name: s.node.name,
      role: s.node.role,
      host: s.node.host,
      port: s.node.port,
      up: s.up,
      ...(s.streaming === undefined ? {} : { streaming: s.streaming }),
    }));
    console.log(JSON.stringify({ dir: cluster.dir, configPath: cluster.configPath, nodes }, null, 2));
  } else {
    const rows = [
      ["NAME", "ROLE", "ADDRESS", "STATE"],
      ...statuses.map((s) => [s.node.name, s.node.role, `${s.node.host}:${s.node.port}`, stateWord(s)]),
    ];
    console.log(`Dev cluster in ${shown(cluster.dir)} (config ${shown(cluster.configPath)})\n\n${nodeTable(rows)}`);
  }
  return statuses.every((s) => s.up) ? 0 : 1;
}

/** `pgroute cluster`: start, stop and inspect the local development cluster. */
export const cluster: Command = {
  name: "cluster",
  summary: "start, stop or inspect a local PostgreSQL primary + replicas for trying pgroute",
  help,
  async run(argv) {
    const [sub, ...rest] = argv;
    switch (sub) {
      case "up":
        return up(rest);
      case "down":
        return down(rest);
      case "status":
        return status(rest);
      case undefined:
        throw new UsageError("missing subcommand (up, down or status)");
      default:
        throw new UsageError(`unknown subcommand "${sub}" (expected up, down or status)`);
    }
  },
};
