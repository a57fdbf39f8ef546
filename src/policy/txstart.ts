/**
 * Which requests start a transaction, for `transactions_per_second` limits — decided when the request arrives,
 * before the server has said anything, from the statements' shape keys (src/router/lexer.ts):
 *
 * - `BEGIN` / `START TRANSACTION` outside a transaction block starts one;
 * - any other statement outside a block starts one too (autocommit: Postgres runs it in a transaction of its own;
 *   a multi-statement Query or an extended-protocol batch up to its Sync is one implicit transaction);
 * - statements inside a block, and `COMMIT`/`ROLLBACK`/`END`/`ABORT`/`PREPARE TRANSACTION` themselves, start none.
 *
 * The block state follows those statements as they are sent (so a pipelined `BEGIN; …; COMMIT` counts once) and
 * is corrected from the server's ReadyForQuery whenever nothing else is in flight (a failed BEGIN, a COMMIT AND
 * CHAIN, a transaction opened by a function).
 */

type Effect = "begin" | "end" | "none";

/** What a statement shape does to the transaction block. */
export function txEffect(key: string): Effect {
  const c = key.charCodeAt(0);
  // Cheap first-letter test: most statements start with s(elect), i(nsert), u(pdate), w(ith), d(elete).
  if (c !== 0x62 && c !== 0x73 && c !== 0x63 && c !== 0x65 && c !== 0x72 && c !== 0x61 && c !== 0x70) return "none";
  if (/^(?:begin|start transaction)\b/.test(key)) return "begin";
  if (/^rollback (?:transaction |work )?(?:and no chain )?(?:to\b|prepared\b)/.test(key)) return "none";
  if (/^commit prepared\b/.test(key)) return "none";
  if (/^(?:commit|end|rollback|abort)\b/.test(key)) return / and chain\b/.test(key) ? "none" : "end";
  if (/^prepare transaction\b/.test(key)) return "end";
  return "none";
}

/** The statements of a (possibly multi-statement) shape key. Literals are `?` there, so `;` only separates. */
export function statementsOf(key: string): string[] {
  if (!key.includes(";")) return [key];
  return key
    .split(";")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

export class TransactionStarts {
  /** Inside a transaction block, as far as the requests sent so far tell. */
  private open = false;
  /** Extended protocol: a statement since the last Sync opened the implicit transaction that Sync will end. */
  private implicit = false;

  /** How many transactions a simple Query with this shape key starts (0, 1, or more for `BEGIN…COMMIT; BEGIN…`). */
  query(key: string): number {
    const n = this.walk(statementsOf(key));
    this.implicit = false; // a Query is its own implicit transaction: it ends with the Query
    return n;
  }

  /** The same for one statement executed in an extended-protocol batch (the implicit transaction lasts to Sync). */
  execute(key: string): number {
    return this.walk(statementsOf(key));
  }

  /** A Sync: the implicit transaction of the batch, if any, ends. */
  sync(): void {
    this.implicit = false;
  }

  /** The state, to put back with {@link TransactionStarts.restore} when a request is refused after all. */
  save(): number {
    return (this.open ? 1 : 0) | (this.implicit ? 2 : 0);
  }

  restore(saved: number): void {
    this.open = (saved & 1) !== 0;
    this.implicit = (saved & 2) !== 0;
  }

  /** The server's ReadyForQuery when no other request is in flight: its status is the truth. */
  settle(inTransaction: boolean): void {
    this.open = inTransaction;
    this.implicit = false;
  }

  private walk(stmts: readonly string[]): number {
    let n = 0;
    for (const s of stmts) {
      switch (txEffect(s)) {
        case "begin":
          if (!this.open && !this.implicit) n++;
          this.open = true;
          break;
        case "end":
          this.open = false;
          this.implicit = false;
          break;
        case "none":
          if (!this.open && !this.implicit) {
            n++;
            this.implicit = true;
          }
          break;
      }
    }
    return n;
  }
}
