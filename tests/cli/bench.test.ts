// Invariant: `pgroute bench` measures what it says: a short run against a real cluster prints a complete table and
// writes valid JSON whose counts are exactly the statements the servers executed (pg_stat_statements, read by the
// test itself), its HTML report renders its charts in a browser, `--local` leaves nothing running, and `--compose`
// without Docker fails with a message naming what is missing.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import postgres from "postgres";
import type { BenchResults } from "../../src/bench/results.ts";
import { guardCluster, startCluster, waitForReplay, type DevCluster, type Watchdog } from "../../src/devcluster/index.ts";
import { processesUsing } from "../support/cluster.ts";

const ROOT = resolve(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const work = mkdtempSync(join(tmpdir(), "pgroute-bench-test-"));
chmodSync(work, 0o755);

/** Runs `pgroute bench <args>` as a user would and collects what it printed. */
async function bench(args: string[], env: Record<string, string | undefined> = {}) {
  const proc = Bun.spawn([process.execPath, MAIN, "bench", ...args], {
    cwd: work,
    env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: undefined, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { stdout, stderr, code };
}

// A cluster of its own, with pg_stat_statements preloaded, so the test can count what the servers ran.
let cluster: DevCluster;
let guard: Watchdog;
const DB = "benchtest";
/** The workload's statement as pg_stat_statements records it (simple protocol: the literal becomes $1). */
const WORKLOAD_STATEMENT = "SELECT abalance FROM pgbench_accounts WHERE aid = $1%";

beforeAll(async () => {
  const dir = join(work, "cluster");
  guard = guardCluster(dir);
  cluster = await startCluster({
    dir,
    replicas: 1,
    port: 0,
    settings: { shared_preload_libraries: "pg_stat_statements", fsync: "off", synchronous_commit: "off" },
  });
  const sql = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`create database ${DB}`);
    // In the maintenance database, so the test's own readings never count against the benchmark's database.
    await sql.unsafe("create extension pg_stat_statements");
  } finally {
    await sql.end();
  }
  await waitForReplay(cluster);
});

afterAll(async () => {
  await cluster?.stop();
  guard?.dismiss();
  rmSync(work, { recursive: true, force: true });
});

/** Calls of the workload statement in the benchmark's database, per node, from each node's pg_stat_statements. */
async function executedPerNode(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const node of cluster.nodes) {
    const sql = postgres(cluster.url(node), { max: 1, fetch_types: false });
    try {
      const [row] = await sql.unsafe(
        `select coalesce(sum(calls), 0)::int as n from pg_stat_statements
          where dbid = (select oid from pg_database where datname = $1) and query like $2`,
        [DB, WORKLOAD_STATEMENT],
      );
      out[node.name] = (row as unknown as { n: number }).n;
    } finally {
      await sql.end();
    }
  }
  return out;
}

function writeConfig(): string {
  const nodes = cluster.nodes.map((n) => `[[nodes]]\nname = "${n.name}"\nhost = "${n.host}"\nport = ${n.port}\nrole = "${n.role}"\n`).join("\n");
  const path = join(work, "pgroute.toml");
  writeFileSync(
    path,
    `[listen]\nhost = "127.0.0.1"\nport = 0\n\n${nodes}\n[[users]]\nname = "postgres"\npassword = "${cluster.password}"\n\n[pool]\nmode = "transaction"\nsize = 4\n`,
  );
  return path;
}

const TABLE_ROW = (target: string) =>
  new RegExp(`^${target}\\s+\\d+( \\(\\d+–\\d+\\))?\\s+\\d+\\.\\d\\d×\\s+(\\d+\\.\\d+\\s+){3}\\d+(\\.\\d+)?\\s+0\\s+100 %$`, "m");

