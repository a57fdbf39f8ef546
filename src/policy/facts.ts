/**
 * What the firewall needs to know about a request, read from its parse tree in one walk: the command tags of the
 * statements it runs (nested ones included: a data-modifying CTE, EXPLAIN ANALYZE's statement, a PREPARE's body,
 * COPY's and CREATE TABLE AS's query), DELETE/UPDATE without WHERE, each SELECT's own FROM tables with whether it
 * has a WHERE, a LIMIT and a `*`, and every table and function the request names anywhere.
 *
 * Statements inside definitions (a view's query, a rule's actions, a function's `BEGIN ATOMIC` body, a policy's
 * expressions, a plain EXPLAIN's statement) do not run now: their tables and functions count as touched, the rest
 * does not. What a function or DO block runs cannot be seen (it is text, or lives in the database).
 */
import { commandTag } from "./tags.ts";

type Node = Record<string, any>;

/** A table or function named in a statement, as the catalog spells it. */
export interface Ref {
  readonly schema: string | null;
  readonly name: string;
}

export interface TableRef extends Ref {
  /** The alias it has in its FROM clause, if any. */
  readonly alias: string | null;
}

/** One SELECT (a branch of a set operation counts as one), with the tables of its own FROM clause. */
export interface SelectFact {
  readonly tables: readonly TableRef[];
  /** Has a WHERE, or a LIMIT/FETCH FIRST (its own or its set operation's); `LIMIT ALL` is none. */
  readonly bounded: boolean;
  /** Qualifiers of the `*` in its select list: null for a bare `*`, the name for `t.*`. */
  readonly stars: readonly (string | null)[];
}

export interface Facts {
  readonly tags: string[];
  /** DELETE/UPDATE without WHERE, with the table they change. */
  readonly unfiltered: { statement: "DELETE" | "UPDATE"; table: Ref }[];
  readonly selects: SelectFact[];
  readonly tables: Ref[];
  readonly functions: Ref[];
}

/** Statement types whose inner statements define something and do not run now. */
const DEFINITIONS = new Set(["ViewStmt", "RuleStmt", "CreateFunctionStmt", "CreatePolicyStmt", "AlterPolicyStmt", "CreateTrigStmt"]);

/** DROP of these object types names relations. */
const RELATION_DROPS = new Set(["OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE", "OBJECT_SEQUENCE"]);

function ref(node: Node): TableRef {
  return { schema: node.schemaname ?? null, name: node.relname, alias: node.alias?.aliasname ?? null };
}

/** `[schema, name]` String lists (funcname, objname, DROP's objects): the last two parts. */
function nameList(items: Node[] | undefined): Ref | null {
  const parts = (items ?? []).map((p) => p.String?.sval as string | undefined);
  if (parts.length === 0 || parts.some((p) => p === undefined)) return null;
  return { schema: parts.length > 1 ? parts[parts.length - 2]! : null, name: parts[parts.length - 1]! };
}

/** A LIMIT that bounds: present and not `LIMIT ALL` / `LIMIT NULL`. */
function limited(sel: Node): boolean {
  const c = sel.limitCount as Node | undefined;
  return c !== undefined && !(c.A_Const && c.A_Const.isnull);
}

/** Tables directly in a FROM list (joins included; subqueries and functions are judged as their own SELECTs). */
function fromTables(items: Node[] | undefined, out: TableRef[]): void {
  for (const item of items ?? []) {
    if (item.RangeVar) out.push(ref(item.RangeVar));
    else if (item.JoinExpr) fromTables([item.JoinExpr.larg, item.JoinExpr.rarg], out);
  }
}

function stars(targets: Node[] | undefined): (string | null)[] {
  const out: (string | null)[] = [];
  for (const t of targets ?? []) {
    const fields = t.ResTarget?.val?.ColumnRef?.fields as Node[] | undefined;
    if (!fields || !fields[fields.length - 1]?.A_Star) continue;
    out.push(fields.length > 1 ? (fields[fields.length - 2]?.String?.sval ?? null) : null);
  }
  return out;
}

/** The facts of a request's statements (`stmts` of the parse tree). */
export function factsOf(stmts: readonly { stmt?: unknown }[]): Facts {
  const facts: Facts = { tags: [], unfiltered: [], selects: [], tables: [], functions: [] };

  /** Tables and functions a node names itself (its children are walked separately). */
  const names = (o: Node): void => {
    if (typeof o.relname === "string") facts.tables.push(ref(o));
    if (Array.isArray(o.funcname)) {
      const r = nameList(o.funcname);
      if (r) facts.functions.push(r);
    }
    if (o.ObjectWithArgs) {
      const r = nameList(o.ObjectWithArgs.objname);
      if (r) facts.functions.push(r);
    }
  };

  const statement = (type: string, node: Node, runs: boolean, boundedAbove: boolean): void => {
    names(node);
    if (runs) {
      facts.tags.push(commandTag(type, node));
      if ((type === "DeleteStmt" || type === "UpdateStmt") && !node.whereClause && node.relation) {
        facts.unfiltered.push({ statement: type === "DeleteStmt" ? "DELETE" : "UPDATE", table: ref(node.relation) });
      }
      if (type === "SelectStmt" && (node.op ?? "SETOP_NONE") === "SETOP_NONE" && node.fromClause) {
        const tables: TableRef[] = [];
        fromTables(node.fromClause, tables);
        facts.selects.push({ tables, bounded: boundedAbove || !!node.whereClause || limited(node), stars: stars(node.targetList) });
      }
    }
    if (type === "DropStmt" && RELATION_DROPS.has(node.removeType)) {
      for (const o of (node.objects ?? []) as Node[]) {
        const r = nameList(o.List?.items);
        if (r) facts.tables.push(r);
      }
    }
    // A plain EXPLAIN does not run its statement; EXPLAIN with any ANALYZE option does (as in classify.ts).
    const explainOnly = type === "ExplainStmt" && !(node.options as Node[] | undefined)?.some((o) => o.DefElem?.defname === "analyze");
    const inner = runs && !DEFINITIONS.has(type) && !explainOnly;
    // A set operation's LIMIT bounds its branches.
    const branchBound = type === "SelectStmt" && node.op && node.op !== "SETOP_NONE" && limited(node);
    for (const k in node) {
      const v = node[k];
      if (v === null || typeof v !== "object") continue;
      if (type === "SelectStmt" && (k === "larg" || k === "rarg")) statement("SelectStmt", v, inner, boundedAbove || !!branchBound);
      else walk(v, inner);
    }
  };

  const walk = (n: unknown, runs: boolean): void => {
    if (n === null || typeof n !== "object") return;
    if (Array.isArray(n)) {
      for (const x of n) walk(x, runs);
      return;
    }
    const o = n as Node;
    names(o);
    for (const k in o) {
      const v = o[k];
      if (v === null || typeof v !== "object") continue;
      if (k.endsWith("Stmt") && !Array.isArray(v)) statement(k, v, runs, false);
      else walk(v, runs);
    }
  };

  walk(stmts, true);
  return facts;
}
