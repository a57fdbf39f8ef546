/**
 * A transaction pgroute rolled back because its client sat idle in it past `idle_in_transaction_timeout`. The server
 * connection is already back in the pool (or, for a session that keeps its connection, rolled back there); the
 * client's session is in a failed transaction, answered by pgroute alone, as Postgres answers an aborted one:
 *
 * - COMMIT, ROLLBACK, END, ABORT (or PREPARE TRANSACTION), by simple or extended protocol, end it: CommandComplete
 *   `ROLLBACK` (what Postgres says to a COMMIT of a failed transaction) and ReadyForQuery 'I'. Named statements
 *   parsed for it are kept, as Postgres keeps them.
 * - Anything else gets `ERROR 25P03 idle-in-transaction timeout …` and ReadyForQuery 'E' — in the extended
 *   protocol at the first message that would run something, the rest skipped up to Sync.
 *
 * Postgres itself ends such a session with FATAL 25P03; a pooled application keeps its connection to pgroute,
 * sees an error with a SQLSTATE on its next statement and retries after ROLLBACK like after any failed transaction.
 */
import { parseSql } from "../router/parser.ts";
import { B, F, TxStatus } from "../wire/codes.ts";
import { MessageWriter, errorResponse, readyForQuery, type ErrorFields } from "../wire/encode.ts";
import { decodeBind, decodeExecute, decodeParse, decodeQuery, decodeTarget } from "../wire/frontend.ts";
import { copyBytes } from "../wire/bytes.ts";

/** What the aborted state needs from its relay. */
export interface AbortedHost {
  /** Replies in order with anything the client still awaits. */
  local(bytes: Uint8Array): void;
  /** The query of a client statement ("" for the unnamed one), if it exists. */
  statementText(name: string): string | undefined;
  /** Records a client statement parsed while aborted; false when the name is taken. */
  declare(name: string, query: string, types: Uint8Array): boolean;
  /** A client Close of a named statement. */
  forget(name: string): void;
  /** The transaction is over: later messages (`rest`, in order) go the usual way. */
  ended(rest: readonly { type: number; frame: Uint8Array }[]): void;
}

const parseComplete = Uint8Array.of(B.ParseComplete, 0, 0, 0, 4);
const bindComplete = Uint8Array.of(B.BindComplete, 0, 0, 0, 4);
const closeComplete = Uint8Array.of(B.CloseComplete, 0, 0, 0, 4);
const noData = Uint8Array.of(B.NoData, 0, 0, 0, 4);
const noParameters = Uint8Array.of(B.ParameterDescription, 0, 0, 0, 6, 0, 0);
const rollbackComplete = new MessageWriter(16).begin(B.CommandComplete).cstring("ROLLBACK").end().done();

/** Whether `sql` is one statement that ends a failed transaction (Postgres's IsTransactionExitStmt, less ROLLBACK TO). */
export function endsTransaction(sql: string): boolean {
  return exitKind(sql) !== null;
}

/** `commit` (COMMIT, END, PREPARE TRANSACTION: the client means to keep its work) or `rollback`, for one such statement. */
function exitKind(sql: string): "commit" | "rollback" | null {
  const parsed = parseSql(sql);
  if (!parsed.ok || parsed.tree.stmts?.length !== 1) return null;
  const kind = (parsed.tree.stmts[0]!.stmt as Record<string, any>).TransactionStmt?.kind;
  return kind === "TRANS_STMT_COMMIT" || kind === "TRANS_STMT_PREPARE" ? "commit" : kind === "TRANS_STMT_ROLLBACK" ? "rollback" : null;
}

export class AbortedTransaction {
  private error: Uint8Array;
  /** The error after the first one, when they differ (a lost connection first, then 25P02). */
  private readonly later: Uint8Array | null;
  /** An error was sent in this batch: skip to Sync. */
  private skipping = false;
  /** The batch's exit statement has run: what follows goes the usual way at Sync. */
  private done = false;
  private after: { type: number; frame: Uint8Array }[] = [];
  /** Texts of the unnamed statement and of portals bound in this batch. */
  private unnamed: string | undefined;
  /**
   * The client has not been told yet that its transaction is gone (`reportFirst`): a COMMIT then gets the error and
   * ends the transaction (ReadyForQuery 'I', as a COMMIT that fails in Postgres), never a quiet `ROLLBACK`.
   */
  private unreported: boolean;
  /** A COMMIT of this batch failed with the error: the transaction is over at Sync. */
  private endsAtSync = false;
  private readonly portals = new Map<string, string>();

  constructor(
    private readonly host: AbortedHost,
    error: Omit<ErrorFields, "severity">,
    /** What every statement after the first gets (default: the same error). */
    later?: Omit<ErrorFields, "severity">,
    /** The client does not know yet: its COMMIT must fail rather than be answered ROLLBACK (see {@link unreported}). */
    reportFirst = false,
  ) {
    this.unreported = reportFirst;
    this.error = errorResponse({ severity: "ERROR", ...error });
    this.later = later ? errorResponse({ severity: "ERROR", ...later }) : null;
    this.unnamed = host.statementText("");
  }

