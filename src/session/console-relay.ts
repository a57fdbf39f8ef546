/**
 * A session on the admin console (the virtual database `pgroute`): no server connection, every simple Query is
 * answered by pgroute itself, in order, each followed by ReadyForQuery. The extended protocol is refused (one
 * error, then messages are skipped up to Sync, as a server does after an error), as PgBouncer's console does:
 * psql and other tools send admin commands as simple queries.
 */
import { F, TxStatus } from "../wire/codes.ts";
import { errorResponse, readyForQuery } from "../wire/encode.ts";
import { decodeQuery } from "../wire/frontend.ts";

/** What answers console queries (src/admin/console.ts). */
export interface ConsoleHandler {
  /** ParameterStatus values a client gets at login. */
  readonly params: ReadonlyMap<string, string>;
  /** The reply to one Query message (results, CommandComplete or ErrorResponse), without its ReadyForQuery. */
  query(sql: string): Uint8Array | Promise<Uint8Array>;
}

export interface ConsoleClient {
  send(buf: Uint8Array): void;
}

const IDLE = readyForQuery(TxStatus.Idle);

export class ConsoleRelay {
  /** Replies go out in the order their requests came, whichever takes longer to answer (RELOAD reads a file). */
  private chain: Promise<void> = Promise.resolve();
  /** An extended-protocol message was refused: skip to the client's Sync. */
  private skipping = false;
  private closed = false;

  constructor(
    private readonly client: ConsoleClient,
    private readonly handler: ConsoleHandler,
  ) {}

  /** One frontend message (body in `buf[start, end)`). */
  onMessage(type: number, buf: Uint8Array, start: number, end: number): void {
    switch (type) {
      case F.Query: {
        const sql = decodeQuery(buf, start, end);
        return this.reply(async () => {
          try {
            return await this.handler.query(sql);
          } catch (err) {
            return errorResponse({ severity: "ERROR", code: "XX000", message: `pgroute admin console: ${(err as Error).message}` });
          }
        }, true);
      }
      case F.Sync:
        this.skipping = false;
        return this.reply(() => new Uint8Array(0), true);
      case F.Flush:
        return;
      default:
        if (this.skipping) return;
        this.skipping = type !== F.CopyData && type !== F.CopyDone && type !== F.CopyFail;
        return this.reply(
          () =>
            errorResponse({
              severity: "ERROR",
              code: "0A000",
              message: "the pgroute admin console answers simple queries only (the extended query protocol is not supported)",
              hint: `Send commands as simple queries, as psql does: SHOW NODES, SHOW POOLS, PAUSE, …`,
            }),
          false,
        );
    }
  }

  private reply(make: () => Uint8Array | Promise<Uint8Array>, ready: boolean): void {
    this.chain = this.chain.then(async () => {
      const bytes = await make();
      if (this.closed) return;
      if (bytes.length > 0) this.client.send(bytes);
      if (ready) this.client.send(IDLE);
    });
  }

  close(): void {
    this.closed = true;
  }
}
