// Invariant: the operator's commands — over the admin API and the admin console alike — take effect for the next
// transaction: a drained node gets no new work until it is enabled, a role set by hand decides where writes and
// reads go, PAUSE holds new transactions back while one under way finishes and RESUME lets them go, RELOAD applies
// a good config and reports a bad one. Only the token opens the API; only admin users may change anything (42501).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { ConfigLoadError, configFrom } from "../../src/config/load.ts";
import { ADMIN_TOKEN, adminPsql, PLAIN_USER, startAdminProxy, type AdminProxy } from "../support/admin.ts";
import { eventually, pace } from "../support/wait.ts";

let ap: AdminProxy;
let sql: postgres.Sql;

beforeAll(async () => {
  ap = await startAdminProxy();
  sql = postgres(ap.tp.url(), { max: 2, onnotice: () => {}, fetch_types: false });
});
afterAll(async () => {
  await sql?.end({ timeout: 1 });
  await ap?.stop();
});

/** The nodes that ran `n` reads sent one by one (simple protocol, outside any transaction). */
async function readsLandOn(n = 12): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const [row] = await sql.unsafe<{ port: number }[]>("select inet_server_port() as port").simple();
    seen.add(ap.nodeAt.get(row!.port)!);
  }
  return seen;
}

function client(user = ap.tp.cluster.superuser, password = ap.tp.cluster.password, database = "postgres"): pg.Client {
  return new pg.Client({ host: ap.tp.host, port: ap.tp.port, user, password, database, connectionTimeoutMillis: 10_000 });
}

describe("admin API access", () => {
  test("the token is required for data and commands; the dashboard page and /health are open", async () => {
    for (const path of ["/status", "/queries", "/metrics", "/clients"]) {
      const none = await ap.get(path, null);
      expect({ path, status: none.status, auth: none.headers.get("www-authenticate") }).toEqual({ path, status: 401, auth: 'Bearer realm="pgroute"' });
      expect((await ap.get(path, "wrong-token")).status).toBe(401);
      expect((await ap.get(path)).status).toBe(200);
    }
    expect((await ap.post("/pause", undefined, null)).status).toBe(401);
    expect(ap.tp.proxy.gate.paused).toBe(false);
    const page = await ap.get("/", null);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(await (await ap.get("/health", null)).text()).toBe("ok\n");
  });

  test("unknown paths are 404, the wrong method 405, and a command from another web origin 403", async () => {
    expect((await ap.get("/nope")).status).toBe(404);
    expect((await ap.get("/pause")).status).toBe(405);
    const res = await fetch(`${ap.base}/pause`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, origin: "http://evil.example" } });
    expect(res.status).toBe(403);
    expect(ap.tp.proxy.gate.paused).toBe(false);
  });
});

describe("admin API without a token (loopback only)", () => {
  test("open to requests naming a loopback host; a page on another host name (DNS rebinding) gets 403", async () => {
    const open = await startAdminProxy({ admin: { listen: "127.0.0.1:0" } });
    try {
      expect((await open.get("/status", null)).status).toBe(200);
      const port = new URL(open.base).port;
      const rebound = await fetch(`${open.base}/status`, { headers: { host: `attacker.example:${port}` } });
      expect(rebound.status).toBe(403);
      const pause = await fetch(`${open.base}/pause`, { method: "POST", headers: { host: `attacker.example:${port}` } });
      expect(pause.status).toBe(403);
      expect(open.tp.proxy.gate.paused).toBe(false);
      expect((await fetch(`${open.base}/health`, { headers: { host: "attacker.example" } })).status).toBe(200);
    } finally {
      await open.stop();
    }
  });
});

