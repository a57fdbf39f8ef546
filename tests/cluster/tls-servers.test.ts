// Invariant: pgroute's connections to servers follow libpq's sslmode — encrypted whenever the mode asks and the
// server offers it (pg_stat_ssl shows ssl = true for pgroute's backend), verified as verify-ca / verify-full say
// (a wrong CA or host name fails with 08001 naming the verification), never falling back to plaintext except for
// `prefer`; a server answer with bytes behind it (CVE-2021-23222) is refused. Cancels follow the same mode.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";
import postgres from "postgres";
import type { NodeConfig } from "../../src/config/types.ts";
import { guardCluster, startCluster, stopCluster, type DevCluster, type Watchdog } from "../../src/devcluster/index.ts";
import { handOver, runAs } from "../../src/devcluster/exec.ts";
import { PgError } from "../../src/errors.ts";
import { ServerConn } from "../../src/pool/server.ts";
import { openServerSocket, type TlsNode } from "../../src/pool/tls.ts";
import { testCluster } from "../support/cluster.ts";
import { certDir, makeCa, makeServerCert, removeCertDir, type TestCa } from "../support/certs.ts";
import { startTestProxy, type TestProxy } from "../support/proxy.ts";
import { eventually } from "../support/raw-client.ts";

// Bun 1.4.5 applies the preload's setDefaultTimeout to the first test file only; this file sets its own.
setDefaultTimeout(60_000);

let dir: string;
let ca: TestCa;
let otherCa: TestCa;
/** A primary with ssl = on, its certificate issued by `ca` for "localhost" only (not for 127.0.0.1). */
let secure: DevCluster;
let guard: Watchdog | undefined;
/** The shared test cluster: ssl = off. */
let plain: DevCluster;
/** A role the TLS server admits only over TLS (`hostnossl … reject`). */
const TLS_ONLY = { user: "tlsonly", password: "tlsonlypass" };

beforeAll(async () => {
  dir = certDir();
  ca = makeCa(dir, "servers");
  otherCa = makeCa(dir, "elsewhere");
  const cert = makeServerCert(dir, ca, "pg", ["localhost"]);
  // PostgreSQL refuses a key file others can read, and runs as `postgres` when the tests run as root.
  const who = runAs();
  handOver(cert.keyPath, who);
  handOver(cert.certPath, who);
  const clusterDir = mkdtempSync(join(tmpdir(), "pgroute-tls-cluster-"));
  guard = guardCluster(clusterDir);
  [secure, plain] = await Promise.all([
    startCluster({
      dir: clusterDir,
      replicas: 0,
      settings: { ssl: "on", ssl_cert_file: cert.certPath, ssl_key_file: cert.keyPath, fsync: "off", synchronous_commit: "off" },
      hba: [`hostnossl all ${TLS_ONLY.user} 127.0.0.1/32 reject`],
    }),
    testCluster(),
  ]);
  const sql = postgres(secure.url(secure.primary), { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`create role ${TLS_ONLY.user} login password '${TLS_ONLY.password}'`);
  } finally {
    await sql.end();
  }
});

afterAll(async () => {
  if (secure) await stopCluster(secure.dir);
  guard?.dismiss();
  if (dir) removeCertDir(dir);
});

/** A `[[nodes]]` entry for the TLS primary (or, with `on: "plain"`, the ssl = off primary). */
function node(extra: Record<string, unknown>, on: "secure" | "plain" = "secure"): Record<string, unknown> {
  const c = on === "secure" ? secure : plain;
  return { name: on === "secure" ? "tlsnode" : "plainnode", host: "127.0.0.1", port: c.primary.port, role: "primary", ...extra };
}

