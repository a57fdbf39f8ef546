/**
 * Fuzz targets: every piece of pgroute that reads bytes or text a peer chose. Each target is a fast-check arbitrary
 * (random input mixed with the known-bad shapes: lengths below 4 or far over the limit, lying lengths, missing
 * terminators, unknown types and versions) and a check that runs the code on one input and asserts that
 *
 * - it throws nothing but the module's own declared errors,
 * - it takes under {@link LIMIT_MS} (confirmed on re-runs, so one GC pause is not a finding),
 * - what it keeps or hands on is bounded by the bytes it was given, never by a length they declare.
 *
 * Shared by the short runs in `bun test` (tests/fuzz/*.test.ts) and the long one (`bun run fuzz`, run.ts).
 */
import fc from "fast-check";
import { serialize } from "pg-protocol";
import { Demux, DemuxError, TRACKED_TYPES, type Pending } from "../../src/pool/demux.ts";
import type { UserConfig } from "../../src/config/types.ts";
import { shape } from "../../src/router/lexer.ts";
import { ClientAuth } from "../../src/session/auth.ts";
import {
  DecodeError,
  decodeAuthentication,
  decodeBackendKeyData,
  decodeError,
  decodeParameterStatus,
  decodeSaslMechanisms,
} from "../../src/wire/backend.ts";
import { B, F, StartupCode } from "../../src/wire/codes.ts";
import { FrameError, FrameReader, typesOtherThan, type FrameSink } from "../../src/wire/frame.ts";
import {
  decodeBind,
  decodeExecute,
  decodeParse,
  decodePassword,
  decodeQuery,
  decodeSaslInitial,
  decodeSaslResponse,
  decodeTarget,
} from "../../src/wire/frontend.ts";
import { ScramClient, ScramError, ScramServer, makeVerifier, md5Hash } from "../../src/wire/scram.ts";
import { MAX_STARTUP_LENGTH, StartupError, parseStartup, startupLength } from "../../src/wire/startup.ts";
import {
  cancelRequest,
  concat,
  frame,
  gssencRequest,
  header,
  rawError,
  readyForQuery,
  sslRequest,
  startup,
  untyped,
} from "../support/wire-frames.ts";

/** The longest one input may take. */
export const LIMIT_MS = 50;

export interface FuzzTarget<T = unknown> {
  name: string;
  arbitrary: fc.Arbitrary<T>;
  /** Runs the code under test on one input; throws (an assertion error) on a finding. */
  run(input: T): void;
}

/** Fails unless `err` is one of `allowed` (the module's declared errors). */
function onlyDeclared(err: unknown, allowed: readonly (abstract new (...a: never[]) => Error)[], where: string): void {
  if (allowed.some((E) => err instanceof E)) return;
  const e = err as Error;
  throw new Error(`${where} threw an undeclared ${e?.name ?? typeof err}: ${e?.message ?? String(err)}`);
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`invariant broken: ${what}`);
}

/** Runs `f`; past LIMIT_MS it is timed again (GC and a busy machine cause one-off spikes) and must stay past it. */
function timed(name: string, f: () => void): void {
  let t = performance.now();
  f();
  let best = performance.now() - t;
  for (let i = 0; i < 3 && best > LIMIT_MS; i++) {
    t = performance.now();
    f();
    best = Math.min(best, performance.now() - t);
  }
  if (best > LIMIT_MS) throw new Error(`${name}: one input took ${best.toFixed(1)} ms (limit ${LIMIT_MS} ms)`);
}

// --- inputs ------------------------------------------------------------------------------------------------

const te = new TextEncoder();
const bytes = (max = 256) => fc.uint8Array({ maxLength: max });

/** Lengths a hostile peer would declare: around the edges and far beyond. */
const nastyLength = fc.constantFrom(0, 1, 3, 4, 5, 7, 8, 9, 10_000, 10_001, 65_539, 65_540, 64 << 20, (64 << 20) + 1, 1 << 30, 0x7fffffff, 0x80000000, 0xffffffff);

const BACKEND_TYPES = Object.values(B);
const FRONTEND_TYPES = Object.values(F);

/** One typed message: a known or random type, a body, and a length that is right, a little wrong, or absurd. */
const typedMessage = (types: readonly number[]) =>
  fc
    .record({
      type: fc.oneof(fc.constantFrom(...types), fc.integer({ min: 0, max: 255 })),
      body: bytes(48),
      lie: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.integer({ min: -6, max: 6 }), nastyLength.map((n) => ({ absolute: n }))),
    })
    .map(({ type, body, lie }) => {
      if (lie === 0) return frame(type, body);
      const len = typeof lie === "number" ? Math.max(0, body.length + 4 + lie) : lie.absolute;
      return concat(header(type, len), body);
    });

