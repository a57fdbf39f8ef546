/**
 * What a benchmark measures, side by side:
 *
 * - `direct`: the servers themselves, the way an application that splits reads itself would use them — every
 *   client has a connection to the primary and, for read-only scripts, one to a replica (client n → replica
 *   n mod R). Writes and transactions go to the primary; with no replica, everything does.
 * - `pgroute`: pgroute from a config, started in-process on a free loopback port — or the one already listening
 *   at the config's address, or the compose example's service.
 * - any other endpoint (`--target name=postgres://…`): PgBouncer, Pgpool-II, another pgroute; one URL.
 */
import { connect as netConnect } from "node:net";
import type { Config, ServerSslMode } from "../config/types.ts";
import { createLogger } from "../log.ts";
import { Proxy } from "../server.ts";
import type { BenchNode, Credentials, Environment } from "./environment.ts";
import { BenchError } from "./errors.ts";
import type { ClientRoute, ConnSpec } from "./protocol.ts";

export type TargetKind = "direct" | "pgroute" | "endpoint";

export interface Target {
  name: string;
  kind: TargetKind;
  /** One line for the report. */
  description: string;
  /** Where client `id` (1-based) connects. */
  route(id: number): ClientRoute;
  /** Stops what the target started (an in-process pgroute). */
  stop(): Promise<void>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$/;

/** `name=postgres://…` from `--target`. */
export function parseTargetFlag(flag: string): { name: string; url: string } {
  const eq = flag.indexOf("=");
  const name = eq > 0 ? flag.slice(0, eq) : "";
  const url = eq > 0 ? flag.slice(eq + 1) : "";
  if (!NAME.test(name) || !/^postgres(ql)?:\/\//.test(url)) {
    throw new BenchError(`--target: expected NAME=postgres://user:password@host:port/database, got "${flag}"`);
  }
  return { name, url };
}

const SSLMODES: readonly ServerSslMode[] = ["disable", "prefer", "require", "verify-ca", "verify-full"];

/** A libpq-style URL as a connection spec (sslmode from the query string; libpq's default `prefer`). */
export function specFromUrl(name: string, url: string): ConnSpec {
  let u: URL;
  try {
    u = new URL(url.replace(/^postgres(ql)?:/, "http:"));
  } catch {
    throw new BenchError(`--target ${name}: cannot parse "${url}"`);
  }
  const sslmode = (u.searchParams.get("sslmode") ?? "prefer") as ServerSslMode;
  if (!SSLMODES.includes(sslmode)) throw new BenchError(`--target ${name}: unknown sslmode "${sslmode}"`);
  return {
    name,
    host: decodeURIComponent(u.hostname).replace(/^\[(.*)\]$/, "$1") || "127.0.0.1",
    port: u.port ? Number(u.port) : 5432,
    user: decodeURIComponent(u.username) || process.env.PGUSER || "postgres",
    password: u.password ? decodeURIComponent(u.password) : process.env.PGPASSWORD,
    database: decodeURIComponent(u.pathname.replace(/^\//, "")) || decodeURIComponent(u.username) || "postgres",
    sslmode,
    sslrootcert: u.searchParams.get("sslrootcert") ?? undefined,
  };
}

/** A URL for the report, without the password. */
export function shownUrl(c: ConnSpec): string {
  return `postgres://${encodeURIComponent(c.user)}@${c.host.includes(":") ? `[${c.host}]` : c.host}:${c.port}/${encodeURIComponent(c.database)}`;
}

export function endpointTarget(name: string, url: string): Target {
  const spec = specFromUrl(name, url);
  return {
    name,
    kind: "endpoint",
    description: shownUrl(spec),
    route: (id) => ({ id, writer: spec, reader: null }),
    stop: async () => {},
  };
}

export function directTarget(nodes: readonly BenchNode[]): Target {
  const primary = nodes.find((n) => n.role === "primary");
  if (!primary) throw new BenchError("--direct needs a primary among the nodes, and none reports being one");
  const replicas = nodes.filter((n) => n.role === "replica");
  const description =
    replicas.length === 0
      ? `the primary ${primary.host}:${primary.port}`
      : `the primary ${primary.host}:${primary.port} for writes, ${replicas.map((r) => `${r.name} ${r.host}:${r.port}`).join(", ")} for read-only scripts (client n → replica n mod ${replicas.length})`;
  return {
    name: "direct",
    kind: "direct",
    description,
    route: (id) => ({ id, writer: primary, reader: replicas.length === 0 ? null : replicas[(id - 1) % replicas.length]! }),
    stop: async () => {},
  };
}

/** Whether something accepts TCP connections at host:port (a running pgroute). */
export function listening(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

function pgrouteSpec(host: string, port: number, c: Credentials, config: Config | null): ConnSpec {
  // pgroute with `tls.mode = "require"` refuses plaintext; otherwise skip the SSLRequest round trip at login.
  const sslmode: ServerSslMode = config?.tls.mode === "require" ? "require" : "disable";
  return { name: "pgroute", host, port, user: c.user, password: c.password, database: c.database, sslmode };
}

function proxyTarget(spec: ConnSpec, description: string, stop: () => Promise<void>): Target {
  return { name: "pgroute", kind: "pgroute", description, route: (id) => ({ id, writer: spec, reader: null }), stop };
}

/**
 * pgroute for this environment: the compose example's service; the one running at the config's listen address;
 * or a new in-process Proxy on a free loopback port (logging warnings and errors only).
 */
export async function pgrouteTarget(env: Environment): Promise<Target> {
  const c = env.credentials;
  if (env.pgrouteRunning) {
    const { host, port } = env.pgrouteRunning;
    return proxyTarget(pgrouteSpec(host, port, c, null), `pgroute running at ${host}:${port} (compose service)`, async () => {});
  }
  const config = env.pgrouteConfig;
  if (!config) throw new BenchError("no pgroute to measure: give --config FILE (or --local)");
  if (env.pgrouteListen && (await listening(env.pgrouteListen.host, env.pgrouteListen.port))) {
    const { host, port } = env.pgrouteListen;
    return proxyTarget(pgrouteSpec(host, port, c, config), `pgroute already running at ${host}:${port} (${config.pool.mode} pooling per the config)`, async () => {});
  }
  if (c.password === undefined && config.users.find((u) => u.name === c.user)?.auth !== "trust") {
    throw new BenchError(`pgroute user "${c.user}" has no plaintext password in the config: give it with --password`);
  }
  const level = config.log.level === "error" ? "error" : "warn";
  const inProcess = Object.freeze({ ...config, listen: Object.freeze({ host: "127.0.0.1", port: 0 }), log: Object.freeze({ ...config.log, level }) });
  const proxy = new Proxy({ config: inProcess, log: createLogger(inProcess.log) });
  let bound: { host: string; port: number };
  try {
    bound = await proxy.listen();
  } catch (err) {
    throw new BenchError(`cannot start pgroute in-process: ${(err as Error).message}`);
  }
  return proxyTarget(
    pgrouteSpec(bound.host, bound.port, c, config),
    `pgroute in-process on ${bound.host}:${bound.port} (${config.pool.mode} pooling, pool size ${config.pool.size}, ${config.nodes.length} node(s))`,
    () => proxy.stop(),
  );
}
