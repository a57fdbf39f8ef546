// Invariant: `pgroute bench` turns its command line into exactly the run asked for (or a usage error naming the
// flag), targets route clients as documented, --compose names every missing piece of Docker, and the text and HTML
// reports show every target of every workload.
import { describe, expect, test } from "bun:test";
import { findCompose, publishedPorts, type Runner } from "../../src/bench/compose.ts";
import type { BenchNode } from "../../src/bench/environment.ts";
import { renderHtml } from "../../src/bench/report/html.ts";
import { renderJson } from "../../src/bench/report/json.ts";
import { niceTicks } from "../../src/bench/report/svg.ts";
import { renderTable } from "../../src/bench/report/table.ts";
import type { BenchResults, TargetResult } from "../../src/bench/results.ts";
import { directTarget, endpointTarget, parseTargetFlag, specFromUrl } from "../../src/bench/targets.ts";
import { planBench, redactedCommand } from "../../src/cli/bench.ts";
import { UsageError } from "../../src/cli/command.ts";

describe("command line", () => {
  test("defaults: read-only, simple protocol, 10 clients, 3 rounds of 10 s after 2 s of warm-up, scale 10", () => {
    const { options, json, html } = planBench(["--config", "p.toml", "--direct", "--seed", "5"]);
    expect(options.workloads).toEqual(["read-only"]);
    expect(options.protocols).toEqual(["simple"]);
    expect([options.clients, options.rounds, options.durationS, options.warmupS, options.scale]).toEqual([10, 3, 10, 2, 10]);
    expect(options.targets).toEqual({ direct: true, pgroute: true, endpoints: [] });
    expect(options.environment.source).toEqual({ kind: "config" });
    expect(options.init).toBe("auto");
    expect(options.seed).toBe(5);
    expect(options.applicationName).toBe("pgroute-bench");
    expect(options.counters).toBe(true);
    expect(json).toBeUndefined();
    expect(html).toBeUndefined();
  });

  test("lists, repeats, endpoints and --local", () => {
    const { options } = planBench([
      "--local", "--replicas", "1", "-w", "read-only,tpcb", "-w", "churn", "--protocol", "simple,prepared",
      "--target", "pgbouncer=postgres://u:secret@127.0.0.1:6433/db", "--duration", "2.5", "--json", "-",
    ]);
    expect(options.workloads).toEqual(["read-only", "tpcb", "churn"]);
    expect(options.protocols).toEqual(["simple", "prepared"]);
    expect(options.environment.source).toEqual({ kind: "local", replicas: 1 });
    expect(options.targets).toEqual({ direct: false, pgroute: true, endpoints: [{ name: "pgbouncer", url: "postgres://u:secret@127.0.0.1:6433/db" }] });
    expect(options.durationS).toBe(2.5);
    expect(options.command).toBe("pgroute bench --local --replicas 1 -w read-only,tpcb -w churn --protocol simple,prepared --target pgbouncer=postgres://u:***@127.0.0.1:6433/db --duration 2.5 --json -");
  });

  test("usage errors name the flag", () => {
    const bad: [string[], string][] = [
      [[], "nothing to measure"],
      [["--direct"], "--direct needs the cluster's nodes"],
      [["--local", "--workload", "sideways"], '--workload: unknown "sideways"'],
      [["--local", "--workload", "custom"], "--workload custom needs --sql FILE"],
      [["--local", "--clients", "0"], "--clients: expected an integer from 1 to 10000"],
      [["--local", "--read-ratio", "1.5"], "--read-ratio: expected a number from 0 to 1"],
      [["--local", "--init", "maybe"], "--init: expected auto, force or skip"],
      [["--local", "--compose", "x.yml"], "give one"],
      [["-c", "p.toml", "--replicas", "2"], "--replicas applies to --local only"],
      [["--target", "nourl"], "--target: expected NAME=postgres://"],
      [["--local", "--sql", "/nonexistent/x.sql"], "--sql /nonexistent/x.sql: no such file"],
      [["--local", "--bogus"], "Unknown option"],
    ];
    for (const [argv, message] of bad) {
      expect(() => planBench(argv)).toThrow(UsageError);
      expect(() => planBench(argv)).toThrow(message);
    }
  });

  test("passwords never reach the recorded command line", () => {
    expect(redactedCommand(["--password", "pw", "--password=x", "--target", "a=postgresql://me:p%40ss@h/db"])).toBe(
      "pgroute bench --password *** --password=*** --target a=postgresql://me:***@h/db",
    );
  });
});

