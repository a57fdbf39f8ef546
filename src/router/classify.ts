/**
 * What a SQL string is, decided on the real PostgreSQL parse tree: read-only (may run on a replica) or not, why,
 * and whether it controls a transaction. When in doubt it is not read-only — a read sent to the primary only
 * wastes capacity, a write sent to a replica is an error the user sees.
 *
 * Read-only means: only SELECT/VALUES/TABLE (also inside EXPLAIN without ANALYZE, DECLARE without HOLD,
 * COPY … TO), SHOW, with no locking clause anywhere, no SELECT INTO, no data-modifying CTE at any depth, and calls
 * only of functions known to be safe on a standby. Results are cached by statement shape (literals and comments do not
 * matter), so repeated statements never reach the parser.
 */
import { BUILTIN_FUNCTIONS } from "./builtins.ts";
import { HotCache } from "./cache.ts";
import { shape } from "./lexer.ts";
import { parseSql } from "./parser.ts";

/** Why a statement is, or is not, read-only. A closed set, so every decision can be explained. */
export type StatementReason =
  | { code: "read_only" }
  | { code: "write_statement"; statement: string }
  | { code: "locking_clause"; clause: string }
  | { code: "select_into" }
  | { code: "writable_cte"; statement: string }
  | { code: "write_function"; name: string }
  | { code: "unknown_function"; name: string }
  | { code: "transaction_control"; statement: string }
  | { code: "session_command"; statement: string }
  | { code: "parse_error"; message: string; position: number }
  | { code: "empty" };

/** Transaction control a statement performs. */
export type TxControl =
  /** `serializable`: ISOLATION LEVEL SERIALIZABLE, which a hot standby refuses even for a read-only transaction. */
  | { kind: "begin"; readOnly: boolean | null; serializable: boolean }
  | { kind: "commit" }
  | { kind: "rollback" }
  | { kind: "savepoint" }
  | { kind: "set_transaction"; readOnly: boolean | null };

export interface Classification {
  readOnly: boolean;
  reason: StatementReason;
  /** Set when the string (its first statement) begins, ends or shapes a transaction. */
  tx: TxControl | null;
  /** Number of statements in the string. */
  statements: number;
}

/** Functions users may add or remove from the built-in judgement (config `write_functions` / `read_functions`). */
export interface FunctionLists {
  write: ReadonlySet<string>;
  read: ReadonlySet<string>;
}

/**
 * Built-in functions that fail on a standby or change state that must live on the primary: sequences, advisory
 * locks, transaction ids, WAL positions, large objects, notifications, settings, replication and maintenance.
 */
export const WRITE_FUNCTIONS: ReadonlySet<string> = new Set([
  "nextval", "setval", "currval", "lastval",
  "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
  "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared", "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared",
  "pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all",
  "txid_current", "txid_current_if_assigned", "pg_current_xact_id", "pg_current_xact_id_if_assigned",
  "pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn", "pg_switch_wal",
  "pg_create_restore_point", "pg_backup_start", "pg_backup_stop", "pg_promote",
  "lo_create", "lo_creat", "lo_import", "lo_export", "lo_unlink", "lo_open", "lo_close", "lo_put", "lo_from_bytea",
  "lo_truncate", "lo_truncate64", "lo_lseek", "lo_lseek64", "lo_tell", "lo_tell64", "lowrite", "loread", "lo_get",
  "set_config", "pg_notify", "setseed",
  "pg_create_physical_replication_slot", "pg_create_logical_replication_slot", "pg_drop_replication_slot",
  "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot", "pg_replication_slot_advance",
  "pg_logical_emit_message", "pg_replication_origin_create", "pg_replication_origin_drop",
  "pg_replication_origin_advance", "pg_replication_origin_session_setup", "pg_replication_origin_session_reset",
  "pg_replication_origin_xact_setup", "pg_replication_origin_xact_reset",
  "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
  "pg_stat_reset_single_function_counters", "pg_stat_reset_slru", "pg_stat_reset_replication_slot",
  "pg_stat_reset_subscription_stats", "pg_reload_conf", "pg_rotate_logfile", "pg_cancel_backend",
  "pg_terminate_backend", "pg_import_system_collations", "pg_log_backend_memory_contexts",
  "brin_summarize_new_values", "brin_summarize_range", "brin_desummarize_range", "gin_clean_pending_list",
  "pg_sequence_last_value",
]);

