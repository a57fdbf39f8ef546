/**
 * What a statement does to its *session*, as the pooling layer needs to know it: session-level settings
 * (`SET`, `RESET`, `set_config(…, false)`), savepoints (which can undo settings), `DISCARD ALL` /
 * `DEALLOCATE ALL`, and features that only work on one server connection for the rest of the session
 * (LISTEN, WITH HOLD cursors, session advisory locks, temporary objects, SQL-level PREPARE).
 *
 * Decided on the real parse tree. Most statements have no session effect, so results are cached by the
 * statement's shape; only statements that do have one are parsed each time (they carry values).
 */
import { HotCache } from "./cache.ts";
import { shape } from "./lexer.ts";
import { parseSql } from "./parser.ts";

/** Why a client must keep its server connection beyond the current transaction. */
export type PinReason = "listen" | "hold_cursor" | "advisory_lock" | "temp_table" | "sql_prepare" | "set_config";

export type SessionOp =
  /** A session-level setting; `sql` replays it on another server connection; `value` when it is one constant. */
  | { op: "set"; name: string; sql: string; value?: string }
  | { op: "reset"; name: string }
  | { op: "reset_all" }
  | { op: "savepoint"; name: string }
  | { op: "rollback_to"; name: string }
  | { op: "release"; name: string }
  /** DISCARD ALL: settings, prepared statements, listeners, temp objects and advisory locks are gone. */
  | { op: "discard_all" }
  /** DEALLOCATE ALL: every prepared statement on the server connection is gone. */
  | { op: "deallocate_all" }
  | { op: "unlisten_all" }
  | { op: "pin"; reason: PinReason }
  /** SQL-level PREPARE/EXECUTE/DEALLOCATE of a name in pgroute's own namespace (its server-side statements). */
  | { op: "reserved"; name: string };

/** Prefix of the server-side names of protocol-level prepared statements (session/prepared.ts). */
export const RESERVED_PREFIX = "pgroute_";

const NONE: readonly SessionOp[] = Object.freeze([]);

// Shapes that parsed to "no session effect" (the common case), so those statements skip the parser.
const quiet = new HotCache<string, true>(10_000);

/** Session effects of a statement string (one or more statements), in order; `key` as for `classify`. */
export function sessionEffects(sql: string, key: string = shape(sql).key): readonly SessionOp[] {
  if (quiet.get(key)) return NONE;
  const parsed = parseSql(sql);
  // A statement the parser rejects will be rejected by the server too: it changes nothing.
  if (!parsed.ok) return NONE;
  const ops: SessionOp[] = [];
  // Statement texts are needed only for SET (replayed as written); positions are in bytes.
  let bytes: Buffer | null = null;
  for (const raw of parsed.tree.stmts ?? []) {
    const stmt = raw.stmt as Node;
    let text = "";
    if (stmt.VariableSetStmt) {
      bytes ??= Buffer.from(sql);
      const loc = raw.stmt_location ?? 0;
      text = bytes.subarray(loc, raw.stmt_len ? loc + raw.stmt_len : bytes.length).toString().trim();
    }
    statementEffects(stmt, text, ops);
  }
  if (ops.length === 0) quiet.set(key, true);
  return ops;
}

type Node = Record<string, any>;

const ADVISORY_SESSION_LOCKS = new Set([
  "pg_advisory_lock",
  "pg_advisory_lock_shared",
  "pg_try_advisory_lock",
  "pg_try_advisory_lock_shared",
]);

/** CURSOR_OPT_HOLD in parsenodes.h. */
const CURSOR_OPT_HOLD = 0x0020;

function statementEffects(stmt: Node, text: string, ops: SessionOp[]): void {
  const [type, node] = Object.entries(stmt)[0] as [string, Node];
  switch (type) {
    case "VariableSetStmt":
      return variableSet(node, text, ops);
    case "ListenStmt":
      ops.push({ op: "pin", reason: "listen" });
      return;
    case "UnlistenStmt":
      if (!node.conditionname) ops.push({ op: "unlisten_all" });
      return;
    case "DeclareCursorStmt":
      if ((node.options ?? 0) & CURSOR_OPT_HOLD) ops.push({ op: "pin", reason: "hold_cursor" });
      break;
    case "PrepareStmt":
      if (reserved(node.name, ops)) return;
      ops.push({ op: "pin", reason: "sql_prepare" });
      return;
    case "ExecuteStmt":
      reserved(node.name, ops);
      break;
    case "DiscardStmt":
      if (node.target === "DISCARD_ALL") ops.push({ op: "discard_all" });
      return;
    case "DeallocateStmt":
      if (node.isall || !node.name) ops.push({ op: "deallocate_all" });
      else reserved(node.name, ops);
      return;
    case "TransactionStmt": {
      const name = node.savepoint_name as string | undefined;
      if (node.kind === "TRANS_STMT_SAVEPOINT" && name) ops.push({ op: "savepoint", name });
      else if (node.kind === "TRANS_STMT_ROLLBACK_TO" && name) ops.push({ op: "rollback_to", name });
      else if (node.kind === "TRANS_STMT_RELEASE" && name) ops.push({ op: "release", name });
      return;
    }
  }
  // Anything else: look through the whole tree for temporary objects and session-scoped function calls.
  walk(stmt, ops);
}

