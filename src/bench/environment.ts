/**
 * The cluster a benchmark runs against, and how to log in to it: a throwaway local one (`--local`, the dev cluster
 * with pg_stat_statements preloaded), the docker-compose example (`--compose`), the nodes of a pgroute config, or
 * none at all (only `--target` endpoints).
 */
import { configFrom } from "../config/load.ts";
import type { Config, NodeConfig, UserConfig } from "../config/types.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, guardCluster, startCluster } from "../devcluster/index.ts";
import { loadConfig } from "../config/load.ts";
import { connect, queryOne } from "./client.ts";
import { composeUp } from "./compose.ts";
import { BenchError } from "./errors.ts";
import type { ConnSpec } from "./protocol.ts";

/** A server the benchmark knows by name and role: for `--direct`, the data set and the per-node counters. */
export interface BenchNode extends ConnSpec {
  role: "primary" | "replica";
}

/** Who the benchmark logs in as: to pgroute (`user`/`password`) and to the servers themselves (`server*`). */
export interface Credentials {
  user: string;
  password?: string;
  serverUser: string;
  serverPassword?: string;
  database: string;
}

export type EnvironmentKind = "local" | "compose" | "config" | "none";

export interface Environment {
  kind: EnvironmentKind;
  /** One line for the report: where the nodes are. */
  description: string;
  nodes: BenchNode[];
  credentials: Credentials;
  /** A config for an in-process pgroute in front of these nodes (listen address still to be chosen), if any. */
  pgrouteConfig: Config | null;
  /** Where the config says pgroute listens (`--config` alone: a running pgroute there is used as is). */
  pgrouteListen: { host: string; port: number } | null;
  /** A pgroute the environment runs itself (the compose example's service). */
  pgrouteRunning: { host: string; port: number } | null;
  /** Stops what this environment started (the local cluster, the compose project). Idempotent. */
  stop(): Promise<void>;
}

/** What the command line asked for. */
export interface EnvironmentPlan {
  source: { kind: "local"; replicas: number } | { kind: "compose"; file: string } | { kind: "config" } | { kind: "none" };
  /** `--config FILE`, when given. */
  configPath?: string;
  user?: string;
  password?: string;
  database?: string;
  log: (line: string) => void;
  signal?: AbortSignal;
}

/** The database `--local` creates for the benchmark unless `--database` names another. */
export const LOCAL_DATABASE = "pgroute_bench";

