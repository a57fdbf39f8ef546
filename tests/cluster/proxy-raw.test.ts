// Invariant: at the byte level pgroute behaves like Postgres where Postgres answers — extended-protocol replies
// arrive on Flush without waiting for Sync, FunctionCall works, SSLRequest/GSSENCRequest get 'N' and the same
// socket then logs in, a newer protocol minor or a `_pq_.` option gets NegotiateProtocolVersion — and a malformed
// startup packet or frame gets a FATAL 08P01 ErrorResponse, after which the connection is closed. Limits
// (clients, login time) and shutdown also end connections with a FATAL naming why, never a silent close.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash } from "node:crypto";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { MessageWriter } from "../../src/wire/encode.ts";
import { APP_DATABASE, AUTH_USERS } from "../support/cluster.ts";
import { freePort } from "../support/net.ts";
import { startTestProxy, type TestProxy } from "../support/proxy.ts";
import { eventually } from "../support/wait.ts";
import { RawClient, cstrings, dataRow, errorOf, type BackendMessage } from "../support/raw-client.ts";
import { cancelRequest, concat, frame, gssencRequest, header, query, serialize, sslRequest, startup, untyped } from "../support/wire-frames.ts";

// Bun 1.4.5 applies the preload's setDefaultTimeout to the first test file only; this file sets its own.
setDefaultTimeout(60_000);

let tp: TestProxy;
let cluster: DevCluster;

beforeAll(async () => {
  tp = await startTestProxy();
  cluster = tp.cluster;
});
afterAll(async () => {
  await tp?.stop();
});

type Side = "proxy" | "direct";
const SIDES: Side[] = ["proxy", "direct"];
const LOGIN = { user: AUTH_USERS.trust.user, database: APP_DATABASE };
const port = (s: Side) => (s === "proxy" ? tp.port : cluster.primary.port);
const bytes = (b: Buffer) => new Uint8Array(b);

/** A logged-in raw connection (trust user, so no password exchange). */
async function login(s: Side): Promise<RawClient> {
  const raw = await RawClient.connect(port(s));
  await raw.loginTrust(LOGIN);
  return raw;
}

/** Messages as compared: type letter, and the body where it is stable across connections. */
function view(m: BackendMessage): unknown {
  switch (m.type) {
    case "D":
      return ["D", dataRow(m)];
    case "C":
      return ["C", cstrings(m.body)];
    case "Z":
    case "V":
      return [m.type, [...m.body]];
    case "E":
    case "N":
      return [m.type, errorOf(m).code, errorOf(m).message];
    default:
      return [m.type];
  }
}

/** Runs `fn` on a fresh logged-in connection to each side; returns both results. */
async function bothSides<T>(fn: (raw: RawClient) => Promise<T>): Promise<Record<Side, T>> {
  const out = {} as Record<Side, T>;
  for (const s of SIDES) {
    const raw = await login(s);
    try {
      out[s] = await fn(raw);
    } finally {
      raw.close();
    }
  }
  return out;
}