/**
 * Names pgroute gives its shared server-side statements are not the client's to execute or deallocate: another
 * client's statement would run, or vanish under it.
 */
function reserved(name: unknown, ops: SessionOp[]): boolean {
  if (typeof name !== "string" || !name.toLowerCase().startsWith(RESERVED_PREFIX)) return false;
  ops.push({ op: "reserved", name });
  return true;
}

function variableSet(node: Node, text: string, ops: SessionOp[]): void {
  if (node.is_local) return; // SET LOCAL ends with the transaction
  const name = String(node.name ?? "").toLowerCase();
  switch (node.kind) {
    case "VAR_SET_VALUE": {
      const args = (node.args ?? []) as Node[];
      const value = args.length === 1 ? constString(args[0]) : null;
      ops.push(value === null ? { op: "set", name, sql: text } : { op: "set", name, sql: text, value });
      return;
    }
    case "VAR_SET_CURRENT":
      ops.push({ op: "set", name, sql: text });
      return;
    case "VAR_SET_DEFAULT":
    case "VAR_RESET":
      ops.push({ op: "reset", name });
      return;
    case "VAR_RESET_ALL":
      ops.push({ op: "reset_all" });
      return;
    case "VAR_SET_MULTI":
      // SET TRANSACTION … is transaction-scoped; SET SESSION CHARACTERISTICS … changes session defaults.
      if (name === "session characteristics") ops.push({ op: "set", name, sql: text });
      return;
  }
}

/** A constant in a parse tree as text (`'off'`, `0`, `false`, `'5s'::interval`), or null when it is computed. */
export function constString(n: Node | undefined): string | null {
  const c = n?.A_Const;
  if (!c) {
    const cast = n?.TypeCast;
    return cast ? constString(cast.arg) : null;
  }
  if (c.sval) return c.sval.sval ?? "";
  if (c.ival) return String(c.ival.ival ?? 0);
  if (c.fval) return c.fval.fval;
  if (c.boolval) return c.boolval.boolval ? "true" : "false";
  return null;
}

const quote = (s: string) => `'${s.replaceAll("'", "''")}'`;

function funcCall(node: Node, ops: SessionOp[]): void {
  const parts = (node.funcname as Node[]).map((p) => p.String?.sval as string);
  const fn = parts[parts.length - 1]?.toLowerCase() ?? "";
  if (parts.length === 2 && parts[0] !== "pg_catalog") return;
  if (ADVISORY_SESSION_LOCKS.has(fn)) {
    ops.push({ op: "pin", reason: "advisory_lock" });
  } else if (fn === "set_config") {
    const args = (node.args ?? []) as Node[];
    const [name, value, local] = args.map(constString);
    if (args.length !== 3 || name == null || value == null || local == null) {
      // The setting is computed at run time: pgroute cannot replay it, so the session keeps its connection.
      ops.push({ op: "pin", reason: "set_config" });
    } else if (local === "false") {
      ops.push({ op: "set", name: name.toLowerCase(), sql: `SELECT pg_catalog.set_config(${quote(name)}, ${quote(value)}, false)`, value });
    }
  }
}

/** Depth-first walk of a parse tree for function calls and temporary relations. */
function walk(n: unknown, ops: SessionOp[]): void {
  if (Array.isArray(n)) {
    for (const x of n) if (x !== null && typeof x === "object") walk(x, ops);
    return;
  }
  const o = n as Node;
  // One pass over the keys (a lookup of an absent key on these varied objects costs as much as the pass).
  for (const k in o) {
    const v = o[k];
    if (v === null || typeof v !== "object") {
      if (k === "relpersistence" && v === "t") ops.push({ op: "pin", reason: "temp_table" });
      continue;
    }
    if (k === "FuncCall") funcCall(v as Node, ops);
    walk(v, ops);
  }
}