  /** The error for this statement (the first one may differ from the rest). */
  private take(): Uint8Array {
    this.unreported = false;
    const e = this.error;
    if (this.later) this.error = this.later;
    return e;
  }

  onMessage(type: number, frame: Uint8Array): void {
    if (this.done && type !== F.Sync) {
      this.after.push({ type, frame: copyBytes(frame) });
      return;
    }
    switch (type) {
      case F.Query:
        return this.query(decodeQuery(frame, 5, frame.length));
      case F.FunctionCall:
        return this.host.local(this.failed());
      case F.Sync:
        return this.sync(frame);
      case F.Flush:
      case F.CopyData:
      case F.CopyDone:
      case F.CopyFail:
        return; // nothing to flush; COPY messages outside a COPY are ignored, as Postgres does
    }
    if (this.skipping) return;
    try {
      this.extended(type, frame);
    } catch {
      this.fail(); // a malformed message: an error like any other
    }
  }

  private query(sql: string): void {
    const exit = exitKind(sql);
    if (exit === null) return this.host.local(this.failed());
    const e = exit === "commit" && this.unreported ? this.take() : rollbackComplete;
    this.host.local(new MessageWriter(e.length + 8).bytes(e).bytes(readyForQuery(TxStatus.Idle)).done());
    this.host.ended([]);
  }

  private failed(): Uint8Array {
    const e = this.take();
    return new MessageWriter(e.length + 8).bytes(e).bytes(readyForQuery(TxStatus.Failed)).done();
  }

  private fail(error: Uint8Array = this.take()): void {
    this.host.local(error);
    this.skipping = true;
  }

  private sync(frame: Uint8Array): void {
    this.skipping = false;
    this.portals.clear();
    if (this.endsAtSync) {
      this.host.local(readyForQuery(TxStatus.Idle));
      return this.host.ended([]);
    }
    if (!this.done) return this.host.local(readyForQuery(TxStatus.Failed));
    if (this.after.length === 0) {
      this.host.local(readyForQuery(TxStatus.Idle));
      return this.host.ended([]);
    }
    // Messages after the exit statement run in a new transaction, on a server, up to this Sync.
    this.host.ended([...this.after, { type: F.Sync, frame: copyBytes(frame) }]);
  }

  private textOf(name: string): string | undefined {
    return name === "" ? this.unnamed : this.host.statementText(name);
  }

  private extended(type: number, frame: Uint8Array): void {
    switch (type) {
      case F.Parse: {
        const p = decodeParse(frame, 5, frame.length);
        if (!endsTransaction(p.query)) return this.fail();
        if (p.name === "") this.unnamed = p.query;
        else if (!this.host.declare(p.name, p.query, p.types)) {
          return this.fail(errorResponse({ severity: "ERROR", code: "42P05", message: `prepared statement "${p.name}" already exists` }));
        }
        return this.host.local(parseComplete);
      }
      case F.Bind: {
        const b = decodeBind(frame, 5, frame.length);
        const text = this.textOf(b.statement);
        if (text === undefined) return this.fail(unknownStatement(b.statement));
        if (!endsTransaction(text)) return this.fail();
        this.portals.set(b.portal, text);
        return this.host.local(bindComplete);
      }
      case F.Describe: {
        const d = decodeTarget(frame, 5, frame.length);
        const text = d.kind === 0x53 /* 'S' */ ? this.textOf(d.name) : this.portals.get(d.name);
        if (text === undefined && d.kind === 0x53) return this.fail(unknownStatement(d.name));
        if (text === undefined || !endsTransaction(text)) return this.fail();
        return this.host.local(d.kind === 0x53 ? new MessageWriter(16).bytes(noParameters).bytes(noData).done() : noData);
      }
      case F.Execute: {
        const text = this.portals.get(decodeExecute(frame, 5, frame.length));
        const exit = text === undefined ? null : exitKind(text);
        if (exit === null) return this.fail();
        if (exit === "commit" && this.unreported) {
          this.endsAtSync = true;
          return this.fail();
        }
        this.done = true;
        return this.host.local(rollbackComplete);
      }
      case F.Close: {
        const c = decodeTarget(frame, 5, frame.length);
        if (c.kind === 0x53 && c.name !== "") this.host.forget(c.name);
        else if (c.kind !== 0x53) this.portals.delete(c.name);
        return this.host.local(closeComplete);
      }
    }
  }
}

function unknownStatement(name: string): Uint8Array {
  return errorResponse({ severity: "ERROR", code: "26000", message: `prepared statement "${name}" does not exist` });
}
