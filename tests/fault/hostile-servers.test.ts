// Invariant: a broken or malicious server — unknown message types, replies out of place, an ErrorResponse without
// a SQLSTATE, a ReadyForQuery nothing asked for or with an unknown status, a huge length, garbage, a close in the
// middle of a message, a login that goes wrong in any of these ways — costs only the client using that server
// connection (a FATAL 08006/08001 where one can be placed between messages, else a close) and that connection —
// or, in transaction mode, when the server just goes away between messages, only the request (ERROR 08006, the
// session goes on); pgroute keeps serving every other client.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { startFakeServer, type FakeBackend, type FakeServer } from "../support/fake-server.ts";
import { RawClient, dataRow, errorOf, type BackendMessage } from "../support/raw-client.ts";
import {
  authenticationSASL,
  authenticationSASLContinue,
  commandComplete,
  dataRowOf,
  frame,
  header,
  pseudoRandomBytes,
  query,
  rawError,
  readyForQuery,
  rowDescription,
  startup,
} from "../support/wire-frames.ts";
import { Bystander, TRUST_LOGIN, expectServed, proxyOnFake, until, type FakeProxy } from "./helpers.ts";

setDefaultTimeout(60_000);

const I = 0x49; // ReadyForQuery status 'I'

/** What the misbehaving client saw: its messages (type letters, errors as `E:code`) and whether it was closed. */
interface Seen {
  types: string[];
  errors: { code: string; severity: string; message: string }[];
  closed: boolean;
}

async function runQuery(port: number, sql: string, database = TRUST_LOGIN.database): Promise<Seen & { backend?: number }> {
  const raw = await RawClient.connect(port);
  const seen: Seen = { types: [], errors: [], closed: false };
  try {
    await raw.loginTrust({ ...TRUST_LOGIN, database });
    raw.send(query(sql));
    for (;;) {
      let m: BackendMessage;
      try {
        m = await raw.next(2000);
      } catch {
        seen.closed = raw.closed;
        break;
      }
      seen.types.push(m.type);
      if (m.type === "E") seen.errors.push(errorOf(m));
      if (m.type === "Z" && seen.errors.every((e) => e.severity !== "FATAL")) {
        // Answered: the session must still work afterwards.
        raw.send(query("select 'after'"));
        const rows = (await raw.readUntil("Z")).filter((x) => x.type === "D").map(dataRow);
        expect(rows).toEqual([["select 'after'"]]);
        break;
      }
    }
  } finally {
    raw.close();
  }
  return seen;
}

type Misbehaviour = (be: FakeBackend) => void;

/** Server replies to the query of the same name. */
const MISBEHAVIOURS: Record<string, Misbehaviour> = {
  "unknown message type": (be) => be.send(rowDescription("a"), frame("x", new Uint8Array(3)), dataRowOf("1"), commandComplete("SELECT 1"), readyForQuery(I)),
  "BindComplete answering a simple Query": (be) => be.send(frame("2"), rowDescription("a"), dataRowOf("1"), commandComplete("SELECT 1"), readyForQuery(I)),
  "ErrorResponse without a SQLSTATE": (be) => be.send(rawError({ S: "ERROR", M: "it broke" }), readyForQuery(I)),
  "FATAL without a SQLSTATE, then a close": (be) => {
    be.send(rawError({ S: "FATAL", M: "going away" }));
    be.end();
  },
  // A server shutting down (fast shutdown, pg_terminate_backend) under the query: not broken, gone.
  "FATAL 57P01, then a close": (be) => {
    be.send(rawError({ S: "FATAL", V: "FATAL", C: "57P01", M: "terminating connection due to administrator command" }));
    be.end();
  },
  // A second ReadyForQuery right behind the answer: nothing is pending when it arrives.
  "ReadyForQuery out of nowhere": (be) => be.send(rowDescription("a"), dataRowOf("1"), commandComplete("SELECT 1"), readyForQuery(I), readyForQuery(I)),
  "ReadyForQuery with an unknown status": (be) => be.send(rowDescription("a"), dataRowOf("1"), commandComplete("SELECT 1"), readyForQuery(0x58)),
  "a 2 GiB length": (be) => be.send(rowDescription("a"), header("D", 0x7fffffff)),
  "a 1 GiB ErrorResponse cut short by a close": (be) => {
    be.send(header("E", 0x3fffffff), new Uint8Array(64 * 1024));
    setTimeout(() => be.end(), 20);
  },
  "a close in the middle of a DataRow": (be) => {
    be.send(rowDescription("a"), dataRowOf("1234567890").subarray(0, 9));
    be.end();
  },
  "1 MB of garbage": (be) => be.send(pseudoRandomBytes(1 << 20, 5)),
};

