/**
 * What the relays share as owners of a server connection: server bytes go to the client as they are, and a full
 * socket to the server stops reading the client until it drains. {@link MessageRelay}: what the relays that take the
 * client's messages one by one share on top.
 */
import type { PgError } from "../errors.ts";
import type { Entry } from "../pool/demux.ts";
import type { Pool } from "../pool/pool.ts";
import type { ServerConn, ServerOwner } from "../pool/server.ts";
import { F } from "../wire/codes.ts";
import type { Message } from "./prepared.ts";
import type { Throttle } from "./throttle.ts";

/** What a relay needs from its client connection. */
export interface ClientSide {
  /** Bytes for the client. */
  send(buf: Uint8Array, start?: number, end?: number): void;
  pauseClient(): void;
  resumeClient(): void;
  /** Stops (or resumes) reading the client while one of its requests waits for its rate-limit turn. */
  holdReads(on: boolean): void;
  /** The relay cannot go on (the server connection broke mid-request): end the client with this error. */
  fatal(error: PgError): void;
  /** End the client connection without a word (the server already sent its FATAL). */
  close(): void;
  log(event: string, fields: Record<string, string | number>): void;
}

export abstract class ClientRelay implements ServerOwner {
  /** The client is gone: nothing more is said to it. */
  protected closed = false;

  constructor(protected readonly client: ClientSide) {}

  deliver(buf: Uint8Array, start: number, end: number): void {
    this.client.send(buf, start, end);
  }

  onServerBlocked(): void {
    this.client.pauseClient();
  }

  onServerWritable(): void {
    this.client.resumeClient();
  }

  abstract ready(status: number, failed: boolean, entry: Entry): void;
  abstract onServerClose(error: PgError | null): void;

  /**
   * The server connection broke or was closed under this relay: it is discarded, and the client gets the error
   * (or is simply closed when the server already told it why, its FATAL having gone through).
   */
  protected serverLost(conn: ServerConn | null, pool: Pool | null, error: PgError | null): void {
    if (conn) pool?.discard(conn);
    if (this.closed) return;
    if (error) this.client.fatal(error);
    else this.client.close();
  }
}

/**
 * A relay that takes the client's messages one by one (transaction pooling, and session pooling under policies):
 * simple requests go on their own, extended-protocol messages are collected up to their Sync or Flush and go as one
 * batch, and everything waits behind a request that waits for its rate-limit turn.
 */
export abstract class MessageRelay extends ClientRelay {
  /** Extended-protocol messages since the last Sync/Flush. */
  protected batch: Message[] = [];
  /** A batch without Sync failed: the client's messages up to its Sync are dropped, as Postgres would. */
  protected skippingToSync = false;
  protected abstract readonly throttle: Throttle;

  /** One complete frontend message; `frame` may be a view into the client's chunk. */
  onMessage(type: number, frame: Uint8Array): void {
    // Behind a request waiting for its rate-limit turn, everything waits: replies keep the pipeline's order.
    if (this.throttle.holding) return this.throttle.hold(type, frame);
    if (this.skippingToSync) {
      if (type !== F.Sync) return;
      this.skippingToSync = false;
      return this.skippedToSync();
    }
    switch (type) {
      case F.Query:
        return this.query(frame);
      case F.FunctionCall:
        return this.functionCall(frame);
      case F.Parse:
      case F.Bind:
      case F.Describe:
      case F.Execute:
      case F.Close:
        // A view is enough: each read from a socket arrives in a buffer of its own, never reused.
        this.batch.push({ type, frame });
        return;
      case F.Sync:
      case F.Flush: {
        this.batch.push({ type, frame });
        const messages = this.batch;
        this.batch = [];
        return this.batchRequest(messages, type === F.Sync);
      }
      case F.CopyData:
      case F.CopyDone:
      case F.CopyFail:
        return this.copy(frame);
    }
  }

  protected abstract query(frame: Uint8Array): void;
  protected abstract functionCall(frame: Uint8Array): void;
  /** Extended-protocol messages up to and including a Sync (`sync`) or a Flush. */
  protected abstract batchRequest(messages: Message[], sync: boolean): void;
  protected abstract copy(frame: Uint8Array): void;
  /** The client's Sync that ends a skip: the client awaits its ReadyForQuery. */
  protected abstract skippedToSync(): void;
}