describe("extended protocol", () => {
  test("Parse/Bind/Describe/Execute + Flush get their replies before any Sync; Sync then gives ReadyForQuery", async () => {
    const got = await bothSides(async (raw) => {
      raw.send(
        concat(
          bytes(serialize.parse({ name: "s1", text: "select $1::int + 1 as n, 'ü' as t" })),
          bytes(serialize.bind({ statement: "s1", values: ["41"] })),
          bytes(serialize.describe({ type: "P" })),
          bytes(serialize.execute({})),
          bytes(serialize.flush()),
        ),
      );
      // No Sync has been sent: these can only arrive because the Flush was relayed.
      const first = await raw.readUntil("C");
      raw.send(bytes(serialize.sync()));
      const last = await raw.readUntil("Z");
      return { first: first.map(view), last: last.map(view) };
    });
    expect(got.proxy).toEqual({
      first: [["1"], ["2"], ["T"], ["D", ["42", "ü"]], ["C", ["SELECT 1"]]],
      last: [["Z", [0x49]]],
    });
    expect(got.proxy).toEqual(got.direct);
  });

  test("Execute with a row limit suspends the portal; each Flush delivers the rows so far", async () => {
    const got = await bothSides(async (raw) => {
      raw.send(
        concat(
          bytes(serialize.parse({ name: "gen", text: "select generate_series(1, 5) as g" })),
          bytes(serialize.describe({ type: "S", name: "gen" })),
          bytes(serialize.flush()),
        ),
      );
      const described = await raw.readUntil("T");
      // A portal only lives inside a transaction when it outlives Sync; here all steps precede the one Sync.
      raw.send(concat(bytes(serialize.bind({ portal: "p", statement: "gen" })), bytes(serialize.execute({ portal: "p", rows: 2 })), bytes(serialize.flush())));
      const firstTwo = await raw.readUntil("s");
      raw.send(concat(bytes(serialize.execute({ portal: "p", rows: 0 })), bytes(serialize.flush())));
      const rest = await raw.readUntil("C");
      raw.send(concat(bytes(serialize.close({ type: "S", name: "gen" })), bytes(serialize.sync())));
      const end = await raw.readUntil("Z");
      return [described, firstTwo, rest, end].map((ms) => ms.map(view));
    });
    expect(got.proxy).toEqual([
      [["1"], ["t"], ["T"]],
      [["2"], ["D", ["1"]], ["D", ["2"]], ["s"]],
      [["D", ["3"]], ["D", ["4"]], ["D", ["5"]], ["C", ["SELECT 3"]]],
      [["3"], ["Z", [0x49]]],
    ]);
    expect(got.proxy).toEqual(got.direct);
  });

  test("an error in the extended protocol skips to Sync, then the session goes on", async () => {
    const got = await bothSides(async (raw) => {
      raw.send(
        concat(
          bytes(serialize.parse({ text: "select 1 / $1::int" })),
          bytes(serialize.bind({ values: ["0"] })),
          bytes(serialize.execute({})),
          // Discarded by the server: it skips everything up to the Sync after an error.
          bytes(serialize.parse({ text: "select 'skipped'" })),
          bytes(serialize.bind({})),
          bytes(serialize.execute({})),
          bytes(serialize.sync()),
          bytes(serialize.query("select 'after'")),
        ),
      );
      const failed = await raw.readUntil("Z");
      const after = await raw.readUntil("Z");
      return [failed, after].map((ms) => ms.map(view));
    });
    expect(got.proxy).toEqual([
      // Planning at Bind folds the constant division, so Bind itself fails.
      [["1"], ["E", "22012", "division by zero"], ["Z", [0x49]]],
      [["T"], ["D", ["after"]], ["C", ["SELECT 1"]], ["Z", [0x49]]],
    ]);
    expect(got.proxy).toEqual(got.direct);
  });

  test("FunctionCall ('F') of int4abs by OID returns its FunctionCallResponse, binary and text", async () => {
    const got = await bothSides(async (raw) => {
      raw.send(query("select 'int4abs'::regproc::oid"));
      const oid = Number(dataRow((await raw.readUntil("Z")).find((m) => m.type === "D")!)[0]);
      // FunctionCall: Int32 oid, Int16 #format codes, Int16 code…, Int16 #args, (Int32 len, bytes)…, Int16 result format.
      const binary = new MessageWriter().int32(oid).int16(1).int16(1).int16(1).int32(4).int32(-42).int16(1).done();
      const textArg = new TextEncoder().encode("-7");
      const text = new MessageWriter().int32(oid).int16(1).int16(0).int16(1).int32(textArg.length).bytes(textArg).int16(0).done();
      raw.send(frame("F", binary));
      const b = await raw.readUntil("Z");
      raw.send(frame("F", text));
      const t = await raw.readUntil("Z");
      return [b, t].map((ms) => ms.map(view));
    });
    expect(got.proxy).toEqual([
      // Int32 length 4, then 42 as a big-endian int4.
      [["V", [0, 0, 0, 4, 0, 0, 0, 42]], ["Z", [0x49]]],
      [["V", [0, 0, 0, 1, 0x37]], ["Z", [0x49]]], // "7"
    ]);
    expect(got.proxy).toEqual(got.direct);
  });
});

