/**
 * Protocol-level prepared statements in transaction pooling. A client's named statement lives on whichever server
 * connection its transaction runs on, so pgroute gives each distinct (query, parameter types) one server-side
 * name, tracks which connection has which (a bounded LRU per connection, evicted with Close), prepares a
 * statement transparently before a Bind or Describe on a connection that lacks it (its ParseComplete swallowed),
 * and answers Close itself. What the client sees matches Postgres: 42P05 for a name in use, 26000 for an unknown
 * one, unnamed statements untouched.
 */
import { serialize } from "pg-protocol";
import { concatBytes, copyInto } from "../wire/bytes.ts";
import type { Pending } from "../pool/demux.ts";
import type { ServerConn } from "../pool/server.ts";
import { Lru } from "../router/cache.ts";
import { RESERVED_PREFIX, sessionEffects, type SessionOp } from "../router/effects.ts";
import type { ErrorInfo } from "../wire/backend.ts";
import { B, F } from "../wire/codes.ts";
import { MessageWriter, errorResponse, putInt32 } from "../wire/encode.ts";
import { decodeBind, decodeExecute, decodeParse, decodeTarget } from "../wire/frontend.ts";

/** A statement as the servers know it. */
export interface Statement {
  /** Server-side name, shared by every client that prepares the same text with the same types. */
  readonly name: string;
  /** The query text, for routing. */
  readonly query: string;
  /** `name` as bytes, for rewriting Bind messages without encoding it each time. */
  readonly nameBytes: Uint8Array;
  /** The Parse message that creates it on a server connection. */
  readonly parse: Uint8Array;
  /** What executing it does to the session (SET, LISTEN, …). */
  readonly ops: readonly SessionOp[];
}

/** Server-side statements by (types, query); names are never reused, so evicting an entry is always safe. */
export class StatementRegistry {
  private readonly byKey = new Lru<string, Statement>(20_000);
  private next = 1;
  /**
   * The per-connection statement cache, counted over every session: a hit found a statement already prepared on
   * the server connection a Parse, Bind or Describe ran on; a miss had to prepare it there first.
   */
  hits = 0;
  misses = 0;

  get(query: string, types: Uint8Array): Statement {
    const key = types.length > 2 ? `${Buffer.from(types).toString("hex")}\0${query}` : query;
    let s = this.byKey.get(key);
    if (!s) {
      const name = `${RESERVED_PREFIX}${this.next++}`;
      s = { name, query, nameBytes: new TextEncoder().encode(name), parse: withName(query, types, name), ops: sessionEffects(query) };
      this.byKey.set(key, s);
    }
    return s;
  }
}

function withName(query: string, types: Uint8Array, name: string): Uint8Array {
  return new MessageWriter(query.length + name.length + types.length + 16)
    .begin(F.Parse)
    .cstring(name)
    .cstring(query)
    .bytes(types)
    .end()
    .done();
}

/** Whether a batch parses, binds, describes or closes a named statement (its rewriting depends on which exist). */
export function namesStatements(batch: readonly Message[]): boolean {
  for (const m of batch) {
    const msg = m.frame; // decoders take offsets: the body starts at 5, after type and length
    try {
      switch (m.type) {
        case F.Parse:
          if (decodeParse(msg, 5, msg.length).name !== "") return true;
          break;
        case F.Bind:
          if (decodeBind(msg, 5, msg.length).statement !== "") return true;
          break;
        case F.Describe:
        case F.Close: {
          const t = decodeTarget(msg, 5, msg.length);
          if (t.kind === 0x53 /* 'S' */ && t.name !== "") return true;
          break;
        }
      }
    } catch {
      return true; // malformed: let the careful path handle it
    }
  }
  return false;
}

/** One frontend message of an extended-protocol batch: its type and its whole frame (header included). */
export interface Message {
  type: number;
  frame: Uint8Array;
  /**
   * Set on a Parse pgroute refuses (a policy): the ErrorResponse the client gets at its position. The server is sent
   * a Parse it is sure to reject instead, so what came before runs and what follows is skipped to Sync, as after any
   * failed Parse; the statement is never created.
   */
  refusal?: Uint8Array;
}

export interface Built {
  bytes: Uint8Array;
  entries: Pending[];
  /** Session operations of the statements this batch executes (the Sync entry carries them too). */
  ops: SessionOp[];
}

const parseComplete = Uint8Array.of(B.ParseComplete, 0, 0, 0, 4);
const closeComplete = Uint8Array.of(B.CloseComplete, 0, 0, 0, 4);
/** A Parse the server is sure to reject; its error is replaced by the one pgroute reports at that position. */
const POISON = new Uint8Array(serialize.parse({ name: "", text: "pgroute" }));

