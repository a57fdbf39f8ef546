// Invariant: a retryable request (a read sent to a replica) reaches the client exactly as the server sent it when
// it is answered there — rows or not, notices included, however the server's bytes are split into chunks — and
// not at all when the server refuses it with an error the retry accepts (then the retry runs, once). The replies
// of the request after it are forwarded as usual.
import { describe, expect, test } from "bun:test";
import { Demux, TRACKED_TYPES, type Entry, type RetryGroup } from "../../src/pool/demux.ts";
import { FrameReader, typesOtherThan } from "../../src/wire/frame.ts";
import { B } from "../../src/wire/codes.ts";
import { MessageWriter } from "../../src/wire/encode.ts";
import { commandComplete, concat, dataRowOf, rawError, readyForQuery, rowDescription } from "../support/wire-frames.ts";

const notice = new MessageWriter(64).begin(0x4e).int8(0x53).cstring("NOTICE").int8(0x4d).cstring("a notice").int8(0).end().done();
const refused = rawError({ S: "ERROR", V: "ERROR", C: "25006", M: "cannot execute nextval() in a read-only transaction" });
const otherError = rawError({ S: "ERROR", V: "ERROR", C: "22012", M: "division by zero" });
const idle = readyForQuery(0x49);

/** Feeds `bytes` cut at `cuts` to a demux with one retryable Query in flight, then `after` for a plain Query. */
function run(bytes: Uint8Array, cuts: number[], after?: Uint8Array) {
  const reader = new FrameReader(TRACKED_TYPES, 1 << 30);
  reader.refuse(typesOtherThan(Object.values(B)));
  const out: Uint8Array[] = [];
  let readies = 0;
  let retries = 0;
  const d = new Demux(
    reader,
    {
      deliver: (buf, start, end) => void out.push(buf.slice(start, end)),
      ready: () => void readies++,
    },
    new Map(),
    () => {},
  );
  const group: RetryGroup = { retryOn: (e) => e.code === "25006", retry: () => void retries++ };
  const entries: Entry[] = [{ end: "query", mode: "forward", retry: group }];
  if (after) entries.push({ end: "query", mode: "forward" });
  d.push(entries);
  const all = after ? concat(bytes, after) : bytes;
  let from = 0;
  for (const c of [...cuts, all.length]) {
    // A fresh buffer per chunk, as a socket delivers them.
    d.feed(all.slice(from, c));
    from = c;
  }
  return { delivered: Buffer.from(concat(...out)), readies, retries };
}

/** Every way to cut `n` bytes into two or three chunks (and byte by byte). */
function cutSets(n: number): number[][] {
  const sets: number[][] = [[]];
  for (let a = 1; a < n; a++) {
    sets.push([a]);
    for (let b = a + 1; b < n; b += 3) sets.push([a, b]);
  }
  sets.push(Array.from({ length: n - 1 }, (_, i) => i + 1));
  return sets;
}

describe("a retryable read answered where it was sent", () => {
  const cases: [string, Uint8Array][] = [
    ["rows", concat(rowDescription("a"), dataRowOf("1"), dataRowOf("2"), commandComplete("SELECT 2"), idle)],
    ["no rows", concat(rowDescription("a"), commandComplete("SELECT 0"), idle)],
    ["a notice among the replies", concat(rowDescription("a"), notice, dataRowOf("1"), commandComplete("SELECT 1"), idle)],
    ["an error the retry does not accept", concat(rowDescription("a"), otherError, idle)],
  ];
  for (const [name, bytes] of cases) {
    test(`${name}: the client gets exactly the server's bytes, however they are chunked`, () => {
      for (const cuts of cutSets(bytes.length)) {
        const r = run(bytes, cuts);
        expect({ cuts, delivered: r.delivered.toString("hex") }).toEqual({ cuts, delivered: Buffer.from(bytes).toString("hex") });
        expect(r.readies).toBe(1);
        expect(r.retries).toBe(0);
      }
    });
  }
});

describe("a retryable read the replica refuses", () => {
  const cases: [string, Uint8Array][] = [
    ["after its RowDescription", concat(rowDescription("nextval"), refused, idle)],
    ["before anything", concat(refused, idle)],
    ["after a notice", concat(rowDescription("nextval"), notice, refused, idle)],
  ];
  const next = concat(rowDescription("b"), dataRowOf("x"), commandComplete("SELECT 1"), idle);
  for (const [name, bytes] of cases) {
    test(`${name}: nothing reaches the client, the retry runs once, and the next request's replies go through`, () => {
      for (const cuts of cutSets(bytes.length)) {
        const r = run(bytes, cuts, next);
        expect({ cuts, delivered: r.delivered.toString("hex") }).toEqual({ cuts, delivered: Buffer.from(next).toString("hex") });
        expect(r.retries).toBe(1);
        expect(r.readies).toBe(1); // the next request's
      }
    });
  }
});
