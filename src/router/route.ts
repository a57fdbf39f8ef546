/**
 * The routing decision: `route(ctx) → { target, reason }`, a pure function of the statement's classification and
 * the session's situation. `pgroute serve` and `pgroute explain` both call it, so what explain prints is what serve
 * does. When in doubt, the primary.
 */
import { describeReason, type Classification, type StatementReason } from "./classify.ts";
import type { PinReason } from "./effects.ts";
import type { Target } from "./hints.ts";

export type { Target };
/** `SET pgroute.target` and per-user defaults: a fixed node kind, or `auto` (decided per statement). */
export type TargetSetting = Target | "auto";

export type RouteReason =
  /** The statement is read-only: a replica may run it. */
  | { code: "read_only" }
  /** The statement may not run on a replica (or might not): the primary. */
  | { code: "not_read_only"; why: StatementReason }
  | { code: "hint"; target: Target }
  | { code: "session_target"; target: Target }
  | { code: "user_default"; target: Target }
  /** Inside an open transaction everything goes where the transaction runs. */
  | { code: "in_transaction"; target: Target }
  /** BEGIN of a read-write transaction: the primary. */
  | { code: "transaction_begin" }
  /** BEGIN READ ONLY (or default_transaction_read_only): a replica may run the whole transaction. */
  | { code: "read_only_transaction" }
  /** BEGIN ISOLATION LEVEL SERIALIZABLE: a hot standby refuses it, read-only or not. */
  | { code: "serializable_transaction" }
  /** `transactions = "first-statement"`: the transaction goes where its first statement goes, for `why`. */
  | { code: "first_statement"; target: Target; why: Exclude<RouteReason, { code: "first_statement" }> }
  /** A replica was wanted but none is healthy. */
  | { code: "no_replica"; wanted: Exclude<RouteReason, { code: "no_replica" }> }
  /** A replica was asked for a statement that may write: refused, never run. */
  | { code: "replica_refused"; why: StatementReason }
  /** The session keeps its server connection (LISTEN, a WITH HOLD cursor, …): statements run where it is. */
  | { code: "pinned"; target: Target; why: PinReason }
  /** The statement pins the session to its server connection: it runs on the primary, and the session stays there. */
  | { code: "pins_session"; why: PinReason }
  /**
   * Read-your-writes (`consistency = "sticky"`): the session wrote a moment ago, so its reads stay on the primary
   * for a while. Decided by the relay after {@link route} (src/session/consistency.ts), never by `route` itself.
   */
  | { code: "read_your_writes"; wanted: Exclude<RouteReason, { code: "read_your_writes" }> };

export interface Route {
  /** `defer`: a BEGIN held back until the transaction's first statement decides (`transactions = "first-statement"`). */
  target: Target | "refuse" | "defer";
  reason: RouteReason;
}

export interface RouteContext {
  statement: Classification;
  /** A hint from the statement's comments. */
  hint: Target | null;
  /** `SET pgroute.target`. */
  sessionTarget: TargetSetting;
  /** The user's configured default target. */
  userTarget: TargetSetting;
  /** The session's `default_transaction_read_only`. */
  defaultReadOnly: boolean;
  /** The open transaction's node, or null outside a transaction. */
  transaction: Target | null;
  /** Whether a healthy replica exists. */
  replicaAvailable: boolean;
  transactions: "primary" | "first-statement";
  /** The node whose server connection the session is pinned to, and why; null or absent when it is not pinned. */
  pinned?: { target: Target; why: PinReason } | null;
  /** Why the statement itself would pin the session (its first pin), if it does. */
  pins?: PinReason | null;
}

/** Statement reasons that are definite writes (as opposed to "not known to be read-only"). */
function definiteWrite(r: StatementReason): boolean {
  return r.code !== "unknown_function" && r.code !== "parse_error" && r.code !== "read_only" && r.code !== "empty";
}

export function route(ctx: RouteContext): Route {
  if (ctx.transaction) return { target: ctx.transaction, reason: { code: "in_transaction", target: ctx.transaction } };
  const wanted = decide(ctx);
  if (wanted.target === "refuse" || wanted.target === "defer") return wanted;
  // A pinned session keeps its server connection between transactions, so everything runs where that is.
  const pinned = ctx.pinned;
  if (pinned) return wanted.target === pinned.target ? wanted : { target: pinned.target, reason: { code: "pinned", target: pinned.target, why: pinned.why } };
  // Session state must live where writes can follow it: a statement that pins the session runs on the primary.
  if (wanted.target === "replica" && ctx.pins) return { target: "primary", reason: { code: "pins_session", why: ctx.pins } };
  if (wanted.target === "replica" && !ctx.replicaAvailable) {
    return { target: "primary", reason: { code: "no_replica", wanted: wanted.reason as Exclude<RouteReason, { code: "no_replica" }> } };
  }
  return wanted;
}

