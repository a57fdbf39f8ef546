/**
 * Transaction scripts in pgbench's language — the subset its built-in scripts and most custom ones use:
 * `\set name expression` (integer arithmetic, `random(lo, hi)`, `abs`, `least`, `greatest`, variables as `:name`),
 * `\sleep n [us|ms|s]`, and SQL statements that reference variables as `:name`. One run of a script is one
 * transaction in the results, as in pgbench; a script may hold its own BEGIN … COMMIT.
 *
 * This module is what the load-generator threads need (the compiled form, plain data that crosses to them as a
 * message, and its evaluation); compiling a script's text is compile.ts.
 */
import { BenchError } from "./errors.ts";

export type BinaryOp = "+" | "-" | "*" | "/" | "%";
export type FunctionName = "random" | "abs" | "least" | "greatest";

export type Expr =
  | { kind: "int"; value: number }
  | { kind: "var"; name: string }
  | { kind: "neg"; arg: Expr }
  | { kind: "binary"; op: BinaryOp; left: Expr; right: Expr }
  | { kind: "call"; fn: FunctionName; args: Expr[] };

/** One step of a script. A SQL step is its text cut at the variable references: `parts.length === vars.length + 1`. */
export type Step =
  | { kind: "set"; name: string; expr: Expr }
  | { kind: "sleep"; amount: Expr; micros: number }
  | { kind: "sql"; parts: string[]; vars: string[]; prepared: string };

export interface Script {
  /** `read-only`, `tpcb`, or the file name of a custom script. */
  name: string;
  /** Relative frequency when a workload mixes scripts (pgbench's `-b name@weight`). */
  weight: number;
  steps: Step[];
  /** Every statement may run on a replica (pgroute's own classifier says so); decides where `--direct` sends it. */
  readOnly: boolean;
  /** SQL statements per run. */
  statements: number;
  /** Opens a transaction of its own: after a failed statement the client sends ROLLBACK. */
  transactional: boolean;
}

const FUNCTIONS: Record<FunctionName, { min: number; max: number }> = {
  random: { min: 2, max: 2 },
  abs: { min: 1, max: 1 },
  least: { min: 1, max: Number.POSITIVE_INFINITY },
  greatest: { min: 1, max: Number.POSITIVE_INFINITY },
};

type Tok = { t: "int"; v: number } | { t: "var"; v: string } | { t: "name"; v: string } | { t: "op"; v: string };

