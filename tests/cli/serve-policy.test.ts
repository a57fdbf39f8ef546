// Invariant: `pgroute serve -c FILE` enforces the policies its TOML file declares — psql as a read-only user gets
// 25006 for a write and runs reads, a firewall rule answers 42501 with its name and message and logs its refusals,
// a statement past the user's statement_timeout gets the server's 57014 — and a SIGHUP that adds a rule applies it
// to the session psql reconnects with.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { testCluster } from "../support/cluster.ts";
import { freePort } from "../support/net.ts";
import { CLI_ENV, SERVE, watch } from "../support/proc.ts";
import { eventually } from "../support/wait.ts";

// Bun 1.4.5 applies the preload's setDefaultTimeout to the first test file only; this file sets its own.
setDefaultTimeout(60_000);

const ROOT = join(import.meta.dir, "../..");

let cluster: DevCluster;
let dir: string;
let port: number;
let path: string;
let proc: Subprocess;
let stderr: ReturnType<typeof watch>;

const s = (v: string) => JSON.stringify(v);

function configToml(extraRule: string): string {
  const lines = ["[listen]", `host = "127.0.0.1"`, `port = ${port}`, ""];
  for (const n of cluster.nodes) lines.push("[[nodes]]", `name = ${s(n.name)}`, `host = ${s(n.host)}`, `port = ${n.port}`, `role = ${s(n.role)}`, "");
  for (const [name, extra] of [
    ["reporter", `role = "read-only"`],
    ["app", `statement_timeout = "250ms"`],
  ] as const) {
    lines.push("[[users]]", `name = ${s(name)}`, `auth = "trust"`, `server_user = ${s(cluster.superuser)}`, `server_password = ${s(cluster.password)}`, extra, "");
  }
  lines.push(
    "[[firewall.rules]]",
    `name = "no-drop"`,
    `kind = "statement"`,
    `statements = ["DROP", "TRUNCATE"]`,
    `message = "schema changes go through migrations"`,
    "",
    extraRule,
    "[log]",
    `level = "info"`,
    "",
  );
  return lines.join("\n");
}

async function psql(user: string, sql: string) {
  const p = Bun.spawn(["psql", "-X", "-w", "-A", "-t", "-v", "VERBOSITY=verbose", "-h", "127.0.0.1", "-p", String(port), "-U", user, "-d", "postgres", "-c", sql], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, PGCONNECT_TIMEOUT: "10" },
  });
  const [stdout, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr: err };
}

beforeAll(async () => {
  cluster = await testCluster();
  dir = await mkdtemp(join(tmpdir(), "pgroute-serve-policy-"));
  port = await freePort();
  path = join(dir, "pgroute.toml");
  await writeFile(path, configToml(""));
  proc = Bun.spawn([...SERVE, "-c", path], { cwd: ROOT, stdin: "ignore", stdout: "ignore", stderr: "pipe", env: CLI_ENV });
  stderr = watch(proc.stderr as ReadableStream<Uint8Array>);
  await stderr.until(/INFO  listening /);
});
afterAll(async () => {
  proc?.kill("SIGTERM");
  await proc?.exited;
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("pgroute serve with policies", () => {
  test("a read-only user: reads run, writes get 25006 from pgroute", async () => {
    expect(await psql("reporter", "select count(*) from pg_class where relname = 'pg_class'")).toEqual({ code: 0, stdout: "1\n", stderr: "" });
    const r = await psql("reporter", "create table nope (x int)");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ERROR:  25006: pgroute: user "reporter" is read-only: CREATE TABLE writes');
  });

  test("a firewall rule: 42501 with its name and message, and a log line", async () => {
    const r = await psql("app", "/* tidy up */ DROP TABLE IF EXISTS pg_temp.nothing");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ERROR:  42501: denied by pgroute firewall rule "no-drop": schema changes go through migrations');
    expect(r.stderr).toContain("DETAIL:  DROP TABLE");
    await stderr.until(/INFO  policy_refused user=app database=postgres code=42501 reason="DROP TABLE"/);
  });

  test("statement_timeout: the server's 57014 past the user's limit", async () => {
    const r = await psql("app", "set statement_timeout = 0; select 1");
    expect(r.stderr).toContain("42501"); // raising it with more statements after it in the same request
    const slow = await psql("app", "select pg_sleep(1)");
    expect(slow.code).toBe(1);
    expect(slow.stderr).toContain("ERROR:  57014: canceling statement due to statement timeout");
  });

  test("SIGHUP with a new rule: the next session is under it", async () => {
    expect((await psql("app", "select 'before'")).stdout).toBe("before\n");
    await writeFile(path, configToml(["[[firewall.rules]]", `name = "no-sleep"`, `kind = "functions"`, `functions = ["pg_sleep", "version"]`, ""].join("\n")));
    proc.kill("SIGHUP");
    await stderr.until(/config_reloaded changed=firewall/);
    await eventually("the new rule to hold", async () => (await psql("app", "select version()")).stderr.includes('rule "no-sleep"'));
  });
});
