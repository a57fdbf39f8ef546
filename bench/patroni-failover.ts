/**
 * pgroute following a real Patroni failover, on loopback: etcd, two Patroni-managed PostgreSQL nodes (synchronous
 * mode), pgroute in front with `failover.patroni` pointing at both REST APIs and `role = "auto"` nodes. A client
 * writes numbered rows through pgroute; the leader is killed (SIGKILL of its Patroni and its postmaster, as a crashed
 * host would go); Patroni's leader key expires after its TTL and the replica is promoted; pgroute follows.
 *
 * Prints when Patroni named the new leader, when pgroute switched its primary, when the first write after the kill
 * was acknowledged, the errors the writer saw, and whether every acknowledged row is on the new leader.
 *
 *   bun bench/patroni-failover.ts [--ttl SECONDS] [--endpoint cluster|leader]
 *
 * Installs nothing. Needs: Linux; `etcd` (Debian: apt-get install etcd-server) and `patroni` (apt-get install
 * patroni) on PATH; PostgreSQL 15 server binaries (as for `pgroute cluster`); when run as root, a `postgres` system
 * user (Patroni and PostgreSQL run as it). Exit status: 0 pgroute followed, 1 it did not (or the run failed),
 * 2 a prerequisite is missing. About a minute with the default TTL (20 s, Patroni's minimum).
 */
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { configFrom } from "../src/config/load.ts";
import { findPgBin, freePort } from "../src/devcluster/index.ts";
import { handOver, runAs } from "../src/devcluster/exec.ts";
import { postmasterPid } from "../src/devcluster/node.ts";
import { createLogger } from "../src/log.ts";
import { Proxy } from "../src/server.ts";
import { onCleanup, removeOnCleanup } from "./lib/cleanup.ts";
import { err, out, which } from "./lib/env.ts";
import { addDiagnostic, guard, parseCommandLine, runMain } from "./lib/main.ts";
import { childrenOf, commOf, killNow, sleep, terminate, waitForPort } from "./lib/proc.ts";

const USAGE = `usage: bun bench/patroni-failover.ts [--ttl SECONDS] [--endpoint cluster|leader]
  --ttl       Patroni's leader TTL, 20-120 (default 20: the failover takes about that long)
  --endpoint  the REST endpoint pgroute asks (failover.patroni_endpoint, default cluster)`;

interface Member {
  name: string;
  pgPort: number;
  restPort: number;
  dataDir: string;
  config: string;
  log: string;
  /** runuser's pid (Patroni runs as its child when we are root). */
  pid: number;
}

function parseArgs(argv: string[]): { ttl: number; endpoint: "cluster" | "leader" } | undefined {
  if (argv.includes("--help")) return undefined;
  const value = (flag: string) => {
    const i = argv.indexOf(flag);
    return i < 0 ? undefined : argv[i + 1];
  };
  const ttl = Number(value("--ttl") ?? 20);
  if (!Number.isInteger(ttl) || ttl < 20 || ttl > 120) throw new Error("--ttl: an integer from 20 to 120");
  const endpoint = value("--endpoint") ?? "cluster";
  if (endpoint !== "cluster" && endpoint !== "leader") throw new Error("--endpoint: cluster or leader");
  return { ttl, endpoint };
}

function patroniYaml(m: Member, etcdPort: number, pgBin: string, dir: string, ttl: number): string {
  // JSON is YAML: no YAML library needed to write Patroni's config.
  return JSON.stringify(
    {
      scope: "pgroute-bench",
      name: m.name,
      restapi: { listen: `127.0.0.1:${m.restPort}`, connect_address: `127.0.0.1:${m.restPort}` },
      etcd3: { hosts: [`127.0.0.1:${etcdPort}`] },
      bootstrap: {
        dcs: {
          ttl,
          loop_wait: 1,
          retry_timeout: 5,
          maximum_lag_on_failover: 16 * 1024 * 1024,
          synchronous_mode: true,
          postgresql: {
            use_pg_rewind: false,
            parameters: { wal_level: "replica", hot_standby: "on", max_wal_senders: 10, max_replication_slots: 10, fsync: "off" },
          },
        },
        initdb: [{ encoding: "UTF8" }, { locale: "C" }],
        pg_hba: ["local all all trust", "host replication replicator 127.0.0.1/32 scram-sha-256", "host all all 127.0.0.1/32 scram-sha-256"],
      },
      postgresql: {
        listen: `127.0.0.1:${m.pgPort}`,
        connect_address: `127.0.0.1:${m.pgPort}`,
        data_dir: m.dataDir,
        bin_dir: pgBin,
        pgpass: join(dir, `${m.name}.pgpass`),
        authentication: { superuser: { username: "postgres", password: "postgres" }, replication: { username: "replicator", password: "replicator" } },
        parameters: { unix_socket_directories: dir },
      },
      tags: { nofailover: false, noloadbalance: false, clonefrom: false, nosync: false },
    },
    null,
    2,
  );
}

/** The process that is Patroni itself (runuser's child when we run as root), or runuser's pid. */
function patroniPid(m: Member): number {
  const kids = childrenOf(m.pid).filter((p) => commOf(p) !== undefined);
  return kids[0] ?? m.pid;
}

