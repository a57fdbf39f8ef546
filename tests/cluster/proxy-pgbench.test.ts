// Invariant: pgbench runs through pgroute in every query mode (-M simple, extended, prepared) and with a new
// connection per transaction (-C): exit code 0, every transaction processed, none failed.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { startTestProxy, type TestProxy } from "../support/proxy.ts";

// Bun 1.4.5 applies the preload's setDefaultTimeout to the first test file only; this file sets its own.
setDefaultTimeout(60_000);

let tp: TestProxy;
let cluster: DevCluster;
const DB = `pgbench_${process.pid}`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function pgbench(port: number, args: string[]): Promise<Run> {
  const proc = Bun.spawn(["pgbench", "-h", "127.0.0.1", "-p", String(port), "-U", cluster.superuser, ...args, DB], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, PGPASSWORD: cluster.password, PGCONNECT_TIMEOUT: "10", LC_ALL: "C.UTF-8" },
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

beforeAll(async () => {
  tp = await startTestProxy();
  cluster = tp.cluster;
  const admin = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`drop database if exists ${DB}`);
    await admin.unsafe(`create database ${DB}`);
  } finally {
    await admin.end({ timeout: 1 });
  }
  // Initialised straight on the primary: the runs below are what goes through pgroute.
  const init = await pgbench(cluster.primary.port, ["-i", "-s", "1", "-q"]);
  expect(init.code).toBe(0);
});

afterAll(async () => {
  await tp?.stop();
  if (!cluster) return;
  const admin = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`drop database if exists ${DB} with (force)`);
  } finally {
    await admin.end({ timeout: 1 });
  }
});

/** The report lines a user reads to see whether the run went well. */
function report(r: Run) {
  const line = (prefix: string) => r.stdout.split("\n").find((l) => l.startsWith(prefix)) ?? `(no "${prefix}" line)`;
  return {
    code: r.code,
    mode: line("query mode:"),
    processed: line("number of transactions actually processed:"),
    failed: line("number of failed transactions:"),
  };
}

describe("pgbench through pgroute", () => {
  const CLIENTS = 4;
  for (const mode of ["simple", "extended", "prepared"] as const) {
    test(`-S -M ${mode} -c ${CLIENTS}: every transaction processed, none failed`, async () => {
      const perClient = 250;
      const r = await pgbench(tp.port, ["-n", "-S", "-M", mode, "-c", String(CLIENTS), "-j", "2", "-t", String(perClient)]);
      expect({ ...report(r), stderr: r.stderr }).toEqual({
        code: 0,
        mode: `query mode: ${mode}`,
        processed: `number of transactions actually processed: ${CLIENTS * perClient}/${CLIENTS * perClient}`,
        failed: "number of failed transactions: 0 (0.000%)",
        stderr: "",
      });
    });
  }

  test(`-C (a new connection per transaction) -c ${CLIENTS}, read-write: every transaction processed, none failed`, async () => {
    const perClient = 50;
    const r = await pgbench(tp.port, ["-n", "-C", "-M", "extended", "-c", String(CLIENTS), "-j", "2", "-t", String(perClient)]);
    expect({ ...report(r), stderr: r.stderr }).toEqual({
      code: 0,
      mode: "query mode: extended",
      processed: `number of transactions actually processed: ${CLIENTS * perClient}/${CLIENTS * perClient}`,
      failed: "number of failed transactions: 0 (0.000%)",
      stderr: "",
    });
    // The TPC-B-like script wrote one history row per transaction, through pgroute.
    const admin = postgres(cluster.url(cluster.primary, { database: DB }), { max: 1, onnotice: () => {} });
    try {
      const [row] = await admin<{ n: number }[]>`select count(*)::int as n from pgbench_history`;
      expect(row?.n).toBe(CLIENTS * perClient);
    } finally {
      await admin.end({ timeout: 1 });
    }
  });
});