export const DEFAULT_FUNCTIONS: FunctionLists = { write: new Set(), read: new Set() };

/** The config's `[routing]` function lists, names lower-cased as the parser reports them. */
export function functionLists(routing: { write_functions: readonly string[]; read_functions: readonly string[] }): FunctionLists {
  return {
    write: new Set(routing.write_functions.map((f) => f.toLowerCase())),
    read: new Set(routing.read_functions.map((f) => f.toLowerCase())),
  };
}

type Node = Record<string, any>;

/** CURSOR_OPT_HOLD in parsenodes.h: DECLARE … WITH HOLD. */
const CURSOR_OPT_HOLD = 0x0020;

/** Classifications by statement shape, per set of function lists (a reload with new lists gets a new cache). */
const caches = new WeakMap<FunctionLists, HotCache<string, Classification>>();

export const classifierStats = { hits: 0, misses: 0 };

/** Classifies a SQL string (one or more statements); `key` is its shape's key when the caller has it already. */
export function classify(sql: string, lists: FunctionLists = DEFAULT_FUNCTIONS, key: string = shape(sql).key): Classification {
  let cache = caches.get(lists);
  if (!cache) {
    cache = new HotCache(20_000);
    caches.set(lists, cache);
  }
  const hit = cache.get(key);
  if (hit) {
    classifierStats.hits++;
    return hit;
  }
  classifierStats.misses++;
  const c = classifyUncached(sql, lists);
  // A parse error may depend on the literal (an unterminated string), so only good parses are cached.
  if (c.reason.code !== "parse_error") cache.set(key, c);
  return c;
}

/** The full parse, for tools (`pgroute explain`) and cache misses. */
export function classifyUncached(sql: string, lists: FunctionLists = DEFAULT_FUNCTIONS): Classification {
  // Only the zero-length string skips the parser (which refuses it): an empty shape may hide an unterminated
  // comment, which only the parser reports.
  if (sql.length === 0) return { readOnly: true, reason: { code: "empty" }, tx: null, statements: 0 };
  const parsed = parseSql(sql);
  if (!parsed.ok) {
    return {
      readOnly: false,
      reason: { code: "parse_error", message: parsed.message, position: parsed.position },
      tx: null,
      statements: 0,
    };
  }
  const stmts = parsed.tree.stmts ?? [];
  if (stmts.length === 0) return { readOnly: true, reason: { code: "empty" }, tx: null, statements: 0 };
  let first: Classification | null = null;
  let control: Classification | null = null;
  for (const s of stmts) {
    const c = statement(s.stmt as Node, lists);
    first ??= c;
    if (c.readOnly) continue;
    // A multi-statement string runs on one node: any statement that may not run on a replica decides. Transaction
    // control decides only when nothing else does, so that `BEGIN READ ONLY; COMMIT; DELETE …` is seen to write
    // (route() sends a read-only transaction to a replica only when the string does nothing but read).
    if (c.reason.code !== "transaction_control") return { ...c, tx: first.tx, statements: stmts.length };
    control ??= c;
  }
  return { ...(control ?? first!), tx: first!.tx, statements: stmts.length };
}

const READ: Classification = Object.freeze<Classification>({ readOnly: true, reason: { code: "read_only" }, tx: null, statements: 1 });

function write(reason: StatementReason, tx: TxControl | null = null): Classification {
  return { readOnly: false, reason, tx, statements: 1 };
}

/** `transaction_read_only` in BEGIN / START TRANSACTION / SET TRANSACTION options: true, false or unsaid. */
function readOnlyOption(options: Node[] | undefined): boolean | null {
  for (const o of options ?? []) {
    const d = o.DefElem;
    if (d?.defname === "transaction_read_only") return (d.arg?.A_Const?.ival?.ival ?? 0) === 1;
  }
  return null;
}

/** Whether BEGIN / START TRANSACTION options ask for ISOLATION LEVEL SERIALIZABLE. */
function serializableOption(options: Node[] | undefined): boolean {
  return (options ?? []).some((o) => o.DefElem?.defname === "transaction_isolation" && String(o.DefElem.arg?.A_Const?.sval?.sval).toLowerCase() === "serializable");
}

