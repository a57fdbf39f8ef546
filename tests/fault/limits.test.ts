// Invariant: every limit is enforced from what pgroute has seen so far, never by waiting for (or allocating) what a
// peer merely declared: an oversized startup packet or frame, a length below 4 and an unknown protocol version get
// a FATAL and a close; a login that trickles past limits.login_timeout is ended; a client that stops reading holds
// at most a bounded buffer and is dropped past limits.client_buffer (its server connection closed, since results
// were in flight). After each, a normal client is served.
import { pace } from "../support/wait.ts";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { StartupCode } from "../../src/wire/codes.ts";
import { startTestProxy, type TestProxy } from "../support/proxy.ts";
import { RawClient, dataRow } from "../support/raw-client.ts";
import { concat, header, query, startup, untyped } from "../support/wire-frames.ts";
import { TRUST_LOGIN, capturingLogger, expectFatal, expectServed, queuedFor, sessionsOf, setReading, until } from "./helpers.ts";

setDefaultTimeout(60_000);

const MiB = 1024 * 1024;
let tp: TestProxy;
let cluster: DevCluster;

beforeAll(async () => {
  tp = await startTestProxy();
  cluster = tp.cluster;
});
afterAll(async () => {
  await tp?.stop();
});

/** Sends `bytes` one at a time, `gapMs` apart, until done or the peer closes; resolves with how many went out. */
async function trickle(raw: RawClient, bytes: Uint8Array, gapMs: number): Promise<number> {
  for (let i = 0; i < bytes.length; i++) {
    if (raw.closed) return i;
    raw.send(bytes.subarray(i, i + 1));
    await pace(gapMs);
  }
  return bytes.length;
}

describe("startup packets", () => {
  test("a length over 10,000 bytes is refused from the 4-byte header alone, before any body arrives", async () => {
    for (const declared of [10_001, 1 << 30, 0xffffffff]) {
      const raw = await RawClient.connect(tp.port);
      try {
        raw.send(untyped(declared)); // four bytes, nothing behind them
        await expectFatal(raw, "08P01", `invalid length of startup packet: ${declared}`);
      } finally {
        raw.close();
      }
    }
    await expectServed(tp.port);
  });

  test("a length below 8 is refused (a packet cannot even hold its code)", async () => {
    for (const declared of [0, 4, 7]) {
      const raw = await RawClient.connect(tp.port);
      try {
        raw.send(untyped(declared));
        await expectFatal(raw, "08P01", `invalid length of startup packet: ${declared}`);
      } finally {
        raw.close();
      }
    }
    await expectServed(tp.port);
  });

  test("the length is decided when its fourth byte arrives, even one byte at a time", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      const sent = await trickle(raw, concat(untyped(1 << 30), new Uint8Array(200)), 5);
      // The FATAL came after the fourth byte; a few more go out before the client sees the close.
      expect(sent).toBeLessThan(60);
      await expectFatal(raw, "08P01", `invalid length of startup packet: ${1 << 30}`);
    } finally {
      raw.close();
    }
  });

  test("an unknown protocol version: FATAL 08P01 naming the supported versions, in Postgres's words", async () => {
    for (const [major, minor] of [
      [2, 0],
      [4, 0],
      [9, 9], // not 1234.5678: that is the CancelRequest code (and 1234.5679 SSLRequest)
    ] as const) {
      const raw = await RawClient.connect(tp.port);
      try {
        raw.send(startup(TRUST_LOGIN, (major << 16) | minor));
        await expectFatal(raw, "08P01", `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`);
      } finally {
        raw.close();
      }
    }
    await expectServed(tp.port);
  });
});

for (const mode of ["session", "transaction"] as const) {
  describe(`frames after login (${mode} mode)`, () => {
    let p: TestProxy;
    beforeAll(async () => {
      p = await startTestProxy({ pool: { mode } });
    });
    afterAll(async () => {
      await p?.stop();
    });

    test("lengths 0-3 get FATAL 08P01", async () => {
      for (const len of [0, 1, 2, 3]) {
        const raw = await RawClient.connect(p.port);
        try {
          await raw.loginTrust(TRUST_LOGIN);
          raw.send(header("Q", len));
          await expectFatal(raw, "08P01", `invalid message length ${len} for message type "Q"`);
        } finally {
          raw.close();
        }
      }
      await expectServed(p.port);
    });

    test("a declared 1 GiB frame is refused from its header under the default 64 MiB limit", async () => {
      for (const type of ["Q", "P", "d", "z"]) {
        const raw = await RawClient.connect(p.port);
        try {
          await raw.loginTrust(TRUST_LOGIN);
          raw.send(header(type, 1 << 30));
          await expectFatal(raw, "08P01", `message of type "${type}" is ${1 << 30} bytes, over the limit of ${64 * MiB}`);
        } finally {
          raw.close();
        }
      }
      await expectServed(p.port);
    });

    test("a header that arrives one byte at a time is judged when complete", async () => {
      const raw = await RawClient.connect(p.port);
      try {
        await raw.loginTrust(TRUST_LOGIN);
        await trickle(raw, header("Q", 0x7fffffff), 5);
        await expectFatal(raw, "08P01", `message of type "Q" is ${0x7fffffff} bytes, over the limit of ${64 * MiB}`);
      } finally {
        raw.close();
      }
      await expectServed(p.port);
    });
  });
}

