/**
 * The built-in workloads, written as pgbench scripts over pgbench's tables (so results compare with
 * `pgbench -S`, `-b tpcb-like` and friends, and a database initialised by `pgbench -i` works as is).
 */
import { BenchError } from "./errors.ts";
import { compileScript } from "./compile.ts";
import type { Script } from "./script.ts";

export const WORKLOADS = ["read-only", "read-write", "tpcb", "churn", "custom"] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

export const PROTOCOLS = ["simple", "prepared"] as const;
/** `simple`: Query messages with the values written in; `prepared`: named statements, parsed once per connection. */
export type Protocol = (typeof PROTOCOLS)[number];

/** pgbench's select-only script. */
export const SELECT_ONLY = `\\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
`;

/** One autocommit write, for the read-write mix. */
export const UPDATE_ONE = `\\set aid random(1, 100000 * :scale)
\\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
`;

/** pgbench's tpcb-like script: five statements in one transaction. */
export const TPCB_LIKE = `\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
`;

/** One workload as run: which scripts, how they are sent, and whether every transaction opens a new connection. */
export interface Scenario {
  /** `read-only/simple`, `tpcb/prepared`, … — the heading of its table. */
  id: string;
  workload: WorkloadName;
  protocol: Protocol;
  scripts: Script[];
  /** A new connection per transaction (pgbench -C). */
  churn: boolean;
  /** Whether the workload writes (then it needs the primary; and the data set must be writable). */
  writes: boolean;
}

export interface ScenarioOptions {
  /** Share of read transactions in `read-write`, 0–1. */
  readRatio: number;
  /** The text of `--sql FILE` and its name, for `custom`. */
  custom?: { name: string; text: string };
}

/** The scripts of one workload. The parser must be loaded (see `compileScript`). */
export function workloadScripts(workload: WorkloadName, o: ScenarioOptions): Script[] {
  switch (workload) {
    case "read-only":
    case "churn":
      return [compileScript(workload, SELECT_ONLY)];
    case "read-write": {
      const reads = Math.round(o.readRatio * 1000);
      const scripts = [];
      if (reads > 0) scripts.push(compileScript("read", SELECT_ONLY, reads));
      if (reads < 1000) scripts.push(compileScript("write", UPDATE_ONE, 1000 - reads));
      return scripts;
    }
    case "tpcb":
      return [compileScript("tpcb", TPCB_LIKE)];
    case "custom":
      if (!o.custom) throw new BenchError("the custom workload needs --sql FILE");
      return [compileScript(o.custom.name, o.custom.text)];
  }
}

/** Every workload × protocol combination asked for, in the order given. */
export function scenarios(workloads: readonly WorkloadName[], protocols: readonly Protocol[], o: ScenarioOptions): Scenario[] {
  const out: Scenario[] = [];
  for (const workload of workloads) {
    const scripts = workloadScripts(workload, o);
    const label = workload === "custom" ? o.custom!.name : workload;
    for (const protocol of protocols) {
      out.push({
        id: `${label}/${protocol}`,
        workload,
        protocol,
        scripts,
        churn: workload === "churn",
        writes: scripts.some((s) => !s.readOnly),
      });
    }
  }
  return out;
}
