import pc from "picocolors";
import type { Config } from "../config/types.ts";
import { DEFAULT_FUNCTIONS, functionLists, type FunctionLists } from "../router/classify.ts";
import { loadParser } from "../router/parser.ts";
import { describeRoute, type TargetSetting } from "../router/route.ts";
import { splitScript } from "../router/split.ts";
import { RouterState, virtualSetting } from "../router/state.ts";
import { Consistency } from "../session/consistency.ts";
import { shape } from "../router/lexer.ts";
import { NO_SIZES } from "../monitor/tables.ts";
import { Policies, judge, type UserPolicy } from "../policy/policy.ts";
import { UsageError, parseFlags, type Command } from "./command.ts";
import { loadOrReport } from "./serve.ts";

const help = `Usage: pgroute explain FILE.sql [--json] [--config FILE] [--user NAME] [--no-replicas]

Shows, for every statement of a SQL script (FILE.sql, or - for standard input), where pgroute would send it and
why, simulating one session through the script: transactions, hints (/* pgroute: primary */,
/* read-replica */, …), SET pgroute.target. psql meta-commands (\\d, \\set, …) are skipped with a note.

Options:
  --json          print an array of { line, sql, target, reason, transaction }
  --config FILE   apply that config's [routing] options and function lists
  --user NAME     apply that user's default target, role and firewall rules (with --config); rules on table
                  sizes (min_rows, max_columns) need the database's statistics and are not applied here
  --no-replicas   decide as if no replica were healthy

Exit codes: 0 every statement parsed, 1 some statement did not (message and position printed), 2 usage.`;

/** One line of the report. */
export interface ExplainRow {
  line: number;
  sql: string;
  /** primary | replica | refused | pgroute (answered by pgroute itself) | skipped (psql meta-command) */
  target: string;
  reason: string;
  /** The node of the transaction the statement runs in, or null outside one. */
  transaction: string | null;
  error?: { message: string; position: number };
}

export interface ExplainOptions {
  functions: FunctionLists;
  transactions: "primary" | "first-statement";
  userTarget: TargetSetting;
  replicas: boolean;
  /** The user's policies (role, firewall rules), when a user was named. */
  policy?: UserPolicy | null;
}

/** Runs the router over a script; pure apart from the (loaded) parser. */
export function explainScript(text: string, opts: ExplainOptions): ExplainRow[] {
  const readOnly = opts.policy?.readOnly ?? false;
  const state = new RouterState({ functions: opts.functions, transactions: opts.transactions, userTarget: opts.userTarget, defaultReadOnly: readOnly, uncached: true });
  const rows: ExplainRow[] = [];
  // pgroute.lsn / min_lsn / consistency, answered as serve answers them (explain runs no writes: positions are 0/0).
  const consistency = new Consistency({ mode: "none", stickyMs: 0, waitMs: 0 });
  for (const item of splitScript(text)) {
    if (item.kind === "meta") {
      rows.push({ line: item.line, sql: item.command, target: "skipped", reason: "psql meta-command, not SQL", transaction: state.transaction });
      continue;
    }
    const sql = item.sql;
    const v = virtualSetting(sql);
    if (v) {
      // The same answers serve gives: an error for a name pgroute does not have, SHOW included.
      const own = Consistency.handles(v.name);
      const shown = v.op === "show" ? (own ? consistency.show(v.name) : state.showVirtual(v.name)) : null;
      const err = v.op === "show" ? (shown === null ? `unrecognized configuration parameter "${v.name}"` : null) : own ? consistency.set(v) : state.setVirtual(v);
      const reason = err ?? (v.op === "show" ? `answered by pgroute (${shown})` : "session setting handled by pgroute");
      rows.push({ line: item.line, sql, target: "pgroute", reason, transaction: state.transaction });
      continue;
    }
    // What serve's policies refuse never reaches the router (a statement that does not parse is reported below).
    const refusal = opts.policy ? judge(opts.policy, sql, shape(sql).key, NO_SIZES).refusal : null;
    if (refusal && refusal.code !== "42601") {
      const reason = `${refusal.message}${refusal.detail ? ` (${refusal.detail})` : ""}`;
      rows.push({ line: item.line, sql, target: "refused", reason, transaction: state.transaction });
      continue;
    }
    const d = state.decide(sql, opts.replicas);
    const row: ExplainRow = { line: item.line, sql, target: "", reason: "", transaction: null };
    const c = d.classification;
    if (c.reason.code === "parse_error") row.error = { message: c.reason.message, position: c.reason.position };
    const r = d.route;
    if (r.target === "refuse") {
      row.target = "refused";
      row.reason = describeRoute(r.reason);
    } else if (r.target === "defer") {
      state.deferredBegin = sql;
      row.target = "deferred";
      row.reason = "BEGIN held back: the first statement decides where the transaction runs";
    } else {
      row.target = r.target;
      row.reason = describeRoute(r.reason);
      if (state.deferredBegin && !state.transaction) {
        state.transaction = r.target;
        state.deferredBegin = null;
      }
      state.executed(sql, d, r.target);
    }
    row.transaction = state.transaction ?? (c.tx?.kind === "commit" || c.tx?.kind === "rollback" ? (r.target as string) : null);
    rows.push(row);
  }
  return rows;
}

