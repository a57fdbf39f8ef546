// Invariant: `pgroute cluster up` starts nodes that `status` sees and `down` removes without a trace, and every
// failure that can be known up front (taken port, missing binaries, bad flags) exits early with an exact
// message, the documented exit code, and nothing left on disk.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parse as parseToml } from "smol-toml";
import { stopCluster } from "../../src/devcluster/index.ts";
import { processesUsing } from "../support/cluster.ts";
import { freePort, freePortBlock } from "../support/net.ts";

const ROOT = resolve(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const work = mkdtempSync(join(tmpdir(), "pgroute-cli-test-"));
// mkdtemp makes it 0700; when we run as root the nodes run as `postgres`, which must traverse it.
chmodSync(work, 0o755);

afterAll(async () => {
  // A failed assertion mid-lifecycle must not leave a cluster running.
  for (const entry of readdirSync(work)) await stopCluster(join(work, entry)).catch(() => {});
  rmSync(work, { recursive: true, force: true });
});

/** Run `pgroute <args>` as a user would, without colours, and collect what it printed. */
async function pgroute(args: string[], env: Record<string, string | undefined> = {}) {
  const proc = Bun.spawn([process.execPath, MAIN, ...args], {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: undefined, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { stdout, stderr, code };
}

describe("pgroute cluster up → status → down", () => {
  const dir = join(work, "lifecycle");

  test("up starts a primary and one replica and prints how to use them", async () => {
    const port = await freePortBlock(2);
    const up = await pgroute(["cluster", "up", "--replicas", "1", "--dir", dir, "--port", String(port)]);
    expect(up.stderr).toBe("");
    expect(up.code).toBe(0);
    expect(up.stdout).toContain(`primary   primary  127.0.0.1:${port}`);
    expect(up.stdout).toContain(`replica1  replica  127.0.0.1:${port + 1}`);
    expect(up.stdout).toContain(`pgroute serve -c ${join(dir, "pgroute.toml")}`);
    expect(up.stdout).toContain(`pgroute cluster down --dir ${dir}`);
  });

  test("status shows both nodes up and the replica streaming", async () => {
    const status = await pgroute(["cluster", "status", "--dir", dir]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/primary\s+primary\s+127\.0\.0\.1:\d+\s+up\n/);
    expect(status.stdout).toMatch(/replica1\s+replica\s+127\.0\.0\.1:\d+\s+up, streaming/);
    const json = JSON.parse((await pgroute(["cluster", "status", "--dir", dir, "--json"])).stdout);
    expect(json.nodes.map((n: { name: string; up: boolean }) => [n.name, n.up])).toEqual([
      ["primary", true],
      ["replica1", true],
    ]);
  });

  test("the written pgroute.toml parses and names every node with its role", () => {
    const config = parseToml(readFileSync(join(dir, "pgroute.toml"), "utf8")) as {
      listen: { host: string; port: number };
      nodes: { name: string; role: string; host: string }[];
      users: { name: string }[];
    };
    expect(config.listen).toEqual({ host: "127.0.0.1", port: 6432 });
    expect(config.nodes.map((n) => [n.name, n.role, n.host])).toEqual([
      ["primary", "primary", "127.0.0.1"],
      ["replica1", "replica", "127.0.0.1"],
    ]);
    expect(config.users.map((u) => u.name)).toEqual(["postgres"]);
  });

  test("up again on the same dir refuses and points at down", async () => {
    const again = await pgroute(["cluster", "up", "--dir", dir, "--port", "0"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(
      `pgroute cluster: ${dir} already holds a pgroute dev cluster; run \`pgroute cluster down --dir ${dir}\` first\n`,
    );
  });

  test("down removes the directory and leaves no postgres process behind", async () => {
    expect(processesUsing(dir).length).toBeGreaterThan(0); // so the final check below means something
    const down = await pgroute(["cluster", "down", "--dir", dir]);
    expect(down.code).toBe(0);
    expect(existsSync(dir)).toBe(false);
    expect(processesUsing(dir)).toEqual([]);
  });

  test("down again is a no-op and status reports there is no cluster", async () => {
    const down = await pgroute(["cluster", "down", "--dir", dir]);
    expect(down.code).toBe(0);
    const status = await pgroute(["cluster", "status", "--dir", dir]);
    expect(status.code).toBe(1);
    expect(status.stderr).toBe(`pgroute cluster: no dev cluster in ${dir} (start one with \`pgroute cluster up --dir ${dir}\`)\n`);
  });
});

describe("pgroute cluster up fails fast", () => {
  test("on a port something already listens on: exact message, exit 1, no directory", async () => {
    const port = await freePort();
    const server: Server = createServer();
    await new Promise<void>((ok) => server.listen(port, "127.0.0.1", ok));
    const dir = join(work, "taken");
    try {
      const up = await pgroute(["cluster", "up", "--dir", dir, "--port", String(port)]);
      expect(up.stderr).toBe(`pgroute cluster: port ${port} is already in use on 127.0.0.1 (choose another with --port)\n`);
      expect(up.code).toBe(1);
      expect(existsSync(dir)).toBe(false);
    } finally {
      server.close();
    }
  });

  test("without PostgreSQL binaries: exact message, exit 1, no directory", async () => {
    const dir = join(work, "nobin");
    const up = await pgroute(["cluster", "up", "--dir", dir, "--port", "0"], {
      PGROUTE_PG_BIN: "/nonexistent",
      PATH: dirname(process.execPath),
    });
    expect(up.stderr).toBe(
      "pgroute cluster: PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup) not found; " +
        "looked in $PGROUTE_PG_BIN (/nonexistent).\n" +
        "Install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15) " +
        "or set PGROUTE_PG_BIN to the directory that holds them.\n",
    );
    expect(up.code).toBe(1);
    expect(existsSync(dir)).toBe(false);
  });

  test.each([
    [["cluster"], "missing subcommand (up, down or status)"],
    [["cluster", "sideways"], 'unknown subcommand "sideways" (expected up, down or status)'],
    [["cluster", "up", "--replicas", "many"], '--replicas must be an integer from 0 to 20, got "many"'],
    [["cluster", "up", "--port", "70000"], '--port must be an integer from 0 to 65535, got "70000"'],
  ])("usage error %p exits 2", async (args, message) => {
    const run = await pgroute(args);
    expect(run.code).toBe(2);
    expect(run.stderr.split("\n")[0]).toBe(`pgroute cluster: ${message}`);
    expect(run.stderr).toContain("Usage: pgroute cluster <up|down|status>");
  });
});
