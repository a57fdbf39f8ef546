/** Bringing the whole dev cluster up and down: a primary plus N streaming replicas on loopback. */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { findPgBin } from "./bin.ts";
import { pgrouteToml } from "./conf.ts";
import { DevClusterError } from "./errors.ts";
import { handOver, runAs, type RunAs } from "./exec.ts";
import { cloneReplica, initPrimary, startNode, stopNode, stopNodeSync, type NodeContext } from "./node.ts";
import { allocatePorts, LOOPBACK } from "./ports.ts";
import { readState, STATE_FILE, writeState, type ClusterState } from "./state.ts";
import type { DevCluster, DevNode, StartOptions } from "./types.ts";
import { createSlots, waitForStreaming } from "./control.ts";

/** The superuser of every dev cluster (initdb -U). */
export const SUPERUSER = "postgres";
/** The superuser password unless `StartOptions.password` says otherwise. */
export const DEFAULT_PASSWORD = "postgres";
/** The pgroute listen port written into pgroute.toml unless `StartOptions.proxyPort` says otherwise. */
export const DEFAULT_PROXY_PORT = 6432;
/** The config file's name inside the cluster directory. */
export const CONFIG_FILE = "pgroute.toml";

/** Refuse a directory that already holds a cluster, or anything else we did not create. */
function checkDir(dir: string): boolean {
  if (!existsSync(dir)) return false;
  if (!statSync(dir).isDirectory()) throw new DevClusterError(`${dir} exists and is not a directory`);
  if (existsSync(join(dir, STATE_FILE))) {
    throw new DevClusterError(
      `${dir} already holds a pgroute dev cluster; run \`pgroute cluster down --dir ${dir}\` first`,
    );
  }
  if (readdirSync(dir).length > 0) {
    throw new DevClusterError(`${dir} exists and is not empty; choose another --dir or remove it`);
  }
  return true;
}

/** Create the cluster directory and make it the postgres user's (checking that user can reach it). */
async function prepareDir(requested: string | undefined, who: RunAs): Promise<{ dir: string; created: boolean }> {
  let dir: string;
  let created = true;
  if (requested === undefined) {
    dir = mkdtempSync(join(tmpdir(), "pgroute-cluster-"));
  } else {
    dir = requested;
    created = !existsSync(dir);
    mkdirSync(dir, { recursive: true });
  }
  chmodSync(dir, 0o700);
  handOver(dir, who);
  if (who.asPostgres) {
    const probe = Bun.spawnSync(["runuser", "-u", "postgres", "--", "test", "-w", dir, "-a", "-x", dir]);
    if (probe.exitCode !== 0) {
      removeDir(dir, created);
      throw new DevClusterError(
        `the postgres user cannot reach ${dir} (a parent directory is not traversable by it); choose a --dir under ${tmpdir()}`,
      );
    }
  }
  return { dir, created };
}

