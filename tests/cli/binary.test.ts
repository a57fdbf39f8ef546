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
  const build = Bun.spawnSync(["bun", "build", "src/cli/main.ts", "--compile", "--outfile", bin], { cwd: root });
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
});
