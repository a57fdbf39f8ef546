// Invariant: `pgroute serve -c FILE` runs a proxy that psql can query through, stops on SIGTERM or SIGINT with
// exit code 0, exits 2 printing every configuration error (one line each, prefixed with the file), and exits 1
// naming the address when its listen port is taken.
import { eventually } from "../support/wait.ts";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { testCluster } from "../support/cluster.ts";
import { freePort } from "../support/net.ts";
import { CLI_ENV, SERVE, watch } from "../support/proc.ts";
import { RawClient } from "../support/raw-client.ts";

// Bun 1.4.5 applies the preload's setDefaultTimeout to the first test file only; this file sets its own.
setDefaultTimeout(60_000);

const ROOT = join(import.meta.dir, "../..");
const ENV = CLI_ENV;

let cluster: DevCluster;
let dir: string;
/** Children still running when a test fails, so afterAll can stop them. */
const children = new Set<Subprocess>();

beforeAll(async () => {
  cluster = await testCluster();
  dir = await mkdtemp(join(tmpdir(), "pgroute-serve-"));
});
afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  if (dir) await rm(dir, { recursive: true, force: true });
});

const s = (v: string) => JSON.stringify(v);

/** A pgroute.toml in front of the test cluster, listening on `port`. */
function configToml(port: number): string {
  const lines = ["[listen]", `host = "127.0.0.1"`, `port = ${port}`, ""];
  for (const n of cluster.nodes) {
    lines.push("[[nodes]]", `name = ${s(n.name)}`, `host = ${s(n.host)}`, `port = ${n.port}`, `role = ${s(n.role)}`, "");
  }
  lines.push("[[users]]", `name = ${s(cluster.superuser)}`, `password = ${s(cluster.password)}`, "", "[log]", `level = "info"`, "");
  return lines.join("\n");
}

async function writeConfig(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

function serve(args: string[]) {
  const proc = Bun.spawn([...SERVE, ...args], { cwd: ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe", env: ENV });
  children.add(proc);
  void proc.exited.then(() => children.delete(proc));
  return { proc, stdout: watch(proc.stdout), stderr: watch(proc.stderr) };
}

/** Resolves once something accepts TCP connections on `port`; polls (bounded), never sleeps blindly. */
async function waitAccepting(port: number, proc: Subprocess, timeoutMs = 15_000): Promise<void> {
  await eventually(`something accepting connections on port ${port}`, async () => {
    if (proc.exitCode !== null) throw new Error(`serve exited with ${proc.exitCode} before accepting connections`);
    return Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } }).then(
      (sock) => (sock.end(), true),
      () => false,
    );
  }, timeoutMs);
}

async function psql(port: number, sql: string) {
  const proc = Bun.spawn(
    ["psql", "-X", "-w", "-A", "-t", "-h", "127.0.0.1", "-p", String(port), "-U", cluster.superuser, "-d", "postgres", "-c", sql],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, PGPASSWORD: cluster.password, PGCONNECT_TIMEOUT: "10" } },
  );
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