/** Statement type names for messages: "InsertStmt" → "INSERT". */
function label(type: string): string {
  const special: Record<string, string> = {
    InsertStmt: "INSERT", UpdateStmt: "UPDATE", DeleteStmt: "DELETE", MergeStmt: "MERGE",
    CreateStmt: "CREATE TABLE", DropStmt: "DROP", TruncateStmt: "TRUNCATE", AlterTableStmt: "ALTER TABLE",
    CopyStmt: "COPY FROM", VacuumStmt: "VACUUM/ANALYZE", CallStmt: "CALL", DoStmt: "DO", LockStmt: "LOCK",
    ListenStmt: "LISTEN", NotifyStmt: "NOTIFY", UnlistenStmt: "UNLISTEN", PrepareStmt: "PREPARE",
    ExecuteStmt: "EXECUTE", DeallocateStmt: "DEALLOCATE", DiscardStmt: "DISCARD", AlterSystemStmt: "ALTER SYSTEM",
    CreateTableAsStmt: "CREATE TABLE AS", RefreshMatViewStmt: "REFRESH MATERIALIZED VIEW", IndexStmt: "CREATE INDEX",
    GrantStmt: "GRANT", ViewStmt: "CREATE VIEW", CheckPointStmt: "CHECKPOINT", SecLabelStmt: "SECURITY LABEL",
    ClosePortalStmt: "CLOSE",
  };
  return special[type] ?? type.replace(/Stmt$/, "").replace(/([a-z])([A-Z])/g, "$1 $2").toUpperCase();
}

/**
 * One statement of a parse tree (`stmts[i].stmt`) judged on its own, for callers that look at each statement of a
 * string (the read-only role, src/policy/roles.ts) rather than at the string as a whole.
 */
export function classifyStatement(stmt: Record<string, unknown>, lists: FunctionLists = DEFAULT_FUNCTIONS): Classification {
  return statement(stmt as Node, lists);
}

function statement(stmt: Node, lists: FunctionLists): Classification {
  const [type, node] = Object.entries(stmt)[0] as [string, Node];
  switch (type) {
    case "SelectStmt":
      return query(stmt, lists);
    case "ExplainStmt": {
      // Any ANALYZE option counts, even `ANALYZE false`: its value may be a literal ('off', 0), which the shape
      // cache does not see, so honouring it would let `(ANALYZE 'on') DELETE …` hit the entry of `(ANALYZE 'off')`.
      const analyze = (node.options as Node[] | undefined)?.some((o) => o.DefElem?.defname === "analyze");
      // EXPLAIN runs nothing; EXPLAIN ANALYZE runs its statement, so it is whatever that statement is. Either way
      // a statement naming session state (EXPLAIN EXECUTE of a prepared statement) goes where that state lives.
      const inner = statement(node.query as Node, lists);
      if (analyze || inner.tx || inner.reason.code === "session_command") return inner;
      return READ;
    }
    case "VariableShowStmt":
      return READ;
    case "DeclareCursorStmt": {
      const q = query(node.query as Node, lists);
      // A WITH HOLD cursor outlives its transaction; the FETCH and CLOSE that name it later are session commands
      // (the primary), so it must be declared there too.
      if (q.readOnly && (node.options ?? 0) & CURSOR_OPT_HOLD) return write({ code: "session_command", statement: "DECLARE WITH HOLD" });
      return q;
    }
    case "CopyStmt":
      if (node.is_from) return write({ code: "write_statement", statement: "COPY FROM" });
      // COPY (query) TO: the query is a statement of its own (INSERT … RETURNING is allowed), judged as one.
      return node.query ? statement(node.query as Node, lists) : READ;
    case "TransactionStmt": {
      const kind = node.kind as string;
      const tx: TxControl =
        kind === "TRANS_STMT_BEGIN" || kind === "TRANS_STMT_START"
          ? { kind: "begin", readOnly: readOnlyOption(node.options), serializable: serializableOption(node.options) }
          : kind === "TRANS_STMT_COMMIT" || kind === "TRANS_STMT_PREPARE" || kind === "TRANS_STMT_COMMIT_PREPARED"
            ? { kind: "commit" }
            : kind === "TRANS_STMT_ROLLBACK" || kind === "TRANS_STMT_ROLLBACK_PREPARED"
              ? { kind: "rollback" }
              : { kind: "savepoint" };
      return write({ code: "transaction_control", statement: kind.replace("TRANS_STMT_", "").replace("_", " ") }, tx);
    }
    case "VariableSetStmt": {
      if (node.kind === "VAR_SET_MULTI" && String(node.name).toUpperCase() === "TRANSACTION") {
        const tx: TxControl = { kind: "set_transaction", readOnly: readOnlyOption(node.args) };
        return write({ code: "transaction_control", statement: "SET TRANSACTION" }, tx);
      }
      return write({ code: "session_command", statement: node.kind === "VAR_RESET" || node.kind === "VAR_RESET_ALL" ? "RESET" : "SET" });
    }
    case "DiscardStmt":
    case "ListenStmt":
    case "UnlistenStmt":
    case "PrepareStmt":
    case "ExecuteStmt":
    case "DeallocateStmt":
    case "FetchStmt":
    case "ClosePortalStmt":
      return write({ code: "session_command", statement: label(type) });
    default:
      return write({ code: "write_statement", statement: label(type) });
  }
}