describe("drain and enable", () => {
  test("a drained replica gets no new reads, its idle server connections close, and enable brings it back", async () => {
    const [r1, r2] = ap.tp.cluster.replicas.map((r) => r.name) as [string, string];
    expect(await readsLandOn()).toEqual(new Set([r1, r2]));
    const res = await ap.post(`/nodes/${r1}/drain`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { ok: boolean }).ok).toBe(true);
    expect(await readsLandOn()).toEqual(new Set([r2]));
    // Nothing of pgroute's pools stays on the drained node: its pool is empty, as pg_stat_activity on the node shows
    // (the health monitor's own connection stays: a drained node is still watched).
    await eventually("the drained node's pool to be empty", async () => {
      const s = await ap.json<{ pools: { node: string; active: number; idle: number }[] }>("/status");
      return s.pools.filter((p) => p.node === r1).every((p) => p.active + p.idle === 0);
    });
    const direct = postgres(ap.tp.cluster.url(ap.tp.cluster.replicas[0]!), { max: 1, onnotice: () => {} });
    try {
      const rows = await direct<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() and application_name <> 'pgroute-monitor'`;
      expect(rows[0]!.n).toBe(0);
    } finally {
      await direct.end();
    }
    const status = await ap.json<{ nodes: { name: string; override: { drained: boolean }; readable: boolean; excludedBecause: string }[] }>("/status");
    expect(status.nodes.find((n) => n.name === r1)).toMatchObject({ override: { drained: true }, readable: false, excludedBecause: "drained by an operator" });
    expect((await ap.metrics()).value("pgroute_node_drained", { node: r1 })).toBe(1);

    expect((await ap.post(`/nodes/${r1}/enable`)).status).toBe(200);
    expect(await readsLandOn()).toEqual(new Set([r1, r2]));
    expect((await ap.metrics()).value("pgroute_node_drained", { node: r1 })).toBe(0);
  });

  test("an unknown node is 404 and names the configured ones", async () => {
    const res = await ap.post("/nodes/nosuch/drain");
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: string }).error).toBe(`no node named "nosuch" (nodes: ${ap.tp.cluster.nodes.map((n) => n.name).join(", ")})`);
  });
});

describe("roles set by hand", () => {
  test("a replica set to primary gets the next write (which it refuses: it is a standby) and no reads; auto undoes it", async () => {
    const r1 = ap.tp.cluster.replicas[0]!.name;
    const res = await ap.post(`/nodes/${r1}/role`, { role: "primary" });
    expect(res.status).toBe(200);
    const err = await sql.unsafe("create table admin_role_t (i int)").simple().catch((e: postgres.PostgresError) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as postgres.PostgresError).code).toBe("25006"); // the standby's own refusal: the write reached r1
    expect(await readsLandOn()).toEqual(new Set([ap.tp.cluster.replicas[1]!.name]));
    const status = await ap.json<{ cluster: { primary: string }; nodes: { name: string; role: string; override: { role: string | null } }[] }>("/status");
    expect(status.cluster.primary).toBe(r1);
    expect(status.nodes.find((n) => n.name === r1)).toMatchObject({ role: "primary", override: { role: "primary" } });
    const nodes = await adminPsql(ap.tp.port, "SHOW NODES");
    expect(nodes.rows.find((r) => r.name === r1)).toMatchObject({ role: "primary", override_role: "primary" });

    expect((await ap.post(`/nodes/${r1}/role?role=auto`)).status).toBe(200);
    // An advisory lock needs the primary: the write goes where it belongs again.
    const [row] = await sql.unsafe<{ port: number }[]>("select pg_advisory_xact_lock(7), inet_server_port() as port").simple();
    expect(row!.port).toBe(ap.tp.cluster.primary.port);
    expect(await readsLandOn()).toEqual(new Set(ap.tp.cluster.replicas.map((r) => r.name)));
  });

  test("a role that is not primary, replica or auto is refused", async () => {
    const res = await ap.post(`/nodes/${ap.tp.cluster.primary.name}/role`, { role: "leader" });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe(`invalid role "leader" (expected primary, replica or auto)`);
  });
});

describe("pause and resume", () => {
  test("while paused a new transaction waits and one under way finishes; resume lets the waiting one run", async () => {
    const running = client();
    const waiting = client();
    await Promise.all([running.connect(), waiting.connect()]);
    try {
      await running.query("begin");
      await running.query("select 1");
      expect((await ap.post("/pause")).status).toBe(200);
      let answered = false;
      const held = waiting.query("select 'after resume' as v").then((r) => {
        answered = true;
        return r.rows[0].v as string;
      });
      // The transaction under way goes on to its end.
      expect((await running.query("select 2 as v")).rows[0].v).toBe(2);
      await running.query("commit");
      await eventually("the held client to show as waiting", async () => (await adminPsql(ap.tp.port, "SHOW CLIENTS")).rows.some((r) => r.state === "waiting"));
      const m = await ap.metrics();
      expect([m.value("pgroute_paused"), m.value("pgroute_paused_waiting_clients"), m.value("pgroute_clients", { state: "waiting" })]).toEqual([1, 1, 1]);
      expect((await ap.json<{ paused: boolean }>("/status")).paused).toBe(true);
      await pace(300); // the window in which the held query must not run
      expect(answered).toBe(false);
      expect((await ap.post("/resume")).status).toBe(200);
      expect(await held).toBe("after resume");
      expect((await ap.metrics()).value("pgroute_paused")).toBe(0);
    } finally {
      await ap.post("/resume");
      await Promise.all([running.end(), waiting.end()]);
    }
  });
});

describe("reload", () => {
  test("RELOAD applies a config that loads, reports one that does not, and needs a source", async () => {
    const proxy = ap.tp.proxy;
    const none = await ap.post("/reload");
    expect(none.status).toBe(400);
    expect(((await none.json()) as { error: string }).error).toContain("there is nothing to reload");
    const version = proxy.configVersion;
    proxy.reloadSource = async () => configFrom({ ...structuredClone(rawOf(proxy.config)), admin: { listen: "127.0.0.1:0", token: ADMIN_TOKEN, top_queries: 50 } });
    const ok = await ap.post("/reload");
    expect(ok.status).toBe(200);
    expect(proxy.configVersion).toBe(version + 1);
    expect((await ap.json<{ config: { version: number } }>("/status")).config.version).toBe(version + 1);
    expect(proxy.traffic.fingerprints.limit).toBe(50);
    proxy.reloadSource = async () => {
      throw new ConfigLoadError(["pool.size: expected an integer >= 1, got 0"]);
    };
    const bad = await ap.post("/reload");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toBe("configuration not reloaded, the running one stays:\npool.size: expected an integer >= 1, got 0");
    expect(proxy.configVersion).toBe(version + 1);
    proxy.reloadSource = null;
  });
});

/** A running config back in the raw (TOML-shaped) form `configFrom` takes. */
function rawOf(c: typeof ap.tp.proxy.config): Record<string, unknown> {
  return {
    listen: c.listen,
    nodes: c.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
    users: c.users.map((u) => ({ name: u.name, ...(u.password && { password: u.password }), auth: u.auth, role: u.role })),
    pool: { mode: c.pool.mode, size: c.pool.size },
    log: { level: c.log.level },
  };
}

describe("the admin console", () => {
  test("an admin user drains, enables, pauses and resumes with psql; each command says what it did", async () => {
    const r2 = ap.tp.cluster.replicas[1]!.name;
    const drain = await adminPsql(ap.tp.port, `DRAIN ${r2}`);
    expect(drain).toMatchObject({ code: 0, stdout: "DRAIN\n" });
    expect(drain.stderr).toContain(`NOTICE:  node "${r2}" is drained`);
    expect((await adminPsql(ap.tp.port, "SHOW NODES")).rows.find((r) => r.name === r2)?.drained).toBe("t");
    expect(await readsLandOn()).toEqual(new Set([ap.tp.cluster.replicas[0]!.name]));
    expect(await adminPsql(ap.tp.port, `ENABLE "${r2}"`)).toMatchObject({ code: 0, stdout: "ENABLE\n" });
    expect((await adminPsql(ap.tp.port, "PAUSE")).stdout).toBe("PAUSE\n");
    expect((await adminPsql(ap.tp.port, "SHOW STATUS")).rows.find((r) => r.name === "paused")?.value).toBe("on");
    expect(ap.tp.proxy.gate.paused).toBe(true);
    expect((await adminPsql(ap.tp.port, "resume")).code).toBe(0);
    expect(ap.tp.proxy.gate.paused).toBe(false);
  });

  test("a user without the admin role may look but not change anything: 42501", async () => {
    const c = client(PLAIN_USER.user, PLAIN_USER.password, "pgroute");
    await c.connect();
    try {
      const nodes = await c.query("SHOW NODES");
      expect(nodes.rows.map((r) => r.name)).toEqual(ap.tp.cluster.nodes.map((n) => n.name));
      for (const command of ["PAUSE", "RESUME", "RELOAD", `DRAIN ${ap.tp.cluster.replicas[0]!.name}`, `ROLE ${ap.tp.cluster.primary.name} auto`]) {
        const err = (await c.query(command).catch((e: Error) => e)) as pg.DatabaseError;
        expect({ command, code: err.code, message: err.message }).toEqual({ command, code: "42501", message: `permission denied: ${command.split(" ")[0]} needs an admin user` });
      }
      expect(ap.tp.proxy.gate.paused).toBe(false);
      expect(ap.tp.proxy.overrides.isDrained(ap.tp.cluster.replicas[0]!.name)).toBe(false);
    } finally {
      await c.end();
    }
  });

  test("unknown commands get 42601, the extended protocol 0A000, and an empty query its empty response", async () => {
    const c = client(undefined, undefined, "pgroute");
    await c.connect();
    try {
      const err = (await c.query("SHOW TABLES").catch((e: Error) => e)) as pg.DatabaseError;
      expect([err.code, err.message, err.hint]).toEqual(["42601", `unknown admin command "SHOW TABLES"`, "SHOW HELP lists the commands."]);
      const ext = (await c.query("SHOW NODES WHERE $1", ["x"]).catch((e: Error) => e)) as pg.DatabaseError;
      expect(ext.code).toBe("0A000");
      expect((await c.query("")).rows).toEqual([]);
      // The session is still usable after each error.
      expect((await c.query("SHOW VERSION")).rows).toEqual([{ version: expect.stringMatching(/^pgroute \d+\.\d+\.\d+/) }]);
    } finally {
      await c.end();
    }
  });
});

describe("node data comes from the cluster snapshot", () => {
  test("lag, score and breaker state published into the snapshot show in /metrics, /status and SHOW NODES", async () => {
    const holder = ap.tp.proxy.cluster;
    const before = holder.current;
    const r2 = ap.tp.cluster.replicas[1]!.name;
    holder.publish({
      ...before,
      version: before.version + 1,
      nodes: before.nodes.map((n) =>
        n.name === r2 ? { ...n, lagBytes: 4096, lagSeconds: 1.5, score: 73, breaker: { state: "open", reason: "5 consecutive failures", until: Date.now() + 30_000 } } : n,
      ),
    });
    try {
      const m = await ap.metrics();
      expect([m.value("pgroute_node_lag_bytes", { node: r2 }), m.value("pgroute_node_lag_seconds", { node: r2 }), m.value("pgroute_node_score", { node: r2 })]).toEqual([4096, 1.5, 73]);
      expect([m.value("pgroute_node_breaker_state", { node: r2, state: "open" }), m.value("pgroute_node_breaker_state", { node: r2, state: "closed" })]).toEqual([1, 0]);
      expect(m.value("pgroute_node_role", { node: r2, role: "replica" })).toBe(1);
      expect(m.has("pgroute_node_lag_bytes", { node: ap.tp.cluster.primary.name })).toBe(false); // unknown: absent, not 0
      const status = await ap.json<{ nodes: { name: string; lagBytes: number; lagSeconds: number; score: number; breaker: { state: string; reason: string } }[] }>("/status");
      expect(status.nodes.find((n) => n.name === r2)).toMatchObject({ lagBytes: 4096, lagSeconds: 1.5, score: 73, breaker: { state: "open", reason: "5 consecutive failures" } });
      const row = (await adminPsql(ap.tp.port, "SHOW NODES")).rows.find((r) => r.name === r2);
      expect(row).toMatchObject({ lag_bytes: "4096", lag_seconds: "1.500", score: "73", breaker: "open", breaker_reason: "5 consecutive failures" });
    } finally {
      holder.publish(before);
    }
  });
});

describe("no output shows a credential", () => {
  test("SHOW commands, /status, /clients, /queries and /metrics never carry a password or verifier", async () => {
    const plain = client(PLAIN_USER.user, PLAIN_USER.password, "postgres");
    await plain.connect(); // a client of another user, listed by SHOW CLIENTS
    try {
      const outputs: string[] = [];
      for (const what of ["NODES", "POOLS", "CLIENTS", "QUERIES", "STATS", "COUNTERS", "STATUS", "VERSION", "HELP"]) {
        const r = await adminPsql(ap.tp.port, `SHOW ${what}`);
        expect({ what, code: r.code, stderr: r.stderr }).toEqual({ what, code: 0, stderr: "" });
        outputs.push(r.stdout);
      }
      expect(outputs[2]).toContain(PLAIN_USER.user);
      for (const path of ["/status", "/clients", "/queries", "/metrics"]) outputs.push(await (await ap.get(path)).text());
      const secrets = ap.tp.config.users.flatMap((u) => [u.password, u.scram_verifier, u.md5_hash, u.server_password]).filter((s): s is string => !!s && s !== "postgres");
      expect(secrets.length).toBeGreaterThan(1);
      for (const s of secrets) expect(outputs.filter((o) => o.includes(s))).toEqual([]);
    } finally {
      await plain.end();
    }
  });
});
