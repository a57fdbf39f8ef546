// Invariant: the frontend decoders give back exactly the names and texts the client sent — empty, ASCII, UTF-8,
// longer than the short-name path, names whose hashes collide, far more names than the decoded-name table keeps —
// and refuse a string without its terminator.
import { describe, expect, test } from "bun:test";
import { serialize } from "pg-protocol";
import { DecodeError } from "../../src/wire/backend.ts";
import { decodeBind, decodeExecute, decodeParse, decodeQuery, decodeTarget } from "../../src/wire/frontend.ts";

const bytes = (b: Buffer) => new Uint8Array(b);
const bind = (statement: string, portal: string) => decodeBind(...body(serialize.bind({ statement, portal, values: ["1"] })));
const execute = (portal: string) => decodeExecute(...body(serialize.execute({ portal })));
const describe_ = (name: string) => decodeTarget(...body(serialize.describe({ type: "S", name })));
/** A frame's body as the decoders take it: the frame, 5 (past type and length), its end. */
const body = (b: Buffer): [Uint8Array, number, number] => [bytes(b), 5, b.length];

describe("frontend decoders", () => {
  const fnv1a = (s: string) => [...Buffer.from(s)].reduce((h, b) => Math.imul(h ^ b, 0x01000193), 0x811c9dc5);
  const colliding = ["select erbadxps from t", "select snlyokol from t"] as const;

  test("names come back as sent: empty, ASCII, UTF-8, long, and two whose hashes collide, alternating", () => {
    expect(fnv1a(colliding[0])).toBe(fnv1a(colliding[1]));
    const names = ["", "P_0", "stmt_ünïcödé_名前", "x".repeat(64), "y".repeat(65), "z".repeat(500), ...colliding, ...colliding];
    for (const name of names) {
      const b = bind(name, name);
      expect([b.statement, b.portal]).toEqual([name, name]);
      expect(execute(name)).toBe(name);
      expect(describe_(name)).toEqual({ kind: 0x53, name });
      expect(decodeParse(...body(serialize.parse({ name, text: `select '${name}'` })))).toMatchObject({ name, query: `select '${name}'` });
    }
  });

  test("more distinct names than the table keeps, then the first ones again", () => {
    for (let round = 0; round < 2; round++) for (let i = 0; i < 10_000; i++) expect(execute(`portal_${i}`)).toBe(`portal_${i}`);
  });

  test("short query texts are decoded whole each time, not taken for names", () => {
    for (let i = 0; i < 100; i++) {
      const q = bytes(serialize.query(`select ${i}`));
      expect(decodeQuery(q, 5, q.length)).toBe(`select ${i}`);
    }
  });

  test("a name without its terminator is refused, short or long", () => {
    for (const name of ["P_0", "n".repeat(200)]) {
      const frame = bytes(serialize.execute({ portal: name }));
      // Cut just before the portal's NUL: the string never ends within the message.
      const cut = 5 + Buffer.byteLength(name);
      expect(() => decodeExecute(frame, 5, cut)).toThrow(DecodeError);
    }
  });
});
