/**
 * What judging a request costs a user under policies on pgroute's serving path, in µs per statement: a verdict
 * cache hit (one lookup by the statement's shape key, which the router computes anyway) and a miss (the parse,
 * the read-only check and every firewall rule over the tree, then the insert), for a user under one rule of each
 * kind and for a read-only user. Users without policies pay nothing: their requests are not judged.
 *
 *   bun bench/policy.ts                 # a few seconds
 *   bun bench/policy.ts --rounds 25
 *
 * Targets: hit < 2 µs, miss < 100 µs (a miss happens once per statement shape and sizes reload).
 */
import { parseArgs } from "node:util";
import { configFrom } from "../src/config/load.ts";
import { TableSnapshot } from "../src/monitor/tables.ts";
import { judge, Policies } from "../src/policy/policy.ts";
import { DEFAULT_FUNCTIONS } from "../src/router/classify.ts";
import { shape } from "../src/router/lexer.ts";
import { loadParser } from "../src/router/parser.ts";
import { loadavg, machine, machineLine } from "./lib/env.ts";
import { figure, fmt, measure, type Figure } from "./lib/timing.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "15" } } });
const ROUNDS = Math.max(1, Number(values.rounds) || 15);

const config = configFrom({
  nodes: [{ name: "p" }],
  users: [
    { name: "app", password: "x" },
    { name: "reader", password: "x", role: "read-only" },
  ],
  firewall: {
    rules: [
      { name: "ddl", kind: "statement", statements: ["DROP", "TRUNCATE", "ALTER SYSTEM", "DO"], users: ["app"] },
      { name: "where", kind: "missing_where", users: ["app"] },
      { name: "scan", kind: "unbounded_select", min_rows: 100_000, users: ["app"] },
      { name: "star", kind: "select_star", max_columns: 30, users: ["app"] },
      { name: "secrets", kind: "tables", tables: ["payroll.salaries", "audit_log"], users: ["app"] },
      { name: "sleep", kind: "functions", functions: ["pg_sleep"], users: ["app"] },
    ],
  },
});
const policies = new Policies(config, DEFAULT_FUNCTIONS);
const sizes = new TableSnapshot(Array.from({ length: 1000 }, (_, i) => ({ schema: "public", name: `t${i}`, rows: i * 1000, columns: 10 })), 0);

const STATEMENT = (i: number) => `select o.id, o.total, c.name from orders${i} o join customers c on c.id = o.customer_id where o.created_at > now() - interval '1 day' and c.region = 'eu' order by o.total desc limit 20`;

/** Misses: statements of shapes never judged, each round with its own (empty) cache. */
function misses(user: "app" | "reader", n: number): Figure {
  const perRound: number[] = [];
  for (let r = -1; r < ROUNDS; r++) {
    const policy = new Policies(config, DEFAULT_FUNCTIONS).forUser(config.users.find((u) => u.name === user)!);
    const stmts = Array.from({ length: n }, (_, i) => STATEMENT(r * n + i + n));
    const keys = stmts.map((s) => shape(s).key);
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < n; i++) judge(policy, stmts[i]!, keys[i]!, sizes);
    if (r >= 0) perRound.push((Bun.nanoseconds() - t0) / n / 1000);
  }
  return figure(perRound);
}

async function main(): Promise<void> {
  await loadParser();
  console.log(`${machineLine(machine())}; Bun ${Bun.version}; ${ROUNDS} rounds; load average ${loadavg()}`);
  console.log(`µs per statement (${STATEMENT(0).length} chars)      best   median`);
  for (const user of ["app", "reader"] as const) {
    const policy = policies.forUser(config.users.find((u) => u.name === user)!);
    const sql = STATEMENT(0);
    const key = shape(sql).key;
    const hit = measure(ROUNDS, 100_000, () => judge(policy, sql, key, sizes));
    const miss = misses(user, 1_000);
    console.log(user === "app" ? "6 firewall rules" : "read-only role");
    console.log(`  verdict hit (key at hand)     ${fmt(hit)}   target < 2 µs: ${hit.best < 2 ? "met" : "missed"}`);
    console.log(`  verdict miss (parse + judge)  ${fmt(miss)}   target < 100 µs: ${miss.best < 100 ? "met" : "missed"}`);
  }
  console.log(`load average at the end ${loadavg()}`);
}

await main();
