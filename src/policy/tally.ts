/**
 * A request's result reduced to what mirroring compares: the rows (DataRow 'D') counted and folded into a
 * checksum, the counts of the command tags (CommandComplete 'C'), the first error's SQLSTATE (ErrorResponse 'E'),
 * and how long it took. Both sides are tallied from the same wire messages: the primary's reply on its way to the
 * client, the shadow's as it arrives — same protocol, same result formats (the shadow gets the client's own Bind),
 * so two equal results tally equal byte for byte.
 *
 * The checksum is order-insensitive — the sum, per 32-bit lane, of two independent hashes of each row — because a
 * query without ORDER BY may return its rows in any order, and a new index or a new planner legitimately changes
 * it. A sum (not a XOR) keeps duplicate rows from cancelling out. The price: rows that swap places between
 * otherwise equal results go unnoticed, which is the point.
 */
import { decodeServerError } from "../wire/backend.ts";
import { B } from "../wire/codes.ts";
import type { ReplyObserver } from "../pool/demux.ts";

export class ReplyTally implements ReplyObserver {
  /** DataRows seen. */
  rows = 0;
  /** Sum of the counts in the command tags ("SELECT 5", "INSERT 0 3", "UPDATE 2"…). */
  tagged = 0;
  /** The two checksum lanes. */
  private a = 0;
  private b = 0;
  /** SQLSTATE of the first ErrorResponse, or null. */
  error: string | null = null;
  errorMessage = "";
  /** A row too large to be shown went by (src/pool/demux.ts MAX_OBSERVED): the result cannot be compared. */
  incomplete = false;
  /** When the request was sent, and how long it took (set by {@link ReplyTally.finish}). */
  startedAt = 0;
  ms = 0;

  reply(type: number, buf: Uint8Array, start: number, end: number): void {
    switch (type) {
      case B.DataRow: {
        this.rows++;
        this.fold(buf.subarray(start, end));
        return;
      }
      case B.CommandComplete:
        this.tagged += tagCount(buf, start, end);
        // The tag itself (a SELECT against an UPDATE) is part of the result, its count apart.
        this.fold(buf.subarray(start, end));
        return;
      case B.ErrorResponse:
        if (this.error === null) {
          const e = decodeServerError(buf, start, end);
          this.error = e.code;
          this.errorMessage = e.message;
        }
        return;
    }
  }

  missed(): void {
    this.incomplete = true;
  }

  private fold(bytes: Uint8Array): void {
    this.a = (this.a + Bun.hash.xxHash32(bytes, 0)) >>> 0;
    this.b = (this.b + Bun.hash.xxHash32(bytes, 0x9e3779b9)) >>> 0;
  }

  /** The checksum as 16 hex digits. */
  get checksum(): string {
    return this.a.toString(16).padStart(8, "0") + this.b.toString(16).padStart(8, "0");
  }

  start(now: number): void {
    this.startedAt = now;
  }

  finish(now: number): void {
    this.ms = now - this.startedAt;
  }
}

/** The number at the end of a CommandComplete tag ("SELECT 5" → 5, "INSERT 0 3" → 3, "CREATE TABLE" → 0). */
function tagCount(buf: Uint8Array, start: number, end: number): number {
  let i = end - 1;
  if (i >= start && buf[i] === 0) i--; // the tag's NUL
  let n = 0;
  let scale = 1;
  const last = i;
  while (i >= start && buf[i]! >= 0x30 && buf[i]! <= 0x39) {
    n += (buf[i]! - 0x30) * scale;
    scale *= 10;
    i--;
  }
  return i < last && i >= start && buf[i] === 0x20 ? n : 0;
}

/** How the shadow's result may differ from the primary's; the first difference found, in this order. */
export const DIFFERENCES = ["error", "row_count", "checksum"] as const;
export type Difference = (typeof DIFFERENCES)[number];

export type Comparison = { readonly kind: "match" } | { readonly kind: "mismatch"; readonly what: Difference; readonly primary: string; readonly shadow: string };

const MATCH: Comparison = Object.freeze({ kind: "match" });

/**
 * Compares two results. Two errors with the same SQLSTATE match (the same statement failing the same way on both);
 * an error on one side only, or different ones, is an "error" mismatch.
 */
export function compare(primary: ReplyTally, shadow: ReplyTally): Comparison {
  if (primary.error !== null || shadow.error !== null) {
    if (primary.error === shadow.error) return MATCH;
    return { kind: "mismatch", what: "error", primary: describeError(primary), shadow: describeError(shadow) };
  }
  if (primary.rows !== shadow.rows || primary.tagged !== shadow.tagged) {
    return { kind: "mismatch", what: "row_count", primary: describeRows(primary), shadow: describeRows(shadow) };
  }
  if (primary.checksum !== shadow.checksum) {
    return { kind: "mismatch", what: "checksum", primary: `checksum ${primary.checksum}`, shadow: `checksum ${shadow.checksum}` };
  }
  return MATCH;
}

function describeError(t: ReplyTally): string {
  return t.error === null ? "no error" : `ERROR ${t.error}: ${t.errorMessage.length > 120 ? `${t.errorMessage.slice(0, 119)}…` : t.errorMessage}`;
}

function describeRows(t: ReplyTally): string {
  if (t.rows === t.tagged) return `${t.rows} rows`;
  return t.rows === 0 ? `${t.tagged} rows affected` : `${t.rows} rows, ${t.tagged} in command tags`;
}
