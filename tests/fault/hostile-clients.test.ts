// Invariant: a hostile or broken client — garbage instead of a startup packet, lying lengths, 100 MB of random
// bytes, a socket half-closed mid-message, a client that vanishes mid-authentication — ends only its own
// connection, cleanly (a FATAL 08P01 where the protocol allows one, else a close), leaves no session and no dirty
// server connection behind, and never disturbs a client already working next to it.
import { pace } from "../support/wait.ts";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Socket } from "bun";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { startTestProxy, type TestProxy } from "../support/proxy.ts";
import { RawClient, errorOf } from "../support/raw-client.ts";
import {
  concat,
  frame,
  header,
  passwordMessage,
  pseudoRandomBytes,
  query,
  serialize,
  startup,
  untyped,
} from "../support/wire-frames.ts";
import { Bystander, TRUST_LOGIN, expectFatal, expectServed, sessionsOf, until } from "./helpers.ts";

setDefaultTimeout(60_000);

const MiB = 1024 * 1024;
const enc = new TextEncoder();

/** Writes up to `total` bytes of `source` (repeated) as fast as the socket takes them, until it closes. */
function blast(port: number, prefix: Uint8Array, total: number, seed: number): Promise<{ written: number; received: Uint8Array }> {
  const noise = pseudoRandomBytes(MiB, seed);
  return new Promise((resolve, reject) => {
    let written = 0;
    let received: Uint8Array = new Uint8Array(0);
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      resolve({ written, received });
    };
    const pump = (s: Socket<undefined>) => {
      while (!finished && written < total) {
        const n = s.write(noise);
        if (n < 0) return finish();
        written += n;
        if (n < noise.length) return;
      }
    };
    Bun.connect<undefined>({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          s.write(prefix);
          pump(s);
        },
        data(_s, chunk) {
          received = concat(received, chunk);
        },
        drain: pump,
        close: finish,
        end: finish,
        error: finish,
      },
    }).catch(reject);
    setTimeout(finish, 30_000);
  });
}

/** The backend messages in `bytes` (what pgroute answered a blasting client). */
function messagesIn(bytes: Uint8Array): { type: string; body: Uint8Array }[] {
  const out: { type: string; body: Uint8Array }[] = [];
  let at = 0;
  while (bytes.length - at >= 5) {
    const len = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0);
    if (bytes.length - at < 1 + len) break;
    out.push({ type: String.fromCharCode(bytes[at]!), body: bytes.slice(at + 5, at + 1 + len) });
    at += 1 + len;
  }
  return out;
}

