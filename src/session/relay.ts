/**
 * What both relays share as owners of a server connection: server bytes go to the client as they are, and a full
 * socket to the server stops reading the client until it drains.
 */
import type { PgError } from "../errors.ts";
import type { Entry } from "../pool/demux.ts";
import type { ServerOwner } from "../pool/server.ts";

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
}
