/**
 * User roles. `read-write` (the default) may do anything the database lets it; `admin` too, and may use the admin
 * console; `read-only` may only read: every statement of every request must be read-only by the classifier's rules
 * (src/router/classify.ts) — a write, a locking clause, a data-modifying CTE, COPY FROM, DO, CALL, a call of a
 * function not known to be read-only, a PREPARE of any of these, `BEGIN READ WRITE`, turning
 * `default_transaction_read_only` off — is refused with 25006 before any server sees it.
 *
 * Read-only users may still SET, SHOW, PREPARE and EXECUTE reads, LISTEN, use cursors and transactions, and call
 * `set_config()` for settings other than the read-only ones. Their server connections run with
 * `default_transaction_read_only = on` as well, so even a function wrongly listed in `read_functions` cannot write.
 */
import type { UserConfig, UserRole } from "../config/types.ts";
import { classifyStatement, describeReason, type FunctionLists } from "../router/classify.ts";
import { constString } from "../router/effects.ts";
import type { TargetSetting } from "../router/route.ts";
import type { Refusal } from "./refusal.ts";

type Node = Record<string, any>;

export function roleOf(user: UserConfig): UserRole {
  return user.role ?? "read-write";
}

/** Whether the user may use the admin console. */
export function isAdmin(user: UserConfig): boolean {
  return roleOf(user) === "admin";
}

export function isReadOnly(user: UserConfig): boolean {
  return roleOf(user) === "read-only";
}

/**
 * Where a session-pooling client of this user is placed: its `target`, and for a read-only user left at `auto`, a
 * replica (the primary when none is up). Transaction pooling routes read-only users' statements per statement,
 * which sends them to replicas too: they only read, and their BEGIN starts a read-only transaction.
 */
export function sessionTarget(user: UserConfig): "primary" | "replica" {
  const t: TargetSetting = user.target === "auto" && isReadOnly(user) ? "replica" : user.target;
  return t === "replica" ? "replica" : "primary";
}

/** Settings that would make a transaction read-write again. */
const READ_ONLY_SETTINGS = new Set(["default_transaction_read_only", "transaction_read_only"]);

const SET_CONFIG = ["set_config", "pg_catalog.set_config"];
const readOnlyLists = new WeakMap<FunctionLists, FunctionLists>();

/**
 * The function lists a read-only user's statements are classified with: `set_config()` is a read for them (it
 * changes the session, not the database, and works on a standby); its read-only settings are checked separately.
 * One object per base lists, so classifications stay cached and shared.
 */
export function readOnlyFunctions(base: FunctionLists): FunctionLists {
  let lists = readOnlyLists.get(base);
  if (!lists) {
    const read = new Set(base.read);
    for (const f of SET_CONFIG) if (!base.write.has(f)) read.add(f);
    lists = { write: base.write, read };
    readOnlyLists.set(base, lists);
  }
  return lists;
}

/** Postgres's spellings of true (parse_bool: unique prefixes of true/yes, on, 1). */
function isTrue(value: string): boolean {
  const v = value.trim().toLowerCase();
  return v === "on" || v === "1" || (v.length > 0 && ("true".startsWith(v) || "yes".startsWith(v)));
}

/**
 * Why the statements of a request may not run for a read-only user (null when they may), and whether that answer
 * depended on a literal — the value given to a read-only setting — so it must not be cached by statement shape.
 * `stmts` is the parse tree's statement list; each statement is judged on its own, so a multi-statement string
 * cannot hide a write behind a transaction statement.
 */
export function readOnlyViolation(stmts: readonly { stmt?: unknown }[], lists: FunctionLists, user: string): { refusal: Refusal | null; literal: boolean } {
  const seen = { literal: false };
  for (const s of stmts) {
    const why = violation(s.stmt as Node, lists, seen);
    if (why) {
      const refusal: Refusal = { code: "25006", message: `pgroute: user "${user}" is read-only: ${why.text}` };
      if (why.unknownFunction) refusal.hint = "List the function in [routing] read_functions if it only reads.";
      return { refusal, literal: seen.literal };
    }
  }
  return { refusal: null, literal: seen.literal };
}

interface Why {
  text: string;
  unknownFunction?: boolean;
}

/** Set when a judgement read a literal. */
interface Seen {
  literal: boolean;
}

function violation(stmt: Node, lists: FunctionLists, seen: Seen): Why | null {
  const c = classifyStatement(stmt, lists);
  if (c.readOnly) return setConfigViolation(stmt, seen);
  switch (c.reason.code) {
    case "transaction_control":
      if (c.tx?.kind === "begin" && c.tx.readOnly === false) return { text: "a read-write transaction (BEGIN READ WRITE)" };
      if (c.tx?.kind === "set_transaction" && c.tx.readOnly === false) return { text: "SET TRANSACTION READ WRITE" };
      return null;
    case "session_command":
      return sessionViolation(stmt, lists, seen);
    case "unknown_function":
      return { text: describeReason(c.reason), unknownFunction: true };
    default:
      return { text: describeReason(c.reason) };
  }
}

/** Session commands are allowed, except those that make transactions read-write, and PREPARE of a write. */
function sessionViolation(stmt: Node, lists: FunctionLists, seen: Seen): Why | null {
  const set = stmt.VariableSetStmt as Node | undefined;
  if (set && set.kind === "VAR_SET_VALUE") {
    const name = String(set.name ?? "").toLowerCase();
    if (READ_ONLY_SETTINGS.has(name)) {
      seen.literal = true;
      if (!isTrue(constString((set.args as Node[] | undefined)?.[0]) ?? "")) return { text: `SET ${name} = off` };
    }
  }
  if (set && set.kind === "VAR_SET_MULTI") {
    for (const o of (set.args ?? []) as Node[]) {
      const d = o.DefElem;
      if (d?.defname === "transaction_read_only" && (d.arg?.A_Const?.ival?.ival ?? 0) !== 1) return { text: "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE" };
    }
  }
  // The body of a SQL PREPARE is checked now: its EXECUTE, later, then runs only what was allowed.
  const prepare = stmt.PrepareStmt as Node | undefined;
  if (prepare?.query) return violation(prepare.query as Node, lists, seen);
  return null;
}

/** `set_config()` of a read-only setting to false, or of a setting whose name is computed. */
function setConfigViolation(root: Node, seen: Seen): Why | null {
  let found: Why | null = null;
  const visit = (n: unknown): void => {
    if (found || n === null || typeof n !== "object") return;
    if (Array.isArray(n)) {
      for (const x of n) visit(x);
      return;
    }
    const fc = (n as Node).FuncCall as Node | undefined;
    if (fc) {
      const parts = (fc.funcname as Node[]).map((p) => String(p.String?.sval ?? "").toLowerCase());
      if (parts[parts.length - 1] === "set_config" && (parts.length === 1 || parts[0] === "pg_catalog")) {
        seen.literal = true;
        const args = (fc.args ?? []) as Node[];
        const name = constString(args[0]);
        if (name === null) found = { text: "set_config() with a computed setting name" };
        else if (READ_ONLY_SETTINGS.has(name.toLowerCase()) && !isTrue(constString(args[1]) ?? "")) found = { text: `set_config('${name}', off)` };
      }
    }
    for (const k in n as Node) visit((n as Node)[k]);
  };
  visit(root);
  return found;
}
