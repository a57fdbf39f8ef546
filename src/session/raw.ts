/**
 * Session pooling for one client: it keeps one server connection from login to disconnect and bytes flow both
 * ways unchanged. Only message headers are looked at — Query, Sync and FunctionCall are counted against
 * ReadyForQuery, so that at disconnect pgroute knows whether the connection is idle and can be reset
 * (ROLLBACK if needed, then DISCARD ALL) and pooled for the next client, or must be closed.
 */
import type { PgError } from "../errors.ts";
import type { Pool } from "../pool/pool.ts";
import type { ServerConn } from "../pool/server.ts";
import { ClientRelay } from "./relay.ts";
import { F } from "../wire/codes.ts";
import type { ClientSide } from "./relay.ts";

export class SessionRelay extends ClientRelay {
  /** An extended-protocol batch was sent without its Sync yet: the server may still owe replies. */
  private unsynced = false;

  constructor(
    client: ClientSide,
    private readonly pool: Pool,
    private conn: ServerConn | null,
  ) {
    super(client);
    conn?.attach(this, "raw");
  }

  get cancelTarget(): ServerConn | null {
    return this.conn;
  }

  /** Frontend message types looked at on the way through. */
  static readonly WATCHED = [F.Query, F.Sync, F.FunctionCall, F.Terminate, F.Parse, F.Bind, F.Describe, F.Execute, F.Close, F.Flush];

  /** Counts a frontend message the session reader saw (before the chunk holding it is forwarded). */
  onMessage(type: number): void {
    const conn = this.conn;
    if (!conn) return;
    if (type === F.Query || type === F.Sync || type === F.FunctionCall) {
      conn.outstanding++;
      this.unsynced = false;
    } else if (type !== F.Terminate) this.unsynced = true;
  }

  /** Forwards client bytes as they came. */
  forward(buf: Uint8Array, start?: number, end?: number): boolean {
    return this.conn?.write(buf, start, end) ?? false;
  }


  ready(): void {}

  onServerClose(error: PgError | null): void {
    const conn = this.conn;
    this.conn = null;
    this.serverLost(conn, this.pool, error);
  }



  /** The client is gone: reset and pool its connection when that is safe, close it otherwise. */
  close(): void {
    this.closed = true;
    const conn = this.conn;
    this.conn = null;
    if (!conn) return;
    // An extended-protocol batch without its Sync may still be owed replies: in doubt, so closed.
    if (this.unsynced) return this.pool.discard(conn);
    this.pool.recycle(conn, true);
  }
}