describe("startup packets", () => {
  test("SSLRequest is answered with the single byte 'N', then a startup on the same socket logs in", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      raw.send(sslRequest());
      expect([...(await raw.readBytes(1))]).toEqual([0x4e]);
      await raw.loginTrust(LOGIN);
      raw.send(query("select current_user"));
      expect((await raw.readUntil("Z")).filter((m) => m.type === "D").map(dataRow)).toEqual([[AUTH_USERS.trust.user]]);
    } finally {
      raw.close();
    }
  });

  test("GSSENCRequest gets 'N', then SSLRequest gets 'N', then the startup logs in (libpq's order)", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      raw.send(gssencRequest());
      expect([...(await raw.readBytes(1))]).toEqual([0x4e]);
      raw.send(sslRequest());
      expect([...(await raw.readBytes(1))]).toEqual([0x4e]);
      const { messages } = await raw.loginTrust(LOGIN);
      expect(messages[0]!.type).toBe("R");
      expect(messages.at(-1)!.type).toBe("Z");
    } finally {
      raw.close();
    }
  });

  test("protocol 3.2 with a _pq_.foo option gets NegotiateProtocolVersion naming it, as direct, then logs in", async () => {
    const got = {} as Record<Side, unknown>;
    for (const s of SIDES) {
      const raw = await RawClient.connect(port(s));
      try {
        raw.send(startup({ ...LOGIN, "_pq_.foo": "bar" }, (3 << 16) | 2));
        const v = await raw.next();
        expect(v.type).toBe("v");
        const dv = new DataView(v.body.buffer, v.body.byteOffset, 8);
        const negotiated = { newestMinor: dv.getInt32(0), count: dv.getInt32(4), options: cstrings(v.body, 8) };
        const { messages } = await raw.finishLogin();
        raw.send(query("select 1"));
        const q = await raw.readUntil("Z");
        got[s] = { negotiated, login: messages[0]!.type, query: q.map(view) };
      } finally {
        raw.close();
      }
    }
    expect(got.proxy).toEqual({
      // PostgreSQL (15) puts the whole version code 3.0 (196608) in the "newest minor version" field.
      negotiated: { newestMinor: 196608, count: 1, options: ["_pq_.foo"] },
      login: "R",
      query: [["T"], ["D", ["1"]], ["C", ["SELECT 1"]], ["Z", [0x49]]],
    });
    expect(got.proxy).toEqual(got.direct);
  });

  test("an unsupported protocol major version gets a FATAL 08P01 with Postgres's own message", async () => {
    const got = {} as Record<Side, unknown>;
    for (const s of SIDES) {
      const raw = await RawClient.connect(port(s));
      try {
        raw.send(startup(LOGIN, 4 << 16));
        const m = await raw.next();
        await raw.waitClosed();
        got[s] = { type: m.type, ...errorOf(m), fields: undefined };
      } finally {
        raw.close();
      }
    }
    expect(got.proxy).toMatchObject({ type: "E", severity: "FATAL", code: "08P01", message: "unsupported frontend protocol 4.0: server supports 3.0 to 3.0" });
    // Postgres answers 0A000 with the same message; pgroute reports the protocol violation its spec asks for.
    expect({ ...(got.proxy as object), code: undefined }).toEqual({ ...(got.direct as object), code: undefined });
  });

  test("a startup packet longer than 10000 bytes gets a FATAL 08P01 and the socket closes", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      const packet = startup({ ...LOGIN, application_name: "x".repeat(10_001) });
      expect(packet.length).toBeGreaterThan(10_000);
      raw.send(packet);
      const m = await raw.next();
      expect(m.type).toBe("E");
      expect(errorOf(m)).toMatchObject({ severity: "FATAL", code: "08P01", message: `invalid length of startup packet: ${packet.length}` });
      await raw.waitClosed();
    } finally {
      raw.close();
    }
  });

  test("a startup packet declaring a length below 8 gets a FATAL 08P01 and the socket closes", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      raw.send(untyped(4));
      const m = await raw.next();
      expect(errorOf(m)).toMatchObject({ severity: "FATAL", code: "08P01", message: "invalid length of startup packet: 4" });
      await raw.waitClosed();
    } finally {
      raw.close();
    }
  });

  test("a CancelRequest for an unknown key is closed without a reply", async () => {
    const raw = await RawClient.connect(tp.port);
    try {
      raw.send(cancelRequest(12345, 678));
      await raw.waitClosed();
      expect(raw.drain()).toEqual([]);
    } finally {
      raw.close();
    }
  });
});

