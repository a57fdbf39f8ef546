/**
 * The shared test cluster: one primary + 2 streaming replicas per `bun test` process (all test files run in
 * one process), started on first use and stopped by the preload's global afterAll — or, should the run die
 * first, by a guard process (src/devcluster/watchdog.ts). Missing PostgreSQL binaries make tests fail, never skip.
 */
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import {
  guardCluster,
  startCluster,
  stopCluster,
  waitForReplay,
  type DevCluster,
  type Watchdog,
} from "../../src/devcluster/index.ts";

/** Roles for authentication tests: one per pg_hba method, each allowed only that method by pg_hba.conf. */
export const AUTH_USERS = {
  md5: { user: "md5user", password: "md5pass", method: "md5" },
  cleartext: { user: "clearuser", password: "clearpass", method: "password" },
  trust: { user: "trustuser", password: undefined, method: "trust" },
  scram: { user: "scramuser", password: "scrampass", method: "scram-sha-256" },
} as const;

/** A database owned by postgres in which every AUTH_USERS role may connect and create objects. */
export const APP_DATABASE = "app";

/** Settings that trade durability, which a throwaway cluster does not need, for speed. */
const FAST_SETTINGS = { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } as const;

const HBA = [
  `host all ${AUTH_USERS.md5.user} 127.0.0.1/32 md5`,
  `host all ${AUTH_USERS.cleartext.user} 127.0.0.1/32 password`,
  `host all ${AUTH_USERS.trust.user} 127.0.0.1/32 trust`,
];

let starting: Promise<DevCluster> | undefined;
let startedDir: string | undefined;
let guard: Watchdog | undefined;

function quoteLiteral(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** Create the AUTH_USERS roles and the app database, then wait until both replicas have replayed them. */
async function provision(cluster: DevCluster): Promise<void> {
  const sql = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {} });
  try {
    // One connection (max: 1), so the session-level password_encryption applies to the CREATE ROLE after it.
    await sql.unsafe("set password_encryption = 'md5'");
    await sql.unsafe(`create role ${AUTH_USERS.md5.user} login password ${quoteLiteral(AUTH_USERS.md5.password)}`);
    await sql.unsafe("set password_encryption = 'scram-sha-256'");
    for (const u of [AUTH_USERS.cleartext, AUTH_USERS.scram]) {
      await sql.unsafe(`create role ${u.user} login password ${quoteLiteral(u.password)}`);
    }
    await sql.unsafe(`create role ${AUTH_USERS.trust.user} login`);
    await sql.unsafe(`create database ${APP_DATABASE} owner postgres`);
    await sql.unsafe(`grant all on database ${APP_DATABASE} to public`);
  } finally {
    await sql.end();
  }
  // PostgreSQL 15 no longer lets PUBLIC create in schema public; the test roles need to.
  const app = postgres(cluster.url(cluster.primary, { user: cluster.superuser, password: cluster.password, database: APP_DATABASE }), {
    max: 1,
    onnotice: () => {},
  });
  try {
    await app.unsafe("grant all on schema public to public");
  } finally {
    await app.end();
  }
  await waitForReplay(cluster);
}

async function start(dir: string): Promise<DevCluster> {
  const cluster = await startCluster({ dir, replicas: 2, port: 0, settings: FAST_SETTINGS, hba: HBA });
  await provision(cluster);
  return cluster;
}

/**
 * The process-wide test cluster (primary + 2 replicas on free ports, with AUTH_USERS and APP_DATABASE replicated
 * everywhere). The first call starts it (a couple of seconds); a failed start fails every caller the same way.
 */
export function testCluster(): Promise<DevCluster> {
  if (!starting) {
    // Our own directory, known before anything starts, so the safety net and stopTestCluster can clean up even
    // a start that is still in flight (a timed-out hook, Ctrl-C during initdb).
    const dir = mkdtempSync(join(tmpdir(), "pgroute-test-cluster-"));
    startedDir = dir;
    // The safety net: `bun test` runs no "exit" handlers, so a separate guard process stops the cluster if this
    // process dies (crash, Ctrl-C, SIGKILL) before the preload's afterAll does.
    guard = guardCluster(dir);
    starting = start(dir);
  }
  return starting;
}

/** Stop the test cluster if it was started (waiting for a start in flight); called by the preload's afterAll. */
export async function stopTestCluster(): Promise<void> {
  const dir = startedDir;
  if (dir === undefined) return;
  await starting?.catch(() => {});
  startedDir = undefined;
  starting = undefined;
  await stopCluster(dir);
  guard?.dismiss();
  guard = undefined;
}

/** Pids of live processes whose command line mentions `path` (a postmaster shows its data dir there). Linux only. */
export function processesUsing(path: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(path)) pids.push(Number(entry));
    } catch {
      // The process exited while we looked.
    }
  }
  return pids;
}
