/**
 * A session as the router sees it: whether a transaction is open and on which node, `SET pgroute.target`,
 * `default_transaction_read_only`, and a BEGIN held back under `transactions = "first-statement"`. Shared by
 * `pgroute serve` (which also learns the real transaction state from ReadyForQuery) and `pgroute explain` (which
 * simulates it), so both decide through the same {@link route}.
 */
import { classify, classifyUncached, type Classification, type FunctionLists } from "./classify.ts";
import { sessionEffects, type PinReason, type SessionOp } from "./effects.ts";
import { hintIn, type Target } from "./hints.ts";
import { shape, type Shape } from "./lexer.ts";
import { parseSql } from "./parser.ts";
import { route, type Route, type RouteContext, type TargetSetting } from "./route.ts";

/** Settings pgroute answers itself: `SET/RESET/SHOW pgroute.<name>`. */
export type Virtual =
  | { op: "set"; name: string; value: string }
  | { op: "reset"; name: string }
  | { op: "show"; name: string };

export interface RouterOptions {
  functions: FunctionLists;
  transactions: "primary" | "first-statement";
  userTarget: TargetSetting;
  /** The session's `default_transaction_read_only` at login (on for read-only users: their BEGIN may use a replica). */
  defaultReadOnly?: boolean;
  /**
   * Parse every statement, bypassing the shape cache (`pgroute explain`): a statement the parser rejects can share
   * its shape with one it accepts (`select 1abc` and `select 1`), and a tool must report the error either way.
   */
  uncached?: boolean;
}

export interface Decision {
  route: Route;
  classification: Classification;
  hint: Target | null;
}

/** Fills the reused routing context before its first use. */
const READ_PLACEHOLDER: Classification = { readOnly: true, reason: { code: "read_only" }, tx: null, statements: 1 };

const TARGETS: readonly string[] = ["primary", "replica", "auto"];
const VIRTUAL = /^(set|reset|show) (session )?pgroute\./;
/** `SET [SESSION] pgroute.<name> =|TO <word>` on a shape key (words lower-cased, literals already `?`). */
const BARE_WORD = /^set (?:session )?(pgroute\.[a-z_][a-z0-9_$]*) ?(?:=|to) ?([a-z_][a-z0-9_$]*) ?;?$/;

/**
 * Whether the shape key starts with `set`, `show` or `reset`: checked before the regular expression, which every
 * statement would otherwise run (a SELECT starts with `s` too), and which is a call into the runtime.
 */
function mayBeVirtual(key: string): boolean {
  const c = key.charCodeAt(0);
  if (c === 0x72) return key.startsWith("reset ");
  if (c !== 0x73) return false;
  const c1 = key.charCodeAt(1);
  return (c1 === 0x65 && key.charCodeAt(2) === 0x74) || (c1 === 0x68 && key.charCodeAt(2) === 0x6f && key.charCodeAt(3) === 0x77); // se(t), sho(w)
}

/** A `SET/RESET/SHOW pgroute.*` statement, or null. Cheap for everything else (a prefix check on the shape). */
export function virtualSetting(sql: string, key: string = shape(sql).key): Virtual | null {
  if (!mayBeVirtual(key) || !VIRTUAL.test(key)) return null;
  const parsed = parseSql(sql);
  if (!parsed.ok) {
    // PRIMARY is a reserved word, so Postgres's grammar rejects `SET pgroute.target = primary`; the setting and its
    // values are pgroute's own, so a single bare word is taken as written.
    const m = BARE_WORD.exec(key);
    return m ? { op: "set", name: m[1]!, value: m[2]! } : null;
  }
  if ((parsed.tree.stmts ?? []).length !== 1) return null;
  const stmt = parsed.tree.stmts![0]!.stmt as Record<string, any>;
  if (stmt.VariableShowStmt) return { op: "show", name: String(stmt.VariableShowStmt.name).toLowerCase() };
  const s = stmt.VariableSetStmt;
  if (!s || s.is_local) return null;
  const name = String(s.name).toLowerCase();
  if (s.kind === "VAR_RESET" || s.kind === "VAR_SET_DEFAULT") return { op: "reset", name };
  const arg = s.args?.[0]?.A_Const;
  const value = arg?.sval?.sval ?? (arg?.ival ? String(arg.ival.ival ?? 0) : undefined);
  return value === undefined ? null : { op: "set", name, value: String(value) };
}

/** `default_transaction_read_only` set by a statement: its new value, or null when it does not touch it. */
function defaultReadOnlyChange(sql: string): boolean | "reset" | null {
  if (!/default_transaction_read_only/i.test(sql)) return null;
  const parsed = parseSql(sql);
  if (!parsed.ok) return null;
  let out: boolean | "reset" | null = null;
  for (const raw of parsed.tree.stmts ?? []) {
    const s = (raw.stmt as Record<string, any>).VariableSetStmt;
    if (!s || s.is_local || String(s.name).toLowerCase() !== "default_transaction_read_only") continue;
    if (s.kind === "VAR_RESET" || s.kind === "VAR_SET_DEFAULT") out = "reset";
    else {
      const a = s.args?.[0]?.A_Const;
      const v = String(a?.sval?.sval ?? a?.ival?.ival ?? a?.boolval?.boolval ?? "").toLowerCase();
      out = ["on", "true", "1", "yes"].includes(v);
    }
  }
  return out;
}