describe("targets", () => {
  const node = (name: string, role: "primary" | "replica", port: number): BenchNode => ({
    name, role, host: "127.0.0.1", port, user: "u", password: "p", database: "d", sslmode: "disable",
  });

  test("direct: writes to the primary, read-only scripts to replica n mod R", () => {
    const t = directTarget([node("primary", "primary", 1), node("r1", "replica", 2), node("r2", "replica", 3)]);
    expect([1, 2, 3].map((id) => [t.route(id).writer.name, t.route(id).reader?.name])).toEqual([
      ["primary", "r1"],
      ["primary", "r2"],
      ["primary", "r1"],
    ]);
    expect(directTarget([node("primary", "primary", 1)]).route(1).reader).toBeNull();
    expect(() => directTarget([node("r1", "replica", 2)])).toThrow("needs a primary");
  });

  test("endpoints: libpq URLs with their defaults; names checked", () => {
    expect(parseTargetFlag("pgpool=postgres://a@h/db")).toEqual({ name: "pgpool", url: "postgres://a@h/db" });
    expect(() => parseTargetFlag("=postgres://h")).toThrow();
    expect(() => parseTargetFlag("bad name=postgres://h")).toThrow();
    expect(specFromUrl("x", "postgresql://app:p%40ss@[::1]:6433/shop?sslmode=require")).toEqual({
      name: "x", host: "::1", port: 6433, user: "app", password: "p@ss", database: "shop", sslmode: "require", sslrootcert: undefined,
    });
    const d = specFromUrl("y", "postgres://bob@db.example");
    expect([d.port, d.database, d.sslmode]).toEqual([5432, "bob", "prefer"]);
    expect(() => specFromUrl("z", "postgres://h/db?sslmode=sometimes")).toThrow('unknown sslmode "sometimes"');
    expect(endpointTarget("pgb", "postgres://u:pw@127.0.0.1:6433/db").description).toBe("postgres://u@127.0.0.1:6433/db");
  });
});

describe("--compose checks", () => {
  const runner = (answers: Record<string, { code: number; stdout?: string; stderr?: string }>): Runner => (argv) => {
    const a = answers[argv.join(" ")] ?? { code: 1, stderr: "unknown" };
    return { code: a.code, stdout: a.stdout ?? "", stderr: a.stderr ?? "" };
  };

  test("no docker at all", () => {
    expect(() => findCompose(runner({}), () => null)).toThrow(
      "--compose needs a Docker engine with Compose: there is no `docker` command on PATH; Docker Compose is not installed",
    );
  });

  test("a docker CLI without an engine or the compose plugin", () => {
    const r = runner({ "docker info --format {{.ServerVersion}}": { code: 1, stderr: "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" } });
    expect(() => findCompose(r, (c) => (c === "docker" ? "/usr/bin/docker" : null))).toThrow(
      "the Docker engine is not reachable (`docker info`: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?); Docker Compose is not installed",
    );
  });

  test("an engine with the compose plugin, or with docker-compose", () => {
    const ok = { "docker info --format {{.ServerVersion}}": { code: 0, stdout: "27.1.0\n" } };
    expect(findCompose(runner({ ...ok, "docker compose version": { code: 0 } }), () => "/usr/bin/x")).toEqual(["docker", "compose"]);
    expect(findCompose(runner({ ...ok, "docker-compose version": { code: 0 } }), () => "/usr/bin/x")).toEqual(["docker-compose"]);
  });

  test("published ports from `compose config --format json`", () => {
    const json = JSON.stringify({
      services: {
        primary: { ports: [{ target: 5432, published: "15432", host_ip: "127.0.0.1" }] },
        replica1: { ports: [{ target: 5432, published: 15433 }] },
        pgroute: { ports: [{ target: 6432, published: "6432", host_ip: "0.0.0.0" }] },
        worker: {},
      },
    });
    expect(publishedPorts(json)).toEqual([
      { service: "primary", target: 5432, host: "127.0.0.1", port: 15432 },
      { service: "replica1", target: 5432, host: "127.0.0.1", port: 15433 },
      { service: "pgroute", target: 6432, host: "127.0.0.1", port: 6432 },
    ]);
  });
});

