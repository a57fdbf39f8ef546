// Invariant: pgroute authenticates every client itself with the configured method (SCRAM, md5, trust, SCRAM
// pass-through from a verifier) before it opens any server connection; a wrong password and an unknown user
// get the same FATAL 28P01 "password authentication failed for user" as from Postgres, a user outside its
// allowed databases gets 28000, and a login the server refuses reaches the client as the server's own error.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import pg from "pg";
import postgres from "postgres";
import { SUPERUSER, type DevCluster } from "../../src/devcluster/index.ts";
import { APP_DATABASE, AUTH_USERS } from "../support/cluster.ts";
import { startTestProxy, testUsers, type TestProxy } from "../support/proxy.ts";
import { RawClient, eventually } from "../support/raw-client.ts";
import { startup } from "../support/wire-frames.ts";

// Bun 1.4.5 applies the preload's setDefaultTimeout to the first test file only; this file sets its own.
setDefaultTimeout(60_000);

let tp: TestProxy;
let cluster: DevCluster;
let admin: postgres.Sql;

beforeAll(async () => {
  tp = await startTestProxy();
  cluster = tp.cluster;
  admin = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {} });
});
afterAll(async () => {
  await admin?.end({ timeout: 1 });
  await tp?.stop();
});

interface Creds {
  user: string;
  password?: string;
  database?: string;
  application_name?: string;
}

/** postgres:// URL for `port` (the password part only when given). */
function urlFor(port: number, c: Creds): string {
  const auth = c.password === undefined ? encodeURIComponent(c.user) : `${encodeURIComponent(c.user)}:${encodeURIComponent(c.password)}`;
  return `postgres://${auth}@127.0.0.1:${port}/${c.database ?? APP_DATABASE}`;
}

/** Logs in with node-postgres and returns current_user, or the error's code and message. */
async function pgLogin(port: number, c: Creds): Promise<{ user: string } | { code: string; message: string; severity: string }> {
  const client = new pg.Client({ connectionString: urlFor(port, c), connectionTimeoutMillis: 10_000, application_name: c.application_name });
  try {
    await client.connect();
  } catch (err) {
    const e = err as { code: string; message: string; severity: string };
    return { code: e.code, message: e.message, severity: e.severity };
  }
  try {
    return { user: (await client.query("select current_user as u")).rows[0].u };
  } finally {
    await client.end();
  }
}