/** pgroute in front of one node, the superuser and TLS_ONLY as users; runs `fn` with a client through it. */
async function through<T>(nodeEntry: Record<string, unknown>, fn: (sql: postgres.Sql, tp: TestProxy) => Promise<T>, pool: Record<string, unknown> = {}, as = { user: "postgres", password: "postgres" }): Promise<T> {
  const tp = await startTestProxy({
    nodes: [nodeEntry],
    users: [{ name: "postgres", password: "postgres" }, { name: TLS_ONLY.user, password: TLS_ONLY.password }],
    pool: { connect_timeout: "5s", ...pool },
  });
  const sql = postgres(tp.url(as), { max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    return await fn(sql, tp);
  } finally {
    await sql.end({ timeout: 1 });
    await tp.stop();
  }
}

/** What pg_stat_ssl says about pgroute's own backend connection. */
async function sslOfBackend(sql: postgres.Sql): Promise<{ ssl: boolean; version: string | null }> {
  const [row] = await sql<{ ssl: boolean; version: string | null }[]>`select ssl, version from pg_stat_ssl where pid = pg_backend_pid()`;
  return { ssl: row!.ssl, version: row!.version };
}

/** The error a first query through pgroute gets, as postgres.js reports it. */
async function loginError(sql: postgres.Sql): Promise<{ code: string; message: string }> {
  try {
    await sql`select 1`;
  } catch (err) {
    return { code: (err as { code: string }).code, message: (err as Error).message };
  }
  throw new Error("the query succeeded");
}

describe("against a server with ssl = on", () => {
  test("verify-full with the right CA and a host name the certificate carries: encrypted (pg_stat_ssl)", async () => {
    await through(node({ host: "localhost", sslmode: "verify-full", sslrootcert: ca.certPath }), async (sql) => {
      const s = await sslOfBackend(sql);
      expect(s.ssl).toBe(true);
      expect(s.version).toMatch(/^TLSv1\.[23]$/);
    });
  });

  test("verify-full with another CA: 08001 naming the verification", async () => {
    await through(node({ host: "localhost", sslmode: "verify-full", sslrootcert: otherCa.certPath }), async (sql) => {
      const e = await loginError(sql);
      expect(e.code).toBe("08001");
      expect(e.message).toContain(`could not connect to node "tlsnode": SSL certificate verification failed (sslmode "verify-full")`);
      expect(e.message).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to (verify|get)/i);
    });
  });

  test("verify-full by an address the certificate does not name: 08001, host name mismatch", async () => {
    await through(node({ sslmode: "verify-full", sslrootcert: ca.certPath }), async (sql) => {
      const e = await loginError(sql);
      expect(e.code).toBe("08001");
      expect(e.message).toContain("SSL certificate verification failed");
      expect(e.message).toContain("127.0.0.1");
    });
  });

  test("verify-ca accepts the right CA whatever the name, refuses another CA", async () => {
    await through(node({ sslmode: "verify-ca", sslrootcert: ca.certPath }), async (sql) => {
      expect((await sslOfBackend(sql)).ssl).toBe(true);
    });
    await through(node({ sslmode: "verify-ca", sslrootcert: otherCa.certPath }), async (sql) => {
      const e = await loginError(sql);
      expect(e.code).toBe("08001");
      expect(e.message).toContain(`SSL certificate verification failed (sslmode "verify-ca")`);
    });
  });

  test("require encrypts without checking the certificate; with sslrootcert it checks the chain, as libpq does", async () => {
    await through(node({ sslmode: "require" }), async (sql) => {
      expect((await sslOfBackend(sql)).ssl).toBe(true);
    });
    await through(node({ sslmode: "require", sslrootcert: otherCa.certPath }), async (sql) => {
      expect((await loginError(sql)).message).toContain("SSL certificate verification failed");
    });
  });

  test("prefer encrypts when the server offers TLS; disable does not", async () => {
    await through(node({ sslmode: "prefer" }), async (sql) => {
      expect((await sslOfBackend(sql)).ssl).toBe(true);
    });
    await through(node({ sslmode: "disable" }), async (sql) => {
      expect((await sslOfBackend(sql)).ssl).toBe(false);
    });
  });

  test("a role the server admits only over TLS logs in with prefer; with disable it gets the server's own 28000", async () => {
    const as = TLS_ONLY;
    await through(node({ sslmode: "prefer" }), async (sql) => {
      const [row] = await sql`select current_user as u`;
      expect(row!.u).toBe(TLS_ONLY.user);
    }, {}, as);
    await through(node({ sslmode: "disable" }), async (sql) => {
      const e = await loginError(sql);
      expect(e.code).toBe("28000");
      expect(e.message).toContain("no encryption");
    }, {}, as);
  });

  test("transaction mode over TLS: extended protocol, a 10 MB result and a cancel all work", async () => {
    await through(
      node({ host: "localhost", sslmode: "verify-full", sslrootcert: ca.certPath }),
      async (sql) => {
        const [big] = await sql`select repeat(${"x"}, 10000000) as v`;
        expect((big!.v as string).length).toBe(10_000_000);
        const rows = await sql`select g as n from generate_series(1, ${5000}::int) g`;
        expect(rows.length).toBe(5000);
        const q = sql`select pg_sleep(30)`.execute(); // postgres.js sends a query only when asked to
        const outcome = q.then(
          () => null,
          (e: unknown) => e,
        );
        const direct = postgres(secure.url(secure.primary), { max: 1, onnotice: () => {} });
        try {
          // Running on one of pgroute's encrypted backends, so the cancel cannot arrive before the query.
          await eventually("the sleep to run", async () => {
            const [r] = await direct`select count(*)::int as n from pg_stat_activity a join pg_stat_ssl s using (pid) where a.query = 'select pg_sleep(30)' and a.state = 'active' and s.ssl`;
            return r!.n > 0;
          });
        } finally {
          await direct.end();
        }
        q.cancel();
        expect(await outcome).toMatchObject({ code: "57014" });
      },
      { mode: "transaction" },
    );
  });

  test("a missing sslrootcert file: 08001 naming it", async () => {
    await through(node({ sslmode: "verify-full", sslrootcert: join(dir, "absent.pem") }), async (sql) => {
      const e = await loginError(sql);
      expect(e.code).toBe("08001");
      expect(e.message).toContain(`cannot read sslrootcert ${join(dir, "absent.pem")}: no such file`);
    });
  });
});

