/**
 * What a mirrored request sends to the shadow. A simple Query goes as it came. An extended-protocol batch is
 * rebuilt with the unnamed statement and portal — for each Execute: Parse(text, parameter types), the client's
 * own Bind body (parameter formats and values, result formats), Execute — then Sync: the shadow runs the same
 * statements with the same values and answers in the same formats, without any of the client's (or pgroute's)
 * statement names, which exist only on the primary's connections.
 */
import type { End } from "../pool/demux.ts";
import { F } from "../wire/codes.ts";
import { copyBytes } from "../wire/bytes.ts";
import { MessageWriter } from "../wire/encode.ts";
import { decodeBind, decodeParse } from "../wire/frontend.ts";
import { statementsOf, txEffect } from "./txstart.ts";

/** Bytes for the shadow, and the reply that completes each message it answers, in order (the last ends it). */
export interface ShadowRequest {
  readonly bytes: Uint8Array;
  readonly ends: readonly End[];
}

/** One frontend message of a batch: its type and whole frame. */
interface Message {
  type: number;
  frame: Uint8Array;
}

/** A statement as the shadow needs it: its text and the parameter types of its Parse (Int16 count + Int32s). */
export interface StatementText {
  query: string;
  types: Uint8Array;
}

/** Requests bigger than this are not mirrored: a queued sample keeps its own copy. */
export const MAX_MIRRORED_BYTES = 1 << 20;

const SYNC = Uint8Array.of(F.Sync, 0, 0, 0, 4);

/**
 * Whether statements of this shape may run on the shadow on their own: not transaction control (a BEGIN would
 * leave the shadow's connection in a transaction, a COMMIT has nothing to commit there) and not COPY (a COPY FROM
 * STDIN would wait for data only the client's connection gets).
 */
export function mirrorable(key: string): boolean {
  for (const s of statementsOf(key)) if (txEffect(s) !== "none" || s.startsWith("copy ")) return false;
  return true;
}

/** A simple Query (its frame copied: the client's buffer is not ours to keep). */
export function shadowQuery(frame: Uint8Array): ShadowRequest | null {
  if (frame.length > MAX_MIRRORED_BYTES) return null;
  return { bytes: copyBytes(frame), ends: ["query"] };
}

/**
 * An extended-protocol batch ending in Sync, rebuilt for the shadow; null when it cannot be replayed faithfully:
 * a portal bound or a statement prepared in an earlier batch that is not known, an Execute with a row limit
 * (a cursor-style partial fetch), or a request over {@link MAX_MIRRORED_BYTES}. `named` finds a client's
 * statement prepared earlier (the unnamed statement must be parsed in the batch itself).
 */
export function shadowBatch(messages: readonly Message[], named: (name: string) => StatementText | undefined): ShadowRequest | null {
  const stmts = new Map<string, StatementText>();
  const portals = new Map<string, { stmt: StatementText; rest: Uint8Array }>();
  const w = new MessageWriter(256);
  const ends: End[] = [];
  let size = 0;
  for (const m of messages) {
    const msg = m.frame; // decoders take offsets: the body starts at 5, after type and length
    switch (m.type) {
      case F.Parse: {
        const p = decodeParse(msg, 5, msg.length);
        stmts.set(p.name, { query: p.query, types: p.types });
        break;
      }
      case F.Bind: {
        const b = decodeBind(msg, 5, msg.length);
        const stmt = stmts.get(b.statement) ?? (b.statement === "" ? undefined : named(b.statement));
        if (!stmt) return null;
        portals.set(b.portal, { stmt, rest: msg.subarray(b.rest) });
        break;
      }
      case F.Execute: {
        const { portal, maxRows } = decodeExecuteLimit(msg);
        const p = portals.get(portal);
        if (!p || maxRows !== 0) return null;
        size += p.stmt.query.length + p.rest.length + p.stmt.types.length + 32;
        if (size > MAX_MIRRORED_BYTES) return null;
        w.begin(F.Parse).cstring("").cstring(p.stmt.query).bytes(p.stmt.types).end();
        w.begin(F.Bind).cstring("").cstring("").bytes(p.rest).end();
        w.begin(F.Execute).cstring("").int32(0).end();
        ends.push("parse", "bind", "execute");
        break;
      }
      case F.Sync:
        if (ends.length === 0) return null;
        w.bytes(SYNC);
        ends.push("sync");
        return { bytes: w.done(), ends };
      case F.Describe:
      case F.Close:
        break; // descriptions and closes do not change a result
      default:
        return null; // Flush, or anything unexpected: not a request with a defined end
    }
  }
  return null;
}

/** Execute ('E'): the portal name and the row limit (0: all rows). */
function decodeExecuteLimit(msg: Uint8Array): { portal: string; maxRows: number } {
  const z = msg.indexOf(0, 5);
  if (z < 0 || z + 5 > msg.length) return { portal: "", maxRows: -1 };
  const maxRows = ((msg[z + 1]! << 24) | (msg[z + 2]! << 16) | (msg[z + 3]! << 8) | msg[z + 4]!) | 0;
  return { portal: new TextDecoder().decode(msg.subarray(5, z)), maxRows };
}

/** The parameter types of a statement's Parse message (type, length, name, query, then the types). */
export function parseTypes(parse: Uint8Array): Uint8Array {
  return decodeParse(parse, 5, parse.length).types;
}