describe("before authentication", () => {
  test("a password message longer than an authentication token (64 KiB) is refused from its header", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      raw.send(startup({ user: cluster.superuser, database: "postgres" }));
      expect((await raw.next()).type).toBe("R"); // AuthenticationSASL
      raw.send(header("p", 65_540));
      await expectFatal(raw, "08P01", `message of type "p" is 65540 bytes, over the limit of 65539`);
    } finally {
      raw.close();
    }
    await expectServed(tp.port);
  });

  test("a message other than a password message is a protocol violation, as in Postgres", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      raw.send(startup({ user: cluster.superuser, database: "postgres" }));
      expect((await raw.next()).type).toBe("R");
      raw.send(query("select 1"));
      await expectFatal(raw, "08P01", `expected a password response, got message type "Q"`);
    } finally {
      raw.close();
    }
  });
});

describe("limits.login_timeout", () => {
  let strict: TestProxy;
  beforeAll(async () => {
    strict = await startTestProxy({ limits: { login_timeout: "600ms" } });
  });
  afterAll(async () => {
    await strict?.stop();
  });

  test("slowloris: a startup packet trickled one byte at a time is cut off at the timeout, not reset by each byte", async () => {
    const raw = await RawClient.connect(strict.port);
    const started = Date.now();
    try {
      const packet = startup({ ...TRUST_LOGIN, application_name: "slowloris" });
      const sending = trickle(raw, packet, 100); // would take ~5 s
      await expectFatal(raw, "08P01", "login timeout: startup and authentication took too long");
      expect(Date.now() - started).toBeLessThan(3000);
      expect(await sending).toBeLessThan(packet.length);
    } finally {
      raw.close();
    }
    await expectServed(strict.port);
  });

  test("slowloris during SCRAM: the SASLInitialResponse trickled byte by byte is cut off too", async () => {
    const raw = await RawClient.connect(strict.port);
    try {
      raw.send(startup({ user: cluster.superuser, database: "postgres" }));
      expect((await raw.next()).type).toBe("R");
      const sending = trickle(raw, concat(header("p", 60), new Uint8Array(56)), 100);
      await expectFatal(raw, "08P01", "login timeout: startup and authentication took too long");
      await sending;
    } finally {
      raw.close();
    }
  });
});