describe("messages sent ahead of the login's end", () => {
  // A client may write its first query without waiting for ReadyForQuery; Postgres reads it once the login is
  // done, from the same socket buffer, so it must not be lost on the way.
  test("a Query in the same write as a trust StartupMessage is answered after the login, as direct", async () => {
    const got = {} as Record<Side, unknown>;
    for (const s of SIDES) {
      const raw = await RawClient.connect(port(s));
      try {
        raw.send(concat(startup(LOGIN), query("select 'early bird'")));
        await raw.finishLogin();
        got[s] = (await raw.readUntil("Z")).map(view);
      } finally {
        raw.close();
      }
    }
    expect(got.proxy).toEqual([["T"], ["D", ["early bird"]], ["C", ["SELECT 1"]], ["Z", [0x49]]]);
    expect(got.proxy).toEqual(got.direct);
  });

  test("a Query in the same write as the md5 password is answered after the login, as direct", async () => {
    const { user, password } = AUTH_USERS.md5;
    const got = {} as Record<Side, unknown>;
    for (const s of SIDES) {
      const raw = await RawClient.connect(port(s));
      try {
        raw.send(startup({ user, database: APP_DATABASE }));
        const challenge = await raw.next();
        // AuthenticationMD5Password: Int32 5, then a 4-byte salt.
        expect(new DataView(challenge.body.buffer, challenge.body.byteOffset, 4).getInt32(0)).toBe(5);
        const salt = challenge.body.subarray(4, 8);
        const inner = createHash("md5").update(password + user).digest("hex");
        const answer = `md5${createHash("md5").update(inner).update(salt).digest("hex")}`;
        raw.send(concat(bytes(serialize.password(answer)), query("select current_user")));
        await raw.finishLogin();
        got[s] = (await raw.readUntil("Z")).map(view);
      } finally {
        raw.close();
      }
    }
    expect(got.proxy).toEqual([["T"], ["D", [user]], ["C", ["SELECT 1"]], ["Z", [0x49]]]);
    expect(got.proxy).toEqual(got.direct);
  });
});

describe("frames after login", () => {
  test("a frame length below 4 gets a FATAL 08P01 and the socket closes", async () => {
    const raw = await login("proxy");
    try {
      raw.send(header("Q", 3));
      const m = await raw.next();
      expect(m.type).toBe("E");
      expect(errorOf(m)).toMatchObject({ severity: "FATAL", code: "08P01", message: 'invalid message length 3 for message type "Q"' });
      await raw.waitClosed();
    } finally {
      raw.close();
    }
  });

  test("a frame longer than limits.max_message_size gets a FATAL 08P01 and the socket closes", async () => {
    const small = await startTestProxy({ limits: { max_message_size: "64KiB" } });
    const raw = await RawClient.connect(small.port);
    try {
      await raw.loginTrust(LOGIN);
      // A query just under the limit goes through…
      raw.send(query(`select length('${"y".repeat(60_000)}')`));
      expect((await raw.readUntil("Z")).filter((m) => m.type === "D").map(dataRow)).toEqual([["60000"]]);
      // …one just over it is refused from its header alone.
      raw.send(header("Q", 64 * 1024 + 1));
      const m = await raw.next();
      expect(errorOf(m)).toMatchObject({
        severity: "FATAL",
        code: "08P01",
        message: `message of type "Q" is ${64 * 1024 + 1} bytes, over the limit of ${64 * 1024}`,
      });
      await raw.waitClosed();
    } finally {
      raw.close();
      await small.stop();
    }
  });

  test("Terminate closes the connection without a reply", async () => {
    const raw = await login("proxy");
    try {
      raw.send(bytes(serialize.end()));
      await raw.waitClosed();
      expect(raw.drain()).toEqual([]);
    } finally {
      raw.close();
    }
  });
});