/** The same with postgres.js. */
async function pjsLogin(port: number, c: Creds): Promise<{ user: string } | { code: string; message: string; severity: string }> {
  const sql = postgres(urlFor(port, c), { max: 1, onnotice: () => {}, connect_timeout: 10, ...(c.password === undefined ? {} : { pass: c.password }) });
  try {
    return { user: (await sql`select current_user as u`)[0]!.u };
  } catch (err) {
    const e = err as { code: string; message: string; severity: string };
    return { code: e.code, message: e.message, severity: e.severity };
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** psql's exit code and stderr for one connection attempt (never prompting for a password). */
async function psqlLogin(port: number, c: Creds): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: Record<string, string | undefined> = { ...process.env, PGCONNECT_TIMEOUT: "10", LC_ALL: "C.UTF-8", PGPASSWORD: c.password };
  if (c.password === undefined) delete env.PGPASSWORD;
  delete env.PGPASSFILE;
  const proc = Bun.spawn(
    ["psql", "-X", "-w", "-A", "-t", "-h", "127.0.0.1", "-p", String(port), "-U", c.user, "-d", c.database ?? APP_DATABASE, "-c", "select current_user"],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe", env },
  );
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

const authFailed = (user: string) => ({ code: "28P01", severity: "FATAL", message: `password authentication failed for user "${user}"` });

describe("authentication failures", () => {
  const FAILURES: [string, Creds][] = [
    ["a wrong password", { user: SUPERUSER, password: "not-the-password" }],
    ["an unknown user", { user: "pgroute_no_such_user", password: "whatever" }],
    ["a wrong md5 password", { user: AUTH_USERS.md5.user, password: "not-md5pass" }],
  ];

  for (const [what, creds] of FAILURES) {
    test(`${what}: FATAL 28P01 with Postgres's own message, for pg, postgres.js and psql`, async () => {
      const expected = authFailed(creds.user);
      expect(await pgLogin(tp.port, creds)).toEqual(expected);
      expect(await pjsLogin(tp.port, creds)).toEqual(expected);
      const p = await psqlLogin(tp.port, creds);
      expect(p).toEqual({
        code: 2,
        stdout: "",
        stderr: `psql: error: connection to server at "127.0.0.1", port ${tp.port} failed: FATAL:  password authentication failed for user "${creds.user}"\n`,
      });
      // Postgres says exactly the same (its pg_hba asks this role for a password, too).
      expect(await pgLogin(cluster.primary.port, creds)).toEqual(expected);
    });
  }

  test("a user not allowed on a database gets 28000 there, and logs in to an allowed one", async () => {
    const restricted = await startTestProxy({
      users: [...testUsers(cluster), { name: AUTH_USERS.scram.user, password: AUTH_USERS.scram.password, databases: [APP_DATABASE] }],
    });
    try {
      const creds = { user: AUTH_USERS.scram.user, password: AUTH_USERS.scram.password };
      const refused = { code: "28000", severity: "FATAL", message: `user "${creds.user}" is not allowed to connect to database "postgres"` };
      expect(await pgLogin(restricted.port, { ...creds, database: "postgres" })).toEqual(refused);
      expect(await pjsLogin(restricted.port, { ...creds, database: "postgres" })).toEqual(refused);
      expect(await pgLogin(restricted.port, { ...creds, database: APP_DATABASE })).toEqual({ user: creds.user });
      // The check comes after the password: a wrong one still gets 28P01, so database names are not probed.
      expect(await pgLogin(restricted.port, { ...creds, password: "wrong", database: "postgres" })).toEqual(authFailed(creds.user));
    } finally {
      await restricted.stop();
    }
  });

  test("a login the server refuses reaches the client as the server's error, naming the server user", async () => {
    const proxied = await startTestProxy({
      users: [
        ...testUsers(cluster),
        { name: "pgroute_alias", password: "alias-pass", server_user: AUTH_USERS.md5.user, server_password: "wrong-server-password" },
      ],
    });
    try {
      const creds = { user: "pgroute_alias", password: "alias-pass" };
      // The client's own password was right: the 28P01 is Postgres's, about the role pgroute logged in as.
      expect(await pgLogin(proxied.port, creds)).toEqual(authFailed(AUTH_USERS.md5.user));
      expect(await pjsLogin(proxied.port, creds)).toEqual(authFailed(AUTH_USERS.md5.user));
      const p = await psqlLogin(proxied.port, creds);
      expect(p.code).toBe(2);
      expect(p.stderr).toBe(
        `psql: error: connection to server at "127.0.0.1", port ${proxied.port} failed: FATAL:  password authentication failed for user "${AUTH_USERS.md5.user}"\n`,
      );
    } finally {
      await proxied.stop();
    }
  });
});

describe("authentication methods", () => {
  test("each configured user is asked for its method: SCRAM, md5, or nothing for trust", async () => {
    const asked: Record<string, number> = {};
    for (const user of [SUPERUSER, AUTH_USERS.md5.user, AUTH_USERS.cleartext.user, AUTH_USERS.trust.user, "pgroute_unknown"]) {
      const raw = await RawClient.connect(tp.port);
      try {
        raw.send(startup({ user, database: APP_DATABASE }));
        const m = await raw.next();
        expect(m.type).toBe("R");
        asked[user] = new DataView(m.body.buffer, m.body.byteOffset, 4).getInt32(0);
      } finally {
        raw.close();
      }
    }
    // 10 AuthenticationSASL, 5 AuthenticationMD5Password, 0 AuthenticationOk. An unknown user is asked like
    // any SCRAM user, so the reply does not reveal which names exist.
    expect(asked).toEqual({ [SUPERUSER]: 10, [AUTH_USERS.md5.user]: 5, [AUTH_USERS.cleartext.user]: 10, [AUTH_USERS.trust.user]: 0, pgroute_unknown: 10 });
  });

  test("md5 client auth logs in (and pgroute answers the server's md5 challenge)", async () => {
    const creds = { user: AUTH_USERS.md5.user, password: AUTH_USERS.md5.password };
    expect(await pgLogin(tp.port, creds)).toEqual({ user: creds.user });
    expect(await pjsLogin(tp.port, creds)).toEqual({ user: creds.user });
    expect(await psqlLogin(tp.port, creds)).toEqual({ code: 0, stdout: `${creds.user}\n`, stderr: "" });
  });

  test("SCRAM to pgroute, cleartext to the server", async () => {
    const creds = { user: AUTH_USERS.cleartext.user, password: AUTH_USERS.cleartext.password };
    expect(await pgLogin(tp.port, creds)).toEqual({ user: creds.user });
    expect(await psqlLogin(tp.port, creds)).toEqual({ code: 0, stdout: `${creds.user}\n`, stderr: "" });
  });

  test("trust logs in without a password", async () => {
    const creds = { user: AUTH_USERS.trust.user };
    expect(await pgLogin(tp.port, creds)).toEqual({ user: creds.user });
    expect(await psqlLogin(tp.port, creds)).toEqual({ code: 0, stdout: `${creds.user}\n`, stderr: "" });
  });

  test("SCRAM pass-through: with only the role's verifier, pgroute logs in to the server with the client's key", async () => {
    const [row] = await admin<{ verifier: string }[]>`select rolpassword as verifier from pg_authid where rolname = ${AUTH_USERS.scram.user}`;
    const verifier = row!.verifier;
    expect(verifier).toStartWith("SCRAM-SHA-256$");
    const passThrough = await startTestProxy({ users: [...testUsers(cluster), { name: AUTH_USERS.scram.user, scram_verifier: verifier }] });
    try {
      const creds = { user: AUTH_USERS.scram.user, password: AUTH_USERS.scram.password };
      expect(await pgLogin(passThrough.port, creds)).toEqual({ user: creds.user });
      expect(await pjsLogin(passThrough.port, creds)).toEqual({ user: creds.user });
      expect(await psqlLogin(passThrough.port, creds)).toEqual({ code: 0, stdout: `${creds.user}\n`, stderr: "" });
      expect(await pgLogin(passThrough.port, { ...creds, password: "wrong" })).toEqual(authFailed(creds.user));
    } finally {
      await passThrough.stop();
    }
  });
});

// --- no server connection before authentication ------------------------------------------------------------------

/** A TCP relay in front of the primary that counts the connections pgroute opens through it. */
async function countingRelay(target: { host: string; port: number }): Promise<{ port: number; opened: () => number; stop: () => void }> {
  let opened = 0;
  type Pair = { upstream: Socket<unknown> | null; early: Uint8Array[] };
  const listener: TCPSocketListener<Pair> = Bun.listen<Pair>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(client) {
        opened++;
        client.data = { upstream: null, early: [] };
        void Bun.connect({
          hostname: target.host,
          port: target.port,
          socket: {
            data(_s, chunk) {
              client.write(chunk);
            },
            close() {
              client.end();
            },
            error() {
              client.end();
            },
          },
        }).then(
          (up) => {
            client.data.upstream = up as Socket<unknown>;
            for (const b of client.data.early) up.write(b);
            client.data.early = [];
          },
          () => client.end(),
        );
      },
      data(client, chunk) {
        if (client.data.upstream) client.data.upstream.write(chunk);
        else client.data.early.push(chunk.slice());
      },
      close(client) {
        client.data.upstream?.end();
      },
      error(client) {
        client.data.upstream?.end();
      },
    },
  });
  return { port: listener.port, opened: () => opened, stop: () => listener.stop(true) };
}

