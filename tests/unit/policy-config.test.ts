// Invariant: policy keys validate like every other key — each mistake in [policy], users' policy keys and
// [[firewall.rules]] is reported with its key path, all at once — and `pgroute explain --user` shows the refusals
// serve would give that user (read-only role, firewall rules), from the same code.
import { beforeAll, describe, expect, test } from "bun:test";
import { explainScript, optionsFrom } from "../../src/cli/explain.ts";
import { configFrom } from "../../src/config/load.ts";
import { formatConfigError, validate } from "../../src/config/schema.ts";
import { loadParser } from "../../src/router/parser.ts";

beforeAll(loadParser);

const base = { nodes: [{ name: "p" }], users: [{ name: "app", password: "pw" }, { name: "rep", auth: "trust" }] };

function errorsOf(raw: unknown): string[] {
  const result = validate(raw);
  return "errors" in result ? result.errors.map(formatConfigError) : [];
}

describe("policy keys", () => {
  test("roles, zones and timeouts per user; 0 switches a timeout off", () => {
    const config = configFrom({
      ...base,
      users: [{ name: "app", password: "pw", role: "admin", zone: "a", statement_timeout: "30s", idle_in_transaction_timeout: 0 }],
      policy: { statement_timeout: "1m", idle_in_transaction_timeout: "5m" },
    });
    expect(config.users[0]).toMatchObject({ role: "admin", zone: "a", statement_timeout_ms: 30_000, idle_in_transaction_timeout_ms: 0 });
    expect(config.policy).toEqual({ statement_timeout_ms: 60_000, idle_in_transaction_timeout_ms: 300_000 });
    expect(errorsOf({ ...base, users: [{ name: "app", password: "pw", role: "superuser", statement_timeout: "-1s" }], policy: { idle_in_transaction_timeout: "soon" } })).toEqual([
      `users[0].role: expected one of "read-write", "read-only", "admin", got "superuser"`,
      `users[0].statement_timeout: expected a duration like "5s" or "250ms", or 0 for none, got "-1s"`,
      `policy.idle_in_transaction_timeout: expected a duration like "5s" or "250ms", or 0 for none, got "soon"`,
    ]);
  });

  test("firewall rules: every mistake, with its key path", () => {
    // Rules whose values all convert; the cross-field checks report every mistake in them at once.
    const converting: unknown[] = [
      { name: "a", kind: "statement" },
      { name: "a", kind: "statement", statements: ["DROPP", "alter system"], users: ["nobody"] },
      { name: "b", kind: "unbounded_select", tables: ["t"] },
      { name: "c", kind: "tables", tables: ["ok.name", "bad name", '"unterminated'] },
      { name: "d", kind: "missing_where", statements: ["INSERT"] },
      { name: "e", kind: "select_star", max_columns: 10, min_rows: 5 },
      { name: "f", kind: "functions", functions: [] },
    ];
    // Values that do not convert are reported first, and the rules are not cross-checked until they do.
    const errors = errorsOf({
      ...base,
      firewall: {
        stats_user: "rep",
        rules: [...converting.slice(0, 4), { ...(converting[4] as object), action: "block" }, ...converting.slice(5), { name: "g", kind: "sometimes" }, { kind: "tables", tables: ["t"], colour: "red" }, "not a table"],
      },
    });
    expect(errors).toEqual([
      `firewall.rules[4].action: expected one of "deny", "log", got "block"`,
      `firewall.rules[7].kind: expected one of "statement", "missing_where", "unbounded_select", "select_star", "tables", "functions", got "sometimes"`,
      `firewall.rules[8].colour: unknown key`,
      `firewall.rules[8].name: required`,
      `firewall.rules[9]: expected a table, got "not a table"`,
      `firewall.stats_user: user "rep" has no password or server_password to log in with`,
    ]);
    const crossField = errorsOf({ ...base, firewall: { stats_user: "rep", rules: converting } });
    expect(crossField).toEqual([
      `firewall.stats_user: user "rep" has no password or server_password to log in with`,
      `firewall.rules[0].statements: required for kind "statement"`,
      `firewall.rules[1].name: duplicate name "a"`,
      `firewall.rules[1].users[0]: no user "nobody" in [[users]]`,
      `firewall.rules[1].statements[0]: not a command tag or its first words: "DROPP" (write it as psql reports it, e.g. "DROP TABLE")`,
      `firewall.rules[2].min_rows: required for kind "unbounded_select"`,
      `firewall.rules[2].tables: not a key of kind "unbounded_select"`,
      `firewall.rules[3].tables[1]: not a SQL name like "accounts" or "billing.invoices": "bad name"`,
      `firewall.rules[3].tables[2]: not a SQL name like "accounts" or "billing.invoices": "\\"unterminated"`,
      `firewall.rules[4].statements[0]: expected "DELETE" or "UPDATE", got "INSERT"`,
      `firewall.rules[5].min_rows: not a key of kind "select_star"`,
      `firewall.rules[6].functions: expected at least one entry, got an empty array`,
    ]);
  });

  test("size rules need a user the table-size monitor can log in as", () => {
    const rules = [{ name: "scan", kind: "unbounded_select", min_rows: 10 }];
    expect(errorsOf({ nodes: [{ name: "p" }], users: [{ name: "t", auth: "trust" }], firewall: { rules } })).toEqual([
      "firewall.stats_user: required by rules with min_rows or max_columns: no user has a password the table-size monitor could log in with",
    ]);
    expect(errorsOf({ ...base, firewall: { rules } })).toEqual([]);
    expect(errorsOf({ ...base, firewall: { stats_user: "ghost" } })).toEqual([`firewall.stats_user: no user "ghost" in [[users]]`]);
  });
});

describe("pgroute explain --user", () => {
  const config = configFrom({
    nodes: [{ name: "p" }],
    users: [
      { name: "app", password: "pw" },
      { name: "rep", auth: "trust", role: "read-only" },
    ],
    firewall: { rules: [{ name: "no-drop", kind: "statement", statements: ["DROP"], message: "not here", users: ["app"] }] },
  });
  const rows = (user: string, script: string) => explainScript(script, optionsFrom(config, user, true)).map((r) => [r.target, r.reason]);

  test("a read-only user: writes refused, BEGIN on a replica", () => {
    expect(rows("rep", "begin;\nselect 1;\ncommit;\ndelete from t;\n")).toEqual([
      ["replica", "read-only transaction"],
      ["replica", "inside a transaction on the replica"],
      ["replica", "inside a transaction on the replica"],
      ["refused", 'pgroute: user "rep" is read-only: DELETE writes'],
    ]);
  });

  test("firewall rules of the user, not of others", () => {
    expect(rows("app", "drop table t;\n")).toEqual([["refused", 'denied by pgroute firewall rule "no-drop": not here (DROP TABLE)']]);
    expect(rows("rep", "drop table t;\n")[0]![0]).toBe("refused"); // read-only, not the rule
    expect(explainScript("drop table t;\n", optionsFrom(config, undefined, true))[0]!.target).toBe("primary");
  });
});
