/**
 * Compiling a script's text (see script.ts) on the coordinator: split with psql's rules by the real SQL scanner
 * (libpg-query; call `loadParser()` first), variables checked, each statement judged by pgroute's own classifier.
 */
import { scanSync } from "libpg-query";
import { classify } from "../router/classify.ts";
import { splitScript } from "../router/split.ts";
import { BenchError } from "./errors.ts";
import { parseExpr, type Expr, type Script, type Step } from "./script.ts";

/** Cuts a statement at its `:name` variable references (found by the real SQL scanner, so quotes and `::` casts are safe). */
function cutAtVariables(sql: string): { parts: string[]; vars: string[] } {
  let tokens: { start: number; end: number; text: string; tokenName: string }[];
  try {
    tokens = scanSync(sql).tokens;
  } catch {
    return { parts: [sql], vars: [] };
  }
  const buf = Buffer.from(sql);
  const parts: string[] = [];
  const vars: string[] = [];
  let from = 0;
  for (let i = 0; i + 1 < tokens.length; i++) {
    const colon = tokens[i]!;
    const name = tokens[i + 1]!;
    if (colon.text !== ":" || name.start !== colon.end || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name.text)) continue;
    parts.push(buf.subarray(from, colon.start).toString());
    vars.push(name.text);
    from = name.end;
    i++;
  }
  parts.push(buf.subarray(from).toString());
  return { parts, vars };
}

/** Every variable an expression reads. */
function varsOf(e: Expr): string[] {
  switch (e.kind) {
    case "int":
      return [];
    case "var":
      return [e.name];
    case "neg":
      return varsOf(e.arg);
    case "binary":
      return [...varsOf(e.left), ...varsOf(e.right)];
    case "call":
      return e.args.flatMap(varsOf);
  }
}

/** Variables every script starts with, as in pgbench. */
export const PREDEFINED = ["scale", "client_id"] as const;

const SLEEP_UNITS: Record<string, number> = { us: 1, ms: 1000, s: 1_000_000 };

/**
 * Compiles a script's text. `name` labels errors (`file.sql:3: …`). Meta-commands other than `\set` and `\sleep`
 * are refused rather than ignored, so a script never silently does less than its author meant.
 */
export function compileScript(name: string, text: string, weight = 1): Script {
  const steps: Step[] = [];
  const defined = new Set<string>(PREDEFINED);
  const check = (names: readonly string[], where: string) => {
    for (const n of names) if (!defined.has(n)) throw new BenchError(`${where}: variable :${n} is used before \\set gives it a value`);
  };
  let readOnly = true;
  let transactional = false;
  for (const item of splitScript(text)) {
    const where = `${name}:${item.line}`;
    if (item.kind === "meta") {
      const m = /^\\(\w+)\s*(.*)$/s.exec(item.command);
      const cmd = m?.[1]?.toLowerCase();
      const rest = (m?.[2] ?? "").trim();
      if (cmd === "set") {
        const sm = /^([A-Za-z_][A-Za-z0-9_]*)\s+(.+)$/s.exec(rest);
        if (!sm) throw new BenchError(`${where}: expected \\set NAME EXPRESSION`);
        const expr = parseExpr(sm[2]!, where);
        check(varsOf(expr), where);
        defined.add(sm[1]!);
        steps.push({ kind: "set", name: sm[1]!, expr });
      } else if (cmd === "sleep") {
        const sm = /^(.+?)\s*(us|ms|s)?$/s.exec(rest);
        if (!sm || sm[1]!.trim() === "") throw new BenchError(`${where}: expected \\sleep AMOUNT [us|ms|s]`);
        const amount = parseExpr(sm[1]!, where);
        check(varsOf(amount), where);
        steps.push({ kind: "sleep", amount, micros: SLEEP_UNITS[sm[2] ?? "s"]! });
      } else {
        throw new BenchError(`${where}: unsupported meta-command ${item.command.split(/\s/)[0]} (supported: \\set, \\sleep)`);
      }
      continue;
    }
    const { parts, vars } = cutAtVariables(item.sql);
    check(vars, where);
    const prepared = parts.reduce((acc, p, i) => (i === 0 ? p : `${acc}$${i}${p}`), "");
    const c = classify(prepared);
    if (c.reason.code === "parse_error") throw new BenchError(`${where}: ${c.reason.message}`);
    if (c.tx?.kind === "begin") transactional = true;
    if (!c.readOnly) readOnly = false;
    steps.push({ kind: "sql", parts, vars, prepared });
  }
  const statements = steps.filter((s) => s.kind === "sql").length;
  if (statements === 0) throw new BenchError(`${name}: the script has no SQL statement`);
  return { name, weight, steps, readOnly, statements, transactional };
}