describe("reports", () => {
  const spread = (x: number) => ({ median: x, min: x * 0.9, max: x * 1.1 });
  const target = (name: string, tps: number, share: number | null): TargetResult => ({
    target: name,
    warmup: null,
    rounds: [1, 2].map((round) => ({
      round, transactions: tps, statements: tps, errors: name === "pgroute" ? 1 : 0, errorCodes: (name === "pgroute" ? { "53300": 1 } : {}) as Record<string, number>,
      rollbacks: 0, probes: 2, elapsedS: 1, tps, latencyMs: { count: tps, mean: 1, p50: 1, p95: 2, p99: 3, max: 4 },
      nodes: { primary: tps }, replicaShare: share,
    })),
    summary: {
      tps: spread(tps),
      latencyMs: { mean: spread(1), p50: spread(0.5), p95: spread(2), p99: spread(3), max: spread(40) },
      errors: name === "pgroute" ? 2 : 0,
      replicaShare: share === null ? null : { median: share, min: share, max: share },
      vsDirect: tps / 1000,
    },
    histogram: [[0.5, 0.56, 10], [1, 1.12, 5]],
  });
  const results: BenchResults = {
    format: "pgroute-bench/1", pgroute: "0.1.0", startedAt: "t0", finishedAt: "t1", command: "pgroute bench --direct <x>",
    machine: { cpus: 2, cpuModel: "cpu", memoryGiB: 4, os: "Linux", bun: "1.4.5" }, server: { version: "15.18" },
    settings: { clients: 4, threads: 2, durationS: 2, warmupS: 0, rounds: 2, scale: 1, readRatio: 0.8, seed: 1, applicationName: "pgroute-bench" },
    cluster: { kind: "config", description: "nodes", nodes: [] }, counters: "pg_stat_statements", dataset: null,
    targets: [{ name: "direct", kind: "direct", description: "d" }, { name: "pgroute", kind: "pgroute", description: "p" }],
    scenarios: [{ id: "read-only/simple", workload: "read-only", protocol: "simple", churn: false, scripts: [{ name: "read-only", weight: 1, readOnly: true, statements: 1 }], targets: [target("direct", 1000, 1), target("pgroute", 800, 0.5)] }],
  };

  test("the table has a row per target with every column filled", () => {
    const text = renderTable(results);
    expect(text).toContain("read-only/simple — 4 client(s), 2 round(s) × 2 s");
    expect(text).toMatch(/^direct\s+1000 \(900–1100\)\s+1\.00×\s+0\.50\s+2\.00\s+3\.00\s+40\.0\s+0\s+100 %$/m);
    expect(text).toMatch(/^pgroute\s+800 \(720–880\)\s+0\.80×\s+0\.50\s+2\.00\s+3\.00\s+40\.0\s+2\s+50 %$/m);
    expect(text).toContain("errors of pgroute: 53300 ×2");
    expect(text).toContain("pg_stat_statements on each node (exact)");
  });

  test("JSON writes unknown numbers as null", () => {
    const r = structuredClone(results);
    r.scenarios[0]!.targets[0]!.rounds[0]!.latencyMs.p99 = Number.NaN;
    const back = JSON.parse(renderJson(r));
    expect(back.scenarios[0].targets[0].rounds[0].latencyMs.p99).toBeNull();
    expect(back.format).toBe("pgroute-bench/1");
  });

  test("HTML: one latency and one tps chart per workload, a line per target, a bar per target and round, text escaped", () => {
    const html = renderHtml(results);
    expect(html.match(/<svg class="chart"/g)).toHaveLength(2);
    expect(html.match(/<polyline class="series"/g)).toHaveLength(2);
    expect(html.match(/<rect class="bar"/g)).toHaveLength(4);
    expect(html.match(/<circle class="point"/g)).toHaveLength(4);
    expect(html).toContain("pgroute bench --direct &lt;x&gt;");
    expect(html).not.toMatch(/<script|\b(src|href)=|https?:\/\//);
  });

  test("axis ticks are round numbers covering the maximum", () => {
    expect(niceTicks(9.3)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(12_345)).toEqual([0, 2500, 5000, 7500, 10000, 12500]);
    expect(niceTicks(0)).toEqual([0, 1]);
  });
});
