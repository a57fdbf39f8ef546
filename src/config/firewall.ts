/**
 * Cross-field checks of `[firewall]`: each rule has the keys its kind needs and no others, names command tags,
 * tables and functions that can exist, and users that are configured; rules that need table sizes have a user the
 * size monitor can log in with. Errors carry key paths like the rest of the schema (`firewall.rules[1].min_rows`).
 */
import type { ConfigError } from "./schema.ts";
import type { FirewallRuleKind } from "./types.ts";
import { parseName } from "../policy/names.ts";
import { knownTag, normalizeTag } from "../policy/tags.ts";

/** A table of the config as validation sees it: converted values, and the keys that failed conversion. */
export interface CheckedTable {
  readonly values: Record<string, unknown>;
  readonly bad: ReadonlySet<string>;
}

/** The key each kind needs besides the common ones; the others are refused for it. */
const KIND_KEY: Record<FirewallRuleKind, string | null> = {
  statement: "statements",
  missing_where: null, // `statements` is optional: DELETE, UPDATE or both (the default)
  unbounded_select: "min_rows",
  select_star: "max_columns",
  tables: "tables",
  functions: "functions",
};
const KIND_KEYS = ["statements", "min_rows", "max_columns", "tables", "functions"] as const;

/** Kinds whose rules read table sizes from the monitor. */
export const SIZE_KINDS: ReadonlySet<FirewallRuleKind> = new Set(["unbounded_select", "select_star"]);

/** Whether a user's configured credentials let a plain client (the size monitor) log in. */
export function hasPassword(user: Record<string, unknown>): boolean {
  return typeof user.server_password === "string" || typeof user.password === "string";
}

export function checkFirewall(firewall: CheckedTable, users: readonly CheckedTable[], errors: ConfigError[]): void {
  const userNames = new Set(users.map((u) => u.values.name).filter((n): n is string => typeof n === "string"));
  const statsUser = firewall.values.stats_user as string | undefined;
  if (statsUser !== undefined) {
    const user = users.find((u) => u.values.name === statsUser);
    if (!user) errors.push({ path: "firewall.stats_user", message: `no user ${JSON.stringify(statsUser)} in [[users]]` });
    else if (!hasPassword(user.values)) {
      errors.push({ path: "firewall.stats_user", message: `user ${JSON.stringify(statsUser)} has no password or server_password to log in with` });
    }
  }
  if (firewall.bad.has("rules")) return;
  const rules = (firewall.values.rules ?? []) as Record<string, unknown>[];
  const seen = new Set<string>();
  let needsSizes = false;
  rules.forEach((rule, i) => {
    const path = `firewall.rules[${i}]`;
    const name = rule.name as string | undefined;
    if (name !== undefined) {
      if (seen.has(name)) errors.push({ path: `${path}.name`, message: `duplicate name ${JSON.stringify(name)}` });
      seen.add(name);
    }
    for (const [j, u] of ((rule.users ?? []) as string[]).entries()) {
      if (!userNames.has(u)) errors.push({ path: `${path}.users[${j}]`, message: `no user ${JSON.stringify(u)} in [[users]]` });
    }
    const kind = rule.kind as FirewallRuleKind | undefined;
    if (kind === undefined) return; // reported as required
    if (SIZE_KINDS.has(kind)) needsSizes = true;
    const wanted = KIND_KEY[kind];
    for (const k of KIND_KEYS) {
      const present = rule[k] !== undefined;
      if (k === wanted && !present) errors.push({ path: `${path}.${k}`, message: `required for kind ${JSON.stringify(kind)}` });
      else if (present && k !== wanted && !(kind === "missing_where" && k === "statements")) {
        errors.push({ path: `${path}.${k}`, message: `not a key of kind ${JSON.stringify(kind)}` });
      }
    }
    checkEntries(kind, rule, path, errors);
  });
  if (needsSizes && statsUser === undefined && !users.some((u) => hasPassword(u.values))) {
    errors.push({
      path: "firewall.stats_user",
      message: "required by rules with min_rows or max_columns: no user has a password the table-size monitor could log in with",
    });
  }
}

/** The entries of a rule's list: known command tags, DELETE/UPDATE, valid SQL names; never an empty list. */
function checkEntries(kind: FirewallRuleKind, rule: Record<string, unknown>, path: string, errors: ConfigError[]): void {
  const list = (key: string) => rule[key] as readonly string[] | undefined;
  const nonEmpty = (key: string) => {
    const l = list(key);
    if (l !== undefined && l.length === 0) errors.push({ path: `${path}.${key}`, message: "expected at least one entry, got an empty array" });
    return l ?? [];
  };
  switch (kind) {
    case "statement":
      nonEmpty("statements").forEach((s, j) => {
        if (!knownTag(normalizeTag(s))) {
          errors.push({ path: `${path}.statements[${j}]`, message: `not a command tag or its first words: ${JSON.stringify(s)} (write it as psql reports it, e.g. "DROP TABLE")` });
        }
      });
      return;
    case "missing_where":
      nonEmpty("statements").forEach((s, j) => {
        if (!["DELETE", "UPDATE"].includes(normalizeTag(s))) errors.push({ path: `${path}.statements[${j}]`, message: `expected "DELETE" or "UPDATE", got ${JSON.stringify(s)}` });
      });
      return;
    case "tables":
    case "functions":
      nonEmpty(kind).forEach((s, j) => {
        if (!parseName(s)) errors.push({ path: `${path}.${kind}[${j}]`, message: `not a SQL name like "accounts" or "billing.invoices": ${JSON.stringify(s)}` });
      });
      return;
    case "unbounded_select":
    case "select_star":
      return;
  }
}
