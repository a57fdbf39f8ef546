#!/usr/bin/env bun
/**
 * The long fuzz run (`bun run fuzz`): every target of targets.ts for at least `--runs` inputs (default 1,000,000),
 * each within `--minutes` (default 10), in batches with their own seeds so progress shows and any failure can be
 * replayed. Prints the inputs run per target; exits 1 on a finding.
 *
 *   bun run fuzz                           # 1,000,000 inputs per target
 *   bun run fuzz -- --runs 50000 --only demux
 */
import fc from "fast-check";
import { parseArgs } from "node:util";
import { TARGETS } from "./targets.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "1000000" },
    minutes: { type: "string", default: "10" },
    only: { type: "string" },
    seed: { type: "string" },
  },
});
const runs = Number(values.runs);
const budgetMs = Number(values.minutes) * 60_000;
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const BATCH = 50_000;

console.log(`pgroute fuzz: ${runs.toLocaleString("en")} inputs per target, ${values.minutes} min each at most, seed ${seed}`);
let failed = false;
const summary: string[] = [];
for (const target of TARGETS) {
  if (values.only && !target.name.includes(values.only)) continue;
  const started = performance.now();
  let done = 0;
  let batch = 0;
  let finding: string | null = null;
  while (done < runs && performance.now() - started < budgetMs) {
    const n = Math.min(BATCH, runs - done);
    const batchSeed = (seed + batch * 7919) % 2 ** 31;
    const out = fc.check(
      fc.property(target.arbitrary, (input) => target.run(input)),
      { numRuns: n, seed: batchSeed },
    );
    done += out.numRuns;
    batch++;
    if (out.failed) {
      finding = `${fc.defaultReportMessage(out) ?? "failed"}\n  replay: FUZZ_SEED=${batchSeed} FUZZ_RUNS=${n} bun test tests/fuzz -t "${target.name}"`;
      break;
    }
    if (process.stdout.isTTY) process.stdout.write(`\r  ${target.name}: ${done.toLocaleString("en")}`);
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const line = `${target.name.padEnd(22)} ${done.toLocaleString("en").padStart(11)} inputs  ${seconds.padStart(6)} s  ${finding ? "FAILED" : done >= runs ? "ok" : "time limit"}`;
  process.stdout.write(`${process.stdout.isTTY ? "\r\x1b[2K" : ""}${line}\n`);
  summary.push(line);
  if (finding) {
    failed = true;
    console.log(finding);
  } else if (done < runs) failed = true;
}
console.log(`\n${summary.join("\n")}`);
process.exitCode = failed ? 1 : 0;