/** Known-bad shapes, as whole pieces of a stream. */
const KNOWN_BAD_TYPED = [
  header("Q", 3),
  header("Q", 0),
  header("D", 0x7fffffff),
  header("E", 1 << 30),
  header("p", 65_540),
  frame("Z"),
  frame("Z", te.encode("X")),
  frame("Z", te.encode("II")),
  rawError({}),
  rawError({ S: "ERROR", M: "no sqlstate" }),
  frame("E", te.encode("SERROR")), // no terminator
  frame("S", te.encode("name")), // ParameterStatus without a value
  frame("R", Uint8Array.of(0, 0)),
  frame("K", Uint8Array.of(1, 2, 3)),
  frame("x", new Uint8Array(3)),
  readyForQuery(0x49),
];

/** A byte stream of typed messages, random bytes and known-bad pieces, and where it is cut into chunks. */
const typedStream = (types: readonly number[]) =>
  fc.record({
    pieces: fc.array(fc.oneof({ weight: 5, arbitrary: typedMessage(types) }, bytes(32), fc.constantFrom(...KNOWN_BAD_TYPED)), { maxLength: 14 }),
    cuts: fc.array(fc.nat(), { maxLength: 10 }),
  });

/** Splits `stream` at `cuts` (taken modulo its length). */
function chunked(stream: Uint8Array, cuts: number[]): Uint8Array[] {
  if (stream.length === 0) return [stream];
  const at = [...new Set(cuts.map((c) => c % stream.length))].filter((c) => c > 0).sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const c of at) {
    out.push(stream.slice(from, c));
    from = c;
  }
  out.push(stream.slice(from));
  return out;
}

/** Strings that stress parsers: random unicode, and the shapes that tend to hurt (unterminated, nested, long). */
const nastyText = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: "grapheme", maxLength: 100 }),
  fc.array(fc.constantFrom("/*", "*/", "--", "'", "''", '"', "$$", "$a$", "$a", "$1", "E'\\'", "\\", "\r", "\n", " ", "x", "0x1e+5", "1e-", ".", "U&'", "select", ";"), { maxLength: 120 }).map((a) => a.join("")),
  fc.nat({ max: 20_000 }).chain((n) => fc.constantFrom("/*".repeat(n), "$a".repeat(n), "'".repeat(n), "-".repeat(n), `$${"a".repeat(n)}`, "e'".repeat(n), "1".repeat(n) + "e")),
);

// --- targets -------------------------------------------------------------------------------------------------

/** A reference reading of a whole stream: the wanted frames, and whether an invalid header comes up. */
function reference(stream: Uint8Array, wanted: Uint8Array, refused: Uint8Array | null, max: number) {
  const frames: string[] = [];
  let i = 0;
  while (stream.length - i >= 5) {
    const type = stream[i]!;
    const len = new DataView(stream.buffer, stream.byteOffset + i + 1, 4).getUint32(0);
    if (len < 4 || len > max || (refused && refused[type] === 1)) return { frames, invalid: true };
    if (stream.length - i - 1 < len) break;
    if (wanted[type] === 1) frames.push(`${type}:${Buffer.from(stream.subarray(i + 5, i + 1 + len)).toString("hex")}`);
    i += 1 + len;
  }
  return { frames, invalid: false };
}