/** Remove what we made: the directory itself if we created it, else only its contents. */
function removeDir(dir: string, created: boolean): void {
  if (created) {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  for (const entry of readdirSync(dir)) rmSync(join(dir, entry), { recursive: true, force: true });
}

function planNodes(dir: string, ports: readonly number[]): DevNode[] {
  return ports.map((port, i) => {
    const name = i === 0 ? "primary" : `replica${i}`;
    return {
      name,
      role: i === 0 ? "primary" : "replica",
      host: LOOPBACK,
      port,
      dataDir: join(dir, name),
      logFile: join(dir, `${name}.log`),
    };
  });
}

/** A `DevCluster` handle over a recorded state (fresh or read back from cluster.json). */
export function clusterFromState(state: ClusterState): DevCluster {
  const nodes: DevNode[] = state.nodes.map(({ pid: _pid, ...node }) => node);
  const primary = nodes.find((n) => n.role === "primary");
  if (!primary) throw new DevClusterError(`${join(state.dir, STATE_FILE)} has no primary node`);
  return {
    dir: state.dir,
    nodes,
    primary,
    replicas: nodes.filter((n) => n.role === "replica"),
    superuser: state.superuser,
    password: state.password,
    configPath: state.configPath,
    url(node, opts = {}) {
      const user = encodeURIComponent(opts.user ?? state.superuser);
      const password = opts.password ?? (opts.user === undefined ? state.password : undefined);
      const auth = password === undefined ? user : `${user}:${encodeURIComponent(password)}`;
      return `postgres://${auth}@${node.host}:${node.port}/${encodeURIComponent(opts.database ?? "postgres")}`;
    },
    stop: () => stopCluster(state.dir),
  };
}

/** The cluster recorded in `dir/cluster.json`, or undefined if there is none. */
export function loadCluster(dir: string): DevCluster | undefined {
  const state = readState(resolve(dir));
  return state && clusterFromState(state);
}

/**
 * Start a primary and `replicas` streaming replicas, write `cluster.json` and `pgroute.toml` into the cluster
 * directory, and resolve once the primary accepts connections and every replica is streaming.
 *
 * Everything that can be checked up front (directory, binaries, ports) is checked before anything is written,
 * and a failure later stops whatever was started and removes what was created.
 *
 * @throws DevClusterError with a message meant for a human (and the tail of a node log where one helps).
 */
export async function startCluster(opts: StartOptions = {}): Promise<DevCluster> {
  const replicas = opts.replicas ?? 2;
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > 20) {
    throw new DevClusterError(`replicas must be an integer from 0 to 20, got ${replicas}`);
  }
  const password = opts.password ?? DEFAULT_PASSWORD;
  if (password === "" || /[\n\r]/.test(password)) {
    throw new DevClusterError("the superuser password must be non-empty and on one line");
  }
  const log = opts.log ?? (() => {});
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const requested = opts.dir === undefined ? undefined : resolve(opts.dir);
  if (requested !== undefined) checkDir(requested);
  const pgBin = findPgBin();
  const who = runAs();
  const ports = await allocatePorts(opts.port ?? 0, replicas + 1);
  opts.signal?.throwIfAborted();

  const { dir, created } = await prepareDir(requested, who);
  const nodes = planNodes(dir, ports);
  const state: ClusterState = {
    version: 1,
    dir,
    pgBin,
    asPostgres: who.asPostgres,
    superuser: SUPERUSER,
    password,
    proxyPort: opts.proxyPort ?? DEFAULT_PROXY_PORT,
    configPath: join(dir, CONFIG_FILE),
    createdAt: new Date().toISOString(),
    nodes: nodes.map((n) => ({ ...n })),
  };
  // Recorded before the first node starts, so `cluster down` can clean up even after a crash mid-start.
  writeState(state);
  const cluster = clusterFromState(state);
  const ctx: NodeContext = { dir, pgBin, who, superuser: SUPERUSER, password, signal: opts.signal };
  const started = (node: DevNode, pid: number | undefined) => {
    const entry = state.nodes.find((n) => n.name === node.name);
    if (entry) entry.pid = pid;
    writeState(state);
  };

  try {
    const [primary, ...standbys] = nodes as [DevNode, ...DevNode[]];
    log(`initdb ${primary.name}…`);
    await initPrimary(ctx, primary, opts.settings ?? {}, opts.hba ?? []);
    opts.signal?.throwIfAborted();
    log(`starting ${primary.name} on ${primary.host}:${primary.port}…`);
    started(primary, await startNode(ctx, primary));
    await createSlots(cluster.url(primary), standbys.map((n) => n.name));
    // Replicas are cloned and started side by side: each waits mostly on I/O and the primary's checkpoint.
    // allSettled, not all: cleanup must not begin while another replica is still being cloned or started.
    const results = await Promise.allSettled(
      standbys.map(async (node) => {
        opts.signal?.throwIfAborted();
        log(`pg_basebackup ${node.name}…`);
        await cloneReplica(ctx, primary, node);
        opts.signal?.throwIfAborted();
        log(`starting ${node.name} on ${node.host}:${node.port}…`);
        started(node, await startNode(ctx, node));
      }),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    if (standbys.length > 0) log("waiting for replicas to stream…");
    await waitForStreaming(cluster.url(primary), primary, standbys, timeoutMs, opts.signal);
    writeFileSync(state.configPath, pgrouteToml(nodes, state.proxyPort, SUPERUSER, password), { mode: 0o600 });
    return cluster;
  } catch (err) {
    await stopNodes(ctx, state);
    removeDir(dir, created);
    throw err;
  }
}

async function stopNodes(ctx: NodeContext, state: ClusterState): Promise<void> {
  const replicas = state.nodes.filter((n) => n.role !== "primary");
  // Replicas first: a primary stopping under them makes them log connection errors and retry.
  await Promise.all(replicas.map((n) => stopNode(ctx, n, n.pid)));
  await Promise.all(state.nodes.filter((n) => n.role === "primary").map((n) => stopNode(ctx, n, n.pid)));
}

function contextOf(state: ClusterState): NodeContext {
  const who: RunAs = state.asPostgres ? runAs() : { asPostgres: false, uid: -1, gid: -1 };
  return { dir: state.dir, pgBin: state.pgBin, who, superuser: state.superuser, password: state.password };
}

/** What to do with `dir`: nothing (gone), remove it (empty), or stop the cluster recorded in it. */
function stateToStop(dir: string): ClusterState | undefined {
  if (!existsSync(dir)) return undefined;
  const state = readState(dir);
  if (state) return state;
  if (readdirSync(dir).length === 0) {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  throw new DevClusterError(`${dir} has no ${STATE_FILE}, so it is not a pgroute dev cluster; not touching it`);
}

/**
 * Stop the cluster recorded in `dir/cluster.json` (fast shutdown, replicas first; harsher if that hangs) and
 * remove `dir`. Works from any process; a missing directory is not an error.
 *
 * @throws DevClusterError if `dir` exists but is not a dev cluster (it is left alone).
 */
export async function stopCluster(dir: string): Promise<void> {
  const abs = resolve(dir);
  const state = stateToStop(abs);
  if (!state) return;
  await stopNodes(contextOf(state), state);
  rmSync(abs, { recursive: true, force: true });
}

/**
 * `stopCluster` for `process.on("exit")` handlers: synchronous, immediate shutdown, never throws. (`bun test`
 * runs no exit handlers; tests use `guardCluster` instead.)
 */
export function stopClusterSync(dir: string): void {
  try {
    const abs = resolve(dir);
    const state = stateToStop(abs);
    if (!state) return;
    const ctx = contextOf(state);
    const ordered = [...state.nodes].sort((a, b) => Number(a.role === "primary") - Number(b.role === "primary"));
    for (const node of ordered) stopNodeSync(ctx, node, node.pid);
    rmSync(abs, { recursive: true, force: true });
  } catch {
    // An exit handler has nobody to report to.
  }
}