describe("the health monitor's own connections", () => {
  test("follow the node's sslmode: verify-full reaches it encrypted; another CA or a name the certificate lacks leaves it unreachable, saying why", async () => {
    const direct = postgres(secure.url(secure.primary), { max: 1, onnotice: () => {} });
    const monitorSsl = async () =>
      (await direct<{ ssl: boolean }[]>`select s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid) where a.application_name = 'pgroute-monitor'`).map((r) => r.ssl);
    try {
      await through(node({ host: "localhost", sslmode: "verify-full", sslrootcert: ca.certPath }), async (_sql, tp) => {
        expect(tp.proxy.cluster.current.nodes[0]).toMatchObject({ reachable: true, role: "primary", error: null });
        expect(await monitorSsl()).toEqual([true]);
      });
      await through(node({ host: "localhost", sslmode: "verify-full", sslrootcert: otherCa.certPath }), async (_sql, tp) => {
        expect(tp.proxy.cluster.current.nodes[0]).toMatchObject({ reachable: false, error: expect.stringMatching(/certificate|self.signed|issuer/i) });
      });
      await through(node({ host: "127.0.0.1", sslmode: "verify-full", sslrootcert: ca.certPath }), async (_sql, tp) => {
        expect(tp.proxy.cluster.current.nodes[0]).toMatchObject({ reachable: false, error: expect.stringMatching(/127\.0\.0\.1|altname|host/i) });
      });
      await through(node({ host: "127.0.0.1", sslmode: "verify-ca", sslrootcert: ca.certPath }), async (_sql, tp) => {
        expect(tp.proxy.cluster.current.nodes[0]).toMatchObject({ reachable: true, error: null });
      });
    } finally {
      await direct.end();
    }
  });
});