const stmtError = (code: string, message: string) => errorResponse({ severity: "ERROR", code, message });

/** An ErrorResponse from pgroute's own Parse, passed on so the client's Bind or Describe does not fail silently. */
export function relayError(e: ErrorInfo): Uint8Array {
  return errorResponse({ severity: "ERROR", code: e.code, message: e.message, detail: e.fields.get(0x44), hint: e.fields.get(0x48) });
}

export class PreparedStatements {
  /** The client's named statements. */
  private readonly statements = new Map<string, Statement>();
  /** Session operations of the unnamed statement and of each bound portal, for Execute. */
  private unnamedOps: readonly SessionOp[] = [];
  /** Query texts of the unnamed statement and of bound portals, for routing. */
  private unnamedText = "";
  private readonly portalText = new Map<string, string>();
  private readonly portalOps = new Map<string, readonly SessionOp[]>();
  /** Operations executed since the last Sync; the Sync's ReadyForQuery decides whether they stick. */
  private execOps: SessionOp[] = [];

  /**
   * Statements the batch being built relies on: never evicted to make room for another one of it. Those met so
   * far are added as they come; the rest of the batch is looked at only when a statement must be evicted. One set
   * for every batch (build is not re-entered).
   */
  private readonly inUse = new Set<string>();

  /** Parse and Close messages of named statements sent and not yet answered (or skipped) by the server. */
  private inFlight = 0;
  /** Runs, as a microtask, when the last of those is answered. */
  onSettled: (() => void) | null = null;

  constructor(private readonly registry: StatementRegistry) {}

  /**
   * True while a Parse or Close of a named statement is unanswered. Until then nobody knows whether it took
   * effect (an earlier error makes the server skip it), so a batch that names statements must not be built yet.
   */
  get unsettled(): boolean {
    return this.inFlight > 0;
  }

  /** Counts `p` in flight until the server answers or skips it. */
  private track<P extends Pending>(p: P): P {
    this.inFlight++;
    const { ok, fail } = p;
    let done = false;
    const settle = () => {
      if (done) return;
      done = true;
      // Not from inside the demultiplexer's callback: whatever the owner sends next goes after this reply.
      if (--this.inFlight === 0 && this.onSettled) queueMicrotask(this.onSettled);
    };
    p.ok = () => {
      ok?.();
      settle();
    };
    p.fail = () => {
      fail?.();
      settle();
    };
    return p;
  }

  /**
   * The query texts a batch will execute (its Execute messages), with the index of the message that binds each
   * (the Execute itself for a portal bound in an earlier batch), and the statement names it parses, without
   * changing any state: where the batch runs, and whether policies let it, is decided from them before it is built.
   */
  peek(batch: readonly Message[]): { executed: string[]; executedAt: number[]; named: string[] } {
    const executed: string[] = [];
    const executedAt: number[] = [];
    const namedParses: string[] = [];
    let unnamed = this.unnamedText;
    // Made only for a batch that names statements or portals: most bind the unnamed portal to a statement.
    let named: Map<string, string> | undefined;
    let portals: Map<string, { text: string; at: number }> | undefined;
    let unnamedPortal: { text: string; at: number } | undefined;
    const textOf = (name: string) => (name === "" ? unnamed : (named?.get(name) ?? this.statements.get(name)?.query));
    for (let i = 0; i < batch.length; i++) {
      const m = batch[i]!;
      const msg = m.frame; // decoders take offsets: the body starts at 5, after type and length
      try {
        switch (m.type) {
          case F.Parse: {
            const p = decodeParse(msg, 5, msg.length);
            if (p.name === "") unnamed = p.query;
            else {
              (named ??= new Map()).set(p.name, p.query);
              namedParses.push(p.name);
            }
            break;
          }
          case F.Bind: {
            const b = decodeBind(msg, 5, msg.length);
            const text = textOf(b.statement);
            if (text === undefined) break;
            if (b.portal === "") unnamedPortal = { text, at: i };
            else (portals ??= new Map()).set(b.portal, { text, at: i });
            break;
          }
          case F.Execute: {
            const portal = decodeExecute(msg, 5, msg.length);
            const bound = portal === "" ? unnamedPortal : portals?.get(portal);
            const t = bound?.text ?? this.portalText.get(portal);
            if (t !== undefined) {
              executed.push(t);
              executedAt.push(bound?.at ?? i);
            }
            break;
          }
        }
      } catch {
        // A malformed message is the server's to reject; it does not change where the batch goes.
      }
    }
    return { executed, executedAt, named: namedParses };
  }

  /** The query of a client statement ("" for the unnamed one), if it exists. */
  statementText(name: string): string | undefined {
    return name === "" ? this.unnamedText : this.statements.get(name)?.query;
  }

