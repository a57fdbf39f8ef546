// Invariant: no log line (at debug level, text or JSON) and no error a client receives contains a password, a SCRAM
// verifier or one of its keys, or an md5 hash — configured ones, the ones clients try, or those in a config that
// fails to reload — whatever happens: successful and failed logins by every method, unknown users, a server that
// refuses pgroute's password, a password sent where it does not belong.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { reloadConfig } from "../../src/cli/serve.ts";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { createLogger } from "../../src/log.ts";
import { AUTH_USERS, APP_DATABASE, testCluster } from "../support/cluster.ts";
import { clusterNodes, startTestProxy, testUsers, type TestProxy } from "../support/proxy.ts";
import { RawClient, errorOf } from "../support/raw-client.ts";
import { passwordMessage, startup } from "../support/wire-frames.ts";

setDefaultTimeout(60_000);

let cluster: DevCluster;
let tp: TestProxy;
let dir: string;
const lines: string[] = [];
/** Every error message a client of this test received. */
const clientErrors: string[] = [];
/** Strings that must never be seen. */
const secrets: string[] = [];

const WRONG_ATTEMPTS = ["wrong-scram-attempt-7f3a", "wrong-md5-attempt-91c2", "unknown-user-attempt-44de"];
const SERVER_SECRET = "server-side-secret-b81e";