const frameReader: FuzzTarget<{ stream: { pieces: Uint8Array[]; cuts: number[] }; wanted: number[]; all: boolean; max: number; refuse: boolean }> = {
  name: "frame reader",
  arbitrary: fc.record({
    stream: typedStream([...BACKEND_TYPES, ...FRONTEND_TYPES]),
    wanted: fc.array(fc.oneof(fc.constantFrom(...BACKEND_TYPES), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
    all: fc.boolean(),
    max: fc.oneof(fc.constant(1 << 30), fc.integer({ min: 4, max: 200 }), fc.constant(64 << 20)),
    refuse: fc.boolean(),
  }),
  run({ stream, wanted, all, max, refuse }) {
    const whole = concat(...stream.pieces);
    const chunks = chunked(whole, stream.cuts);
    const wantTable = new Uint8Array(256);
    for (const t of wanted) wantTable[t] = 1;
    if (all) wantTable.fill(1);
    const refused = refuse ? typesOtherThan(BACKEND_TYPES) : null;
    const expected = reference(whole, wantTable, refused, max);
    timed("frame reader", () => {
      const reader = new FrameReader(wanted, max);
      reader.wantAll = all;
      if (refused) reader.refuse(refused);
      const got: string[] = [];
      const sink: FrameSink = {
        onFrame(type, buf, start, end, msgStart, next) {
          check(start >= 0 && start <= end && end <= buf.length, "body range within the buffer");
          check(msgStart < 0 || (msgStart + 5 <= next && next >= end), "message offsets are consistent");
          got.push(`${type}:${Buffer.from(buf.subarray(start, end)).toString("hex")}`);
        },
      };
      let fed = 0;
      let threw = false;
      for (const c of chunks) {
        try {
          check(reader.feed(c, sink) === c.length, "feed walks the whole chunk");
        } catch (err) {
          onlyDeclared(err, [FrameError], "FrameReader.feed");
          threw = true;
          break;
        }
        fed += c.length;
        check(reader.heldFrom >= 0 && reader.heldFrom <= c.length, "heldFrom within the chunk");
        // Memory follows the bytes received: what is gathered never exceeds what was fed.
        const gather = (reader as unknown as { gather: Uint8Array[] | null }).gather;
        const held = gather?.reduce((n, p) => n + p.length, 0) ?? 0;
        check(held <= fed, `gathered ${held} bytes after ${fed} fed`);
      }
      check(threw === expected.invalid, `FrameError exactly when a header is invalid (threw ${threw}, expected ${expected.invalid})`);
      check(got.join() === expected.frames.join(), "the same wanted frames as the reference reading, however split");
    });
  },
};

const KNOWN_BAD_STARTUP = [
  untyped(0),
  untyped(7),
  untyped(10_001),
  untyped(0xffffffff),
  untyped(8, Uint8Array.of(0, 3, 0, 0)),
  startup({ user: "a" }, 2 << 16),
  startup({ user: "a" }, 4 << 16),
  startup({ user: "a" }, (3 << 16) | 9),
  startup({ "_pq_.x": "1" }, (3 << 16) | 2),
  cancelRequest(1, 2).subarray(0, 12),
  concat(sslRequest(), new Uint8Array(4)),
  gssencRequest(),
  startup({ user: "a" }).subarray(0, 12),
];

const startupPackets: FuzzTarget<Uint8Array> = {
  name: "startup parser",
  arbitrary: fc.oneof(
    bytes(64),
    fc.constantFrom(...KNOWN_BAD_STARTUP),
    // Well-formed packets with a byte flipped or the length rewritten.
    fc
      .record({ params: fc.dictionary(fc.string({ maxLength: 12 }), fc.string({ maxLength: 24 }), { maxKeys: 5 }), at: fc.nat(), to: fc.integer({ min: 0, max: 255 }), len: fc.option(nastyLength) })
      .map(({ params, at, to, len }) => {
        const p = startup(params).slice();
        p[at % p.length] = to;
        if (len !== null) new DataView(p.buffer).setUint32(0, len);
        return p;
      }),
    fc.constantFrom(StartupCode.CancelRequest, StartupCode.SSLRequest, StartupCode.GSSENCRequest, StartupCode.Protocol30).chain((code) =>
      bytes(24).map((rest) => {
        const p = concat(untyped(8 + rest.length), Uint8Array.of(code >>> 24, (code >>> 16) & 255, (code >>> 8) & 255, code & 255), rest);
        return p;
      }),
    ),
  ),
  run(buf) {
    timed("startup parser", () => {
      let len: number | null;
      try {
        len = startupLength(buf);
      } catch (err) {
        onlyDeclared(err, [StartupError], "startupLength");
        return;
      }
      if (len === null) return check(buf.length < 4, "null only before four bytes");
      check(len >= 8 && len <= MAX_STARTUP_LENGTH, "an accepted length is within 8..10000");
      if (buf.length < len) return;
      try {
        const p = parseStartup(buf.subarray(0, len));
        if (p.kind === "startup") {
          let chars = 0;
          for (const [k, v] of p.params) chars += k.length + v.length;
          check(chars <= len, "decoded parameters are no larger than the packet");
        }
      } catch (err) {
        onlyDeclared(err, [StartupError], "parseStartup");
      }
    });
  },
};

/** Runs `decode` on buf[start..end) twice — alone, and with other bytes around it — and compares the outcomes. */
function sameWithinBounds(name: string, body: Uint8Array, decode: (buf: Uint8Array, start: number, end: number) => unknown): void {
  const outcome = (buf: Uint8Array, start: number) => {
    try {
      return JSON.stringify(decode(buf, start, start + body.length), (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString("hex") : v));
    } catch (err) {
      onlyDeclared(err, [DecodeError], name);
      return `DecodeError`;
    }
  };
  const alone = outcome(body, 0);
  // Zeros and letters around the body: a decoder that reads past `end` (a terminator it should not see) differs.
  const around = concat(te.encode("pre\0"), body, Uint8Array.of(0, 0, 0, 0, 0x41, 0, 0, 0, 0));
  check(outcome(around, 4) === alone, `${name} reads only its own bytes`);
}

const FRONTEND_DECODERS: [string, (buf: Uint8Array, start: number, end: number) => unknown][] = [
  ["decodePassword", decodePassword],
  ["decodeSaslInitial", decodeSaslInitial],
  ["decodeSaslResponse", decodeSaslResponse],
  ["decodeParse", decodeParse],
  // `statementAt` and `rest` are offsets into the buffer: compared relative to the body.
  ["decodeBind", (buf, start, end) => {
    const b = decodeBind(buf, start, end);
    return { ...b, statementAt: b.statementAt - start, rest: b.rest - start };
  }],
  ["decodeTarget", decodeTarget],
  ["decodeExecute", decodeExecute],
  ["decodeQuery", decodeQuery],
];

/** Message bodies: random, and real frontend messages' bodies, cut or extended. */
const frontendBodies = fc.oneof(
  bytes(96),
  fc
    .record({
      msg: fc.oneof(
        fc.string({ maxLength: 40 }).map((s) => serialize.query(s)),
        fc.record({ name: fc.string({ maxLength: 8 }), text: fc.string({ maxLength: 30 }), types: fc.array(fc.nat(), { maxLength: 3 }) }).map((p) => serialize.parse(p)),
        fc.record({ portal: fc.string({ maxLength: 8 }), statement: fc.string({ maxLength: 8 }) }).map((b) => serialize.bind({ ...b, values: ["1", null] })),
        fc.string({ maxLength: 8 }).map((name) => serialize.describe({ type: "S", name })),
        fc.string({ maxLength: 8 }).map((portal) => serialize.execute({ portal, rows: 0 })),
        fc.string({ maxLength: 30 }).map((data) => serialize.sendSASLInitialResponseMessage("SCRAM-SHA-256", data)),
        fc.string({ maxLength: 30 }).map((pw) => serialize.password(pw)),
      ),
      cut: fc.integer({ min: -4, max: 4 }),
    })
    .map(({ msg, cut }) => {
      const body = new Uint8Array(msg).subarray(5);
      return cut < 0 ? body.subarray(0, Math.max(0, body.length + cut)) : concat(body, new Uint8Array(cut).fill(0x7a));
    }),
);

const frontendDecoders: FuzzTarget<Uint8Array> = {
  name: "frontend decoders",
  arbitrary: frontendBodies,
  run(body) {
    timed("frontend decoders", () => {
      for (const [name, decode] of FRONTEND_DECODERS) sameWithinBounds(name, body, decode);
    });
  },
};

const BACKEND_DECODERS: [string, (buf: Uint8Array, start: number, end: number) => unknown][] = [
  ["decodeError", decodeError],
  ["decodeParameterStatus", decodeParameterStatus],
  ["decodeBackendKeyData", decodeBackendKeyData],
  ["decodeAuthentication", decodeAuthentication],
  ["decodeSaslMechanisms", (buf, start, end) => decodeSaslMechanisms(buf.subarray(start, end))],
];

const backendDecoders: FuzzTarget<Uint8Array> = {
  name: "backend decoders",
  arbitrary: fc.oneof(
    bytes(96),
    fc.constantFrom(...KNOWN_BAD_TYPED).map((m) => m.subarray(5)),
    fc.array(fc.record({ f: fc.constantFrom(0x53, 0x56, 0x43, 0x4d, 0x44, 0x48, 0), v: fc.string({ maxLength: 12 }) }), { maxLength: 6 }).map((fields) =>
      concat(...fields.map(({ f, v }) => concat(Uint8Array.of(f), te.encode(v), Uint8Array.of(0))), Uint8Array.of(0)),
    ),
  ),
  run(body) {
    timed("backend decoders", () => {
      for (const [name, decode] of BACKEND_DECODERS) sameWithinBounds(name, body, decode);
      const e = (() => {
        try {
          return decodeError(body, 0, body.length);
        } catch {
          return null;
        }
      })();
      // A server that omits the SQLSTATE still yields a well-formed one.
      if (e) check(/^[0-9A-Z]{5}$/.test(e.code) || e.fields.has(0x43), "decodeError always has a code");
    });
  },
};

// Users for the authentication target, built once (a SCRAM verifier costs a PBKDF2 run).
const scramUser: UserConfig = Object.freeze({ name: "alice", password: "correct horse", auth: "scram-sha-256", databases: [], target: "auto", role: "read-write" });
const md5User: UserConfig = Object.freeze({ name: "bob", md5_hash: md5Hash("battery staple", "bob"), auth: "md5", databases: [], target: "auto", role: "read-write" });
const verifier = makeVerifier("correct horse");

/** Client SCRAM messages: random, and well-shaped ones with random parts (the right nonce when `echo` is set). */
const scramText = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc.constantFrom("n,,n=,r=abc", "y,,n=,r=abc", "p=tls-server-end-point,,n=,r=abc", "n,,", "n,a=x,n=,r=", ",,", "n,,r=", "c=biws,r=x,p=", ",p=", "c=,p=AAAA"),
  fc.record({ gs2: fc.constantFrom("n,,", "y,,", "n,a=u,"), nonce: fc.string({ maxLength: 30 }), extra: fc.string({ maxLength: 10 }) }).map(({ gs2, nonce, extra }) => `${gs2}n=,r=${nonce}${extra}`),
);

const scramServer: FuzzTarget<{ first: string; final: string; echo: boolean; proof: Uint8Array; known: boolean }> = {
  name: "SCRAM server",
  arbitrary: fc.record({ first: scramText, final: scramText, echo: fc.boolean(), proof: fc.uint8Array({ minLength: 0, maxLength: 40 }), known: fc.boolean() }),
  run({ first, final, echo, proof, known }) {
    timed("SCRAM server", () => {
      const server = new ScramServer(known ? verifier : null, "alice");
      let serverFirst: string;
      try {
        serverFirst = server.first(first);
      } catch (err) {
        return onlyDeclared(err, [ScramError], "ScramServer.first");
      }
      const nonce = /r=([^,]*)/.exec(serverFirst)![1]!;
      // With `echo`, a client-final that passes every check but the proof (random bytes, not the key's).
      const gs2 = Buffer.from(first.slice(0, first.indexOf(",", first.indexOf(",") + 1) + 1)).toString("base64");
      const message = echo ? `c=${gs2},r=${nonce},p=${Buffer.from(proof).toString("base64")}` : final;
      try {
        check(server.final(message) === null, "a random proof never verifies");
      } catch (err) {
        onlyDeclared(err, [ScramError], "ScramServer.final");
      }
    });
  },
};

/** The whole client authentication step machine with arbitrary 'p' message bodies. */
const clientAuth: FuzzTarget<{ who: number; messages: Uint8Array[] }> = {
  name: "client authentication",
  arbitrary: fc.record({
    who: fc.integer({ min: 0, max: 2 }),
    messages: fc.array(
      fc.oneof(
        frontendBodies,
        scramText.map((t) => new Uint8Array(serialize.sendSASLInitialResponseMessage("SCRAM-SHA-256", t)).subarray(5)),
        scramText.map((t) => te.encode(t)),
        fc.string({ maxLength: 40 }).map((pw) => new Uint8Array(serialize.password(pw)).subarray(5)),
      ),
      { maxLength: 3 },
    ),
  }),
  run({ who, messages }) {
    timed("client authentication", () => {
      const user = [scramUser, md5User, undefined][who];
      const auth = new ClientAuth(user, user?.name ?? "mallory");
      check(auth.start().kind === "send", "every method but trust starts with a request");
      for (const m of messages) {
        const step = auth.onMessage(m, 0, m.length); // must never throw
        check(step.kind !== "ok", "random messages never authenticate");
        if (step.kind === "fail") {
          check(/^(28P01|28000|08P01)$/.test(step.error.code), `a failure is 28P01, 28000 or 08P01 (got ${step.error.code})`);
          check(!step.error.message.includes("correct horse") && !step.error.message.includes("battery"), "no password in the error");
          break;
        }
      }
    });
  },
};

/** pgroute's SCRAM client against arbitrary server messages (pass-through key: no PBKDF2 to wait on). */
const scramClient: FuzzTarget<{ first: string; final: string }> = {
  name: "SCRAM client",
  arbitrary: fc.record({
    first: fc.oneof(scramText, fc.record({ r: fc.string({ maxLength: 20 }), s: fc.base64String({ maxLength: 24 }), i: fc.oneof(fc.integer(), fc.constant(4096)) }).map(({ r, s, i }) => `r=${r},s=${s},i=${i}`)),
    final: fc.oneof(scramText, fc.base64String({ maxLength: 48 }).map((v) => `v=${v}`), fc.string({ maxLength: 20 }).map((e) => `e=${e}`)),
  }),
  run({ first, final }) {
    timed("SCRAM client", () => {
      const client = new ScramClient({ kind: "clientKey", clientKey: Buffer.alloc(32, 7), verifier });
      client.first();
      try {
        client.final(first);
        client.verify(final);
        throw new Error("an arbitrary server proved it knows the key");
      } catch (err) {
        onlyDeclared(err, [ScramError], "ScramClient");
      }
    });
  },
};

const lexer: FuzzTarget<string> = {
  name: "SQL lexer",
  arbitrary: nastyText,
  run(sql) {
    timed("SQL lexer", () => {
      const s = shape(sql); // declares no errors at all
      check(s.key.length <= 2 * sql.length + 1, "the shape is no more than twice the statement");
      let comments = 0;
      for (const c of s.comments) comments += c.length;
      check(comments <= sql.length, "comment text comes from the statement");
    });
  },
};

/** What a server connection's owner is told, as the demux target records it. */
const ENDS = ["parse", "bind", "describe", "execute", "close", "sync", "query", "function"] as const;

const pendingArb: fc.Arbitrary<Pending> = fc.oneof(
  fc.record({
    end: fc.constantFrom(...ENDS),
    mode: fc.constantFrom("forward" as const, "swallow" as const),
    replace: fc.boolean(),
    retry: fc.boolean(),
  }).map(({ end, mode, replace, retry }) => {
    const p: Pending = { end, mode };
    if (replace) p.replaceError = rawError({ S: "ERROR", C: "26000", M: "local" });
    if (mode === "swallow") p.onSwallowedError = () => rawError({ S: "WARNING", C: "01000", M: "w" });
    if (retry) p.retry = { retryOn: (e) => e.code === "25006", retry: () => {} };
    return p;
  }),
  fc.constantFrom(1, 2, 3).map((n) => ({ local: frame(String(n)) })),
);

const NOT_BACKEND = typesOtherThan(BACKEND_TYPES);

const demux: FuzzTarget<{ steps: ({ push: Pending[] } | { bytes: Uint8Array; cuts: number[] })[] }> = {
  name: "demux",
  arbitrary: fc.record({
    steps: fc.array(
      fc.oneof(
        fc.array(pendingArb, { maxLength: 6 }).map((push) => ({ push })),
        typedStream(BACKEND_TYPES).map(({ pieces, cuts }) => ({ bytes: concat(...pieces), cuts })),
      ),
      { maxLength: 8 },
    ),
  }),
  run({ steps }) {
    timed("demux", () => {
      const reader = new FrameReader(TRACKED_TYPES, 1 << 30);
      reader.refuse(NOT_BACKEND);
      let delivered = 0;
      let fed = 0;
      let injected = 0;
      const d = new Demux(
        reader,
        {
          deliver(buf, start, end) {
            check(start >= 0 && start <= end && end <= buf.length, "delivered range within the buffer");
            delivered += end - start;
          },
          ready() {},
        },
        new Map(),
        () => {},
      );
      for (const step of steps) {
        if ("push" in step) {
          for (const p of step.push) injected += "local" in p ? p.local.length : 64; // locals, and room for injected errors
          d.push(step.push);
          continue;
        }
        for (const c of chunked(step.bytes, step.cuts)) {
          try {
            d.feed(c);
          } catch (err) {
            return onlyDeclared(err, [DemuxError, FrameError], "Demux.feed");
          }
          fed += c.length;
          // Proportional to what arrived (an ErrorResponse of 5 bytes may be replaced by a local one of ~40),
          // never to a declared length.
          check(delivered <= 10 * fed + injected, `delivered ${delivered} bytes from ${fed} fed`);
        }
      }
    });
  },
};

export const TARGETS: FuzzTarget<never>[] = [
  frameReader,
  startupPackets,
  frontendDecoders,
  backendDecoders,
  scramServer,
  clientAuth,
  scramClient,
  lexer,
  demux,
] as FuzzTarget<never>[];