describe("pgroute bench against a cluster", () => {
  let results: BenchResults;
  const json = join(work, "results.json");
  const html = join(work, "report.html");

  test("two targets, 2 s rounds: a complete table, valid JSON, counts equal to what the servers executed", async () => {
    const config = writeConfig();
    // Creates the data set first, so the measured run below adds only the workload to the servers' counts.
    const init = await bench(["-c", config, "--direct", "-d", DB, "-s", "1", "--init", "force", "--clients", "1", "--duration", "0.2", "--rounds", "1", "--warmup", "0"]);
    expect(init.stderr).toContain("recreating pgbench tables at scale 1");
    expect(init.code).toBe(0);
    const before = await executedPerNode();

    const run = await bench(["-c", config, "--direct", "-d", DB, "-s", "1", "--clients", "4", "--duration", "2", "--rounds", "2", "--warmup", "0.5", "--seed", "42", "--json", json, "--html", html]);
    expect(run.code).toBe(0);
    // The table: a header and one complete row per target; reads went to the replica for both.
    expect(run.stdout).toContain("read-only/simple — 4 client(s), 2 round(s) × 2 s, median (min–max) over rounds");
    expect(run.stdout).toMatch(/^target\s+tps \(min–max\)\s+vs direct\s+p50 ms\s+p95 ms\s+p99 ms\s+max ms\s+errors\s+on replicas$/m);
    expect(run.stdout).toMatch(TABLE_ROW("direct"));
    expect(run.stdout).toMatch(TABLE_ROW("pgroute"));
    expect(run.stdout).toContain("from pg_stat_statements on each node (exact)");
    expect(run.stderr).not.toContain("pgbench tables");

    results = JSON.parse(readFileSync(json, "utf8")) as BenchResults;
    expect(results.format).toBe("pgroute-bench/1");
    expect(results.counters).toBe("pg_stat_statements");
    expect(results.dataset?.action).toBe("reused");
    expect(results.settings).toMatchObject({ clients: 4, durationS: 2, rounds: 2, warmupS: 0.5, scale: 1, seed: 42 });
    expect(results.targets.map((t) => [t.name, t.kind])).toEqual([
      ["direct", "direct"],
      ["pgroute", "pgroute"],
    ]);
    expect(results.scenarios.map((s) => s.id)).toEqual(["read-only/simple"]);
    const [scenario] = results.scenarios;
    for (const t of scenario!.targets) {
      expect(t.rounds).toHaveLength(2);
      for (const r of t.rounds) {
        expect(r.transactions).toBeGreaterThan(0);
        expect(r.statements).toBe(r.transactions);
        expect(r.errors).toBe(0);
        expect(r.elapsedS).toBeGreaterThanOrEqual(2);
        expect(r.tps).toBeCloseTo(r.transactions / r.elapsedS, 6);
        expect(r.latencyMs.count).toBe(r.transactions);
        expect(r.latencyMs.p50).toBeLessThanOrEqual(r.latencyMs.p99);
        expect(r.latencyMs.p99).toBeLessThanOrEqual(r.latencyMs.max);
        // Every workload statement ran on the replica, and the servers' counts of the round match the clients'.
        expect(r.nodes!.primary).toBe(0);
        expect(r.replicaShare).toBe(1);
        const counted = r.nodes!.replica1!;
        if (t.target === "direct") expect(counted).toBe(r.statements);
        // Through pgroute a server connection opened mid-round also runs the client's SET application_name.
        else expect(counted - r.statements).toBeWithin(0, 4 + 1);
      }
      expect(t.warmup!.transactions).toBeGreaterThan(0);
      expect(t.summary.tps.median).toBeGreaterThan(0);
      expect(t.summary.tps.min).toBeLessThanOrEqual(t.summary.tps.max);
      expect(t.histogram.reduce((n, b) => n + b[2], 0)).toBe(t.rounds.reduce((n, r) => n + r.transactions, 0));
    }
    expect(scenario!.targets[0]!.summary.vsDirect).toBe(1);

    // What the servers executed, counted by the test: every statement the clients completed, warm-up included.
    const after = await executedPerNode();
    const sent = scenario!.targets.reduce((n, t) => n + t.warmup!.statements + t.rounds.reduce((m, r) => m + r.statements, 0), 0);
    expect(after.primary! - before.primary!).toBe(0);
    expect(after.replica1! - before.replica1!).toBe(sent);
  });

  test("the HTML report renders its charts in headless Chromium", async () => {
    expect(existsSync(html)).toBe(true);
    const CHROMIUM = "/usr/bin/chromium";
    if (!(await Bun.file(CHROMIUM).exists())) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)`);
    const browser = await chromium.launch({ executablePath: CHROMIUM });
    let charts: { width: number; height: number; lines: { target: string; points: number; length: number }[]; bars: { target: string; round: string; height: number }[] }[];
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 2000 } });
      await page.goto(pathToFileURL(html).href);
      // Laid out by the browser: boxes and path lengths are only non-zero for marks that are actually drawn.
      charts = await page.evaluate(`[...document.querySelectorAll("svg.chart")].map((svg) => {
        const box = svg.getBoundingClientRect();
        return {
          width: box.width,
          height: box.height,
          lines: [...svg.querySelectorAll("polyline.series")].map((p) => ({ target: p.dataset.target, points: p.points.numberOfItems, length: p.getTotalLength() })),
          bars: [...svg.querySelectorAll("rect.bar")].map((b) => ({ target: b.dataset.target, round: b.dataset.round, height: b.getBBox().height })),
        };
      })`);
    } finally {
      await browser.close();
    }
    expect(charts).toHaveLength(2);
    const [latency, tps] = charts;
    for (const c of charts) {
      expect(c.width).toBeGreaterThan(300);
      expect(c.height).toBeGreaterThan(100);
    }
    expect(latency!.lines.map((l) => l.target)).toEqual(["direct", "pgroute"]);
    for (const l of latency!.lines) {
      expect(l.points).toBeGreaterThan(1);
      expect(l.length).toBeGreaterThan(0);
    }
    expect(tps!.bars.map((b) => `${b.target}/${b.round}`)).toEqual(["direct/1", "pgroute/1", "direct/2", "pgroute/2"]);
    for (const b of tps!.bars) expect(b.height).toBeGreaterThan(0);
    // The round heights follow the JSON: the tallest bar is the best round.
    const best = results.scenarios[0]!.targets.flatMap((t) => t.rounds.map((r) => ({ key: `${t.target}/${r.round}`, tps: r.tps }))).sort((a, b) => b.tps - a.tps)[0]!;
    const tallest = [...tps!.bars].sort((a, b) => b.height - a.height)[0]!;
    expect(`${tallest.target}/${tallest.round}`).toBe(best.key);
  });
});

describe("pgroute bench --local", () => {
  test("starts its own cluster with pg_stat_statements, measures through pgroute, and leaves nothing running", async () => {
    const run = await bench(["--local", "--replicas", "1", "--workload", "read-write", "--read-ratio", "0.5", "-s", "1", "--clients", "2", "--duration", "1", "--rounds", "1", "--warmup", "0", "--json", "-"]);
    expect(run.code).toBe(0);
    const r = JSON.parse(run.stdout) as BenchResults;
    expect(r.cluster.kind).toBe("local");
    expect(r.counters).toBe("pg_stat_statements");
    expect(r.targets.map((t) => t.name)).toEqual(["pgroute"]);
    const round = r.scenarios[0]!.targets[0]!.rounds[0]!;
    expect(round.transactions).toBeGreaterThan(0);
    expect(round.errors).toBe(0);
    // Writes on the primary, reads on the replica: both did some of the work.
    expect(round.nodes!.primary).toBeGreaterThan(0);
    expect(round.nodes!.replica1).toBeGreaterThan(0);
    expect(round.replicaShare!).toBeGreaterThan(0);
    expect(round.replicaShare!).toBeLessThan(1);
    const dir = /local dev cluster in (\S+):/.exec(r.cluster.description)![1]!;
    expect(existsSync(dir)).toBe(false);
    expect(processesUsing(dir)).toEqual([]);
  });
});

describe("pgroute bench fails clearly", () => {
  test("--compose without a docker command", async () => {
    const empty = mkdtempSync(join(work, "path-"));
    const r = await bench(["--compose", join(ROOT, "examples/docker-compose.yml"), "--direct"], { PATH: empty });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      "pgroute bench: --compose needs a Docker engine with Compose: there is no `docker` command on PATH; Docker Compose is not installed (neither `docker compose` nor `docker-compose` works). Without Docker, use --local",
    );
  });

  test("--compose with a docker command but no engine", async () => {
    const bin = mkdtempSync(join(work, "path-"));
    // The docker CLI of a machine without the daemon: `info` cannot connect, and no compose plugin is installed.
    writeFileSync(
      join(bin, "docker"),
      `#!/bin/sh\nif [ "$1" = info ]; then echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1; fi\necho "docker: unknown command: docker $1" >&2\nexit 1\n`,
      { mode: 0o755 },
    );
    const r = await bench(["--compose", "examples/docker-compose.yml"], { PATH: bin });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("the Docker engine is not reachable (`docker info`: Cannot connect to the Docker daemon");
    expect(r.stderr).toContain("Docker Compose is not installed");
  });

  test("nothing to measure is a usage error", async () => {
    const r = await bench([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("nothing to measure");
  });
});