/** Logs in and runs a query; false (with the error kept) when that fails. */
async function tryLogin(user: string, password: string, database = APP_DATABASE): Promise<boolean> {
  const sql = postgres({ host: "127.0.0.1", port: tp.port, user, pass: password, database, max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    await sql`select 1`;
    return true;
  } catch (err) {
    clientErrors.push(String((err as Error).message));
    return false;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

beforeAll(async () => {
  cluster = await testCluster();
  const admin = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {} });
  const stored = await admin<{ rolname: string; rolpassword: string }[]>`select rolname, rolpassword from pg_authid where rolname in (${AUTH_USERS.scram.user}, ${AUTH_USERS.md5.user})`;
  await admin.end();
  const verifier = stored.find((r) => r.rolname === AUTH_USERS.scram.user)!.rolpassword;
  const md5 = stored.find((r) => r.rolname === AUTH_USERS.md5.user)!.rolpassword;
  const [, , keys] = verifier.split("$");
  secrets.push(cluster.password, AUTH_USERS.scram.password, AUTH_USERS.md5.password, AUTH_USERS.cleartext.password, SERVER_SECRET);
  secrets.push(verifier, ...keys!.split(":"), md5, md5.slice(3), ...WRONG_ATTEMPTS);
  const log = createLogger({ level: "debug", format: "json" }, (l) => lines.push(l));
  const textLog = createLogger({ level: "debug", format: "text" }, (l) => lines.push(l));
  const both = {
    debug: (e: string, f?: Record<string, unknown>) => (log.debug(e, f as never), textLog.debug(e, f as never)),
    info: (e: string, f?: Record<string, unknown>) => (log.info(e, f as never), textLog.info(e, f as never)),
    warn: (e: string, f?: Record<string, unknown>) => (log.warn(e, f as never), textLog.warn(e, f as never)),
    error: (e: string, f?: Record<string, unknown>) => (log.error(e, f as never), textLog.error(e, f as never)),
    enabled: () => true,
  };
  tp = await startTestProxy(
    {
      nodes: clusterNodes(cluster),
      pool: { mode: "transaction" },
      log: { level: "debug" },
      users: [
        ...testUsers(cluster).filter((u) => u.name !== AUTH_USERS.md5.user),
        { name: AUTH_USERS.scram.user, scram_verifier: verifier },
        { name: AUTH_USERS.md5.user, auth: "md5", md5_hash: md5 },
        { name: "pgroute_alias", password: "alias-pass-0e5d", server_user: AUTH_USERS.cleartext.user, server_password: SERVER_SECRET },
        // SCRAM both ways with plaintext passwords: the client's to pgroute, pgroute's to the server.
        { name: "pgroute_scram", password: "scram-pw-5d1c", server_user: AUTH_USERS.scram.user, server_password: AUTH_USERS.scram.password },
      ],
    },
    both,
  );
  secrets.push("alias-pass-0e5d", "scram-pw-5d1c");
  dir = await mkdtemp(join(tmpdir(), "pgroute-secrets-"));
});
afterAll(async () => {
  await tp?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("secrets never reach a log line or a client's error", () => {
  test("logins of every kind, good and bad", async () => {
    expect(await tryLogin(cluster.superuser, cluster.password)).toBe(true); // SCRAM with a configured password
    expect(await tryLogin("pgroute_scram", "scram-pw-5d1c")).toBe(true); // …and SCRAM to the server with another
    expect(await tryLogin("pgroute_scram", WRONG_ATTEMPTS[0]!)).toBe(false);
    expect(await tryLogin(cluster.superuser, WRONG_ATTEMPTS[0]!)).toBe(false);
    expect(await tryLogin(AUTH_USERS.scram.user, AUTH_USERS.scram.password)).toBe(true); // SCRAM pass-through from a verifier
    expect(await tryLogin(AUTH_USERS.scram.user, WRONG_ATTEMPTS[0]!)).toBe(false);
    expect(await tryLogin(AUTH_USERS.md5.user, AUTH_USERS.md5.password)).toBe(true); // md5 against a stored hash
    expect(await tryLogin(AUTH_USERS.md5.user, WRONG_ATTEMPTS[1]!)).toBe(false);
    expect(await tryLogin("pgroute_no_such_user", WRONG_ATTEMPTS[2]!)).toBe(false);
    expect(await tryLogin("pgroute_alias", "alias-pass-0e5d")).toBe(false); // the server refuses pgroute's server_password
    expect(clientErrors.length).toBeGreaterThanOrEqual(5);
    expect(lines.some((l) => l.includes("auth_failed"))).toBe(true);
    expect(lines.some((l) => l.includes("login_failed"))).toBe(true);
  });

  test("a cleartext password sent where a SCRAM message belongs", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      raw.send(startup({ user: cluster.superuser, database: "postgres" }));
      expect((await raw.next()).type).toBe("R");
      raw.send(passwordMessage(cluster.password));
      const m = await raw.next();
      clientErrors.push(errorOf(m).message, errorOf(m).fields.get(0x44) ?? "");
      expect(errorOf(m).severity).toBe("FATAL");
    } finally {
      raw.close();
    }
  });

  test("a reload with bad credentials in the file", async () => {
    const path = join(dir, "bad.toml");
    await writeFile(
      path,
      [
        "[[nodes]]",
        `name = "p"`,
        "port = 5432",
        "[[users]]",
        `name = "u"`,
        `scram_verifier = "${cluster.password}"`,
        `md5_hash = "${AUTH_USERS.md5.password}"`,
        "[[users]]",
        `name = "v"`,
        `password = 12345`,
      ].join("\n"),
    );
    const ok = await reloadConfig(tp.proxy, path, {}, tp.proxy.log);
    expect(ok).toBe(false);
    expect(lines.some((l) => l.includes("users[0].scram_verifier"))).toBe(true);
  });

  test("…and none of it shows anywhere", () => {
    expect(lines.length).toBeGreaterThan(20);
    // The test cluster's superuser password is its name ("postgres"), which rightly appears everywhere.
    for (const s of secrets.filter((x) => x !== cluster.superuser && x !== "postgres")) {
      expect({ secret: s, lines: lines.filter((l) => l.includes(s)) }).toEqual({ secret: s, lines: [] });
      expect({ secret: s, errors: clientErrors.filter((e) => e.includes(s)) }).toEqual({ secret: s, errors: [] });
    }
  });
});