  /** Creates a client statement without a server (prepared on a connection when first used); false if the name is taken. */
  declare(name: string, query: string, types: Uint8Array): boolean {
    if (this.statements.has(name)) return false;
    this.statements.set(name, this.registry.get(query, types));
    return true;
  }

  /** A client's named statement: its text and parameter types (mirroring replays it on another server). */
  statementOf(name: string): { query: string; types: Uint8Array } | undefined {
    const s = this.statements.get(name);
    return s && { query: s.query, types: decodeParse(s.parse, 5, s.parse.length).types };
  }

  /** Forgets client statement names (a batch that created them is being replayed elsewhere). */
  forget(names: readonly string[]): void {
    for (const n of names) this.statements.delete(n);
  }

  /** DEALLOCATE ALL / DISCARD ALL: every statement is gone. */
  clear(): void {
    this.statements.clear();
  }

  /** Rewrites a batch for `conn`: statement names mapped, missing statements prepared, Close answered locally. */
  build(batch: readonly Message[], conn: ServerConn): Built {
    const out: Uint8Array[] = [];
    const entries: Pending[] = [];
    const ops: SessionOp[] = [];
    const inUse = this.inUse;
    inUse.clear();

    for (const m of batch) {
      const type = m.type;
      const msg = m.frame; // decoders take offsets: the body starts at 5, after type and length
      if (m.refusal) {
        // A refused Parse: as after a failed one, the unnamed statement is gone and no name is created.
        this.unnamedOps = [];
        this.unnamedText = "";
        poison(out, entries, m.refusal);
        continue;
      }
      switch (type) {
        case F.Parse: {
          const p = decodeParse(msg, 5, msg.length);
          if (p.name === "") {
            this.unnamedOps = sessionEffects(p.query);
            this.unnamedText = p.query;
            out.push(frame(m));
            entries.push({ end: "parse", mode: "forward" });
            break;
          }
          if (this.statements.has(p.name)) {
            poison(out, entries, stmtError("42P05", `prepared statement "${p.name}" already exists`));
            break;
          }
          const s = this.registry.get(p.query, p.types);
          this.statements.set(p.name, s);
          const forget = () => {
            if (this.statements.get(p.name) === s) this.statements.delete(p.name);
          };
          inUse.add(s.name);
          if (conn.prepared.has(s.name)) {
            conn.prepared.touch(s.name);
            this.registry.hits++;
            // Skipped after an earlier error in the batch, the Parse creates no name, as in Postgres.
            entries.push(this.track({ local: parseComplete, fail: forget }));
          } else {
            this.registry.misses++;
            this.evictFor(conn, batch, inUse, out, entries);
            out.push(s.parse);
            conn.prepared.set(s.name, true);
            entries.push(
              this.track({
                end: "parse",
                mode: "forward",
                fail: () => {
                  conn.prepared.delete(s.name);
                  forget();
                },
              }),
            );
          }
          break;
        }
        case F.Bind: {
          const b = decodeBind(msg, 5, msg.length);
          if (b.statement === "") {
            this.portalOps.set(b.portal, this.unnamedOps);
            this.portalText.set(b.portal, this.unnamedText);
            out.push(frame(m));
            entries.push({ end: "bind", mode: "forward" });
            break;
          }
          const s = this.statements.get(b.statement);
          if (!s) {
            poison(out, entries, stmtError("26000", `prepared statement "${b.statement}" does not exist`));
            break;
          }
          this.ensure(s, conn, batch, inUse, out, entries);
          this.portalOps.set(b.portal, s.ops);
          this.portalText.set(b.portal, s.query);
          out.push(renamedBind(msg, b.statementAt, b.rest, s.nameBytes));
          entries.push({ end: "bind", mode: "forward" });
          break;
        }
        case F.Describe: {
          const d = decodeTarget(msg, 5, msg.length);
          if (d.kind !== 0x53 /* 'S' */ || d.name === "") {
            out.push(frame(m));
            entries.push({ end: "describe", mode: "forward" });
            break;
          }
          const s = this.statements.get(d.name);
          if (!s) {
            poison(out, entries, stmtError("26000", `prepared statement "${d.name}" does not exist`));
            break;
          }
          this.ensure(s, conn, batch, inUse, out, entries);
          out.push(new Uint8Array(serialize.describe({ type: "S", name: s.name })));
          entries.push({ end: "describe", mode: "forward" });
          break;
        }
        case F.Close: {
          const c = decodeTarget(msg, 5, msg.length);
          if (c.kind !== 0x53 || c.name === "") {
            out.push(frame(m));
            entries.push({ end: "close", mode: "forward" });
            break;
          }
          // The server-side statement stays cached for others; closing a name that does not exist is no error.
          // The name is free at once for the messages after this one (a Parse of it in the same batch), and
          // comes back if an earlier error makes the server skip this Close, as Postgres would.
          const name = c.name;
          const closed = this.statements.get(name);
          this.statements.delete(name);
          entries.push(this.track({ local: closeComplete, fail: closed && (() => this.statements.set(name, closed)) }));
          break;
        }
        case F.Execute: {
          const portal = decodeExecute(msg, 5, msg.length);
          const pops = this.portalOps.get(portal);
          if (pops && pops.length > 0) {
            ops.push(...pops);
            this.execOps.push(...pops);
          }
          out.push(frame(m));
          entries.push({ end: "execute", mode: "forward" });
          break;
        }
        case F.Sync:
          if (this.portalOps.size > 0) this.portalOps.clear();
          if (this.portalText.size > 0) this.portalText.clear();
          out.push(frame(m));
          entries.push({ end: "sync", mode: "forward", tag: this.execOps });
          this.execOps = [];
          break;
        default:
          // Flush, and anything else: passed through; the server answers (or rejects) it itself.
          out.push(frame(m));
      }
    }
    return { bytes: concatBytes(out), entries, ops };
  }