for (const mode of ["session", "transaction"] as const) {
  describe(`hostile clients (${mode} mode)`, () => {
    let tp: TestProxy;
    let cluster: DevCluster;
    const bystander = new Bystander();

    beforeAll(async () => {
      // One server connection: a dirty one handed to the next client would show at once.
      tp = await startTestProxy({ pool: { mode, size: mode === "session" ? 3 : 1 }, limits: { login_timeout: "1s" } });
      cluster = tp.cluster;
      await bystander.start(tp.port);
    });
    afterAll(async () => {
      await bystander.stop();
      await tp?.stop();
    });

    test("garbage instead of a startup packet (HTTP, a TLS ClientHello, zeros): FATAL 08P01 and close", async () => {
      const garbage = [
        enc.encode("GET / HTTP/1.1\r\nHost: pgroute\r\n\r\n"),
        Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03),
        new Uint8Array(64),
      ];
      for (const bytes of garbage) {
        const raw = await RawClient.connect(tp.port);
        try {
          raw.send(bytes);
          await expectFatal(raw, "08P01", /^invalid length of startup packet: \d+$/);
        } finally {
          raw.close();
        }
      }
      await bystander.stillAnswered();
      await expectServed(tp.port);
    });

    test("a startup packet that promises more than it sends is ended by the login timeout", async () => {
      const raw = await RawClient.connect(tp.port);
      try {
        raw.send(untyped(200, new Uint8Array(20)));
        await expectFatal(raw, "08P01", "login timeout: startup and authentication took too long");
      } finally {
        raw.close();
      }
      await bystander.stillAnswered();
    });

    test("a frame that promises more than it sends, then a disconnect: its server connection is not reused", async () => {
      const raw = await RawClient.connect(tp.port);
      await raw.loginTrust(TRUST_LOGIN);
      const before = sessionsOf(tp.proxy).length;
      raw.send(concat(header("Q", 1000), enc.encode("select 'half")));
      await pace(50); // nothing to wait for: pgroute must simply keep waiting for the rest
      expect(raw.closed).toBe(false);
      raw.close();
      await until("the session to end", () => sessionsOf(tp.proxy).length === before - 1);
      await bystander.stillAnswered();
      // Session mode forwarded the half message to the server: had that connection gone back to the pool, the
      // next client's query would be read as the rest of it.
      for (let i = 0; i < 3; i++) await expectServed(tp.port);
    });

    test("a length that lies about where the next message starts gets an error, and the session ends or recovers", async () => {
      const raw = await RawClient.connect(tp.port);
      try {
        await raw.loginTrust(TRUST_LOGIN);
        // A Query whose declared length swallows the next message's first bytes.
        const q = query("select 1");
        const lying = concat(header("Q", q.length - 1 + 6), q.subarray(5), query("select 2"));
        raw.send(lying);
        const m = await raw.next(5000);
        expect(m.type).toBe("E");
        expect(errorOf(m).code).toBe("08P01");
      } finally {
        raw.close();
      }
      await bystander.stillAnswered();
      await expectServed(tp.port);
    });

    for (const [what, seed] of [
      ["an unknown type", 1],
      ["a 42 MB Bind", 2],
      ["a 2.8 GB length", 42],
    ] as const) {
      test(`100 MB of random bytes after login (first header: ${what}) end that connection only`, async () => {
        const startupAndNothing = startup(TRUST_LOGIN);
        const { written, received } = await blast(tp.port, startupAndNothing, 100 * MiB, seed);
        const replies = messagesIn(received);
        // Logged in, then ended by an error naming the protocol violation (pgroute's or the server's) — or, when
        // the error could not be placed between server messages, by the close alone.
        expect(replies.find((m) => m.type === "Z")).toBeDefined();
        const errors = replies.filter((m) => m.type === "E").map((m) => errorOf({ type: "E", body: m.body }));
        for (const e of errors) expect(e.code).toBe("08P01");
        expect(written).toBeLessThanOrEqual(100 * MiB);
        await until("the session to end", () => sessionsOf(tp.proxy).length === 1); // the bystander's
        await bystander.stillAnswered();
        await expectServed(tp.port);
      });
    }

    test("100 MB of random bytes instead of a startup packet: FATAL 08P01 after four bytes, then the close", async () => {
      const { written, received } = await blast(tp.port, new Uint8Array(0), 100 * MiB, 7);
      const replies = messagesIn(received);
      expect(replies).toHaveLength(1);
      expect(errorOf({ type: "E", body: replies[0]!.body })).toMatchObject({ severity: "FATAL", code: "08P01" });
      expect(written).toBeLessThan(100 * MiB);
      await bystander.stillAnswered();
      await expectServed(tp.port);
    });

    test("a socket half-closed in the middle of a message is closed, and its server connection dropped", async () => {
      for (const partial of [
        startup(TRUST_LOGIN).subarray(0, 10), // mid-startup
        null, // mid-frame after login
      ]) {
        const raw = await RawClient.connect(tp.port);
        if (partial) raw.send(partial);
        else {
          await raw.loginTrust(TRUST_LOGIN);
          raw.send(query("select 'never finished'").subarray(0, 12));
        }
        (raw as unknown as { socket: Socket<undefined> }).socket.shutdown(); // FIN: no more bytes will come
        await raw.waitClosed();
        raw.close();
      }
      await until("only the bystander left", () => sessionsOf(tp.proxy).length === 1);
      await bystander.stillAnswered();
      for (let i = 0; i < 3; i++) await expectServed(tp.port);
    });

    test("a client that vanishes mid-authentication (SCRAM, md5) leaves nothing behind", async () => {
      // SCRAM: gone after the server-first-message.
      const scram = await RawClient.connect(tp.port);
      scram.send(startup({ user: cluster.superuser, database: "postgres" }));
      expect((await scram.next()).type).toBe("R");
      scram.send(new Uint8Array(serialize.sendSASLInitialResponseMessage("SCRAM-SHA-256", "n,,n=,r=abcdefghijklmnop")));
      expect((await scram.next()).type).toBe("R"); // SASLContinue
      scram.close();
      // md5: gone after the salt, and once with half a password message.
      const md5 = await RawClient.connect(tp.port);
      md5.send(startup({ user: "md5user", database: "postgres" }));
      expect((await md5.next()).type).toBe("R");
      md5.close();
      const half = await RawClient.connect(tp.port);
      half.send(startup({ user: "md5user", database: "postgres" }));
      expect((await half.next()).type).toBe("R");
      half.send(passwordMessage("md5deadbeef").subarray(0, 7));
      half.close();
      await until("only the bystander left", () => sessionsOf(tp.proxy).length === 1);
      await bystander.stillAnswered();
      await expectServed(tp.port);
    });

    test("an unknown message type after login is a protocol violation, as in Postgres", async () => {
      const raw = await RawClient.connect(tp.port);
      try {
        await raw.loginTrust(TRUST_LOGIN);
        raw.send(frame("!", new Uint8Array(3)));
        const m = await raw.next();
        expect(m.type).toBe("E");
        expect(errorOf(m)).toMatchObject({ severity: "FATAL", code: "08P01", message: "invalid frontend message type 33" });
        await raw.waitClosed();
      } finally {
        raw.close();
      }
      await bystander.stillAnswered();
    });
  });
}