export class RouterState {
  /** Where the open transaction runs, or null. */
  transaction: Target | null = null;
  /** A BEGIN held back until the next statement decides where the transaction runs. */
  deferredBegin: string | null = null;
  sessionTarget: TargetSetting = "auto";
  defaultReadOnly = false;
  /**
   * The node whose server connection the session is pinned to (LISTEN, WITH HOLD cursors, …) and why. Serve sets
   * it from the session's real pins before each decision; explain simulates them in {@link RouterState.executed}.
   */
  pinned: { target: Target; why: PinReason } | null = null;
  /** Explain's simulation of the session's pins (serve keeps the real ones in SessionSettings). */
  private readonly pins = new Map<PinReason, Target>();

  private readonly ctx: RouteContext;

  constructor(private readonly opts: RouterOptions) {
    this.defaultReadOnly = opts.defaultReadOnly ?? false;
    this.ctx = {
      statement: READ_PLACEHOLDER,
      hint: null,
      sessionTarget: "auto",
      userTarget: opts.userTarget,
      defaultReadOnly: false,
      transaction: null,
      replicaAvailable: false,
      transactions: opts.transactions,
      pinned: null,
      pins: null,
    };
  }

  /**
   * Decides where `sql` runs (`sh`: its shape, `ops`: its session effects, when the caller has them). Does not
   * change the state: see {@link RouterState.executed}.
   */
  decide(sql: string, replicaAvailable: boolean, sh: Shape = shape(sql), ops: readonly SessionOp[] = sessionEffects(sql, sh.key)): Decision {
    const classification = this.classify(sql, sh.key);
    const hint = sh.comments.length > 0 ? hintIn(sh.comments) : null;
    // One context object per session, refilled: deciding allocates nothing in the common case.
    const ctx = this.ctx;
    ctx.statement = classification;
    ctx.hint = hint;
    ctx.sessionTarget = this.sessionTarget;
    ctx.defaultReadOnly = this.defaultReadOnly;
    ctx.transaction = this.transaction;
    ctx.replicaAvailable = replicaAvailable;
    ctx.pinned = this.pinned;
    ctx.pins = ops.length > 0 ? firstPin(ops) : null;
    let r = route(ctx);
    if (this.deferredBegin && r.target !== "defer" && r.target !== "refuse" && r.reason.code !== "first_statement") {
      r = { target: r.target, reason: { code: "first_statement", target: r.target, why: r.reason } };
    }
    return { route: r, classification, hint };
  }

  /** What `sql` (of shape key `key`) is, as {@link RouterState.decide} sees it. */
  classify(sql: string, key: string): Classification {
    return this.opts.uncached ? classifyUncached(sql, this.opts.functions) : classify(sql, this.opts.functions, key);
  }

  /** Applies a `SET/RESET pgroute.*`; returns an error message for a bad name or value. */
  setVirtual(v: Virtual): string | null {
    if (v.name !== "pgroute.target") return `unrecognized configuration parameter "${v.name}"`;
    if (v.op === "reset") {
      this.sessionTarget = "auto";
      return null;
    }
    if (v.op !== "set") return null;
    const value = v.value.toLowerCase();
    if (!TARGETS.includes(value)) return `invalid value for parameter "pgroute.target": "${v.value}" (expected primary, replica or auto)`;
    this.sessionTarget = value as TargetSetting;
    return null;
  }

  showVirtual(name: string): string | null {
    return name === "pgroute.target" ? this.sessionTarget : null;
  }

  /** Follows `SET/RESET default_transaction_read_only` (which decides where a later BEGIN may go). */
  noteSettings(sql: string, c?: Classification): void {
    // Only SET/RESET statements (or strings holding one) can change it; the rest are not looked at.
    if (c && c.reason.code !== "session_command" && c.statements < 2) return;
    const change = defaultReadOnlyChange(sql);
    if (change !== null) this.defaultReadOnly = change === "reset" ? (this.opts.defaultReadOnly ?? false) : change;
  }

  /**
   * Records that `sql` was sent where `target` says and, for explain, what it did to the transaction. `status` is
   * the real ReadyForQuery status when known (serve); without it (explain) the statement's transaction control
   * is assumed to succeed.
   */
  executed(sql: string, d: Decision, target: Target, status?: number): void {
    this.noteSettings(sql);
    if (status !== undefined) {
      this.transaction = status === 0x49 /* 'I' */ ? null : target;
      return;
    }
    const tx = d.classification.tx;
    if (tx?.kind === "begin") this.transaction = target;
    else if (tx?.kind === "commit" || tx?.kind === "rollback") this.transaction = null;
    // The pins as serve keeps them (TransactionRelay.pinFor and SessionSettings.ready): taken when the statement is
    // sent, given up by DISCARD ALL and (for LISTEN) UNLISTEN *.
    for (const op of sessionEffects(sql)) {
      if (op.op === "pin" && !this.pins.has(op.reason)) this.pins.set(op.reason, target);
      else if (op.op === "discard_all") this.pins.clear();
      else if (op.op === "unlisten_all") this.pins.delete("listen");
    }
    const [first] = this.pins;
    this.pinned = first ? { target: first[1], why: first[0] } : null;
  }
}

function firstPin(ops: readonly SessionOp[]): PinReason | null {
  for (const op of ops) if (op.op === "pin") return op.reason;
  return null;
}