  /** Prepares statement `s` on `conn` ahead of a message that uses it, unless the connection has it already. */
  private ensure(s: Statement, conn: ServerConn, batch: readonly Message[], inUse: Set<string>, out: Uint8Array[], entries: Pending[]): void {
    inUse.add(s.name);
    if (conn.prepared.has(s.name)) {
      conn.prepared.touch(s.name);
      this.registry.hits++;
      return;
    }
    this.registry.misses++;
    this.evictFor(conn, batch, inUse, out, entries);
    out.push(s.parse);
    conn.prepared.set(s.name, true);
    entries.push(this.track({ end: "parse", mode: "swallow", onSwallowedError: relayError, fail: () => conn.prepared.delete(s.name) }));
  }

  /** Server-side names of the statements a batch parses, binds or describes. */
  private referenced(batch: readonly Message[]): Set<string> {
    const names = new Set<string>();
    for (const m of batch) {
      if ((m.type !== F.Parse && m.type !== F.Bind && m.type !== F.Describe) || m.refusal) continue;
      const msg = m.frame; // decoders take offsets: the body starts at 5, after type and length
      try {
        if (m.type === F.Parse) {
          const p = decodeParse(msg, 5, msg.length);
          if (p.name !== "") names.add(this.registry.get(p.query, p.types).name);
        } else {
          const name = m.type === F.Bind ? decodeBind(msg, 5, msg.length).statement : decodeTarget(msg, 5, msg.length).name;
          const s = name === "" ? undefined : this.statements.get(name);
          if (s) names.add(s.name);
        }
      } catch {
        // A malformed message is the server's to reject.
      }
    }
    return names;
  }

  /**
   * Makes room for one more statement on the connection, closing the least recently used ones this batch does not
   * use. (When the batch itself uses more than the capacity, the connection holds more until a later batch.)
   */
  private evictFor(conn: ServerConn, batch: readonly Message[], inUse: Set<string>, out: Uint8Array[], entries: Pending[]): void {
    if (conn.prepared.size < conn.preparedCapacity) return;
    for (const name of this.referenced(batch)) inUse.add(name);
    for (const victim of [...conn.prepared.keys()]) {
      if (conn.prepared.size < conn.preparedCapacity) return;
      if (inUse.has(victim)) continue;
      conn.prepared.delete(victim);
      out.push(new Uint8Array(serialize.close({ type: "S", name: victim })));
      // Skipped after an earlier error in the batch, the Close leaves the statement on the server.
      entries.push(this.track({ end: "close", mode: "swallow", fail: () => conn.prepared.set(victim, true) }));
    }
  }
}

/** A message the server must fail in place of one pgroute refused: its error is swapped for `error`. */
function poison(out: Uint8Array[], entries: Pending[], error: Uint8Array): void {
  out.push(POISON);
  entries.push({ end: "parse", mode: "forward", replaceError: error });
}

/** A Bind message with its statement name replaced: type, portal and the rest copied as they are. */
function renamedBind(msg: Uint8Array, statementAt: number, rest: number, name: Uint8Array): Uint8Array {
  const total = statementAt + name.length + 1 + (msg.length - rest);
  const out = new Uint8Array(total);
  copyInto(out, 0, msg, 0, statementAt);
  putInt32(out, 1, total - 1);
  copyInto(out, statementAt, name, 0, name.length);
  out[statementAt + name.length] = 0;
  copyInto(out, statementAt + name.length + 1, msg, rest, msg.length);
  return out;
}

function frame(m: Message): Uint8Array {
  return m.frame;
}

