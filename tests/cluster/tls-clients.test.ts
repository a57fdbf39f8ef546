// Invariant: with `[tls]` enabled, real clients (psql, postgres.js, node-postgres) reach pgroute over TLS and verify
// its certificate (verify-full by IP and by name); `require` refuses plaintext logins with 28000 but still takes a
// CancelRequest; any byte behind an SSLRequest, or plaintext sent after 'S', gets FATAL 08P01 and a close, and the
// next client is served; reloading the certificate keeps open sessions and serves the new one to new handshakes.
import { pace } from "../support/wait.ts";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { copyFileSync, rmSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import tls from "node:tls";
import pg from "pg";
import postgres from "postgres";
import { ConfigLoadError } from "../../src/config/load.ts";
import { decodeError } from "../../src/wire/backend.ts";
import { APP_DATABASE, AUTH_USERS } from "../support/cluster.ts";
import { certDir, makeCa, makeServerCert, removeCertDir, type TestCa, type TestCert } from "../support/certs.ts";
import { startTestProxy, type TestProxy } from "../support/proxy.ts";
import { RawClient, errorOf, eventually } from "../support/raw-client.ts";
import { cancelRequest, concat, gssencRequest, query, sslRequest, startup } from "../support/wire-frames.ts";

// Bun 1.4.5 applies the preload's setDefaultTimeout to the first test file only; this file sets its own.
setDefaultTimeout(60_000);

let dir: string;
let caA: TestCa;
let caB: TestCa;
let certA: TestCert;
let certB: TestCert;
/** `require` mode, serving cert A: every successful login through it was encrypted. */
let strict: TestProxy;
/** `allow` mode, serving cert A. */
let relaxed: TestProxy;

const LOGIN = { user: AUTH_USERS.trust.user, database: APP_DATABASE };
const S = 0x53;
const N = 0x4e;

beforeAll(async () => {
  dir = certDir();
  caA = makeCa(dir, "a");
  caB = makeCa(dir, "b");
  certA = makeServerCert(dir, caA, "server-a");
  certB = makeServerCert(dir, caB, "server-b");
  strict = await startTestProxy({ tls: { mode: "require", cert: certA.certPath, key: certA.keyPath } });
  relaxed = await startTestProxy({ tls: { mode: "allow", cert: certA.certPath, key: certA.keyPath } });
});

afterAll(async () => {
  await strict?.stop();
  await relaxed?.stop();
  if (dir) removeCertDir(dir);
});

// --- clients ---------------------------------------------------------------------------------------------------

interface PsqlRun {
  code: number;
  out: string;
  err: string;
}

/** psql with a keyword/value conninfo (never PGSSL* from the environment), printing unaligned tuples only. */
async function psql(conninfo: Record<string, string | number>, args: string[], stdin?: string): Promise<PsqlRun> {
  const dsn = Object.entries(conninfo)
    .map(([k, v]) => `${k}='${String(v).replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`)
    .join(" ");
  const env: Record<string, string> = { PATH: process.env.PATH ?? "", HOME: dir, LC_ALL: "C.UTF-8", PGCONNECT_TIMEOUT: "10" };
  const proc = Bun.spawn(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, ...args], {
    env,
    stdin: stdin === undefined ? "ignore" : new TextEncoder().encode(stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, out, err };
}

/** conninfo for the superuser through `tp` (host 127.0.0.1 unless overridden). */
function via(tp: TestProxy, extra: Record<string, string> = {}): Record<string, string | number> {
  return { host: "127.0.0.1", port: tp.port, user: tp.cluster.superuser, password: tp.cluster.password, dbname: "postgres", ...extra };
}

/** Waits until the primary runs `sql` (so a cancel cannot arrive before the query). */
async function serverRuns(sql: string): Promise<void> {
  const direct = postgres(strict.cluster.url(strict.cluster.primary), { max: 1, onnotice: () => {} });
  try {
    await eventually(`the server to run ${sql}`, async () => {
      const [row] = await direct`select count(*)::int as n from pg_stat_activity where query = ${sql} and state = 'active'`;
      return row!.n > 0;
    });
  } finally {
    await direct.end();
  }
}

/** A node:tls connection to pgroute after the SSLRequest exchange, trusting `ca` for `servername`. */
async function tlsSocket(port: number, ca: string, servername = "localhost"): Promise<tls.TLSSocket> {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => sock.once("connect", resolve).once("error", reject));
  sock.write(sslRequest());
  const answer = await new Promise<Buffer>((resolve) => sock.once("data", resolve));
  expect([...answer]).toEqual([S]);
  const secure = tls.connect({ socket: sock, ca, servername });
  await new Promise<void>((resolve, reject) => secure.once("secureConnect", resolve).once("error", reject));
  return secure;
}

describe("psql", () => {
  test("sslmode=require: the connection is encrypted (\\conninfo says so) and queries run", async () => {
    const r = await psql(via(strict, { sslmode: "require" }), ["-c", "\\conninfo", "-c", "select 40 + 2"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain("SSL connection (protocol: TLSv1.");
    expect(r.out).toContain("42");
  });

  test("sslmode=verify-full by IP address and by host name, trusting CA A", async () => {
    for (const host of ["127.0.0.1", "localhost"]) {
      const r = await psql(via(strict, { host, hostaddr: "127.0.0.1", sslmode: "verify-full", sslrootcert: caA.certPath }), [
        "-c",
        "select current_user",
      ]);
      expect(r.err).toBe("");
      expect(r.out.trim()).toBe(strict.cluster.superuser);
    }
  });

  test("sslmode=verify-full trusting another CA fails certificate verification", async () => {
    const r = await psql(via(strict, { host: "localhost", hostaddr: "127.0.0.1", sslmode: "verify-full", sslrootcert: caB.certPath }), ["-c", "select 1"]);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain("certificate verify failed");
  });

  test("sslmode=verify-full for a name the certificate does not carry fails", async () => {
    const r = await psql(via(strict, { host: "db.example", hostaddr: "127.0.0.1", sslmode: "verify-full", sslrootcert: caA.certPath }), ["-c", "select 1"]);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(`does not match host name "db.example"`);
  });

  test("large results and a large COPY FROM STDIN stream through TLS unchanged (backpressure both ways)", async () => {
    const big = "select g, repeat(md5(g::text), 100) from generate_series(1, 5000) g"; // ~16 MB of rows
    const [tlsRun, direct] = await Promise.all([
      psql(via(strict, { sslmode: "verify-full", sslrootcert: caA.certPath }), ["-c", big]),
      psql({ host: "127.0.0.1", port: strict.cluster.primary.port, user: strict.cluster.superuser, password: strict.cluster.password, dbname: "postgres", sslmode: "disable" }, ["-c", big]),
    ]);
    expect(tlsRun.err).toBe("");
    expect(tlsRun.out.length).toBeGreaterThan(16_000_000);
    expect(tlsRun.out === direct.out).toBe(true);

    const lines = Array.from({ length: 40_000 }, (_, i) => `${i}\t${"y".repeat(200)}`).join("\n") + "\n"; // ~8 MB
    const copy = await psql(
      via(strict, { sslmode: "require" }),
      ["-c", "create temp table t (n int, v text)", "-c", "\\copy t from stdin", "-c", "select count(*), sum(length(v)) from t"],
      lines,
    );
    expect(copy.err).toBe("");
    expect(copy.out.trim().split("\n").at(-1)).toBe("40000|8000000");
  });

  test("require mode refuses a plaintext login with FATAL 28000", async () => {
    const r = await psql(via(strict, { sslmode: "disable" }), ["-c", "select 1"]);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain("SSL required");
    expect(r.err).toContain("no encryption");
  });

  test("allow mode serves plaintext and encrypted clients alike", async () => {
    const plain = await psql(via(relaxed, { sslmode: "disable" }), ["-c", "\\conninfo", "-c", "select 1"]);
    expect(plain.err).toBe("");
    expect(plain.out).not.toContain("SSL connection");
    const secure = await psql(via(relaxed, { sslmode: "verify-full", sslrootcert: caA.certPath }), ["-c", "\\conninfo", "-c", "select 1"]);
    expect(secure.err).toBe("");
    expect(secure.out).toContain("SSL connection");
  });

  test("tls.mode disable answers 'N': sslmode=require fails the way it does against a server without SSL", async () => {
    const off = await startTestProxy();
    try {
      const r = await psql(via(off, { sslmode: "require" }), ["-c", "select 1"]);
      expect(r.code).not.toBe(0);
      expect(r.err).toContain("server does not support SSL, but SSL was required");
      const prefer = await psql(via(off, { sslmode: "prefer" }), ["-c", "select 7"]);
      expect(prefer.out.trim()).toBe("7");
    } finally {
      await off.stop();
    }
  });
});

describe("driver libraries", () => {
  test("postgres.js with ssl { ca, rejectUnauthorized: true } and with ssl 'require'", async () => {
    for (const ssl of [{ ca: caA.cert, rejectUnauthorized: true }, "require" as const]) {
      const sql = postgres(strict.url(), { ssl, max: 2, onnotice: () => {} });
      try {
        const rows = await sql`select ${"tls"}::text as via, 6 * 7 as answer`;
        expect([...rows]).toEqual([{ via: "tls", answer: 42 }]);
      } finally {
        await sql.end();
      }
    }
  });

  test("postgres.js trusting another CA is refused by its own verification", async () => {
    const sql = postgres(strict.url(), { ssl: { ca: caB.cert, rejectUnauthorized: true }, max: 1, connect_timeout: 10 });
    try {
      await expect(sql`select 1`).rejects.toThrow();
    } finally {
      await sql.end({ timeout: 1 });
    }
  });

  test("postgres.js over TLS cancels a running query", async () => {
    const sql = postgres(strict.url(), { ssl: { ca: caA.cert }, max: 1, onnotice: () => {} });
    try {
      const q = sql`select pg_sleep(30)`;
      const started = Date.now();
      setTimeout(() => q.cancel(), 300);
      await expect(q).rejects.toMatchObject({ code: "57014" });
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await sql.end();
    }
  });

  test("node-postgres with ssl { ca } (verifies chain and name)", async () => {
    const client = new pg.Client({
      host: "127.0.0.1",
      port: strict.port,
      user: strict.cluster.superuser,
      password: strict.cluster.password,
      database: "postgres",
      ssl: { ca: caA.cert },
    });
    await client.connect();
    try {
      const r = await client.query("select $1::int + 1 as n", [41]);
      expect(r.rows).toEqual([{ n: 42 }]);
    } finally {
      await client.end();
    }
  });
});

describe("the SSLRequest exchange at the byte level", () => {
  test("an SSLRequest with a StartupMessage behind it in one write: FATAL 08P01, closed; the next client is served", async () => {
    for (const tp of [strict, relaxed]) {
      const raw = await RawClient.connect(tp.port);
      raw.send(concat(sslRequest(), startup(LOGIN)));
      const m = await raw.next();
      expect(m.type).toBe("E");
      expect(errorOf(m)).toMatchObject({ severity: "FATAL", code: "08P01", message: "received unencrypted data after SSL request" });
      await raw.waitClosed();
    }
    const r = await psql(via(strict, { sslmode: "verify-full", sslrootcert: caA.certPath }), ["-c", "select 'still served'"]);
    expect(r.out.trim()).toBe("still served");
  });

  test("the same when the SSLRequest arrives split and its last piece carries extra bytes", async () => {
    const raw = await RawClient.connect(strict.port);
    const req = sslRequest();
    raw.send(req.subarray(0, 5));
    await pace(50); // let the first piece be read on its own (pacing input, not waiting for a condition)
    raw.send(concat(req.subarray(5), startup(LOGIN)));
    const m = await raw.next();
    expect(errorOf(m)).toMatchObject({ code: "08P01", message: "received unencrypted data after SSL request" });
    await raw.waitClosed();
  });

  test("plaintext sent after 'S' instead of a TLS handshake: FATAL 08P01 in plaintext, closed", async () => {
    const raw = await RawClient.connect(strict.port);
    raw.send(sslRequest());
    expect([...(await raw.readBytes(1))]).toEqual([S]);
    raw.send(startup(LOGIN));
    const m = await raw.next();
    expect(errorOf(m)).toMatchObject({ severity: "FATAL", code: "08P01", message: "received unencrypted data after SSL request" });
    await raw.waitClosed();
  });

  test("GSSENCRequest gets 'N', then SSLRequest gets 'S' and TLS follows (libpq's order)", async () => {
    const sock = net.connect(strict.port, "127.0.0.1");
    await new Promise<void>((resolve) => sock.once("connect", resolve));
    sock.write(gssencRequest());
    expect([...(await new Promise<Buffer>((resolve) => sock.once("data", resolve)))]).toEqual([N]);
    sock.write(sslRequest());
    expect([...(await new Promise<Buffer>((resolve) => sock.once("data", resolve)))]).toEqual([S]);
    const secure = tls.connect({ socket: sock, ca: caA.cert, servername: "localhost" });
    await new Promise<void>((resolve, reject) => secure.once("secureConnect", resolve).once("error", reject));
    expect(secure.authorized).toBe(true);
    secure.destroy();
  });

  test("an SSLRequest inside the TLS connection is a protocol violation (08P01)", async () => {
    const secure = await tlsSocket(strict.port, caA.cert);
    const got: Buffer[] = [];
    secure.on("data", (b: Buffer) => got.push(b));
    const closed = new Promise<void>((resolve) => secure.once("close", () => resolve()));
    secure.write(sslRequest());
    await closed;
    const all = Buffer.concat(got);
    expect(String.fromCharCode(all[0]!)).toBe("E");
    const e = decodeError(all, 5, all.readUInt32BE(1) + 1);
    expect(e.code).toBe("08P01");
  });

  test("a login over a hand-made TLS connection runs queries (the decrypted stream is the protocol stream)", async () => {
    const secure = await tlsSocket(strict.port, caA.cert);
    let buf = Buffer.alloc(0);
    secure.on("data", (b: Buffer) => (buf = Buffer.concat([buf, b])));
    secure.write(startup(LOGIN));
    secure.write(query("select 'over tls'"));
    await eventually("the query's row", () => buf.includes(Buffer.from("over tls")));
    secure.destroy();
  });

  test("require mode still takes a plaintext CancelRequest (libpq before 17 sends them so)", async () => {
    // A session logged in over TLS runs a long query; a plaintext connection cancels it with the session's key.
    const secure = await tlsSocket(strict.port, caA.cert);
    let buf = Buffer.alloc(0);
    secure.on("data", (b: Buffer) => (buf = Buffer.concat([buf, b])));
    secure.write(startup(LOGIN));
    await eventually("ReadyForQuery", () => buf.includes(Buffer.from([0x5a, 0, 0, 0, 5])));
    const k = buf.indexOf(Buffer.from([0x4b, 0, 0, 0, 12]));
    expect(k).toBeGreaterThanOrEqual(0);
    const pid = buf.readInt32BE(k + 5);
    const secret = buf.readInt32BE(k + 9);
    buf = Buffer.alloc(0);
    secure.write(query("select pg_sleep(30) -- tls cancel"));
    await serverRuns("select pg_sleep(30) -- tls cancel");
    const raw = await RawClient.connect(strict.port);
    raw.send(cancelRequest(pid, secret));
    await raw.waitClosed();
    await eventually("the 57014 error", () => buf.includes(Buffer.from("57014")));
    secure.destroy();
  });

  test("a client that answers 'S' with silence is closed by the login timeout", async () => {
    const tp = await startTestProxy({ tls: { mode: "allow", cert: certA.certPath, key: certA.keyPath }, limits: { login_timeout: "500ms" } });
    try {
      const raw = await RawClient.connect(tp.port);
      raw.send(sslRequest());
      expect([...(await raw.readBytes(1))]).toEqual([S]);
      await raw.waitClosed(5000);
      expect(tp.proxy.clientCount).toBe(0);
    } finally {
      await tp.stop();
    }
  });
});

describe("certificate reload", () => {
  test("sessions keep their connection, new handshakes get the new certificate; a bad reload keeps the old one", async () => {
    const live = { cert: join(dir, "live.pem"), key: join(dir, "live.key") };
    copyFileSync(certA.certPath, live.cert);
    copyFileSync(certA.keyPath, live.key);
    const tp = await startTestProxy({ tls: { mode: "require", cert: live.cert, key: live.key } });
    const old = postgres(tp.url(), { ssl: { ca: caA.cert, rejectUnauthorized: true }, max: 1, onnotice: () => {} });
    try {
      const session = await old.reserve();
      expect([...(await session`select 1 as n`)]).toEqual([{ n: 1 }]);

      // Swap the files to cert B (another CA) and reload.
      copyFileSync(certB.certPath, live.cert);
      copyFileSync(certB.keyPath, live.key);
      const served = tp.proxy.reloadTls();
      expect(served?.subject).toContain("CN=localhost");
      expect(served?.fingerprint).toBe(new (await import("node:crypto")).X509Certificate(certB.cert).fingerprint256);

      // The open session still works, on the same connection.
      expect([...(await session`select 2 as n`)]).toEqual([{ n: 2 }]);

      const trustB = await psql(via(tp, { host: "localhost", hostaddr: "127.0.0.1", sslmode: "verify-full", sslrootcert: caB.certPath }), ["-c", "select 'b'"]);
      expect(trustB.err).toBe("");
      expect(trustB.out.trim()).toBe("b");
      const trustA = await psql(via(tp, { host: "localhost", hostaddr: "127.0.0.1", sslmode: "verify-full", sslrootcert: caA.certPath }), ["-c", "select 'a'"]);
      expect(trustA.code).not.toBe(0);
      expect(trustA.err).toContain("certificate verify failed");

      // A key that does not match the certificate: refused with its key path, cert B keeps serving.
      copyFileSync(certA.keyPath, live.key);
      expect(() => tp.proxy.reloadTls()).toThrow(ConfigLoadError);
      expect(() => tp.proxy.reloadTls()).toThrow(/^tls\.key: .* is not the private key of the certificate/);
      rmSync(live.key);
      expect(() => tp.proxy.reloadTls()).toThrow(/^tls\.key: cannot read .*: no such file$/);
      const stillB = await psql(via(tp, { sslmode: "verify-full", sslrootcert: caB.certPath }), ["-c", "select 'still b'"]);
      expect(stillB.out.trim()).toBe("still b");
      expect([...(await session`select 3 as n`)]).toEqual([{ n: 3 }]);
      session.release();
    } finally {
      await old.end();
      await tp.stop();
    }
  });

  test("Proxy.reload (SIGHUP) re-reads the certificate through its TLS hook, and refuses a config whose files fail", async () => {
    const live = { cert: join(dir, "hup.pem"), key: join(dir, "hup.key") };
    copyFileSync(certA.certPath, live.cert);
    copyFileSync(certA.keyPath, live.key);
    const tp = await startTestProxy({ tls: { mode: "allow", cert: live.cert, key: live.key } });
    try {
      copyFileSync(certB.certPath, live.cert);
      copyFileSync(certB.keyPath, live.key);
      tp.proxy.reload(tp.proxy.config);
      const r = await psql(via(tp, { sslmode: "verify-full", sslrootcert: caB.certPath }), ["-c", "select 'hup'"]);
      expect(r.out.trim()).toBe("hup");

      const broken = { ...tp.proxy.config, tls: { ...tp.proxy.config.tls, cert: join(dir, "missing.pem") } };
      expect(() => tp.proxy.reload(broken)).toThrow(/tls\.cert: cannot read .*missing\.pem: no such file/);
      expect(tp.proxy.config.tls.cert).toBe(live.cert);
      const again = await psql(via(tp, { sslmode: "verify-full", sslrootcert: caB.certPath }), ["-c", "select 'kept'"]);
      expect(again.out.trim()).toBe("kept");
    } finally {
      await tp.stop();
    }
  });
});

describe("startup errors", () => {
  test("listen() refuses unusable certificate files with the config key path", async () => {
    await expect(startTestProxy({ tls: { mode: "allow", cert: join(dir, "nope.pem"), key: certA.keyPath } })).rejects.toThrow(
      /tls\.cert: cannot read .*nope\.pem: no such file/,
    );
  });
});
