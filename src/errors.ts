/**
 * The one error type that reaches a client: a SQLSTATE, a severity and a message, built by named constructors
 * so the same condition always carries the same code (PostgreSQL docs, Appendix A "Error Codes").
 */
import { errorResponse, type ErrorFields } from "./wire/encode.ts";

export class PgError extends Error {
  override readonly name = "PgError";
  /**
   * The server could not be reached at all (refused, reset, timed out, closed before it answered): the kind of
   * failure a failover fixes, for which a write waits for a primary (src/pool/group.ts) rather than failing at once.
   */
  unreachable = false;
  constructor(
    readonly code: string,
    message: string,
    readonly severity: "ERROR" | "FATAL" = "ERROR",
    readonly detail?: string,
    readonly hint?: string,
  ) {
    super(message);
  }

  get fields(): ErrorFields {
    return { severity: this.severity, code: this.code, message: this.message, detail: this.detail, hint: this.hint };
  }

  /** The ErrorResponse bytes for this error. */
  toMessage(): Uint8Array {
    return errorResponse(this.fields);
  }
}

export const errors = {
  /** 08P01: the peer broke the protocol. */
  protocolViolation: (message: string) => new PgError("08P01", message, "FATAL"),
  /** 28P01: the same message whether the user is unknown or the password wrong. */
  authFailed: (user: string) => new PgError("28P01", `password authentication failed for user "${user}"`, "FATAL"),
  /** 28000: a user that may not use the database it asked for. */
  notAllowed: (user: string, database: string) =>
    new PgError("28000", `user "${user}" is not allowed to connect to database "${database}"`, "FATAL"),
  /** 28000: a startup packet without a user name. */
  noUser: () => new PgError("28000", "no PostgreSQL user name specified in startup packet", "FATAL"),
  /** 53300: more client connections than `limits.max_client_connections`. */
  tooManyClients: (max: number) =>
    new PgError("53300", `sorry, too many clients already (max_client_connections = ${max})`, "FATAL"),
  /** 53300: more new connections from one client address than `ratelimit.connections_per_second`. */
  tooManyConnectionsFrom: (address: string, rate: number, burst: number) =>
    new PgError(
      "53300",
      `sorry, too many connections from ${address}: pgroute accepts ${rate} new connections per second from one address (burst ${burst})`,
      "FATAL",
      undefined,
      "Reuse connections (a connection pool in the application), or raise ratelimit.connections_per_second.",
    ),
  /** 53400: a statement over a rate limit that did not get its turn within `ratelimit.max_wait`. */
  rateLimited: (text: { message: string; detail: string; hint: string }) => new PgError("53400", text.message, "ERROR", text.detail, text.hint),
  /** 08006: the server connection broke under a client. */
  serverGone: (node: string, why: string) =>
    new PgError("08006", `server connection to node "${node}" was lost: ${why}`, "FATAL"),
  /** 08001: pgroute could not reach a server for this client. */
  cannotConnect: (node: string, why: string) =>
    new PgError("08001", `could not connect to node "${node}": ${why}`, "FATAL"),
  /** 08001, marked {@link PgError.unreachable}: the connection itself failed (refused, reset, timed out, closed). */
  unreachable: (node: string, why: string) => {
    const e = new PgError("08001", `could not connect to node "${node}": ${why}`, "FATAL");
    e.unreachable = true;
    return e;
  },
  /** 57P03: writes waited `waitedMs` for a primary and none could be used (`why`: the last failure, if any). */
  noPrimary: (waitedMs: number, why: string | null) =>
    new PgError(
      "57P03",
      waitedMs > 0 ? `no primary node is available (waited ${waitedMs} ms for one)` : "no primary node is available",
      "FATAL",
      why ?? "No node reports being the primary.",
      "The primary is down or being replaced; retry the transaction. pgroute uses the new primary as soon as one leaves recovery.",
    ),
  /**
   * 08006 for a request in flight when its server connection was lost (the session stays usable): inside a
   * transaction, the transaction is gone; outside one, the statement may or may not have completed.
   */
  serverLost: (node: string, why: string, inTransaction: boolean) =>
    new PgError(
      "08006",
      `server connection to node "${node}" was lost: ${why}`,
      "ERROR",
      inTransaction
        ? "The transaction was rolled back (if COMMIT was in flight, whether it committed is unknown)."
        : "The statement may or may not have completed.",
      inTransaction ? "End the transaction with ROLLBACK and retry it; this connection to pgroute stays usable." : "Check, then retry; this connection to pgroute stays usable.",
    ),
  /** 57P01: pgroute is shutting down. */
  shuttingDown: () => new PgError("57P01", "terminating connection due to pgroute shutdown", "FATAL"),
  /** 08P01 for login that took longer than `limits.login_timeout`. */
  loginTimeout: () => new PgError("08P01", "login timeout: startup and authentication took too long", "FATAL"),
  /** 0A000: something pgroute does not support. */
  unsupported: (what: string) => new PgError("0A000", what, "FATAL"),
} as const;