/** Waits for the child to exit, failing (and killing it) if it does not within `timeoutMs`. */
async function exitCode(proc: Subprocess, timeoutMs = 10_000): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`serve did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([proc.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe("pgroute serve", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`serves psql through the proxy and exits 0 on ${signal}`, async () => {
      const port = await freePort();
      const path = await writeConfig(`ok-${signal}.toml`, configToml(port));
      const { proc, stderr } = serve(["-c", path]);
      await waitAccepting(port, proc);
      // A hint keeps this read on the primary (transaction pooling, the default, would send it to a replica).
      const r = await psql(port, "/* pgroute: primary */ select 'through pgroute', inet_server_port()");
      expect(r).toEqual({ code: 0, stdout: `through pgroute|${cluster.primary.port}\n`, stderr: "" });
      // Clients still connected — one in a session, one that never finished its startup — do not hold it up.
      const session = postgres(`postgres://${cluster.superuser}:${cluster.password}@127.0.0.1:${port}/postgres`, {
        max: 1,
        onnotice: () => {},
        connect_timeout: 10,
      });
      const silent = await RawClient.connect(port);
      try {
        expect([...(await session`select 1 as one`)]).toEqual([{ one: 1 }]);
        proc.kill(signal);
        expect(await exitCode(proc)).toBe(0);
        await silent.waitClosed();
        await expect(session`select 1`).rejects.toThrow();
      } finally {
        silent.close();
        await session.end({ timeout: 1 });
      }
      await stderr.done;
      expect(stderr.text()).toContain(`pgroute: stopped (${signal})`);
      expect(stderr.text()).toMatch(new RegExp(`INFO  listening host=127\\.0\\.0\\.1 port=${port} mode=transaction`));
    });
  }

  test("a configuration with errors: exit 2, every error on its own line of stderr", async () => {
    const path = await writeConfig(
      "bad.toml",
      [
        "[listen]",
        "port = 70000",
        "",
        "[[nodes]]",
        `name = "a"`,
        `port = "x"`,
        "",
        "[pool]",
        "size = 0",
        `mode = "sometimes"`,
        "",
        "[limits]",
        "max_clients = 5",
        "",
      ].join("\n"),
    );
    const { proc, stdout, stderr } = serve(["-c", path]);
    expect(await exitCode(proc)).toBe(2);
    await Promise.all([stdout.done, stderr.done]);
    expect(stderr.text().split("\n")).toEqual([
      `${path}: listen.port: expected an integer 0-65535, got 70000`,
      `${path}: nodes[0].port: expected an integer 1-65535, got "x"`,
      `${path}: pool.size: expected an integer >= 1, got 0`,
      `${path}: pool.mode: expected one of "session", "transaction", got "sometimes"`,
      `${path}: limits.max_clients: unknown key`,
      "",
    ]);
    expect(stdout.text()).toBe("");
  });

  test("the admin listener: started with the proxy, its address logged, RELOAD re-reads the file", async () => {
    const port = await freePort();
    const admin = await freePort();
    const base = configToml(port).replace(`name = ${s(cluster.superuser)}`, `name = ${s(cluster.superuser)}\nrole = "admin"`);
    const path = await writeConfig("admin.toml", `${base}\n[admin]\nlisten = "127.0.0.1:${admin}"\n`);
    const { proc, stderr } = serve(["-c", path]);
    try {
      await stderr.until(new RegExp(`INFO  admin_listening host=127\\.0\\.0\\.1 port=${admin} dashboard=http://127\\.0\\.0\\.1:${admin}/ token="none \\(loopback only\\)"`));
      await waitAccepting(port, proc);
      const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      expect(metrics).toContain(`pgroute_node_role{node="${cluster.primary.name}",role="primary"} 1`);
      await writeFile(path, `${base}\n[admin]\nlisten = "127.0.0.1:${admin}"\ntop_queries = 7\n`);
      const reload = await fetch(`http://127.0.0.1:${admin}/reload`, { method: "POST" });
      expect(await reload.json()).toEqual({ ok: true, message: "configuration reloaded (version 2; changed: admin)" });
      const r = await psql(port, "/* pgroute: primary */ select 1");
      expect(r.code).toBe(0);
      proc.kill("SIGTERM");
      expect(await exitCode(proc)).toBe(0);
    } finally {
      proc.kill("SIGKILL");
    }
  });

  test("an admin listener on a non-loopback address without a token: exit 2, naming the key", async () => {
    const path = await writeConfig("open-admin.toml", `${configToml(await freePort())}\n[admin]\nlisten = "0.0.0.0:0"\n`);
    const { proc, stderr } = serve(["-c", path]);
    expect(await exitCode(proc)).toBe(2);
    await stderr.done;
    expect(stderr.text()).toBe(`${path}: admin.token: required when admin.listen is not a loopback address (0.0.0.0)\n`);
  });

  test("a missing configuration file: exit 2, saying which file", async () => {
    const path = join(dir, "does-not-exist.toml");
    const { proc, stderr } = serve(["-c", path]);
    expect(await exitCode(proc)).toBe(2);
    await stderr.done;
    expect(stderr.text()).toBe(`cannot read ${path}: no such file\n`);
  });

  test("the listen port already taken: exit 1 with a message naming the address", async () => {
    const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const path = await writeConfig("taken.toml", configToml(holder.port));
      const { proc, stderr } = serve(["-c", path]);
      expect(await exitCode(proc)).toBe(1);
      await stderr.done;
      expect(stderr.text()).toBe(`pgroute serve: 127.0.0.1:${holder.port} is already in use (choose another listen port)\n`);
    } finally {
      holder.stop(true);
    }
  });
});