function tokenize(src: string, where: string): Tok[] {
  const toks: Tok[] = [];
  const re = /\s*(?:(\d+)|:([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*)|([-+*/%(),]))/y;
  let at = 0;
  while (at < src.length) {
    if (/^\s*$/.test(src.slice(at))) break;
    re.lastIndex = at;
    const m = re.exec(src);
    if (!m) throw new BenchError(`${where}: cannot read the expression at "${src.slice(at).trim()}"`);
    at = re.lastIndex;
    if (m[1] !== undefined) toks.push({ t: "int", v: Number(m[1]) });
    else if (m[2] !== undefined) toks.push({ t: "var", v: m[2] });
    else if (m[3] !== undefined) toks.push({ t: "name", v: m[3].toLowerCase() });
    else toks.push({ t: "op", v: m[4]! });
  }
  return toks;
}

/** Parses a pgbench integer expression: `random(1, 100000 * :scale)`, `(:aid - 1) / 100000 + 1`. */
export function parseExpr(src: string, where = "expression"): Expr {
  const toks = tokenize(src, where);
  let i = 0;
  const peek = () => toks[i];
  const isOp = (v: string) => peek()?.t === "op" && peek()!.v === v;
  const expect = (v: string) => {
    if (!isOp(v)) throw new BenchError(`${where}: expected "${v}" in "${src}"`);
    i++;
  };
  const primary = (): Expr => {
    const tok = toks[i++];
    if (!tok) throw new BenchError(`${where}: the expression "${src}" ends too early`);
    if (tok.t === "int") return { kind: "int", value: tok.v };
    if (tok.t === "var") return { kind: "var", name: tok.v };
    if (tok.t === "op" && tok.v === "(") {
      const e = sum();
      expect(")");
      return e;
    }
    if (tok.t === "name") {
      if (!(tok.v in FUNCTIONS)) {
        throw new BenchError(`${where}: unknown function "${tok.v}" (supported: ${Object.keys(FUNCTIONS).join(", ")})`);
      }
      const fn = tok.v as FunctionName;
      expect("(");
      const args: Expr[] = [];
      if (!isOp(")")) {
        args.push(sum());
        while (isOp(",")) {
          i++;
          args.push(sum());
        }
      }
      expect(")");
      const { min, max } = FUNCTIONS[fn];
      if (args.length < min || args.length > max) throw new BenchError(`${where}: ${fn}() takes ${min === max ? min : `at least ${min}`} argument(s), got ${args.length}`);
      return { kind: "call", fn, args };
    }
    throw new BenchError(`${where}: unexpected "${tok.v}" in "${src}"`);
  };
  const unary = (): Expr => {
    if (isOp("-")) {
      i++;
      return { kind: "neg", arg: unary() };
    }
    if (isOp("+")) {
      i++;
      return unary();
    }
    return primary();
  };
  const product = (): Expr => {
    let left = unary();
    while (isOp("*") || isOp("/") || isOp("%")) {
      const op = toks[i++]!.v as BinaryOp;
      left = { kind: "binary", op, left, right: unary() };
    }
    return left;
  };
  const sum = (): Expr => {
    let left = product();
    while (isOp("+") || isOp("-")) {
      const op = toks[i++]!.v as BinaryOp;
      left = { kind: "binary", op, left, right: product() };
    }
    return left;
  };
  const e = sum();
  if (i < toks.length) throw new BenchError(`${where}: unexpected "${toks[i]!.v}" in "${src}"`);
  return e;
}

/** Variables a script can read; `scale` and `client_id` are always set, as in pgbench. */
export type Vars = Record<string, number>;

/** A random integer in [lo, hi], from a uniform [0, 1) source (injected, so runs can be reproduced). */
export function randomInt(lo: number, hi: number, random: () => number): number {
  return lo + Math.floor(random() * (hi - lo + 1));
}

/** Evaluates an expression with pgbench's integer semantics (division truncates toward zero). */
export function evaluate(e: Expr, vars: Vars, random: () => number): number {
  switch (e.kind) {
    case "int":
      return e.value;
    case "var": {
      const v = vars[e.name];
      if (v === undefined) throw new BenchError(`variable "${e.name}" is not set`);
      return v;
    }
    case "neg":
      return -evaluate(e.arg, vars, random);
    case "binary": {
      const a = evaluate(e.left, vars, random);
      const b = evaluate(e.right, vars, random);
      switch (e.op) {
        case "+":
          return a + b;
        case "-":
          return a - b;
        case "*":
          return a * b;
        case "/":
          if (b === 0) throw new BenchError("division by zero");
          return Math.trunc(a / b);
        case "%":
          if (b === 0) throw new BenchError("division by zero");
          return a % b;
      }
      break;
    }
    case "call": {
      const args = e.args.map((x) => evaluate(x, vars, random));
      switch (e.fn) {
        case "random": {
          const [lo, hi] = args as [number, number];
          if (hi < lo) throw new BenchError(`random(${lo}, ${hi}): empty range`);
          return randomInt(lo, hi, random);
        }
        case "abs":
          return Math.abs(args[0]!);
        case "least":
          return Math.min(...args);
        case "greatest":
          return Math.max(...args);
      }
    }
  }
  throw new BenchError("unreachable expression kind");
}

/** The statement text with the variables' values written in as literals (the simple query protocol). */
export function inlineSql(step: Extract<Step, { kind: "sql" }>, values: readonly number[]): string {
  let s = step.parts[0]!;
  for (let i = 0; i < values.length; i++) s += String(values[i]) + step.parts[i + 1]!;
  return s;
}
