// Invariant: `bun build --compile` yields one self-contained `pgroute` executable that runs the same CLI and
// proxies real traffic, with no Bun or source tree needed beside it.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import pkg from "../../package.json" with { type: "json" };
import { testCluster } from "../support/cluster.ts";
import { freePort } from "../support/net.ts";
import { watch } from "../support/proc.ts";

const root = join(import.meta.dir, "../..");
let dir: string;
let bin: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "pgroute-bin-"));
  bin = join(dir, "pgroute");
  // The same entry points as package.json "build": the bench's load-generator thread is a second one.
  const build = Bun.spawnSync(["bun", "build", "src/cli/main.ts", "src/bench/worker.ts", "--compile", "--outfile", bin], { cwd: root });
  if (build.exitCode !== 0) throw new Error(`build failed: ${build.stderr.toString()}`);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the binary from an empty directory, so nothing from the source tree can be picked up. */
function run(args: string[]) {
  return Bun.spawnSync([bin, ...args], { cwd: dir, env: { PATH: "/usr/bin:/bin" } });
}

describe("compiled pgroute binary", () => {
  test("--version prints the package version", () => {
    const r = run(["--version"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trim()).toBe(`pgroute ${pkg.version}`);
  });

  test("--help lists every command; each command has its own --help", () => {
    const r = run(["--help"]);
    expect(r.exitCode).toBe(0);
    for (const c of ["serve", "demo", "cluster", "init", "check", "explain", "bench"]) {
      expect(r.stdout.toString()).toContain(`  ${c} `);
      const h = run([c, "--help"]);
      expect(h.exitCode).toBe(0);
      expect(h.stdout.toString()).toContain(`pgroute ${c}`);
    }
  });

  test("an unknown command exits 2", () => {
    const r = run(["frobnicate"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.toString()).toContain('unknown command "frobnicate"');
  });

  test("serve proxies queries to the primary and stops on SIGTERM with exit 0", async () => {
    const cluster = await testCluster();
    const port = await freePort();
    const config = join(dir, "pgroute.toml");
    writeFileSync(
      config,
      `[listen]\nhost = "127.0.0.1"\nport = ${port}\n\n[[nodes]]\nname = "primary"\nport = ${cluster.primary.port}\nrole = "primary"\n\n[[users]]\nname = "postgres"\npassword = "${cluster.password}"\n`,
    );
    const proc = Bun.spawn([bin, "serve", "-c", config], { cwd: dir, stdout: "pipe", stderr: "pipe" });
    await watch(proc.stderr).until(/listening host=127\.0\.0\.1 port=\d+/);
    const sql = postgres(`postgres://postgres:${cluster.password}@127.0.0.1:${port}/postgres`, { max: 1 });
    try {
      const rows = await sql<{ port: number }[]>`select inet_server_port() as port`;
      expect(rows[0]!.port).toBe(cluster.primary.port);
    } finally {
      await sql.end();
    }
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  });

  test("bench runs its load-generator threads from the binary", async () => {
    const cluster = await testCluster();
    const admin = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe("drop database if exists binbench");
      await admin.unsafe("create database binbench");
    } finally {
      await admin.end();
    }
    const url = `postgres://postgres:${cluster.password}@127.0.0.1:${cluster.primary.port}/binbench?sslmode=disable`;
    const r = run(["bench", "--target", `db=${url}`, "-s", "1", "--clients", "2", "--threads", "2", "--duration", "1", "--rounds", "1", "--warmup", "0", "--json", "-"]);
    expect(r.stderr.toString()).not.toContain("crashed");
    expect(r.exitCode).toBe(0);
    const results = JSON.parse(r.stdout.toString());
    expect(results.settings.threads).toBe(2);
    const round = results.scenarios[0].targets[0].rounds[0];
    expect(round.transactions).toBeGreaterThan(0);
    expect(round.errors).toBe(0);
  });
});