/** A query tree (SELECT, or a DML inside a CTE) judged as a whole. */
function query(root: Node, lists: FunctionLists): Classification {
  let verdict: Classification = READ;
  /** A SELECT that writes (SELECT INTO, a locking clause), or null. */
  const selectVerdict = (sel: Node): Classification | null => {
    if (sel.intoClause) return write({ code: "select_into" });
    if (sel.lockingClause) {
      const strength = (sel.lockingClause as Node[])[0]?.LockingClause?.strength as string;
      return write({ code: "locking_clause", clause: strength.replace("LCS_", "").replace("FOR", "FOR ").replace("KEY", " KEY ").replace(/\s+/g, " ").trim() });
    }
    return null;
  };
  // One pass over each object's keys. A node of the tree is an object with one key, its type ({ SelectStmt: … }),
  // checked before what it holds; fields are lower-case names, never a node type.
  const visit = (n: unknown): boolean => {
    if (Array.isArray(n)) {
      for (const x of n) if (x !== null && typeof x === "object" && !visit(x)) return false;
      return true;
    }
    const o = n as Node;
    for (const k in o) {
      const v = o[k];
      if (v === null || typeof v !== "object") continue;
      let r: Classification | null = null;
      switch (k) {
        case "InsertStmt":
        case "UpdateStmt":
        case "DeleteStmt":
        case "MergeStmt":
          r = write({ code: "writable_cte", statement: label(k) });
          break;
        case "SelectStmt":
        // The branches of UNION/INTERSECT/EXCEPT are SelectStmts that the tree gives unwrapped (the field's type
        // says what they are): `(SELECT … FOR UPDATE)` in a branch is judged as any SELECT.
        case "larg":
        case "rarg":
          r = selectVerdict(v as Node);
          break;
        case "FuncCall":
          r = functionVerdict(v as Node, lists);
          break;
      }
      if (r) {
        verdict = r;
        return false;
      }
      if (!visit(v)) return false;
    }
    return true;
  };
  visit(root);
  return verdict;
}

/** Null when a call is safe on a standby; otherwise why it is not. */
function functionVerdict(fc: Node, lists: FunctionLists): Classification | null {
  const parts = (fc.funcname as Node[]).map((p) => String(p.String?.sval ?? ""));
  const name = parts[parts.length - 1]!.toLowerCase();
  const schema = parts.length > 1 ? parts[0]!.toLowerCase() : null;
  const qualified = schema ? `${schema}.${name}` : name;
  if (lists.write.has(name) || lists.write.has(qualified)) return write({ code: "write_function", name: qualified });
  if (lists.read.has(name) || lists.read.has(qualified)) return null;
  const builtin = (schema === null || schema === "pg_catalog") && BUILTIN_FUNCTIONS.has(name);
  if (!builtin) return write({ code: "unknown_function", name: qualified });
  if (WRITE_FUNCTIONS.has(name)) return write({ code: "write_function", name: qualified });
  return null;
}

/** A reason in words, for logs and `pgroute explain`. */
export function describeReason(r: StatementReason): string {
  switch (r.code) {
    case "read_only":
      return "read-only query";
    case "write_statement":
      return `${r.statement} writes`;
    case "locking_clause":
      return `locking clause ${r.clause}`;
    case "select_into":
      return "SELECT INTO creates a table";
    case "writable_cte":
      return `data-modifying CTE (${r.statement})`;
    case "write_function":
      return `calls ${r.name}(), which needs the primary`;
    case "unknown_function":
      return `calls ${r.name}(), not known to be read-only`;
    case "transaction_control":
      return `transaction control (${r.statement})`;
    case "session_command":
      return `session command (${r.statement})`;
    case "parse_error":
      return `parse error: ${r.message}`;
    case "empty":
      return "empty statement";
  }
}
