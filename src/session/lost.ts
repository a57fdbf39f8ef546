/**
 * What a transaction-pooled client is told when the server connection under its requests is lost — the server
 * crashed, was shut down or failed over — and its session survives (src/session/transaction.ts): each request
 * still in flight gets the error (one per extended-protocol batch) and its ReadyForQuery, in order with pgroute's
 * own replies queued between them, exactly as if the server had failed each of them. Nothing is sent again.
 */
import type { Owed } from "../pool/demux.ts";
import { MessageWriter, readyForQuery } from "../wire/encode.ts";

/** The bytes for `steps` (see Demux.owed): `error` an ErrorResponse, `status` the ReadyForQuery status. */
export function lostReplies(steps: readonly Owed[], error: Uint8Array, status: number): Uint8Array {
  const w = new MessageWriter(64 + error.length * steps.length);
  for (const s of steps) {
    if (s === "error") w.bytes(error);
    else if (s === "ready") w.bytes(readyForQuery(status));
    else w.bytes(s.local);
  }
  return w.done();
}

/** Whether `steps` are those of exactly one request that got nothing but its error: a read that may be retried. */
export function oneRequest(steps: readonly Owed[]): boolean {
  return steps.length === 2 && steps[0] === "error" && steps[1] === "ready";
}

/** Postgres's own words for statements sent in a transaction that already failed. */
export const IN_FAILED_TRANSACTION = {
  code: "25P02",
  message: "current transaction is aborted, commands ignored until end of transaction block",
} as const;
