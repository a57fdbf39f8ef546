/** `--json FILE`: the results as written, with non-finite numbers (a round without transactions) as null. */
import type { BenchResults } from "../results.ts";

export function renderJson(r: BenchResults): string {
  return `${JSON.stringify(r, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2)}\n`;
}