/** The role a node reports, for `role = "auto"` nodes and compose services. */
async function probeRole(spec: ConnSpec): Promise<"primary" | "replica"> {
  const sql = connect(spec, "pgroute-bench-setup");
  try {
    const { standby } = await queryOne<{ standby: boolean }>(sql, "SELECT pg_is_in_recovery() AS standby");
    return standby ? "replica" : "primary";
  } catch (err) {
    throw new BenchError(`cannot reach node ${spec.name} (${spec.host}:${spec.port}): ${(err as Error).message}`);
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

/** The config user the benchmark logs in as: `--user`, else the first with a plaintext password, else the first. */
function pickUser(config: Config, name: string | undefined): UserConfig | undefined {
  if (name !== undefined) return config.users.find((u) => u.name === name);
  return config.users.find((u) => u.password !== undefined) ?? config.users[0];
}

function credentialsFrom(config: Config | null, plan: EnvironmentPlan, fallback?: { user: string; password: string }): Credentials {
  const u = config ? pickUser(config, plan.user) : undefined;
  if (config && plan.user !== undefined && !u && !fallback) throw new BenchError(`--user ${plan.user}: no such user in ${plan.configPath}`);
  const user = plan.user ?? u?.name ?? fallback?.user ?? process.env.PGUSER ?? "postgres";
  const password = plan.password ?? u?.password ?? fallback?.password ?? process.env.PGPASSWORD;
  return {
    user,
    password,
    serverUser: u?.server_user ?? user,
    serverPassword: plan.password ?? u?.server_password ?? u?.password ?? fallback?.password ?? process.env.PGPASSWORD,
    database: plan.database ?? "postgres",
  };
}

/** Node specs from config nodes, roles `auto` asked of the node itself. */
async function nodesFrom(nodes: readonly NodeConfig[], c: Credentials): Promise<BenchNode[]> {
  return Promise.all(
    nodes.map(async (n) => {
      const spec: ConnSpec = {
        name: n.name,
        host: n.host,
        port: n.port,
        user: c.serverUser,
        password: c.serverPassword,
        database: c.database,
        sslmode: n.sslmode,
        sslrootcert: n.sslrootcert,
      };
      return { ...spec, role: n.role === "auto" ? await probeRole(spec) : n.role };
    }),
  );
}

/** `config` with its nodes and users replaced by the environment's (for `--local`/`--compose` with `--config`). */
function overlay(config: Config, nodes: readonly BenchNode[], c: Credentials): Config {
  const fresh = configFrom({
    nodes: nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
    users: [{ name: c.user, password: c.password }],
  });
  return Object.freeze({ ...config, nodes: fresh.nodes, users: fresh.users });
}

function describeNodes(nodes: readonly BenchNode[]): string {
  const primary = nodes.filter((n) => n.role === "primary").map((n) => `${n.name} ${n.host}:${n.port}`);
  const replicas = nodes.filter((n) => n.role === "replica").map((n) => `${n.name} ${n.host}:${n.port}`);
  return [...primary, ...replicas].join(", ");
}

/** Brings up (or looks up) the cluster the plan names. */
export async function openEnvironment(plan: EnvironmentPlan): Promise<Environment> {
  const fileConfig = plan.configPath ? await loadConfig(plan.configPath) : null;
  switch (plan.source.kind) {
    case "local": {
      plan.log(`starting a local primary and ${plan.source.replicas} replica(s) with pg_stat_statements…`);
      // Our own directory, known before anything starts, so the guard can stop the cluster should we die mid-run.
      const dir = mkdtempSync(join(tmpdir(), "pgroute-bench-cluster-"));
      const guard = guardCluster(dir);
      const cluster = await startCluster({
        dir,
        replicas: plan.source.replicas,
        port: 0,
        proxyPort: await freePort(),
        settings: { shared_preload_libraries: "pg_stat_statements" },
        log: plan.log,
        signal: plan.signal,
      }).catch((err: unknown) => {
        guard.dismiss();
        rmSync(dir, { recursive: true, force: true });
        throw err;
      });
      const stop = async () => {
        await cluster.stop();
        guard.dismiss();
      };
      try {
        // A database of its own, so the per-node counts hold the benchmark's statements only (pgroute's monitor,
        // for one, probes the nodes in `postgres`).
        const database = plan.database ?? LOCAL_DATABASE;
        if (plan.database === undefined) {
          const admin = connect({ name: "primary", host: cluster.primary.host, port: cluster.primary.port, user: cluster.superuser, password: cluster.password, database: "postgres", sslmode: "disable" }, "pgroute-bench-setup");
          try {
            await admin.unsafe(`CREATE DATABASE ${LOCAL_DATABASE}`);
          } finally {
            await admin.end({ timeout: 5 }).catch(() => {});
          }
        }
        const credentials = credentialsFrom(null, { ...plan, user: plan.user ?? cluster.superuser, database }, { user: cluster.superuser, password: cluster.password });
        const nodes: BenchNode[] = cluster.nodes.map((n) => ({
          name: n.name,
          host: n.host,
          port: n.port,
          user: credentials.serverUser,
          password: credentials.serverPassword,
          database: credentials.database,
          sslmode: "disable",
          role: n.role,
        }));
        const base = fileConfig ?? (await loadConfig(cluster.configPath));
        return {
          kind: "local",
          description: `local dev cluster in ${cluster.dir}: ${describeNodes(nodes)}`,
          nodes,
          credentials,
          pgrouteConfig: overlay(base, nodes, credentials),
          pgrouteListen: null,
          pgrouteRunning: null,
          stop,
        };
      } catch (err) {
        await stop();
        throw err;
      }
    }
    case "compose": {
      const credentials = credentialsFrom(null, plan, { user: "postgres", password: "postgres" });
      const compose = await composeUp(plan.source.file, credentials, plan.log);
      try {
        const nodes: BenchNode[] = await Promise.all(compose.nodes.map(async (n) => ({ ...n, role: await probeRole(n) })));
        return {
          kind: "compose",
          description: `docker compose ${plan.source.file}: ${describeNodes(nodes)}`,
          nodes,
          credentials,
          pgrouteConfig: fileConfig ? overlay(fileConfig, nodes, credentials) : null,
          pgrouteListen: null,
          pgrouteRunning: fileConfig ? null : compose.pgroute,
          stop: () => compose.stop(),
        };
      } catch (err) {
        await compose.stop();
        throw err;
      }
    }
    case "config": {
      if (!fileConfig) throw new BenchError("no cluster: give --config FILE, --local or --compose FILE");
      const credentials = credentialsFrom(fileConfig, plan);
      const nodes = await nodesFrom(fileConfig.nodes, credentials);
      const host = ["0.0.0.0", "::", ""].includes(fileConfig.listen.host) ? "127.0.0.1" : fileConfig.listen.host;
      return {
        kind: "config",
        description: `nodes of ${plan.configPath}: ${describeNodes(nodes)}`,
        nodes,
        credentials,
        pgrouteConfig: fileConfig,
        pgrouteListen: fileConfig.listen.port === 0 ? null : { host, port: fileConfig.listen.port },
        pgrouteRunning: null,
        stop: async () => {},
      };
    }
    case "none":
      return {
        kind: "none",
        description: "no cluster known (only --target endpoints): no per-node counts, no --direct",
        nodes: [],
        credentials: credentialsFrom(null, plan),
        pgrouteConfig: null,
        pgrouteListen: null,
        pgrouteRunning: null,
        stop: async () => {},
      };
  }
}
