// Invariant: route() is a pure function of its context: an open transaction decides first; then a hint, SET
// pgroute.target, the user's default and the statement itself, in that order; a replica never gets a statement
// that may write (refused when asked for explicitly), and a read that wants a replica when none is healthy goes to
// the primary with the reason it wanted one. Every reason code is produced by some row below.
import { describe, expect, test } from "bun:test";
import type { Classification, StatementReason, TxControl } from "../../src/router/classify.ts";
import { describeRoute, route, type Route, type RouteContext, type RouteReason } from "../../src/router/route.ts";

const read: Classification = { readOnly: true, reason: { code: "read_only" }, tx: null, statements: 1 };
const writing = (reason: StatementReason, statements = 1): Classification => ({ readOnly: false, reason, tx: null, statements });
const DELETE: StatementReason = { code: "write_statement", statement: "DELETE" };
const UNKNOWN: StatementReason = { code: "unknown_function", name: "my_func" };
const PARSE_ERROR: StatementReason = { code: "parse_error", message: "syntax error", position: 1 };
const BEGIN: StatementReason = { code: "transaction_control", statement: "BEGIN" };
/** A BEGIN (or a string starting with one); `reason` is what decides the rest of the string. */
const begin = (readOnly: boolean | null, o: { serializable?: boolean; statements?: number; reason?: StatementReason } = {}): Classification => ({
  readOnly: false,
  reason: o.reason ?? BEGIN,
  tx: { kind: "begin", readOnly, serializable: o.serializable ?? false } satisfies TxControl,
  statements: o.statements ?? 1,
});
const commit: Classification = { readOnly: false, reason: { code: "transaction_control", statement: "COMMIT" }, tx: { kind: "commit" }, statements: 1 };

const base: RouteContext = {
  statement: read,
  hint: null,
  sessionTarget: "auto",
  userTarget: "auto",
  defaultReadOnly: false,
  transaction: null,
  replicaAvailable: true,
  transactions: "primary",
};

const to = (target: Route["target"], reason: RouteReason): Route => ({ target, reason });

