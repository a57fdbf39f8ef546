// Invariant: `pgroute check lag` reports the same picture of the real cluster that a running pgroute publishes
// (roles, reachability, lag, connections limit, score, breaker, who takes reads); `--watch --count N` prints N
// reports; it exits 0 on a healthy cluster and 1 when the primary is unreachable or no replica would take reads
// (so it works as a health check), 2 on a usage error; the table is coloured only on a terminal.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { renderReport, verdict } from "../../src/cli/lag-report.ts";
import type { ClusterSnapshot, NodeSnapshot } from "../../src/cluster/state.ts";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { testCluster } from "../support/cluster.ts";
import { freePort } from "../support/net.ts";
import { clusterNodes, startTestProxy, type TestProxy } from "../support/proxy.ts";
import { waitFor } from "../support/wait.ts";

const ROOT = join(import.meta.dir, "../..");
const CHECK = [process.execPath, join(ROOT, "src/cli/main.ts"), "check"];

let cluster: DevCluster;
let dir: string;

beforeAll(async () => {
  cluster = await testCluster();
  dir = mkdtempSync(join(tmpdir(), "pgroute-check-"));
});

/** A config file for the test cluster (nodes as given), with the superuser as its only user. */
function configFile(name: string, nodes: Record<string, unknown>[]): string {
  const toml = [
    ...nodes.flatMap((n) => ["[[nodes]]", ...Object.entries(n).map(([k, v]) => `${k} = ${JSON.stringify(v)}`), ""]),
    "[[users]]",
    `name = "${cluster.superuser}"`,
    `password = "${cluster.password}"`,
  ].join("\n");
  const path = join(dir, name);
  writeFileSync(path, toml);
  return path;
}

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn([...CHECK, ...args], { cwd: ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

interface Report {
  ok: boolean;
  problems: string[];
  primary: string | null;
  nodes: NodeSnapshot[];
}

describe("against the real cluster", () => {
  let tp: TestProxy;
  afterAll(async () => {
    await tp?.stop();
  });

  test("--json matches the snapshot a running pgroute publishes for the same cluster", async () => {
    const nodes = clusterNodes(cluster);
    tp = await startTestProxy({ nodes, pool: { mode: "transaction" } });
    const snapshot = await waitFor("every node checked", () => tp.proxy.cluster.current, (s) => s.nodes.every((n) => n.checkedAt !== null));
    const { code, stdout } = await run(["lag", "-c", configFile("cluster.toml", nodes), "--json"]);
    expect(code).toBe(0);
    const report = JSON.parse(stdout) as Report;
    expect(report.ok).toBe(true);
    expect(report.problems).toEqual([]);
    expect(report.primary).toBe(snapshot.primary);
    const shape = (n: NodeSnapshot) => ({
      name: n.name,
      role: n.role,
      standby: n.standby,
      reachable: n.reachable,
      lagBytes: n.lagBytes,
      lagSeconds: n.lagSeconds,
      maxConnections: n.maxConnections,
      breaker: n.breaker.state,
      readable: n.readable,
      healthy: n.healthy,
      excludedBecause: n.excludedBecause,
      lagLimitMs: n.lagLimitMs,
    });
    expect(report.nodes.map(shape)).toEqual(snapshot.nodes.map(shape));
    // The score's latency part comes from each one's own pings: close, not necessarily equal.
    report.nodes.forEach((n, i) => expect(Math.abs(n.score - snapshot.nodes[i]!.score)).toBeLessThanOrEqual(5));
    // Figures only the check measures: a p99 of its burst for every node, and the connections it saw.
    for (const n of report.nodes) {
      expect(n.probeP99Ms).toBeGreaterThan(0);
      expect(n.connections).toBeGreaterThanOrEqual(1);
    }
  });

  test("the table: a row per node, who takes reads, the verdict", async () => {
    const { code, stdout } = await run(["lag", "-c", configFile("cluster.toml", clusterNodes(cluster))]);
    expect(code).toBe(0);
    const lines = stdout.split("\n");
    expect(lines[0]).toMatch(/^node\s+role\s+zone\s+reachable\s+lag\s+lag time\s+active\/conns\s+p99\s+score\s+breakdown\s+breaker\s+reads$/);
    expect(lines.find((l) => l.startsWith("primary "))).toMatch(/primary\s+-\s+yes\s+-\s+-\s+\d+\/\d+ of \d+.*closed\s+no \(replicas\)$/);
    for (const r of cluster.replicas) expect(lines.find((l) => l.startsWith(`${r.name} `))).toMatch(/replica\s+-\s+yes\s+0 B\s+0 ms\s+\d+\/\d+ of \d+\s+[\d.]+ ms\s+\d+\s+lag 100 lat \d+ err 100 .*closed\s+yes$/);
    expect(stdout).toMatch(/^OK: primary primary, 2 of 2 replicas take reads/m);
    expect(stdout).not.toContain("\x1b[");
  });

  test("--nodes finds the roles itself; --watch --count 2 --json prints two reports", async () => {
    const list = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(",");
    const { code, stdout } = await run(["lag", "--nodes", list, "--user", cluster.superuser, "--password", cluster.password, "--watch", "--count", "2", "--interval", "200ms", "--json"]);
    expect(code).toBe(0);
    const reports = stdout.trim().split("\n").map((l) => JSON.parse(l) as Report);
    expect(reports).toHaveLength(2);
    for (const r of reports) {
      expect(r.nodes.map((n) => n.role)).toEqual(["primary", "replica", "replica"]);
      expect(r.primary).toBe(`${cluster.primary.host}:${cluster.primary.port}`);
    }
  });

  test("exit 1 when the primary is unreachable, or no replica would take reads", async () => {
    const dead = await freePort();
    const [primary, ...replicas] = clusterNodes(cluster) as [Record<string, unknown>, ...Record<string, unknown>[]];
    const noPrimary = await run(["lag", "-c", configFile("dead-primary.toml", [{ ...primary, port: dead }, ...replicas]), "--json"]);
    expect(noPrimary.code).toBe(1);
    expect((JSON.parse(noPrimary.stdout) as Report).problems[0]).toMatch(/^the primary \(primary\) is unreachable: /);
    const noReplica = await run(["lag", "-c", configFile("dead-replicas.toml", [primary, ...replicas.map((r) => ({ ...r, port: dead }))])]);
    expect(noReplica.code).toBe(1);
    expect(noReplica.stdout).toMatch(/^PROBLEM: no replica would take reads \(replica1: unreachable: .*; replica2: unreachable: /m);
  });

  test("usage errors exit 2", async () => {
    expect((await run([])).code).toBe(2);
    expect((await run(["lag", "--nodes", "nohost"])).code).toBe(2);
    expect((await run(["lag", "--count", "2"])).code).toBe(2);
    const both = await run(["lag", "--nodes", "127.0.0.1:1", "-c", "x.toml"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("give either --config or --nodes, not both");
  });
});

describe("rendering", () => {
  function snapshotWith(nodes: Partial<NodeSnapshot>[]): ClusterSnapshot {
    const base = (name: string, role: NodeSnapshot["role"]): NodeSnapshot => ({
      name,
      node: { name, host: "127.0.0.1", port: 5432, role: "auto", weight: 1, zone: "", sslmode: "prefer" },
      zone: "",
      role,
      reachable: true,
      lagBytes: role === "replica" ? 0 : null,
      lagSeconds: role === "replica" ? 0 : null,
      lsn: "0/1",
      activeQueries: 0,
      connections: 1,
      maxConnections: 100,
      load: 0,
      observed: { p99Ms: null, errorRate: 0, requests: 0, waiting: 0, inFlight: 0 },
      score: 100,
      scoreParts: { lag: 100, latency: 100, errors: 100, load: 100, queue: 100, breaker: 100 },
      breaker: { state: "closed", reason: null, until: null },
      readable: role === "replica",
      excludedBecause: role === "primary" ? "reads go to the replicas while one can take them" : null,
      drained: false,
      standby: role === "replica",
      healthy: role === "replica",
      lagLimitMs: role === "replica" ? 1000 : null,
      replayPaused: null,
      replication: null,
      pingMs: 0.3,
      probeP99Ms: 0.5,
      checkedAt: 1,
      error: null,
    });
    const list = nodes.map((n, i) => ({ ...base(n.name ?? `n${i}`, n.role ?? "replica"), ...n }));
    return { at: 0, version: 1, nodes: list, primary: list.find((n) => n.role === "primary")?.name ?? null };
  }

  test("coloured on a terminal only: green healthy, red excluded", () => {
    const s = snapshotWith([
      { name: "p", role: "primary" },
      { name: "r1" },
      { name: "r2", readable: false, healthy: false, excludedBecause: "lag 1.4 s > max_lag 1 s", lagSeconds: 1.4, lagBytes: 4096, breaker: { state: "open", reason: "lag 1.4 s > max_lag 1 s", until: null } },
    ]);
    const plain = renderReport(s, false);
    expect(plain).not.toContain("\x1b[");
    expect(plain).toContain("r2: lag 1.4 s > max_lag 1 s");
    expect(plain).toMatch(/^r2\s+replica\s+-\s+yes\s+4\.0 KiB\s+1\.4 s/m);
    const tty = renderReport(s, true);
    expect(tty).toContain("\x1b[32mr1 "); // green
    expect(tty).toContain("\x1b[31mr2 "); // red
  });

  test("the verdict: a lagging cluster fails, an unknown primary fails", () => {
    const lagging = snapshotWith([{ name: "p", role: "primary" }, { name: "r1", readable: false, excludedBecause: "lag 3 s > max_lag 1 s" }]);
    expect(verdict(lagging)).toEqual({ ok: false, problems: ["no replica would take reads (r1: lag 3 s > max_lag 1 s)"] });
    expect(verdict(snapshotWith([{ name: "r1" }])).problems).toEqual(["no primary: no node is configured as one or reports being one"]);
    expect(verdict(snapshotWith([{ name: "p", role: "primary" }])).ok).toBe(true);
  });
});
