// Invariant: the shared dev cluster is one primary plus two streaming replicas that replay its writes, each
// AUTH_USERS role logs in with its own pg_hba method, and startCluster/stopCluster refuse unsafe directories.
import { eventually } from "../support/wait.ts";
import { beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { parse as parseToml } from "smol-toml";
import {
  DevClusterError,
  findPgBin,
  PG_BINARIES,
  startCluster,
  stopCluster,
  stopClusterSync,
  type DevCluster,
  type DevNode,
} from "../../src/devcluster/index.ts";
import { APP_DATABASE, AUTH_USERS, processesUsing, testCluster } from "../support/cluster.ts";
import { watch } from "../support/proc.ts";

let cluster: DevCluster;
beforeAll(async () => {
  cluster = await testCluster();
});

/** Run `fn` on a one-connection client and close it. */
async function withSql<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 1 });
  }
}


const inRecovery = (node: DevNode) =>
  withSql(cluster.url(node), async (sql) => (await sql<{ r: boolean }[]>`select pg_is_in_recovery() as r`)[0]!.r);

describe("testCluster()", () => {
  test("is one primary and two replicas on distinct loopback ports", () => {
    expect(cluster.nodes.map((n) => [n.name, n.role])).toEqual([
      ["primary", "primary"],
      ["replica1", "replica"],
      ["replica2", "replica"],
    ]);
    expect(new Set(cluster.nodes.map((n) => n.port)).size).toBe(3);
    expect(cluster.nodes.every((n) => n.host === "127.0.0.1")).toBe(true);
  });

  test("returns the same cluster to every caller", async () => {
    expect(await testCluster()).toBe(cluster);
  });

  test("the primary is not in recovery and both replicas are", async () => {
    expect(await inRecovery(cluster.primary)).toBe(false);
    for (const replica of cluster.replicas) expect(await inRecovery(replica)).toBe(true);
  });

  test("both replicas stream from the primary under their own names", async () => {
    const rows = await withSql(
      cluster.url(cluster.primary),
      (sql) => sql<{ name: string; state: string }[]>`
        select application_name as name, state from pg_stat_replication order by 1`,
    );
    expect(rows.map((r) => [r.name, r.state])).toEqual([
      ["replica1", "streaming"],
      ["replica2", "streaming"],
    ]);
  });

  test("a row inserted on the primary becomes visible on every replica", async () => {
    const marker = `row-${crypto.randomUUID()}`;
    await withSql(cluster.url(cluster.primary, { user: "postgres", password: cluster.password, database: APP_DATABASE }), async (sql) => {
      await sql`create table if not exists devcluster_visibility (marker text primary key)`;
      await sql`insert into devcluster_visibility values (${marker})`;
    });
    for (const replica of cluster.replicas) {
      const url = cluster.url(replica, { user: "postgres", password: cluster.password, database: APP_DATABASE });
      await withSql(url, (sql) =>
        eventually(`${marker} on ${replica.name}`, async () => {
          const exists = await sql<{ n: number }[]>`
            select count(*)::int as n from pg_tables where tablename = 'devcluster_visibility'`;
          if (exists[0]!.n === 0) return false;
          return (await sql`select 1 from devcluster_visibility where marker = ${marker}`).length === 1;
        }),
      );
    }
  });

  test("the superuser password is required over TCP (scram-sha-256 by default)", async () => {
    const url = cluster.url(cluster.primary, { user: "postgres", password: "wrong" });
    await expect(withSql(url, (sql) => sql`select 1`)).rejects.toMatchObject({ code: "28P01" });
  });

  describe.each(Object.values(AUTH_USERS))("role $user ($method)", (u) => {
    test("logs in to app on the primary and on both replicas", async () => {
      for (const node of cluster.nodes) {
        const url = cluster.url(node, { user: u.user, password: u.password, database: APP_DATABASE });
        const [row] = await withSql(url, (sql) => sql<{ who: string; db: string }[]>`
          select current_user as who, current_database() as db`);
        expect(row).toEqual({ who: u.user, db: APP_DATABASE });
      }
    });

    test(u.password === undefined ? "logs in whatever password it sends" : "is refused with a wrong password", async () => {
      const url = cluster.url(cluster.primary, { user: u.user, password: "not-the-password", database: APP_DATABASE });
      const attempt = withSql(url, (sql) => sql`select 1`);
      if (u.password === undefined) expect((await attempt).length).toBe(1);
      else await expect(attempt).rejects.toMatchObject({ code: "28P01" });
    });
  });

  test("md5user's password is stored as md5 and scramuser's as SCRAM", async () => {
    const rows = await withSql(cluster.url(cluster.primary), (sql) => sql<{ name: string; kind: string }[]>`
      select rolname as name, split_part(rolpassword, '$', 1) as kind from pg_authid
      where rolname in (${AUTH_USERS.scram.user}, ${AUTH_USERS.md5.user}) order by 1`);
    expect(rows.map((r) => [r.name, r.kind.startsWith("md5") ? "md5" : r.kind])).toEqual([
      [AUTH_USERS.md5.user, "md5"],
      [AUTH_USERS.scram.user, "SCRAM-SHA-256"],
    ]);
  });

  test("every auth role can create tables in app", async () => {
    const u = AUTH_USERS.scram;
    await withSql(cluster.url(cluster.primary, { user: u.user, password: u.password, database: APP_DATABASE }), async (sql) => {
      await sql`create temp table t (x int)`;
      await sql`create table if not exists scramuser_can_create (x int)`;
      await sql`drop table scramuser_can_create`;
    });
  });

  test("pgroute.toml in the cluster dir names every node with its role and the superuser", async () => {
    const config = parseToml(await Bun.file(cluster.configPath).text()) as {
      listen: { host: string; port: number };
      nodes: { name: string; host: string; port: number; role: string }[];
      users: { name: string; password: string; auth: string; role: string }[];
      pool: { mode: string };
      admin: { listen: string };
    };
    expect(config.listen).toEqual({ host: "127.0.0.1", port: 6432 });
    expect(config.nodes).toEqual(cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })));
    expect(config.users).toEqual([{ name: "postgres", password: cluster.password, auth: "scram-sha-256", role: "admin" }]);
    expect(config.pool.mode).toBe("transaction");
    expect(config.admin.listen).toBe("127.0.0.1:0");
  });
});