describe("against a server with ssl = off", () => {
  test("require and verify-full never fall back to plaintext: 08001", async () => {
    for (const sslmode of ["require", "verify-ca", "verify-full"]) {
      await through(node({ sslmode, sslrootcert: ca.certPath }, "plain"), async (sql) => {
        const e = await loginError(sql);
        expect(e.code).toBe("08001");
        expect(e.message).toContain(`the server does not support SSL, but sslmode is "${sslmode}"`);
      });
    }
  });

  test("prefer falls back to plaintext on the same connection", async () => {
    await through(node({ sslmode: "prefer" }, "plain"), async (sql) => {
      expect((await sslOfBackend(sql)).ssl).toBe(false);
    });
  });
});

// --- servers that misbehave: openServerSocket and ServerConn against a scripted listener ----------------------

/** A listener that answers the first bytes it gets with `answer` (or with nothing). */
function fakeServer(answer: Uint8Array | null): { port: number; stop(): void } {
  const listener = Bun.listen<{ answered: boolean }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { answered: false };
      },
      data(s) {
        if (s.data.answered || answer === null) return;
        s.data.answered = true;
        s.write(answer);
      },
      close() {},
      error() {},
    },
  });
  return { port: listener.port, stop: () => listener.stop(true) };
}

const enc = new TextEncoder();
const fakeNode = (port: number, sslmode: TlsNode["sslmode"]): NodeConfig => ({
  name: "fake",
  host: "127.0.0.1",
  port,
  role: "primary",
  weight: 1,
  zone: "",
  sslmode,
});
const noHandlers = { data() {}, close() {}, error() {} };

async function openError(port: number, sslmode: TlsNode["sslmode"], signal?: AbortSignal): Promise<PgError> {
  try {
    const s: Socket<undefined> = await openServerSocket(fakeNode(port, sslmode), noHandlers, undefined, signal);
    s.terminate();
  } catch (err) {
    expect(err).toBeInstanceOf(PgError);
    return err as PgError;
  }
  throw new Error("the connection was opened");
}

describe("servers that misbehave", () => {
  test("'S' or 'N' with bytes behind it (CVE-2021-23222): refused, whatever the mode", async () => {
    for (const answer of ["Sxyz", "Nxyz"]) {
      const fake = fakeServer(enc.encode(answer));
      try {
        for (const mode of ["prefer", "require"] as const) {
          const e = await openError(fake.port, mode);
          expect(e.code).toBe("08001");
          expect(e.message).toBe(`could not connect to node "fake": received unencrypted data after SSL response`);
        }
      } finally {
        fake.stop();
      }
    }
  });

  test("an ErrorResponse or an unknown byte in answer to the SSLRequest: 08001", async () => {
    const e1 = fakeServer(enc.encode("E\0\0\0\x08oops"));
    const e2 = fakeServer(enc.encode("X"));
    try {
      expect((await openError(e1.port, "prefer")).message).toContain("answered the SSLRequest with an error");
      expect((await openError(e2.port, "prefer")).message).toContain("unexpected answer to the SSLRequest (byte 88)");
    } finally {
      e1.stop();
      e2.stop();
    }
  });

  test("'S' and then no TLS (plaintext garbage): the handshake fails with 08001", async () => {
    const fake = Bun.listen<{ n: number }>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(s) {
          s.data = { n: 0 };
        },
        data(s) {
          if (s.data.n++ === 0) s.write("S");
          else s.end("HTTP/1.1 400 Bad Request\r\n\r\n");
        },
        close() {},
        error() {},
      },
    });
    try {
      const e = await openError(fake.port, "require");
      expect(e.code).toBe("08001");
      expect(e.message).toContain("SSL handshake failed");
    } finally {
      fake.stop(true);
    }
  });

  test("a server that never answers the SSLRequest: the connect timeout ends the wait", async () => {
    const fake = fakeServer(null);
    try {
      const started = Date.now();
      const err = await ServerConn.connect({
        node: fakeNode(fake.port, "require"),
        params: new Map([["user", "u"], ["database", "d"]]),
        credentials: {},
        connectTimeoutMs: 300,
        maxMessageSize: 1 << 20,
      }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(PgError);
      expect((err as PgError).code).toBe("08001");
      expect((err as PgError).message).toContain("timed out after 300 ms");
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      fake.stop();
    }
  });
});