function shorten(sql: string, width: number): string {
  const one = sql.replace(/\s+/g, " ").trim();
  return one.length > width ? `${one.slice(0, width - 1)}…` : one;
}

function colour(target: string): (s: string) => string {
  switch (target) {
    case "primary":
      return pc.yellow;
    case "replica":
      return pc.green;
    case "refused":
      return pc.red;
    default:
      return pc.dim;
  }
}

export function renderExplain(rows: ExplainRow[], tty: boolean): string {
  const c = (f: (s: string) => string, s: string) => (tty ? f(s) : s);
  const out: string[] = [];
  // One line per statement: a parse error message quotes the statement, which may span lines.
  const oneLine = (s: string) => s.replace(/\s*\n\s*/g, " ");
  for (const r of rows) {
    const target = r.target.padEnd(8);
    out.push(`${String(r.line).padStart(5)}  ${c(colour(r.target), target)}  ${shorten(r.sql, 60).padEnd(60)}  ${c(pc.dim, oneLine(r.reason))}`);
    if (r.error) out.push(`       ${c(pc.red, `parse error at character ${r.error.position} of the statement: ${oneLine(r.error.message)}`)}`);
  }
  const count = (t: string) => rows.filter((r) => r.target === t).length;
  const statements = rows.filter((r) => r.target !== "skipped").length;
  out.push("");
  out.push(
    `${statements} statements: ${count("primary")} to the primary, ${count("replica")} to replicas` +
      (count("refused") ? `, ${count("refused")} refused` : "") +
      (count("deferred") ? `, ${count("deferred")} BEGIN held back` : "") +
      (count("pgroute") ? `, ${count("pgroute")} answered by pgroute` : "") +
      (count("skipped") ? `; ${count("skipped")} psql meta-commands skipped` : "") +
      `; ${rows.filter((r) => r.transaction).length} inside transactions`,
  );
  const errors = rows.filter((r) => r.error).length;
  if (errors) out.push(c(pc.red, `${errors} statement(s) failed to parse`));
  return out.join("\n");
}

export function optionsFrom(config: Config | null, userName: string | undefined, replicas: boolean): ExplainOptions {
  const user = userName ? config?.users.find((u) => u.name === userName) : undefined;
  if (userName && config && !user) throw new UsageError(`--user: no user "${userName}" in the config`);
  const functions = config ? functionLists(config.routing) : DEFAULT_FUNCTIONS;
  const policy = config && user ? new Policies(config, functions).forUser(user) : null;
  return {
    functions: policy?.functions ?? functions,
    transactions: config?.routing.transactions ?? "primary",
    userTarget: user?.target ?? "auto",
    replicas,
    policy: policy && (policy.readOnly || policy.rules) ? policy : null,
  };
}

export const explain: Command = {
  name: "explain",
  summary: "show where each statement of a SQL file would be routed and why",
  help,
  async run(argv) {
    const { values, positionals } = parseFlags(
      argv,
      { json: { type: "boolean" }, config: { type: "string", short: "c" }, user: { type: "string" }, "no-replicas": { type: "boolean" } },
      true,
    );
    if (positionals.length !== 1) throw new UsageError("expected one FILE.sql (or - for standard input)");
    if (values.user && !values.config) throw new UsageError("--user needs --config");
    const file = positionals[0]!;
    let config: Config | null = null;
    if (values.config) {
      config = await loadOrReport(values.config);
      if (!config) return 2;
    }
    const opts = optionsFrom(config, values.user, !values["no-replicas"]);
    let text: string;
    try {
      text = file === "-" ? await Bun.stdin.text() : await Bun.file(file).text();
    } catch {
      console.error(`pgroute explain: cannot read ${file}`);
      return 2;
    }
    await loadParser();
    const rows = explainScript(text, opts);
    if (values.json) console.log(JSON.stringify(rows.map(({ line, sql, target, reason, transaction, error }) => ({ line, sql, target, reason, transaction, ...(error ? { error } : {}) })), null, 2));
    else console.log(renderExplain(rows, Boolean(process.stdout.isTTY)));
    return rows.some((r) => r.error) ? 1 : 0;
  },
};