/** What the client must see, per misbehaviour and mode. */
function expectOutcome(name: string, mode: "session" | "transaction", seen: Seen): void {
  const lost = (why: RegExp) => {
    expect(seen.errors.map((e) => [e.severity, e.code])).toEqual([["FATAL", "08006"]]);
    expect(seen.errors[0]!.message).toMatch(why);
    expect(seen.closed).toBe(true);
  };
  switch (name) {
    case "unknown message type":
      return lost(/unexpected message type "x" \(120\)/);
    case "BindComplete answering a simple Query":
      // Session mode relays the server's bytes as they are (only ReadyForQuery and errors are read).
      if (mode === "session") return void expect(seen.types).toEqual(["2", "T", "D", "C", "Z"]);
      return lost(/BindComplete arrived while a query reply was expected/);
    case "ErrorResponse without a SQLSTATE":
      // Every real server error has a SQLSTATE: one without is a broken server, reported with its message.
      return lost(/ErrorResponse without a SQLSTATE: it broke/);
    case "FATAL without a SQLSTATE, then a close":
      return lost(/ErrorResponse without a SQLSTATE: going away/);
    case "FATAL 57P01, then a close":
      // Session mode relays the server's own FATAL; transaction mode keeps the client: the request fails with the
      // server's words, and the session goes on (runQuery checked a query after it).
      if (mode === "session") {
        expect(seen.errors.map((e) => [e.severity, e.code, e.message])).toEqual([["FATAL", "57P01", "terminating connection due to administrator command"]]);
        return void expect(seen.closed).toBe(true);
      }
      expect(seen.errors.map((e) => [e.severity, e.code, e.message])).toEqual([["ERROR", "08006", 'server connection to node "fake" was lost: terminating connection due to administrator command']]);
      return void expect(seen.closed).toBe(false);
    case "ReadyForQuery out of nowhere":
      // Transaction mode had given the connection back: only that connection is lost, the client never noticed.
      if (mode === "transaction") return void expect(seen.errors).toEqual([]);
      // Session mode relays whole chunks: the one holding the stray message is not relayed, an error is.
      return lost(/ReadyForQuery with no request pending/);
    case "ReadyForQuery with an unknown status":
      return lost(/ReadyForQuery with an invalid transaction status/);
    case "a 2 GiB length":
      return lost(/message of type "D" is 2147483647 bytes, over the limit of 1073741824/);
    case "a 1 GiB ErrorResponse cut short by a close":
      // Transaction mode held the partial ErrorResponse back, so an error fits — and a server that went away costs
      // the client only that request: its session goes on (runQuery checked a query after it). Session mode
      // relayed part of it.
      if (mode === "transaction") {
        expect(seen.errors.map((e) => [e.severity, e.code])).toEqual([["ERROR", "08006"]]);
        expect(seen.errors[0]!.message).toMatch(/the server closed the connection/);
        return void expect(seen.closed).toBe(false);
      }
      expect(seen.errors).toEqual([]);
      return void expect(seen.closed).toBe(true);
    case "a close in the middle of a DataRow":
      // No error can follow half a message: the client is closed.
      expect(seen.types).toEqual(["T"]);
      expect(seen.errors).toEqual([]);
      return void expect(seen.closed).toBe(true);
    case "1 MB of garbage":
      return lost(/unexpected message type|over the limit/);
    default:
      throw new Error(`no expectation for ${name}`);
  }
}

for (const mode of ["session", "transaction"] as const) {
  describe(`a misbehaving server after login (${mode} mode)`, () => {
    let fake: FakeServer;
    let fp: FakeProxy;
    const misbehaved = new Map<string, number>();
    const bystander = new Bystander();

    beforeAll(async () => {
      fake = startFakeServer({
        onQuery(sql, be) {
          const m = MISBEHAVIOURS[sql];
          if (!m) return false;
          misbehaved.set(sql, be.id);
          m(be);
          return true;
        },
      });
      fp = await proxyOnFake(fake, { pool: { mode, size: 4 } });
      await bystander.start(fp.port);
    });
    afterAll(async () => {
      await bystander.stop();
      await fp?.stop();
      fake?.stop();
    });

    for (const name of Object.keys(MISBEHAVIOURS)) {
      test(`${name}: costs that client and that server connection only`, async () => {
        const seen = await runQuery(fp.port, name);
        expectOutcome(name, mode, seen);
        const id = misbehaved.get(name);
        expect(id).toBeDefined();
        // Replies a relay does not look into are not a broken connection: it stays (and is reset for the next client).
        const kept = mode === "session" && name.startsWith("BindComplete");
        if (!kept) {
          // The misbehaving server connection is closed, never pooled again.
          await until(`backend ${id} to be closed`, () => fake.closed.has(id!));
        }
        await bystander.stillAnswered();
        await expectServed(fp.port);
      });
    }
  });
}

