/**
 * A statement pgroute refuses on a policy's behalf: the fields of the ErrorResponse the client gets (severity
 * ERROR; the session stays usable). Named constructors keep each condition on one SQLSTATE.
 */
import type { ErrorFields } from "../wire/encode.ts";

export type Refusal = Omit<ErrorFields, "severity">;

export const refusals = {
  /** 42501: a firewall rule with `action = "deny"` matched. */
  firewall: (rule: string, message: string, detail: string): Refusal => ({
    code: "42501",
    message: `denied by pgroute firewall rule "${rule}"${message ? `: ${message}` : ""}`,
    detail,
  }),
  /**
   * 42601: a statement the parser rejects, for a user pgroute must check (read-only, or under deny rules): what it
   * cannot read it does not let through (fail closed). The server would reject it with the same SQLSTATE.
   */
  unparsable: (user: string, message: string): Refusal => ({
    code: "42601",
    message,
    hint: `pgroute does not forward statements it cannot parse for user "${user}", whose statements it checks.`,
  }),
  /** 42501: a statement_timeout above the policy set in a request that goes on to run more statements. */
  timeoutNotLast: (user: string, capMs: number): Refusal => ({
    code: "42501",
    message: `pgroute: statement_timeout is limited to ${capMs} ms for user "${user}"; a higher value (or 0, or the server default) is capped after the request that sets it, so no other statement may follow it in that request`,
    hint: "Send the SET in a request of its own, or set a value within the limit.",
  }),
  /** 42501: a FunctionCall (a function by OID, which pgroute cannot judge) from a user whose statements are checked. */
  functionCall: (user: string): Refusal => ({
    code: "42501",
    message: `pgroute: fast-path function calls are not allowed for user "${user}", whose statements are checked`,
    hint: "Call the function with SELECT instead.",
  }),
  /** 25P03: pgroute rolled back a transaction left idle too long; the client must end it. */
  idleInTransaction: (timeoutMs: number): Refusal => ({
    code: "25P03",
    message: `idle-in-transaction timeout: pgroute rolled back this transaction after it was idle for more than ${timeoutMs} ms`,
    hint: "End the failed transaction with ROLLBACK, then retry it.",
  }),
} as const;