function decide(ctx: RouteContext): Route {
  const c = ctx.statement;
  const begin = c.tx?.kind === "begin" ? c.tx : null;
  // The string begins a transaction and otherwise only reads (a multi-statement string may also write).
  const onlyBegins = begin !== null && c.reason.code === "transaction_control";
  // An explicit choice for this statement, then for the session, then for the user.
  const target = ctx.hint ?? (ctx.sessionTarget !== "auto" ? ctx.sessionTarget : null);
  if (target) {
    // A replica is never given a statement that may write; BEGIN on a replica starts a read-only transaction.
    if (target === "replica" && !c.readOnly && !onlyBegins) return { target: "refuse", reason: { code: "replica_refused", why: c.reason } };
    return ctx.hint ? { target, reason: { code: "hint", target } } : { target, reason: { code: "session_target", target } };
  }
  // A user pinned to the primary stays there, read-only transactions included: only an explicit choice moves it.
  if (ctx.userTarget === "primary") return { target: "primary", reason: { code: "user_default", target: "primary" } };
  if (begin) {
    if (!onlyBegins) return { target: "primary", reason: { code: "not_read_only", why: c.reason } };
    // Checked before READ ONLY: a standby refuses SERIALIZABLE, and a held-back BEGIN that fails there would leave
    // the statements after it running outside any transaction.
    if (begin.serializable) return { target: "primary", reason: { code: "serializable_transaction" } };
    if (begin.readOnly ?? ctx.defaultReadOnly) return { target: "replica", reason: { code: "read_only_transaction" } };
    // Only a lone plain BEGIN is held back: READ WRITE says where it belongs, and a string with more statements
    // cannot be answered on its own.
    if (ctx.transactions === "first-statement" && begin.readOnly === null && c.statements === 1) {
      return { target: "defer", reason: { code: "transaction_begin" } };
    }
    return { target: "primary", reason: { code: "transaction_begin" } };
  }
  if (ctx.userTarget === "replica") {
    // A reporting user: anything not known to write goes to a replica, including its own functions.
    if (c.readOnly || !definiteWrite(c.reason)) return { target: "replica", reason: { code: "user_default", target: "replica" } };
    return { target: "primary", reason: { code: "not_read_only", why: c.reason } };
  }
  if (c.readOnly) return READ_ROUTE;
  return notReadOnly(c.reason);
}

/** Routes decided for every statement, made once: the common decisions cost no allocation. */
const READ_ROUTE: Route = Object.freeze({ target: "replica", reason: Object.freeze({ code: "read_only" }) }) as Route;
const notReadOnlyRoutes = new WeakMap<StatementReason, Route>();

/** The primary, for a reason the classifier gave (classifications are cached, so their reasons are shared). */
function notReadOnly(why: StatementReason): Route {
  let r = notReadOnlyRoutes.get(why);
  if (!r) {
    r = Object.freeze({ target: "primary", reason: Object.freeze({ code: "not_read_only", why }) }) as Route;
    notReadOnlyRoutes.set(why, r);
  }
  return r;
}

/** What holds a session to its server connection, in words. */
const PIN_LABEL: Record<PinReason, string> = {
  listen: "LISTEN",
  hold_cursor: "WITH HOLD cursor",
  advisory_lock: "session advisory lock",
  temp_table: "temporary table",
  sql_prepare: "SQL PREPARE",
  set_config: "set_config() with computed arguments",
};

/** A route's reason in words. */
export function describeRoute(r: RouteReason): string {
  switch (r.code) {
    case "read_only":
      return "read-only query";
    case "not_read_only":
      return describeReason(r.why);
    case "hint":
      return `hint: ${r.target}`;
    case "session_target":
      return `SET pgroute.target = ${r.target}`;
    case "user_default":
      return `user's default target: ${r.target}`;
    case "in_transaction":
      return `inside a transaction on the ${r.target}`;
    case "transaction_begin":
      return "BEGIN of a read-write transaction";
    case "read_only_transaction":
      return "read-only transaction";
    case "serializable_transaction":
      return "SERIALIZABLE transaction (a hot standby refuses it)";
    case "first_statement":
      return `transaction follows its first statement (${describeRoute(r.why)})`;
    case "no_replica":
      return `no healthy replica (wanted: ${describeRoute(r.wanted)})`;
    case "replica_refused":
      return `replica requested for a statement that may write (${describeReason(r.why)}): refused`;
    case "pinned":
      return `session pinned to its connection on the ${r.target} (${PIN_LABEL[r.why]})`;
    case "pins_session":
      return `pins the session to its connection (${PIN_LABEL[r.why]}): the primary`;
    case "read_your_writes":
      return `read-your-writes: the session wrote recently (wanted: ${describeRoute(r.wanted)})`;
  }
}