async function json(url: string): Promise<unknown> {
  const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
  return res.json();
}

/** Patroni's running leader, by /cluster on the first member that answers. */
async function leaderOf(members: readonly Member[]): Promise<string | null> {
  for (const m of members) {
    try {
      const c = (await json(`http://127.0.0.1:${m.restPort}/cluster`)) as { members: { name: string; role: string; state: string }[] };
      return c.members.find((x) => x.role === "leader" && x.state === "running")?.name ?? null;
    } catch {
      // try the next member
    }
  }
  return null;
}

async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(v)})`);
    await sleep(100);
  }
}

async function main(): Promise<number> {
  const args = parseCommandLine(USAGE, parseArgs);
  if (typeof args === "number") return args;
  const { ttl, endpoint } = args;
  const needed = ["etcd", "patroni"].filter((c) => !which(c));
  if (process.platform !== "linux") needed.push("Linux (/proc)");
  let pgBin = "";
  try {
    pgBin = findPgBin();
  } catch (e) {
    needed.push(`PostgreSQL server binaries (${(e as Error).message})`);
  }
  if (needed.length > 0) {
    err(`missing: ${needed.join(", ")}\nDebian/Ubuntu: apt-get install etcd-server patroni postgresql-15`);
    return 2;
  }
  guard();
  const who = runAs();
  const dir = mkdtempSync(join(tmpdir(), "pgroute-patroni-"));
  chmodSync(dir, 0o700);
  handOver(dir, who);
  removeOnCleanup("remove the directory", dir);

  // etcd, one member on loopback.
  const [etcdPort, peerPort] = [await freePort(), await freePort()];
  const etcdLog = join(dir, "etcd.log");
  addDiagnostic("etcd log", etcdLog);
  const etcd = Bun.spawn(
    [
      "etcd",
      "--name", "bench",
      "--data-dir", join(dir, "etcd"),
      "--listen-client-urls", `http://127.0.0.1:${etcdPort}`,
      "--advertise-client-urls", `http://127.0.0.1:${etcdPort}`,
      "--listen-peer-urls", `http://127.0.0.1:${peerPort}`,
      "--initial-advertise-peer-urls", `http://127.0.0.1:${peerPort}`,
      "--initial-cluster", `bench=http://127.0.0.1:${peerPort}`,
    ],
    { stdout: Bun.file(etcdLog), stderr: Bun.file(etcdLog) },
  );
  onCleanup({ name: "etcd", run: () => terminate(etcd.pid, 5000), sync: () => killNow(etcd.pid) });
  await waitForPort("etcd", "127.0.0.1", etcdPort, () => etcd.exitCode === null, 20_000);

  // Two Patroni members; pg1 bootstraps, pg2 clones it.
  const members: Member[] = [];
  for (const name of ["pg1", "pg2"]) {
    const m: Member = { name, pgPort: await freePort(), restPort: await freePort(), dataDir: join(dir, name), config: join(dir, `${name}.yml`), log: join(dir, `${name}.log`), pid: 0 };
    writeFileSync(m.config, patroniYaml(m, etcdPort, pgBin, dir, ttl), { mode: 0o600 });
    handOver(m.config, who);
    writeFileSync(m.log, "");
    handOver(m.log, who);
    addDiagnostic(`Patroni ${name} log`, m.log);
    members.push(m);
  }
  const start = (m: Member) => {
    const argv = who.asPostgres ? ["runuser", "-u", "postgres", "--", "patroni", m.config] : ["patroni", m.config];
    const p = Bun.spawn(argv, { cwd: dir, stdout: Bun.file(m.log), stderr: Bun.file(m.log), env: { ...process.env, LC_ALL: "C" } });
    m.pid = p.pid;
    onCleanup({
      name: `Patroni ${m.name}`,
      run: async () => {
        await terminate(patroniPid(m), 15_000);
        await terminate(m.pid, 2000);
        const pm = postmasterPid(m.dataDir);
        if (pm !== undefined) await terminate(pm, 5000, "SIGQUIT");
      },
      sync: () => {
        killNow(patroniPid(m));
        const pm = postmasterPid(m.dataDir);
        if (pm !== undefined) killNow(pm);
      },
    });
  };
  const [pg1, pg2] = members as [Member, Member];
  const t0 = Date.now();
  start(pg1);
  await until("pg1 to lead", () => leaderOf([pg1]), (l) => l === "pg1", 90_000);
  start(pg2);
  await until(
    "pg2 to stream",
    async () => {
      try {
        return ((await json(`http://127.0.0.1:${pg2.restPort}/patroni`)) as { role?: string; state?: string }).state ?? "";
      } catch {
        return "";
      }
    },
    (s) => s === "running",
    120_000,
  );
  out(`patroni ${Bun.spawnSync(["patroni", "--version"]).stdout.toString().trim()}, etcd ${Bun.spawnSync(["etcd", "--version"]).stdout.toString().split("\n")[0]!.replace("etcd Version: ", "")}, ttl ${ttl} s, pgroute asks /${endpoint}; cluster up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  // pgroute in front, following Patroni.
  const config = configFrom({
    listen: { host: "127.0.0.1", port: 0 },
    nodes: members.map((m) => ({ name: m.name, host: "127.0.0.1", port: m.pgPort })),
    users: [{ name: "postgres", password: "postgres" }],
    pool: { mode: "transaction", size: 10 },
    monitor: { ping_interval: "500ms", ping_timeout: "1s", probe_interval: "2s" },
    failover: { patroni: members.map((m) => `http://127.0.0.1:${m.restPort}`), patroni_endpoint: endpoint, discovery_interval: "500ms", primary_wait_timeout: `${ttl + 40}s` },
    log: { level: "info" },
  });
  const proxyLog: string[] = [];
  const proxy = new Proxy({ config, log: createLogger(config.log, (l) => proxyLog.push(l)) });
  const { port } = await proxy.listen();
  onCleanup({ name: "pgroute", run: () => proxy.stop() });
  const switches: { primary: string | null; at: number }[] = [];
  proxy.cluster.subscribe((s) => {
    if (switches.at(-1)?.primary !== s.primary) switches.push({ primary: s.primary, at: Date.now() });
  });
  await until("pgroute to see pg1 as the primary", async () => proxy.cluster.current.primary, (p) => p === "pg1", 20_000);

  const sql = postgres({ host: "127.0.0.1", port, user: "postgres", password: "postgres", database: "postgres", max: 1, onnotice: () => {} });
  onCleanup({ name: "client", first: true, run: () => sql.end({ timeout: 1 }) });
  await sql.unsafe("create table bench_failover (n int primary key)").simple();
  const acked: { n: number; at: number }[] = [];
  const errors: { code: string; at: number }[] = [];
  let writing = true;
  const deadline = Date.now() + (ttl + 90) * 1000;
  const writer = (async () => {
    for (let n = 1; writing && Date.now() < deadline; n++) {
      try {
        await sql.unsafe(`insert into bench_failover values (${n})`).simple();
        acked.push({ n, at: Date.now() });
      } catch (e) {
        errors.push({ code: (e as { code?: string }).code ?? String(e), at: Date.now() });
      }
    }
  })();
  await until("writes through pgroute", async () => acked.length, (n) => n >= 200, 20_000);

  // Kill the leader as a crashed host would go: its Patroni first (no chance to hand over), then its postmaster.
  const killedAt = Date.now();
  killNow(patroniPid(pg1));
  const pm = postmasterPid(pg1.dataDir);
  if (pm !== undefined) killNow(pm);
  out(`killed pg1 (Patroni and postmaster ${pm ?? "?"}) with ${acked.length} rows written`);
  await until("Patroni to elect pg2", () => leaderOf([pg2]), (l) => l === "pg2", (ttl + 60) * 1000);
  const leaderAt = Date.now();
  const firstAfter = await until("a write acknowledged after the failover", async () => acked.find((a) => a.at > leaderAt)?.at ?? 0, (t) => t > 0, 60_000);
  const before = acked.length;
  await until("more writes on pg2", async () => acked.length, (n) => n >= before + 200, 30_000);
  writing = false;
  await writer;

  const switchedAt = switches.find((s) => s.primary === "pg2" && s.at > killedAt)?.at ?? null;
  const direct = postgres({ host: "127.0.0.1", port: pg2.pgPort, user: "postgres", password: "postgres", database: "postgres", max: 1, onnotice: () => {} });
  let missing: number[];
  try {
    const stored = new Set((await direct.unsafe<{ n: number }[]>("select n from bench_failover")).map((r) => r.n));
    missing = acked.filter((a) => !stored.has(a.n)).map((a) => a.n);
  } finally {
    await direct.end();
  }
  const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const byCode = new Map<string, number>();
  for (const e of errors) byCode.set(e.code, (byCode.get(e.code) ?? 0) + 1);
  out(`Patroni named pg2 the leader      ${secs(leaderAt - killedAt)} after the kill (leader TTL ${ttl} s)`);
  out(`pgroute switched its primary      ${switchedAt === null ? "never" : `${secs(switchedAt - killedAt)} after the kill, ${secs(switchedAt - leaderAt)} after Patroni`}`);
  out(`first write acknowledged          ${secs(firstAfter - killedAt)} after the kill, ${secs(firstAfter - leaderAt)} after Patroni`);
  out(`writes acknowledged               ${acked.length} (errors: ${errors.length === 0 ? "none" : [...byCode].map(([c, n]) => `${n} × ${c}`).join(", ")})`);
  out(`acknowledged rows missing on pg2  ${missing.length === 0 ? "none" : missing.join(", ")}`);
  const discovery = proxyLog.filter((l) => /primary_(elected|lost|down|discovery)/.test(l));
  out("pgroute's log about the primary:");
  for (const l of discovery) out(`  ${l}`);
  const ok = switchedAt !== null && missing.length === 0;
  out(ok ? "OK: pgroute followed Patroni's failover" : "FAILED: pgroute did not follow (see above)");
  return ok ? 0 : 1;
}

await runMain(main);