const rows: [string, Partial<RouteContext>, Route][] = [
  // The statement alone.
  ["a read", {}, to("replica", { code: "read_only" })],
  ["a write", { statement: writing(DELETE) }, to("primary", { code: "not_read_only", why: DELETE })],
  ["an unknown function", { statement: writing(UNKNOWN) }, to("primary", { code: "not_read_only", why: UNKNOWN })],
  ["a parse error", { statement: writing(PARSE_ERROR) }, to("primary", { code: "not_read_only", why: PARSE_ERROR })],
  ["COMMIT outside a transaction", { statement: commit }, to("primary", { code: "not_read_only", why: commit.reason })],
  // Inside a transaction, everything follows it: hints and settings included.
  ["in a primary transaction, a read", { transaction: "primary" }, to("primary", { code: "in_transaction", target: "primary" })],
  ["in a replica transaction, a write", { transaction: "replica", statement: writing(DELETE) }, to("replica", { code: "in_transaction", target: "replica" })],
  ["in a transaction, a hint", { transaction: "primary", hint: "replica" }, to("primary", { code: "in_transaction", target: "primary" })],
  ["in a transaction, no replica healthy", { transaction: "replica", replicaAvailable: false }, to("replica", { code: "in_transaction", target: "replica" })],
  ["in a transaction, SET pgroute.target", { transaction: "primary", sessionTarget: "replica" }, to("primary", { code: "in_transaction", target: "primary" })],
  // Hints.
  ["a primary hint on a read", { hint: "primary" }, to("primary", { code: "hint", target: "primary" })],
  ["a replica hint on a read", { hint: "replica" }, to("replica", { code: "hint", target: "replica" })],
  ["a primary hint on a write", { hint: "primary", statement: writing(DELETE) }, to("primary", { code: "hint", target: "primary" })],
  ["a replica hint on a write: refused", { hint: "replica", statement: writing(DELETE) }, to("refuse", { code: "replica_refused", why: DELETE })],
  ["a replica hint on an unknown function: refused", { hint: "replica", statement: writing(UNKNOWN) }, to("refuse", { code: "replica_refused", why: UNKNOWN })],
  ["a replica hint on BEGIN: a transaction on a replica", { hint: "replica", statement: begin(null) }, to("replica", { code: "hint", target: "replica" })],
  [
    "a replica hint on a string that begins and writes: refused",
    { hint: "replica", statement: begin(true, { statements: 3, reason: DELETE }) },
    to("refuse", { code: "replica_refused", why: DELETE }),
  ],
  ["a hint beats SET pgroute.target", { hint: "primary", sessionTarget: "replica" }, to("primary", { code: "hint", target: "primary" })],
  ["a hint beats the user's default", { hint: "replica", userTarget: "primary" }, to("replica", { code: "hint", target: "replica" })],
  ["a replica hint, no replica healthy", { hint: "replica", replicaAvailable: false }, to("primary", { code: "no_replica", wanted: { code: "hint", target: "replica" } })],
  ["a refused write stays refused without replicas", { hint: "replica", statement: writing(DELETE), replicaAvailable: false }, to("refuse", { code: "replica_refused", why: DELETE })],
  // SET pgroute.target.
  ["session target replica, a read", { sessionTarget: "replica" }, to("replica", { code: "session_target", target: "replica" })],
  ["session target replica, a write: refused", { sessionTarget: "replica", statement: writing(DELETE) }, to("refuse", { code: "replica_refused", why: DELETE })],
  ["session target primary, a read", { sessionTarget: "primary" }, to("primary", { code: "session_target", target: "primary" })],
  ["session target beats the user's default", { sessionTarget: "replica", userTarget: "primary" }, to("replica", { code: "session_target", target: "replica" })],
  ["session target replica, no replica healthy", { sessionTarget: "replica", replicaAvailable: false }, to("primary", { code: "no_replica", wanted: { code: "session_target", target: "replica" } })],
  // The user's default target.
  ["user primary, a read", { userTarget: "primary" }, to("primary", { code: "user_default", target: "primary" })],
  ["user primary, BEGIN READ ONLY", { userTarget: "primary", statement: begin(true) }, to("primary", { code: "user_default", target: "primary" })],
  ["user primary, BEGIN", { userTarget: "primary", statement: begin(null), transactions: "first-statement" }, to("primary", { code: "user_default", target: "primary" })],
  ["user replica, a read", { userTarget: "replica" }, to("replica", { code: "user_default", target: "replica" })],
  ["user replica, an unknown function", { userTarget: "replica", statement: writing(UNKNOWN) }, to("replica", { code: "user_default", target: "replica" })],
  ["user replica, a write", { userTarget: "replica", statement: writing(DELETE) }, to("primary", { code: "not_read_only", why: DELETE })],
  ["user replica, BEGIN", { userTarget: "replica", statement: begin(null) }, to("primary", { code: "transaction_begin" })],
  ["user replica, no replica healthy", { userTarget: "replica", replicaAvailable: false }, to("primary", { code: "no_replica", wanted: { code: "user_default", target: "replica" } })],
  // Transactions.
  ["BEGIN", { statement: begin(null) }, to("primary", { code: "transaction_begin" })],
  ["BEGIN READ WRITE", { statement: begin(false) }, to("primary", { code: "transaction_begin" })],
  ["BEGIN READ ONLY", { statement: begin(true) }, to("replica", { code: "read_only_transaction" })],
  ["BEGIN with default_transaction_read_only", { statement: begin(null), defaultReadOnly: true }, to("replica", { code: "read_only_transaction" })],
  ["BEGIN READ WRITE with default_transaction_read_only", { statement: begin(false), defaultReadOnly: true }, to("primary", { code: "transaction_begin" })],
  ["BEGIN READ ONLY, no replica healthy", { statement: begin(true), replicaAvailable: false }, to("primary", { code: "no_replica", wanted: { code: "read_only_transaction" } })],
  ["BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", { statement: begin(true, { serializable: true }) }, to("primary", { code: "serializable_transaction" })],
  ["SERIALIZABLE under default_transaction_read_only", { statement: begin(null, { serializable: true }), defaultReadOnly: true }, to("primary", { code: "serializable_transaction" })],
  ["BEGIN READ ONLY; SELECT …; COMMIT in one string", { statement: begin(true, { statements: 3, reason: { code: "transaction_control", statement: "COMMIT" } }) }, to("replica", { code: "read_only_transaction" })],
  ["BEGIN READ ONLY; …; DELETE in one string", { statement: begin(true, { statements: 3, reason: DELETE }) }, to("primary", { code: "not_read_only", why: DELETE })],
  // transactions = "first-statement".
  ["first-statement: BEGIN is held back", { statement: begin(null), transactions: "first-statement" }, to("defer", { code: "transaction_begin" })],
  ["first-statement: BEGIN READ WRITE is not", { statement: begin(false), transactions: "first-statement" }, to("primary", { code: "transaction_begin" })],
  ["first-statement: SERIALIZABLE is not", { statement: begin(null, { serializable: true }), transactions: "first-statement" }, to("primary", { code: "serializable_transaction" })],
  ["first-statement: BEGIN READ ONLY goes to a replica", { statement: begin(true), transactions: "first-statement" }, to("replica", { code: "read_only_transaction" })],
  ["first-statement: BEGIN; SELECT 1 in one string is not", { statement: begin(null, { statements: 2 }), transactions: "first-statement" }, to("primary", { code: "transaction_begin" })],
  ["first-statement: a read outside a transaction", { transactions: "first-statement" }, to("replica", { code: "read_only" })],
  // A session pinned to its server connection (LISTEN, WITH HOLD cursors, …) runs there between transactions.
  ["pinned to the primary, a read", { pinned: { target: "primary", why: "temp_table" } }, to("primary", { code: "pinned", target: "primary", why: "temp_table" })],
  ["pinned to the primary, a write keeps its reason", { pinned: { target: "primary", why: "listen" }, statement: writing(DELETE) }, to("primary", { code: "not_read_only", why: DELETE })],
  ["pinned to a replica, a write follows the pin", { pinned: { target: "replica", why: "hold_cursor" }, statement: writing(DELETE) }, to("replica", { code: "pinned", target: "replica", why: "hold_cursor" })],
  ["pinned, a replica hint on a write: refused all the same", { pinned: { target: "primary", why: "listen" }, hint: "replica", statement: writing(DELETE) }, to("refuse", { code: "replica_refused", why: DELETE })],
  ["pinned, in a transaction: the transaction decides", { pinned: { target: "primary", why: "listen" }, transaction: "primary" }, to("primary", { code: "in_transaction", target: "primary" })],
  ["pinned to the primary, no replica healthy", { pinned: { target: "primary", why: "sql_prepare" }, replicaAvailable: false }, to("primary", { code: "pinned", target: "primary", why: "sql_prepare" })],
  // A read that pins the session (a read function that takes a session lock) runs on the primary.
  ["a read that pins the session", { pins: "advisory_lock" }, to("primary", { code: "pins_session", why: "advisory_lock" })],
  ["a write that pins the session keeps its reason", { pins: "temp_table", statement: writing(DELETE) }, to("primary", { code: "not_read_only", why: DELETE })],
  // No healthy replica.
  ["a read, no replica healthy", { replicaAvailable: false }, to("primary", { code: "no_replica", wanted: { code: "read_only" } })],
  ["a write, no replica healthy", { replicaAvailable: false, statement: writing(DELETE) }, to("primary", { code: "not_read_only", why: DELETE })],
];