describe("no server connection for a client that fails authentication", () => {
  test("failed, unfinished and refused logins open no server connection; a good one opens exactly one", async () => {
    const relay = await countingRelay(cluster.primary);
    const counted = await startTestProxy({
      nodes: [{ name: "primary", host: "127.0.0.1", port: relay.port, role: "primary" }],
      users: [...testUsers(cluster), { name: AUTH_USERS.scram.user, password: AUTH_USERS.scram.password, databases: [APP_DATABASE] }],
      // The relay counts every connection to the server: the health monitor's own would be one more.
      monitor: { enabled: false },
    });
    const app = `pgroute_noauth_${process.pid}_${Date.now()}`;
    const backends = async () =>
      (await admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name = ${app}`)[0]!.n;
    const pending = await RawClient.connect(counted.port);
    try {
      // A client stopped in the middle of SCRAM: pgroute must not have dialled the server on its behalf.
      pending.send(startup({ user: SUPERUSER, database: APP_DATABASE, application_name: app }));
      expect((await pending.next()).type).toBe("R");

      const failures: [string, Creds][] = [
        ["wrong password", { user: SUPERUSER, password: "nope" }],
        ["unknown user", { user: "pgroute_ghost", password: "nope" }],
        ["wrong md5 password", { user: AUTH_USERS.md5.user, password: "nope" }],
        ["database not allowed", { user: AUTH_USERS.scram.user, password: AUTH_USERS.scram.password, database: "postgres" }],
      ];
      for (const [, c] of failures) {
        const r = await pgLogin(counted.port, { ...c, application_name: app });
        expect(r).toHaveProperty("code");
      }
      // A good login afterwards is seen at once by both the relay and the server: the counters work...
      const ok = new pg.Client({ connectionString: urlFor(counted.port, { user: SUPERUSER, password: cluster.password }), application_name: app });
      await ok.connect();
      try {
        await eventually("the good login to show in pg_stat_activity", async () => (await backends()) === 1);
        // ...and saw nothing before it: one server connection in all, for the one client that authenticated.
        expect(relay.opened()).toBe(1);
      } finally {
        await ok.end();
      }
      await eventually("the good login's backend to go away", async () => (await backends()) === 0);
      expect(pending.closed).toBe(false);
    } finally {
      pending.close();
      await counted.stop();
      relay.stop();
    }
  });
});