describe("startCluster() refuses before touching anything", () => {
  test("a directory that already holds a cluster", async () => {
    await expect(startCluster({ dir: cluster.dir })).rejects.toThrow(
      `${cluster.dir} already holds a pgroute dev cluster; run \`pgroute cluster down --dir ${cluster.dir}\` first`,
    );
  });

  test("a port something already listens on, leaving no directory behind", async () => {
    const dir = join(mkdtempSync(join(tmpdir(), "pgroute-test-")), "cluster");
    try {
      await expect(startCluster({ dir, port: cluster.primary.port })).rejects.toThrow(
        new DevClusterError(`port ${cluster.primary.port} is already in use on 127.0.0.1 (choose another with --port)`),
      );
      expect(existsSync(dir)).toBe(false);
    } finally {
      rmSync(join(dir, ".."), { recursive: true, force: true });
    }
  });
});

describe("stopping a cluster leaves no process and no directory", () => {
  // One node without fsync: these tests are about stopping, not replication.
  const small = { replicas: 0, settings: { fsync: "off" } };

  test("stopClusterSync (for exit handlers)", async () => {
    const c = await startCluster(small);
    expect(processesUsing(c.dir).length).toBeGreaterThan(0);
    stopClusterSync(c.dir);
    expect(existsSync(c.dir)).toBe(false);
    expect(processesUsing(c.dir)).toEqual([]);
  });

  test("guardCluster stops the cluster when its owner is SIGKILLed", async () => {
    const devcluster = join(import.meta.dir, "../../src/devcluster/index.ts");
    const owner = Bun.spawn(
      [
        process.execPath,
        "-e",
        `import { guardCluster, startCluster } from ${JSON.stringify(devcluster)};
         const c = await startCluster(${JSON.stringify(small)});
         guardCluster(c.dir);
         console.log("DIR " + c.dir);
         await new Promise(() => {});`,
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    const out = watch(owner.stdout);
    try {
      const [, dir] = await out.until(/DIR (\S+)\n/, 30_000);
      expect(processesUsing(dir!).length).toBeGreaterThan(0);
      owner.kill("SIGKILL");
      await eventually("the guard to remove the cluster", async () => !existsSync(dir!), 30_000);
      expect(processesUsing(dir!)).toEqual([]);
    } finally {
      owner.kill("SIGKILL");
    }
  });
});

describe("stopCluster()", () => {
  test("is a no-op for a directory that does not exist", async () => {
    await stopCluster(join(tmpdir(), `pgroute-missing-${crypto.randomUUID()}`));
  });

  test("leaves a non-empty directory without cluster.json alone", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pgroute-test-"));
    try {
      writeFileSync(join(dir, "precious.txt"), "keep me");
      await expect(stopCluster(dir)).rejects.toThrow("is not a pgroute dev cluster; not touching it");
      expect(existsSync(join(dir, "precious.txt"))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("findPgBin()", () => {
  const install = [
    "(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15)",
    "or set PGROUTE_PG_BIN to the directory that holds them.",
  ].join(" ");

  test("finds the binaries this machine has", () => {
    const bin = findPgBin();
    for (const name of PG_BINARIES) expect(existsSync(join(bin, name))).toBe(true);
  });

  test("PGROUTE_PG_BIN is the only place looked at when set", () => {
    expect(() => findPgBin({ env: { PGROUTE_PG_BIN: "/nonexistent", PATH: process.env.PATH } })).toThrow(
      new DevClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup) not found; looked in " +
          `$PGROUTE_PG_BIN (/nonexistent).\nInstall them ${install}`,
      ),
    );
  });

  test("lists PATH and every versioned root when nothing is found", () => {
    const empty = mkdtempSync(join(tmpdir(), "pgroute-test-"));
    try {
      expect(() => findPgBin({ env: { PATH: empty }, libRoots: [empty] })).toThrow(
        new DevClusterError(
          "PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup) not found; looked in " +
            `$PATH, ${empty}/*/bin.\nInstall them ${install}`,
        ),
      );
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  test("follows a PATH symlink to initdb into the directory that has all the binaries", () => {
    const real = realpathSync(findPgBin());
    const onPath = mkdtempSync(join(tmpdir(), "pgroute-test-"));
    try {
      symlinkSync(join(real, "initdb"), join(onPath, "initdb"));
      expect(findPgBin({ env: { PATH: onPath }, libRoots: [] })).toBe(real);
    } finally {
      rmSync(onPath, { recursive: true, force: true });
    }
  });

  test("picks the newest versioned directory under a root", () => {
    const real = realpathSync(findPgBin());
    const root = mkdtempSync(join(tmpdir(), "pgroute-test-"));
    try {
      for (const version of ["9.6", "14", "16"]) {
        mkdirSync(join(root, version, "bin"), { recursive: true });
        for (const name of PG_BINARIES) symlinkSync(join(real, name), join(root, version, "bin", name));
      }
      mkdirSync(join(root, "17", "bin"), { recursive: true }); // incomplete: skipped
      expect(findPgBin({ env: { PATH: "" }, libRoots: [root] })).toBe(join(root, "16", "bin"));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
