// Invariant: no input a peer can send makes a parser throw anything but its own declared error, take more than
// 50 ms, or keep more than it was given (tests/fuzz/targets.ts). A short run per target; `bun run fuzz` runs long.
import { describe, test } from "bun:test";
import fc from "fast-check";
import { TARGETS } from "./targets.ts";

/** Cases per target in `bun test`; FUZZ_RUNS raises it, FUZZ_SEED replays a reported failure. */
const RUNS = Number(process.env.FUZZ_RUNS ?? 3000);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

describe("fuzz", () => {
  for (const target of TARGETS) {
    test(`${target.name}: ${RUNS} inputs`, () => {
      fc.assert(
        fc.property(target.arbitrary, (input) => target.run(input)),
        { numRuns: RUNS, seed: SEED },
      );
    }, 120_000);
  }
});
