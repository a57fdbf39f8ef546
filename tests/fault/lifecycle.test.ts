// Invariant: `pgroute serve` stops as a Postgres server does and reloads without dropping anyone. SIGTERM stops
// accepting, lets running transactions finish within limits.shutdown_timeout, ends every session with FATAL 57P01
// (at once when idle, at the deadline otherwise) and exits 0; SIGINT does the same without waiting. SIGHUP reloads
// the file: a bad one is reported line by line with key paths and the old config keeps serving; a good one lets new
// users in at once, and pools whose settings changed get new server connections as the old ones go idle.
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { APP_DATABASE, AUTH_USERS, testCluster } from "../support/cluster.ts";
import { freePort } from "../support/net.ts";
import { watch } from "../support/proc.ts";
import { RawClient, dataRow, errorOf } from "../support/raw-client.ts";
import { query, startup } from "../support/wire-frames.ts";
import { TRUST_LOGIN, expectFatal, until } from "./helpers.ts";

setDefaultTimeout(60_000);

const ROOT = join(import.meta.dir, "../..");
const SHUTDOWN = "terminating connection due to pgroute shutdown";
let cluster: DevCluster;
let dir: string;
let direct: postgres.Sql;
const children = new Set<Subprocess>();

beforeAll(async () => {
  cluster = await testCluster();
  dir = await mkdtemp(join(tmpdir(), "pgroute-lifecycle-"));
  direct = postgres(cluster.url(cluster.primary, { database: APP_DATABASE }), { max: 1, onnotice: () => {} });
  await direct.unsafe("create table if not exists lifecycle_t (id text primary key)");
  await direct.unsafe("grant all on lifecycle_t to public");
});
afterEach(() => {
  for (const c of children) c.kill("SIGKILL");
  children.clear();
});
afterAll(async () => {
  await direct?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Options {
  port: number;
  pool?: Record<string, string | number>;
  limits?: Record<string, string | number>;
  extraUsers?: string[];
}

/** A pgroute.toml for the test cluster's primary: a trust user for raw sockets, plus `extraUsers` (trust). */
function toml(o: Options): string {
  const s = JSON.stringify;
  const lines = ["[listen]", `host = "127.0.0.1"`, `port = ${o.port}`, ""];
  lines.push("[[nodes]]", `name = "primary"`, `host = ${s(cluster.primary.host)}`, `port = ${cluster.primary.port}`, `role = "primary"`, "");
  for (const u of [AUTH_USERS.trust.user, ...(o.extraUsers ?? [])]) lines.push("[[users]]", `name = ${s(u)}`, `auth = "trust"`, `server_user = ${s(AUTH_USERS.trust.user)}`, "");
  for (const [section, values] of [
    ["pool", o.pool],
    ["limits", o.limits],
  ] as const) {
    if (!values) continue;
    lines.push(`[${section}]`);
    for (const [k, v] of Object.entries(values)) lines.push(`${k} = ${s(v)}`);
    lines.push("");
  }
  lines.push("[log]", `level = "info"`, "");
  return lines.join("\n");
}

async function serve(o: Options) {
  const path = join(dir, `pgroute-${o.port}.toml`);
  await writeFile(path, toml(o));
  const proc = Bun.spawn([process.execPath, join(ROOT, "src/cli/main.ts"), "serve", "-c", path], {
    cwd: ROOT,
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1" },
  });
  children.add(proc);
  const stderr = watch(proc.stderr);
  await stderr.until(/INFO  listening /);
  return { proc, stderr, path, rewrite: (next: Options) => writeFile(path, toml(next)) };
}

async function exitCode(proc: Subprocess, timeoutMs = 15_000): Promise<number> {
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  try {
    return await proc.exited;
  } finally {
    clearTimeout(timer);
  }
}

async function loggedIn(port: number, login: Record<string, string> = TRUST_LOGIN): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  await raw.loginTrust(login);
  return raw;
}

async function run(raw: RawClient, sql: string): Promise<(string | null)[][]> {
  raw.send(query(sql));
  const messages = await raw.readUntil("Z", 10_000);
  const e = messages.find((m) => m.type === "E");
  if (e) throw new Error(`${errorOf(e).code}: ${errorOf(e).message}`);
  return messages.filter((m) => m.type === "D").map(dataRow);
}

/** The authentication request pgroute answers a startup for `user` with: 0 (Ok, trust) or 10 (SASL: unknown user). */
async function authRequest(port: number, user: string): Promise<number> {
  const raw = await RawClient.connect(port);
  try {
    raw.send(startup({ user, database: APP_DATABASE }));
    const m = await raw.next();
    expect(m.type).toBe("R");
    return new DataView(m.body.buffer, m.body.byteOffset, 4).getInt32(0);
  } finally {
    raw.close();
  }
}

const refused = (port: number) => RawClient.connect(port).then((c) => (c.close(), false), () => true);

describe("SIGTERM", () => {
  test("stops accepting, ends idle sessions at once, lets a transaction commit, then ends it; exit 0", async () => {
    const port = await freePort();
    const { proc, stderr } = await serve({ port, limits: { shutdown_timeout: "20s" } });
    const idle = await loggedIn(port);
    const busy = await loggedIn(port);
    try {
      await run(busy, "begin");
      await run(busy, "insert into lifecycle_t values ('sigterm-commit')");
      proc.kill("SIGTERM");
      await stderr.until(/shutdown_draining clients=2/);
      expect(await refused(port)).toBe(true);
      await expectFatal(idle, "57P01", SHUTDOWN);
      // The transaction goes on to its end…
      expect(busy.closed).toBe(false);
      expect(await run(busy, "select count(*) from lifecycle_t where id = 'sigterm-commit'")).toEqual([["1"]]);
      await run(busy, "commit");
      // …and then the session ends too.
      await expectFatal(busy, "57P01", SHUTDOWN);
      expect(await exitCode(proc)).toBe(0);
      expect(stderr.text()).toContain("pgroute: stopped (SIGTERM)");
      expect(await direct`select id from lifecycle_t where id = 'sigterm-commit'`).toHaveLength(1);
    } finally {
      idle.close();
      busy.close();
    }
  });

  test("a transaction still open at limits.shutdown_timeout gets 57P01 then, and is rolled back", async () => {
    const port = await freePort();
    const { proc, stderr } = await serve({ port, limits: { shutdown_timeout: "700ms" } });
    const busy = await loggedIn(port);
    try {
      await run(busy, "begin");
      await run(busy, "insert into lifecycle_t values ('sigterm-timeout')");
      const sent = Date.now();
      proc.kill("SIGTERM");
      await expectFatal(busy, "57P01", SHUTDOWN, 10_000);
      const waited = Date.now() - sent;
      expect(waited).toBeGreaterThanOrEqual(600);
      expect(waited).toBeLessThan(5000);
      expect(await exitCode(proc)).toBe(0);
      expect(stderr.text()).toMatch(/shutdown_complete graceful=true ended=1/);
      await until("the abandoned transaction to be gone", async () => (await direct`select 1 from pg_stat_activity where state like 'idle in transaction%' and usename = ${AUTH_USERS.trust.user}`).length === 0);
      expect(await direct`select id from lifecycle_t where id = 'sigterm-timeout'`).toHaveLength(0);
    } finally {
      busy.close();
    }
  });

  test("a second signal during the wait stops at once", async () => {
    const port = await freePort();
    const { proc, stderr } = await serve({ port, limits: { shutdown_timeout: "30s" } });
    const busy = await loggedIn(port);
    try {
      await run(busy, "begin");
      proc.kill("SIGTERM");
      await stderr.until(/shutdown_draining clients=1/);
      proc.kill("SIGINT");
      await expectFatal(busy, "57P01", SHUTDOWN);
      expect(await exitCode(proc, 5000)).toBe(0);
    } finally {
      busy.close();
    }
  });
});

describe("SIGINT", () => {
  test("ends every session at once, open transactions included; exit 0", async () => {
    const port = await freePort();
    const { proc, stderr } = await serve({ port, pool: { mode: "transaction" }, limits: { shutdown_timeout: "30s" } });
    const idle = await loggedIn(port);
    const busy = await loggedIn(port);
    try {
      await run(busy, "begin");
      await run(busy, "insert into lifecycle_t values ('sigint')");
      const sent = Date.now();
      proc.kill("SIGINT");
      await expectFatal(busy, "57P01", SHUTDOWN);
      await expectFatal(idle, "57P01", SHUTDOWN);
      expect(Date.now() - sent).toBeLessThan(3000);
      expect(await exitCode(proc)).toBe(0);
      expect(stderr.text()).toContain("pgroute: stopped (SIGINT)");
      await until("the rollback", async () => (await direct`select id from lifecycle_t where id = 'sigint'`).length === 0);
    } finally {
      idle.close();
      busy.close();
    }
  });
});

describe("SIGHUP", () => {
  test("a good file: new users get in at once, existing sessions go on", async () => {
    const port = await freePort();
    const { proc, stderr, rewrite } = await serve({ port });
    const existing = await loggedIn(port);
    try {
      expect(await authRequest(port, "newcomer")).toBe(10); // unknown: asked for a password it cannot have
      await rewrite({ port, extraUsers: ["newcomer"] });
      proc.kill("SIGHUP");
      await stderr.until(/config_reloaded changed=users/);
      const newcomer = await loggedIn(port, { user: "newcomer", database: APP_DATABASE });
      expect(await run(newcomer, "select current_user")).toEqual([[AUTH_USERS.trust.user]]);
      newcomer.close();
      expect(await run(existing, "select 'still here'")).toEqual([["still here"]]);
    } finally {
      existing.close();
      proc.kill("SIGTERM");
      expect(await exitCode(proc)).toBe(0);
    }
  });

  test("a bad file: every error logged with its key path, the old config keeps serving", async () => {
    const port = await freePort();
    const { proc, stderr, path } = await serve({ port, extraUsers: ["kept"] });
    const existing = await loggedIn(port);
    try {
      await writeFile(path, ["[listen]", `port = ${port}`, "[[nodes]]", `name = "p"`, `port = "x"`, "[pool]", "size = 0", "[limits]", "max_clients = 5"].join("\n"));
      proc.kill("SIGHUP");
      await stderr.until(/config_reload_kept_old .*errors=3/);
      const text = stderr.text();
      expect(text).toContain(`ERROR config_reload_failed file=${path} error="nodes[0].port: expected an integer 1-65535, got \\"x\\""`);
      expect(text).toContain(`error="pool.size: expected an integer >= 1, got 0"`);
      expect(text).toContain(`error="limits.max_clients: unknown key"`);
      // Still the old config: its users, its sessions.
      const kept = await loggedIn(port, { user: "kept", database: APP_DATABASE });
      kept.close();
      expect(await run(existing, "select 'still here'")).toEqual([["still here"]]);
      // Unparseable TOML is reported the same way.
      await writeFile(path, "[pool\nsize = 3");
      proc.kill("SIGHUP");
      await stderr.until(/config_reload_failed file=\S+ error="invalid TOML at line 1/);
    } finally {
      existing.close();
      proc.kill("SIGTERM");
      expect(await exitCode(proc)).toBe(0);
    }
  });

  test("changed pool settings: idle server connections close now, busy ones when they come back", async () => {
    const port = await freePort();
    const { proc, stderr, rewrite } = await serve({ port, pool: { mode: "session", size: 5 } });
    const backendPid = async (raw: RawClient) => Number((await run(raw, "select pg_backend_pid()"))[0]![0]);
    const alive = async (pid: number) => (await direct`select 1 from pg_stat_activity where pid = ${pid}`).length === 1;
    // One server connection goes idle in the pool, another stays with its client.
    const early = await loggedIn(port);
    const idlePid = await backendPid(early);
    const holder = await loggedIn(port);
    const busyPid = await backendPid(holder);
    early.close();
    await until("the first connection to be pooled", async () => (await direct`select state from pg_stat_activity where pid = ${idlePid}`)[0]?.state === "idle");
    try {
      await rewrite({ port, pool: { mode: "session", size: 5, checkout_timeout: "6s" } });
      proc.kill("SIGHUP");
      await stderr.until(/pool_reconfigured pool=primary\/trustuser@app changed=pool/);
      await until("the idle connection to be closed", async () => !(await alive(idlePid)));
      // The busy one still serves its client, unchanged…
      expect(await backendPid(holder)).toBe(busyPid);
      holder.close();
      // …and is closed, not pooled, when the client leaves.
      await until("the busy connection to be closed after use", async () => !(await alive(busyPid)));
      const next = await loggedIn(port);
      const pid = await backendPid(next);
      expect([idlePid, busyPid]).not.toContain(pid);
      next.close();
    } finally {
      holder.close();
      proc.kill("SIGTERM");
      expect(await exitCode(proc)).toBe(0);
    }
  });
});