describe("route", () => {
  for (const [name, patch, expected] of rows) {
    test(name, () => {
      const ctx = { ...base, ...patch };
      const frozen = structuredClone(ctx);
      expect(route(ctx)).toEqual(expected);
      expect(ctx).toEqual(frozen); // pure: the context is left as it was
    });
  }

  test("every reason code but first_statement (RouterState's) and read_your_writes (the relay's) comes out of some row", () => {
    // A Record over the union: a new reason code does not compile until it is listed here.
    const all: Record<RouteReason["code"], true> = {
      read_only: true, not_read_only: true, hint: true, session_target: true, user_default: true, in_transaction: true,
      transaction_begin: true, read_only_transaction: true, serializable_transaction: true, first_statement: true,
      no_replica: true, replica_refused: true, pinned: true, pins_session: true, read_your_writes: true,
    };
    const codes = new Set<string>(rows.map(([, , r]) => r.reason.code));
    expect([...codes].sort()).toEqual(Object.keys(all).filter((c) => c !== "first_statement" && c !== "read_your_writes").sort());
  });
});

describe("describeRoute", () => {
  test("every reason code in words", () => {
    const cases: [RouteReason, string][] = [
      [{ code: "read_only" }, "read-only query"],
      [{ code: "not_read_only", why: DELETE }, "DELETE writes"],
      [{ code: "hint", target: "replica" }, "hint: replica"],
      [{ code: "session_target", target: "primary" }, "SET pgroute.target = primary"],
      [{ code: "user_default", target: "replica" }, "user's default target: replica"],
      [{ code: "in_transaction", target: "primary" }, "inside a transaction on the primary"],
      [{ code: "transaction_begin" }, "BEGIN of a read-write transaction"],
      [{ code: "read_only_transaction" }, "read-only transaction"],
      [{ code: "serializable_transaction" }, "SERIALIZABLE transaction (a hot standby refuses it)"],
      [{ code: "first_statement", target: "primary", why: { code: "not_read_only", why: DELETE } }, "transaction follows its first statement (DELETE writes)"],
      [{ code: "first_statement", target: "primary", why: { code: "no_replica", wanted: { code: "read_only" } } }, "transaction follows its first statement (no healthy replica (wanted: read-only query))"],
      [{ code: "no_replica", wanted: { code: "hint", target: "replica" } }, "no healthy replica (wanted: hint: replica)"],
      [{ code: "replica_refused", why: UNKNOWN }, "replica requested for a statement that may write (calls my_func(), not known to be read-only): refused"],
      [{ code: "pinned", target: "primary", why: "temp_table" }, "session pinned to its connection on the primary (temporary table)"],
      [{ code: "pins_session", why: "advisory_lock" }, "pins the session to its connection (session advisory lock): the primary"],
      [{ code: "read_your_writes", wanted: { code: "read_only" } }, "read-your-writes: the session wrote recently (wanted: read-only query)"],
    ];
    for (const [r, text] of cases) expect(describeRoute(r)).toBe(text);
  });
});
