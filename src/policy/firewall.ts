/**
 * The query firewall: rules from `[[firewall.rules]]`, judged on the parse tree of every statement a client sends
 * (never on its text), so comments, quoting, case and whitespace change nothing, and every statement of a
 * multi-statement string counts.
 *
 * | kind               | matches                                                                            |
 * |--------------------|------------------------------------------------------------------------------------|
 * | `statement`        | a statement whose command tag is, or starts with, an entry (`DROP`, `ALTER SYSTEM`) |
 * | `missing_where`    | DELETE / UPDATE without WHERE                                                       |
 * | `unbounded_select` | a SELECT with neither WHERE nor LIMIT over a table of more than `min_rows` rows     |
 * | `select_star`      | `SELECT *` (or `t.*`) over a table of more than `max_columns` columns              |
 * | `tables`           | a statement naming a listed table anywhere (read, written, altered, dropped)       |
 * | `functions`        | a statement naming a listed function anywhere (called, created, dropped)           |
 *
 * Nested statements count where they run (src/policy/facts.ts). Names match conservatively (src/policy/names.ts);
 * sizes come from the table-size monitor (src/monitor/tables.ts). The size rules catch accidents — `WHERE true`
 * satisfies `unbounded_select` — while `tables` and `statement` rules hold against anyone.
 */
import type { FirewallRuleConfig } from "../config/types.ts";
import type { TableSizes } from "../monitor/tables.ts";
import type { Facts, Ref, TableRef } from "./facts.ts";
import { nameMatches, parseName, showName, type QualifiedName } from "./names.ts";
import { normalizeTag, tagMatches } from "./tags.ts";

/** A rule ready to judge facts: `match` says what it matched, or null. */
export interface Rule {
  readonly name: string;
  readonly action: "deny" | "log";
  readonly message: string;
  /** Users it applies to; null: everyone. */
  readonly users: ReadonlySet<string> | null;
  /** Whether it reads table sizes. */
  readonly sizes: boolean;
  match(facts: Facts, sizes: TableSizes): string | null;
}

export interface Match {
  readonly rule: Rule;
  /** What matched, in words (the client's error detail, the log line). */
  readonly detail: string;
}

/** The rules one user is under. */
export class RuleSet {
  /** Whether a deny rule applies (then a statement that cannot be parsed is refused). */
  readonly denies: boolean;
  readonly sizes: boolean;

  constructor(readonly rules: readonly Rule[]) {
    this.denies = rules.some((r) => r.action === "deny");
    this.sizes = rules.some((r) => r.sizes);
  }

  /** The first deny rule that matches, and every log rule that matched before it. */
  evaluate(facts: Facts, sizes: TableSizes): { deny: Match | null; logged: Match[] } {
    const logged: Match[] = [];
    for (const rule of this.rules) {
      const detail = rule.match(facts, sizes);
      if (detail === null) continue;
      if (rule.action === "deny") return { deny: { rule, detail }, logged };
      logged.push({ rule, detail });
    }
    return { deny: null, logged };
  }
}

/** The config's rules, compiled once per config. */
export function compileRules(configs: readonly FirewallRuleConfig[]): Rule[] {
  return configs.map(compile);
}

/** The rules that apply to `user` (null when none does). */
export function rulesFor(rules: readonly Rule[], user: string): RuleSet | null {
  const mine = rules.filter((r) => r.users === null || r.users.has(user));
  return mine.length > 0 ? new RuleSet(mine) : null;
}

function compile(c: FirewallRuleConfig): Rule {
  const base = { name: c.name, action: c.action, message: c.message, users: c.users.length > 0 ? new Set(c.users) : null };
  switch (c.kind) {
    case "statement": {
      const entries = (c.statements ?? []).map(normalizeTag);
      return { ...base, sizes: false, match: (f) => f.tags.find((t) => entries.some((e) => tagMatches(t, e))) ?? null };
    }
    case "missing_where": {
      const which = new Set((c.statements ?? ["DELETE", "UPDATE"]).map(normalizeTag));
      return {
        ...base,
        sizes: false,
        match: (f) => {
          const u = f.unfiltered.find((x) => which.has(x.statement));
          return u ? `${u.statement} without WHERE on table ${showName(u.table.schema, u.table.name)}` : null;
        },
      };
    }
    case "unbounded_select": {
      const min = c.min_rows ?? 0;
      return {
        ...base,
        sizes: true,
        match: (f, sizes) => {
          for (const s of f.selects) {
            if (s.bounded) continue;
            for (const t of s.tables) {
              const rows = sizes.lookup(t.schema, t.name)?.rows ?? 0;
              if (rows > min) return `SELECT without WHERE or LIMIT on table ${showName(t.schema, t.name)} (about ${Math.round(rows)} rows, more than ${min})`;
            }
          }
          return null;
        },
      };
    }
    case "select_star": {
      const max = c.max_columns ?? 0;
      return {
        ...base,
        sizes: true,
        match: (f, sizes) => {
          for (const s of f.selects) {
            for (const star of s.stars) {
              for (const t of starTables(s.tables, star)) {
                const columns = sizes.lookup(t.schema, t.name)?.columns ?? 0;
                if (columns > max) return `SELECT * on table ${showName(t.schema, t.name)} (${columns} columns, more than ${max})`;
              }
            }
          }
          return null;
        },
      };
    }
    case "tables": {
      const names = parsed(c.tables);
      return { ...base, sizes: false, match: (f) => named(f.tables, names, "table") };
    }
    case "functions": {
      const names = parsed(c.functions);
      return { ...base, sizes: false, match: (f) => named(f.functions, names, "function") };
    }
  }
}

function parsed(list: readonly string[] | undefined): QualifiedName[] {
  // Validation refused names that do not parse.
  return (list ?? []).map((n) => parseName(n)!);
}

function named(refs: readonly Ref[], names: readonly QualifiedName[], what: string): string | null {
  for (const r of refs) if (names.some((n) => nameMatches(n, r.schema, r.name))) return `uses ${what} ${showName(r.schema, r.name)}`;
  return null;
}

/** The FROM tables a `*` covers: all of them, or the one its qualifier names (by alias, else by name). */
function starTables(tables: readonly TableRef[], star: string | null): readonly TableRef[] {
  if (star === null) return tables;
  return tables.filter((t) => (t.alias !== null ? t.alias === star : t.name === star));
}
