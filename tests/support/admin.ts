/**
 * The admin side in tests: pgroute in front of the whole test cluster with its admin listener on a free loopback
 * port, HTTP helpers that send the token, a reader of Prometheus text, and psql against the admin console.
 */
import { AdminServer } from "../../src/admin/http.ts";
import { AUTH_USERS, testCluster } from "./cluster.ts";
import { clusterNodes, startTestProxy, testUsers, type TestProxy } from "./proxy.ts";

export const ADMIN_TOKEN = "test-admin-token-0123456789";

/** An admin listener on a running test proxy, and HTTP helpers that send the token. */
export interface AdminClient {
  admin: AdminServer;
  /** http://127.0.0.1:port (no trailing slash). */
  base: string;
  get(path: string, token?: string | null): Promise<Response>;
  post(path: string, body?: unknown, token?: string | null): Promise<Response>;
  /** GET `path` as JSON (asserting 200). */
  json<T = any>(path: string): Promise<T>;
  metrics(): Promise<Metrics>;
}

export interface AdminProxy extends AdminClient {
  tp: TestProxy;
  /** Node name by port (what `inet_server_port()` says ran a statement). */
  nodeAt: Map<number, string>;
  stop(): Promise<void>;
}

/** The admin keys a test proxy needs for {@link adminOn}: a listener on a free loopback port, {@link ADMIN_TOKEN}. */
export const ADMIN_CONFIG = { listen: "127.0.0.1:0", token: ADMIN_TOKEN };

/**
 * pgroute with every node of the test cluster, transaction pooling, the superuser as an admin user (the other
 * test users keep the default role), and an admin listener with {@link ADMIN_TOKEN}. `raw` is merged over that.
 */
export async function startAdminProxy(raw: Record<string, unknown> = {}): Promise<AdminProxy> {
  const cluster = await testCluster();
  const users = testUsers(cluster).map((u) => (u.name === cluster.superuser ? { ...u, role: "admin" } : u));
  const tp = await startTestProxy({
    nodes: clusterNodes(cluster),
    users,
    admin: ADMIN_CONFIG,
    ...raw,
    pool: { mode: "transaction", size: 4, ...((raw.pool as Record<string, unknown> | undefined) ?? {}) },
  });
  const client = adminOn(tp);
  return {
    ...client,
    tp,
    nodeAt: new Map(tp.cluster.nodes.map((n) => [n.port, n.name])),
    async stop() {
      client.admin.stop();
      await tp.stop();
    },
  };
}

/** Starts the admin listener of a test proxy configured with {@link ADMIN_CONFIG}; stop it with `admin.stop()`. */
export function adminOn(tp: TestProxy): AdminClient {
  const admin = new AdminServer(tp.proxy);
  const { port } = admin.listen();
  const base = `http://127.0.0.1:${port}`;
  const headers = (token: string | null | undefined): Record<string, string> => (token === null ? {} : { authorization: `Bearer ${token ?? ADMIN_TOKEN}` });
  const get = (path: string, token?: string | null) => fetch(`${base}${path}`, { headers: headers(token) });
  const post = (path: string, body?: unknown, token?: string | null) =>
    fetch(`${base}${path}`, { method: "POST", headers: { ...headers(token), "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  return {
    admin,
    base,
    get,
    post,
    async json<T>(path: string): Promise<T> {
      const res = await get(path);
      if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
      return (await res.json()) as T;
    },
    async metrics() {
      const res = await get("/metrics");
      if (res.status !== 200) throw new Error(`GET /metrics: ${res.status}`);
      return new Metrics(await res.text());
    },
  };
}

/** Samples of a Prometheus text exposition. */
export class Metrics {
  readonly samples: { name: string; labels: Record<string, string>; value: number }[] = [];

  constructor(readonly text: string) {
    for (const line of text.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m) throw new Error(`not a sample line: ${line}`);
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
      this.samples.push({ name: m[1]!, labels, value: Number(m[3]) });
    }
  }

  /** The value of the one sample of `name` whose labels include `labels`; 0 when there is none (a counter not yet seen). */
  value(name: string, labels: Record<string, string> = {}): number {
    const found = this.all(name, labels);
    if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
    return found[0]?.value ?? 0;
  }

  /** Every sample of `name` whose labels include `labels`. */
  all(name: string, labels: Record<string, string> = {}) {
    return this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  }

  /** Whether a sample of `name` with these labels is present at all. */
  has(name: string, labels: Record<string, string> = {}): boolean {
    return this.all(name, labels).length > 0;
  }
}

/** A psql run against the admin console (database `pgroute`): rows as objects keyed by column name. */
export async function adminPsql(port: number, sql: string, who: { user: string; password?: string } = { user: "postgres", password: "postgres" }) {
  const proc = Bun.spawn(["psql", "-X", "-w", "-A", "-F", "\t", "-P", "footer=off", "-h", "127.0.0.1", "-p", String(port), "-U", who.user, "-d", "pgroute", "-c", sql], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, PGPASSWORD: who.password ?? "", PGCONNECT_TIMEOUT: "10", PGAPPNAME: "admin-test" },
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const lines = stdout.split("\n").filter((l) => l !== "");
  const header = lines[0]?.split("\t") ?? [];
  const rows = lines.slice(1).map((l) => Object.fromEntries(l.split("\t").map((v, i) => [header[i] ?? String(i), v])));
  return { code, stdout, stderr, rows };
}

/** A non-admin user of the test cluster (md5 auth), for refusals. */
export const PLAIN_USER = { user: AUTH_USERS.md5.user, password: AUTH_USERS.md5.password };