describe("a client that does not read its results", () => {
  /** Rows of 1,000 bytes: enough to fill the kernel's socket buffers several times over. */
  const bigQuery = (rows: number, tag: string) => `select /* ${tag} */ repeat('x', 1000) from generate_series(1, ${rows})`;

  for (const mode of ["session", "transaction"] as const) {
    test(`${mode} mode: pgroute holds a bounded buffer while it does not read, then delivers every row`, async () => {
      const p = await startTestProxy({ pool: { mode } });
      const raw = await RawClient.connect(p.port);
      try {
        await raw.loginTrust(TRUST_LOGIN);
        setReading(raw, false);
        raw.send(query(bigQuery(30_000, "bounded")));
        await until("pgroute to queue bytes for the client", () => sessionsOf(p.proxy).some((s) => queuedFor(s) > 0), 20_000);
        let peak = 0;
        const watchUntil = Date.now() + 750;
        while (Date.now() < watchUntil) {
          for (const s of sessionsOf(p.proxy)) peak = Math.max(peak, queuedFor(s));
          await pace(10);
        }
        expect(peak).toBeLessThan(2 * MiB);
        expect(sessionsOf(p.proxy)).toHaveLength(1); // not disconnected: it is merely slow
        setReading(raw, true);
        const messages = await raw.readUntil("Z", 30_000);
        expect(messages.filter((m) => m.type === "D")).toHaveLength(30_000);
      } finally {
        raw.close();
        await p.stop();
      }
    });
  }

  test("transaction mode: requests leased after the client fell behind are paused too (no unbounded queue)", async () => {
    const p = await startTestProxy({ pool: { mode: "transaction" } });
    const raw = await RawClient.connect(p.port);
    try {
      await raw.loginTrust(TRUST_LOGIN);
      setReading(raw, false);
      // Each result is small and ends the lease, so the client falls behind between two leases.
      let peak = 0;
      for (let i = 0; i < 400; i++) {
        raw.send(query("select repeat('y', 30000)"));
        await pace(2);
        for (const s of sessionsOf(p.proxy)) peak = Math.max(peak, queuedFor(s));
      }
      expect(peak).toBeLessThan(2 * MiB);
      setReading(raw, true);
      let answered = 0;
      while (answered < 400) {
        const m = await raw.next(30_000);
        if (m.type === "Z") answered++;
      }
      raw.send(query("select 'after'"));
      expect((await raw.readUntil("Z")).filter((m) => m.type === "D").map(dataRow)).toEqual([["after"]]);
    } finally {
      raw.close();
      await p.stop();
    }
  });

  for (const mode of ["session", "transaction"] as const) {
    test(`${mode} mode: past limits.client_buffer the client is dropped and its server connection closed`, async () => {
      const { log, lines } = capturingLogger();
      const p = await startTestProxy({ pool: { mode }, limits: { client_buffer: "1KiB" } }, log);
      const direct = postgres(cluster.url(cluster.primary), { max: 1, onnotice: () => {} });
      const tag = `fault-unread-${mode}`;
      const running = async () =>
        (await direct.unsafe(`select count(*)::int as n from pg_stat_activity where query like '%${tag}%' and pid <> pg_backend_pid()`))[0]!.n as number;
      const raw = await RawClient.connect(p.port);
      try {
        await raw.loginTrust(TRUST_LOGIN);
        setReading(raw, false);
        raw.send(query(bigQuery(200_000, tag)));
        // Where the kernel's buffers cut the stream decides how much pgroute holds once the client stops reading.
        // Should that stay within the limit, the client is only paused there; it then reads a little and stops
        // again, which makes a new cut, until one leaves more than the limit.
        const dropped = () => sessionsOf(p.proxy).length === 0;
        for (let cut = 1; !dropped(); cut++) {
          expect(cut).toBeLessThanOrEqual(20);
          const [session] = sessionsOf(p.proxy);
          await until("pgroute to drop the client or hold its results", () => dropped() || queuedFor(session!) > 0, 20_000);
          if (dropped()) break;
          setReading(raw, true);
          await until("pgroute to deliver what it held", () => dropped() || queuedFor(session!) === 0, 20_000);
          setReading(raw, false);
        }
        expect(lines.some((l) => /WARN  client_buffer_exceeded .*limit=1024/.test(l))).toBe(true);
        // The server connection had results in flight: closed, so its backend goes away rather than back to the pool.
        await until("the server backend to end", async () => (await running()) === 0, 20_000);
        setReading(raw, true);
        await raw.waitClosed(20_000);
      } finally {
        raw.close();
        await direct.end();
      }
      try {
        await expectServed(p.port);
      } finally {
        await p.stop();
      }
    });
  }
});

describe("waiting for a server connection", () => {
  test("a client that floods while its login waits for a server connection is not read ahead without bound", async () => {
    const p = await startTestProxy({ pool: { mode: "session", size: 1, checkout_timeout: "20s" } });
    const holder = await RawClient.connect(p.port);
    await holder.loginTrust(TRUST_LOGIN); // takes the pool's only connection
    let written = 0;
    const flood = await Bun.connect({
      hostname: "127.0.0.1",
      port: p.port,
      socket: {
        data() {},
        drain(s) {
          pump(s);
        },
      },
    });
    const chunk = query(`select 1 -- ${"z".repeat(64 * 1024)}`);
    const pump = (s: typeof flood) => {
      while (written < 64 * MiB) {
        const n = s.write(chunk);
        written += Math.max(n, 0);
        if (n < chunk.length) return;
      }
    };
    try {
      flood.write(startup(TRUST_LOGIN));
      await until("the login to wait for a connection", () => sessionsOf(p.proxy).length === 2);
      pump(flood);
      const waitUntil = Date.now() + 750;
      let held = 0;
      while (Date.now() < waitUntil) {
        for (const s of sessionsOf(p.proxy)) {
          const pending = (s as unknown as { pending: Uint8Array | null }).pending;
          held = Math.max(held, pending?.length ?? 0);
        }
        await pace(10);
      }
      expect(written).toBeGreaterThan(0);
      expect(held).toBeLessThan(2 * MiB);
    } finally {
      flood.terminate();
      holder.close();
    }
    try {
      await expectServed(p.port);
    } finally {
      await p.stop();
    }
  });
});
