/**
 * Statement timeouts. The policy (`statement_timeout` per user, else `[policy]`) is a maximum: every statement
 * pgroute forwards runs with at most that `statement_timeout` on the server, and a statement that runs longer gets
 * the server's own `57014 canceling statement due to statement timeout`.
 *
 * - The effective value is the client's own when it is lower (and not 0), else the policy's. It is part of the
 *   session's settings (src/session/settings.ts), so it is applied with them — once per server connection, in the
 *   same round trip as a request, and not at all when the connection already has it.
 * - A client may lower it (`SET`, `SET LOCAL`, `set_config`, startup options) and the lower value holds.
 * - A client that raises it, sets 0, RESETs it or DISCARDs ALL is capped: its statement runs (the SET succeeds), and
 *   pgroute restores the cap before the next statement runs on that connection, inside a transaction too. So no
 *   other statement may follow such a change in the same request (a multi-statement Query, or Executes before one
 *   Sync): such a request is refused (42501) — see {@link timeoutChange}.
 *
 * Not seen: settings changed inside functions or DO blocks (`SET` clauses of a function apply only while it runs).
 */
import { constString } from "../router/effects.ts";
import { parseSql } from "../router/parser.ts";

type Node = Record<string, any>;

/** Milliseconds per unit of a time setting (guc.c: memory units aside, "us", "ms", "s", "min", "h", "d"). */
const UNITS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, min: 60_000, h: 3_600_000, d: 86_400_000 };
const GUC_TIME = /^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-z]*)\s*$/;

/**
 * A `statement_timeout` value as Postgres reads it: a number of milliseconds, optionally with a unit (`'5s'`,
 * `'1.5min'`, `'250 ms'`), rounded to whole milliseconds. Null for anything the server would reject.
 */
export function timeoutMs(value: string): number | null {
  const m = GUC_TIME.exec(value);
  if (!m) return null;
  const unit = m[2] === "" ? 1 : UNITS[m[2]!];
  if (unit === undefined) return null;
  const ms = Math.round(Number(m[1]) * unit);
  return Number.isFinite(ms) && ms >= 0 && ms <= 2 ** 31 - 1 ? ms : null;
}

/** Whether a client's own value keeps the policy: a limit (not 0) no higher than the cap. */
export function withinCap(value: string | undefined, capMs: number): boolean {
  if (value === undefined) return false;
  const ms = timeoutMs(value);
  return ms !== null && ms > 0 && ms <= capMs;
}

/** The statement that applies the cap. */
export function capSql(capMs: number): string {
  return `SET statement_timeout = ${capMs}`;
}

/** What a request does to statement_timeout, beyond what its own statements run with. */
export type TimeoutChange =
  /** Nothing, or only a lowering the cap allows. */
  | "none"
  /** It leaves a value above the cap (or unknown): the cap is restored before anything else runs there. */
  | "cap"
  /** Such a change followed by more statements in the same request, which would run uncapped: refused. */
  | "refuse";

/** Whether a parse tree can change statement_timeout at all (structural: no values looked at, so cacheable). */
export function mayChangeTimeout(stmts: readonly { stmt?: unknown }[]): boolean {
  return stmts.some((s) => changeOf(s.stmt as Node) !== null || hasSetConfig(s.stmt));
}

/**
 * How the statements of `sql` change statement_timeout under a cap of `capMs`, from the values they set. Called only
 * for strings {@link mayChangeTimeout} flagged (values are literals, which the shape cache does not see).
 */
export function timeoutChange(sql: string, capMs: number): TimeoutChange {
  const parsed = parseSql(sql);
  if (!parsed.ok) return "none"; // the server rejects it too: nothing changes
  const stmts = parsed.tree.stmts ?? [];
  let result: TimeoutChange = "none";
  stmts.forEach((s, i) => {
    const node = s.stmt as Node;
    const change = changeOf(node) ?? setConfigChange(node);
    if (change === null || (change !== "unknown" && withinCap(change, capMs))) return;
    result = i < stmts.length - 1 ? "refuse" : result === "refuse" ? "refuse" : "cap";
  });
  return result;
}

/** A SET/RESET of statement_timeout in this statement: the new value, "unknown" (default, reset, computed), or null. */
function changeOf(stmt: Node): string | "unknown" | null {
  const set = stmt.VariableSetStmt as Node | undefined;
  if (set) {
    if (set.kind === "VAR_RESET_ALL") return "unknown";
    if (String(set.name ?? "").toLowerCase() !== "statement_timeout") return null;
    if (set.kind !== "VAR_SET_VALUE") return "unknown";
    return constString((set.args as Node[] | undefined)?.[0]) ?? "unknown";
  }
  if (stmt.DiscardStmt?.target === "DISCARD_ALL") return "unknown";
  return null;
}

/** Calls of set_config anywhere in a tree. */
function hasSetConfig(n: unknown): boolean {
  if (n === null || typeof n !== "object") return false;
  if (Array.isArray(n)) return n.some(hasSetConfig);
  const fc = (n as Node).FuncCall as Node | undefined;
  if (fc && isSetConfig(fc)) return true;
  for (const k in n as Node) if (hasSetConfig((n as Node)[k])) return true;
  return false;
}

function isSetConfig(fc: Node): boolean {
  const parts = (fc.funcname as Node[]).map((p) => String(p.String?.sval ?? "").toLowerCase());
  return parts[parts.length - 1] === "set_config" && (parts.length === 1 || parts[0] === "pg_catalog");
}

/** The value a set_config() in this statement gives statement_timeout: the value, "unknown", or null when none. */
function setConfigChange(stmt: Node): string | "unknown" | null {
  let out: string | "unknown" | null = null;
  const visit = (n: unknown): void => {
    if (n === null || typeof n !== "object") return;
    if (Array.isArray(n)) return n.forEach(visit);
    const fc = (n as Node).FuncCall as Node | undefined;
    if (fc && isSetConfig(fc)) {
      const args = (fc.args ?? []) as Node[];
      const name = constString(args[0]);
      if (name === null) out = "unknown"; // computed: it may be statement_timeout
      else if (name.toLowerCase() === "statement_timeout") {
        const value = constString(args[1]);
        // Several calls: any one that is not within the cap decides.
        out = value === null || out === "unknown" ? "unknown" : out === null ? value : "unknown";
      }
    }
    for (const k in n as Node) visit((n as Node)[k]);
  };
  visit(stmt);
  return out;
}