describe("a misbehaving server during login", () => {
  let fake: FakeServer;
  let fp: FakeProxy;
  const bystander = new Bystander();
  /** pgroute answered the AuthenticationSASL of the "scram-iterations" case (so the refusal came after it). */
  let saslAnswered = false;
  /** Startup replies by database name; other databases get the normal login. */
  const LOGINS: Record<string, (be: FakeBackend) => void> = {
    "error-without-sqlstate": (be) => be.send(rawError({ S: "FATAL", M: "no code for you" })),
    "unsupported-auth": (be) => be.send(frame("R", Uint8Array.of(0, 0, 0, 7))), // AuthenticationGSS
    "short-auth": (be) => be.send(frame("R", Uint8Array.of(0, 0))),
    "bad-ready": (be) => be.send(frame("R", new Uint8Array(4)), readyForQuery(0x21)),
    garbage: (be) => be.send(pseudoRandomBytes(4096, 11)),
    "huge-length": (be) => be.send(header("R", 0x7fffffff)),
    "scram-iterations": (be) => be.send(authenticationSASL(["SCRAM-SHA-256"])),
    silent: () => {},
  };

  beforeAll(async () => {
    fake = startFakeServer({
      onStartup(be) {
        const script = LOGINS[be.params.get("database") ?? ""];
        if (!script) return false;
        script(be);
        return true;
      },
      onLoginMessage(type, body, be) {
        if (type !== "p") return;
        saslAnswered = true;
        // The SASLInitialResponse: answer with a server-first-message asking for 2^31-1 iterations.
        const z = body.indexOf(0);
        const data = new TextDecoder().decode(body.subarray(z + 5));
        const cnonce = /r=([^,]*)/.exec(data)![1];
        be.send(authenticationSASLContinue(`r=${cnonce}server,s=c2FsdA==,i=2147483647`));
      },
    });
    // A user with a password, so pgroute can answer the SCRAM request; logins wait little for a silent server.
    fp = await proxyOnFake(fake, {
      users: [
        { name: TRUST_LOGIN.user, auth: "trust" },
        { name: "withpassword", auth: "trust", password: "secret-pw" },
      ],
      pool: { connect_timeout: "500ms" },
    });
    await bystander.start(fp.port);
  });
  afterAll(async () => {
    await bystander.stop();
    await fp?.stop();
    fake?.stop();
  });

  const cases: [string, string, string | RegExp, string?][] = [
    ["error-without-sqlstate", "XX000", "no code for you"],
    ["unsupported-auth", "08001", /authentication method pgroute does not support \(7\)/],
    ["short-auth", "08001", /Authentication message too short/],
    ["bad-ready", "08001", /ReadyForQuery with an invalid transaction status/],
    ["garbage", "08001", /unexpected message type|over the limit|too short|terminator/],
    ["huge-length", "08001", /over the limit of 1073741824/],
    ["scram-iterations", "08001", /2147483647 SCRAM iterations, over pgroute's limit of 10000000/, "withpassword"],
    ["silent", "08001", /timed out after 500 ms/],
  ];
  for (const [database, code, message, user] of cases) {
    test(`${database}: the client gets FATAL ${code}, every other client goes on`, async () => {
      const raw = await RawClient.connect(fp.port);
      try {
        raw.send(startup({ user: user ?? TRUST_LOGIN.user, database }));
        const msgs = await raw.readUntil("E", 5000);
        const e = errorOf(msgs.at(-1)!);
        expect(e.severity).toBe("FATAL");
        expect(e.code).toBe(code);
        if (typeof message === "string") expect(e.message).toBe(message);
        else expect(e.message).toMatch(message);
        await raw.waitClosed();
      } finally {
        raw.close();
      }
      await bystander.stillAnswered();
      await expectServed(fp.port);
    });
  }

  test("nothing of the above left a server connection open but the bystander's and the pools' idle ones", async () => {
    await until("misbehaving connections to close", () => fake.open <= 3);
    expect(saslAnswered).toBe(true); // the iteration count was refused after a real SASL exchange began
  });
});
