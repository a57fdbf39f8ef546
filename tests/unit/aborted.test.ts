// Invariant: after pgroute rolled back an idle transaction, the client is answered as Postgres answers an aborted
// transaction — 25P03 and ReadyForQuery 'E' for anything but its end, in the simple and extended protocols (errors
// skip to Sync); COMMIT/ROLLBACK/END/ABORT end it with CommandComplete ROLLBACK and 'I' (named statements parsed
// for it are kept); messages after the end in the same batch go on to the server. A transaction lost with its
// server connection: the loss first (a COMMIT then fails too, never answered ROLLBACK unasked), 25P02 after.
import { beforeAll, describe, expect, test } from "bun:test";
import { AbortedTransaction, endsTransaction } from "../../src/session/aborted.ts";
import { loadParser } from "../../src/router/parser.ts";
import { cstrings, errorOf } from "../support/raw-client.ts";
import { serialize } from "../support/wire-frames.ts";

beforeAll(loadParser);

/** A host that records replies and statements; `ended` holds what was handed back. */
function host(statements: Record<string, string> = {}, lost = false) {
  const out: string[] = [];
  const state = { ended: null as null | number[], declared: [] as string[] };
  const known = new Map(Object.entries(statements));
  const h = {
    local(bytes: Uint8Array) {
      // Split into messages: type letter, with the code of an error, the tag of a CommandComplete, the status of a Z.
      for (let at = 0; at < bytes.length; ) {
        const len = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0);
        const type = String.fromCharCode(bytes[at]!);
        const body = bytes.subarray(at + 5, at + 1 + len);
        out.push(type === "E" ? `E:${errorOf({ type, body }).code}` : type === "Z" ? `Z:${String.fromCharCode(body[0]!)}` : type === "C" ? `C:${cstrings(body)[0]}` : type);
        at += 1 + len;
      }
    },
    statementText: (name: string) => known.get(name),
    declare(name: string, query: string) {
      if (known.has(name)) return false;
      known.set(name, query);
      state.declared.push(name);
      return true;
    },
    forget: (name: string) => void known.delete(name),
    ended: (rest: readonly { type: number }[]) => void (state.ended = rest.map((m) => m.type)),
  };
  const aborted = lost
    ? new AbortedTransaction(h, { code: "08006", message: "server connection lost" }, { code: "25P02", message: "current transaction is aborted" }, true)
    : new AbortedTransaction(h, { code: "25P03", message: "idle-in-transaction timeout" });
  return { out, state, aborted };
}

const send = (a: AbortedTransaction, ...frames: Buffer[]) => frames.forEach((f) => a.onMessage(f[0]!, new Uint8Array(f)));

describe("an aborted transaction answered by pgroute", () => {
  test("what ends it", () => {
    for (const sql of ["rollback", "ROLLBACK WORK", "abort", "commit", "end", "prepare transaction 'x'"]) expect({ sql, e: endsTransaction(sql) }).toEqual({ sql, e: true });
    for (const sql of ["rollback to savepoint s", "select 1", "rollback; select 1", "commit prepared 'x'", "begin"]) expect({ sql, e: endsTransaction(sql) }).toEqual({ sql, e: false });
  });

  test("simple protocol: 25P03 until COMMIT, which is answered ROLLBACK", () => {
    const { out, state, aborted } = host();
    send(aborted, serialize.query("select 1"), serialize.query("rollback to savepoint s"), serialize.query("commit"));
    expect(out).toEqual(["E:25P03", "Z:E", "E:25P03", "Z:E", "C:ROLLBACK", "Z:I"]);
    expect(state.ended).toEqual([]);
  });

  test("extended protocol: an error skips to Sync; ROLLBACK parsed, bound, described and executed ends it", () => {
    const { out, state, aborted } = host();
    send(aborted, serialize.parse({ text: "select 1" }), serialize.bind({}), serialize.execute({}), serialize.sync());
    expect(out.splice(0)).toEqual(["E:25P03", "Z:E"]);
    send(aborted, serialize.parse({ name: "rb", text: "rollback" }), serialize.bind({ statement: "rb" }), serialize.describe({ type: "P" }), serialize.execute({}), serialize.sync());
    expect(out).toEqual(["1", "2", "n", "C:ROLLBACK", "Z:I"]);
    expect(state.declared).toEqual(["rb"]);
    expect(state.ended).toEqual([]);
  });

  test("a statement named earlier can end it; an unknown one is 26000", () => {
    const { out, aborted } = host({ rb: "ROLLBACK" });
    send(aborted, serialize.bind({ statement: "nope" }), serialize.execute({}), serialize.sync());
    expect(out.splice(0)).toEqual(["E:26000", "Z:E"]);
    send(aborted, serialize.describe({ type: "S", name: "rb" }), serialize.bind({ statement: "rb" }), serialize.execute({}), serialize.sync());
    expect(out).toEqual(["t", "n", "2", "C:ROLLBACK", "Z:I"]);
  });

  test("a transaction lost with its server connection: the first statement gets the loss, later ones 25P02", () => {
    const { out, state, aborted } = host({}, true);
    send(aborted, serialize.query("select 1"), serialize.query("select 2"), serialize.query("rollback"));
    expect(out).toEqual(["E:08006", "Z:E", "E:25P02", "Z:E", "C:ROLLBACK", "Z:I"]);
    expect(state.ended).toEqual([]);
  });

  test("a lost transaction's COMMIT before any error fails and ends it, in both protocols — never a quiet ROLLBACK", () => {
    const simple = host({}, true);
    send(simple.aborted, serialize.query("commit"));
    expect(simple.out).toEqual(["E:08006", "Z:I"]);
    expect(simple.state.ended).toEqual([]);
    const extended = host({}, true);
    send(extended.aborted, serialize.parse({ text: "commit" }), serialize.bind({}), serialize.execute({}), serialize.sync());
    expect(extended.out).toEqual(["1", "2", "E:08006", "Z:I"]);
    expect(extended.state.ended).toEqual([]);
    // Told already (its statement got the error): COMMIT is answered ROLLBACK, as Postgres answers it.
    const told = host({}, true);
    send(told.aborted, serialize.query("select 1"), serialize.query("commit"));
    expect(told.out).toEqual(["E:08006", "Z:E", "C:ROLLBACK", "Z:I"]);
  });

  test("messages after the end, up to Sync, are handed back to run on a server", () => {
    const { out, state, aborted } = host();
    send(aborted, serialize.parse({ text: "rollback" }), serialize.bind({}), serialize.execute({}), serialize.parse({ text: "select 1" }), serialize.bind({}), serialize.execute({}), serialize.sync());
    expect(out).toEqual(["1", "2", "C:ROLLBACK"]);
    expect(state.ended).toEqual([0x50, 0x42, 0x45, 0x53]);
  });
});