describe("limits and shutdown", () => {
  test("a client over limits.max_client_connections gets FATAL 53300; after one leaves, a new one gets in", async () => {
    const limited = await startTestProxy({ limits: { max_client_connections: 2 } });
    const clients: RawClient[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const c = await RawClient.connect(limited.port);
        clients.push(c);
        await c.loginTrust(LOGIN);
      }
      const extra = await RawClient.connect(limited.port);
      clients.push(extra);
      extra.send(startup(LOGIN));
      const m = await extra.next();
      expect(errorOf(m)).toMatchObject({
        severity: "FATAL",
        code: "53300",
        message: "sorry, too many clients already (max_client_connections = 2)",
      });
      await extra.waitClosed();
      clients[0]!.send(bytes(serialize.end()));
      await clients[0]!.waitClosed();
      // The proxy counts the departure when it sees the close; retry (bounded) until it has.
      let admitted: RawClient | undefined;
      await eventually("a client admitted after one left", async () => {
        const c = await RawClient.connect(limited.port);
        clients.push(c);
        c.send(startup(LOGIN));
        if ((await c.next()).type === "R") admitted = c;
        return admitted !== undefined;
      }, 5000);
      await admitted!.finishLogin();
    } finally {
      for (const c of clients) c.close();
      await limited.stop();
    }
  });

  test("a client that does not finish logging in within limits.login_timeout gets FATAL 08P01", async () => {
    const strict = await startTestProxy({ limits: { login_timeout: "300ms" } });
    try {
      const silent = await RawClient.connect(strict.port);
      const halfway = await RawClient.connect(strict.port);
      try {
        halfway.send(startup({ user: "postgres", database: APP_DATABASE }));
        expect((await halfway.next()).type).toBe("R"); // asked for SCRAM, never answered
        for (const c of [silent, halfway]) {
          const m = await c.next(5000);
          expect(errorOf(m)).toMatchObject({
            severity: "FATAL",
            code: "08P01",
            message: "login timeout: startup and authentication took too long",
          });
          await c.waitClosed();
        }
      } finally {
        silent.close();
        halfway.close();
      }
    } finally {
      await strict.stop();
    }
  });

  test("a server pgroute cannot reach: the authenticated client waits failover.primary_wait_timeout, then gets FATAL 57P03 naming the node", async () => {
    const closedPort = await freePort();
    const unreachable = await startTestProxy({ nodes: [{ name: "primary", host: "127.0.0.1", port: closedPort, role: "primary" }], failover: { primary_wait_timeout: "300ms" } });
    const raw = await RawClient.connect(unreachable.port);
    try {
      const t0 = performance.now();
      raw.send(startup(LOGIN));
      const msgs = await raw.readUntil("E");
      expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
      expect(msgs.map((m) => m.type)).toEqual(["E"]);
      const e = errorOf(msgs[0]!);
      expect({ severity: e.severity, code: e.code }).toEqual({ severity: "FATAL", code: "57P03" });
      expect(e.message).toBe("no primary node is available (waited 300 ms for one)");
      expect(e.fields.get(0x44 /* 'D' */)).toStartWith('could not connect to node "primary": ');
      await raw.waitClosed();
    } finally {
      raw.close();
      await unreachable.stop();
    }
  });

  test("stopping pgroute ends each logged-in client with a FATAL 57P01, as a Postgres shutdown does", async () => {
    const doomed = await startTestProxy();
    const raw = await RawClient.connect(doomed.port);
    try {
      await raw.loginTrust(LOGIN);
      await doomed.stop();
      const m = await raw.next().catch((err: Error) => ({ type: `(nothing: ${err.message})`, body: new Uint8Array(0) }));
      expect(m.type).toBe("E");
      expect(errorOf(m)).toMatchObject({ severity: "FATAL", code: "57P01", message: "terminating connection due to pgroute shutdown" });
      await raw.waitClosed();
    } finally {
      raw.close();
    }
  });
});
