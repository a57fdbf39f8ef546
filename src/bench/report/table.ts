/** The plain-text report: a table per workload with a row per target (medians over rounds, min–max). */
import type { BenchResults, ScenarioResult } from "../results.ts";
import { fmtMs, fmtRatio, fmtShare, fmtSpread, fmtTps } from "./format.ts";

export const TABLE_COLUMNS = ["target", "tps (min–max)", "vs direct", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "on replicas"] as const;

/** Rows of cells; the first column and the tps column are left-aligned, the rest right-aligned. */
export function alignTable(rows: readonly (readonly string[])[], left: ReadonlySet<number>): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  const line = (r: readonly string[]) => r.map((cell, c) => (left.has(c) ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ").trimEnd();
  const [head, ...body] = rows;
  return [line(head!), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/** The cells of one scenario's table, header first. */
export function scenarioRows(s: ScenarioResult): string[][] {
  const rows: string[][] = [[...TABLE_COLUMNS]];
  for (const t of s.targets) {
    const m = t.summary;
    rows.push([
      t.target,
      fmtSpread(m.tps, fmtTps),
      fmtRatio(m.vsDirect),
      fmtMs(m.latencyMs.p50.median),
      fmtMs(m.latencyMs.p95.median),
      fmtMs(m.latencyMs.p99.median),
      fmtMs(m.latencyMs.max.median),
      String(m.errors),
      fmtShare(m.replicaShare),
    ]);
  }
  return rows;
}

function errorLines(s: ScenarioResult): string[] {
  const lines: string[] = [];
  for (const t of s.targets) {
    const codes: Record<string, number> = {};
    for (const r of t.rounds) for (const [c, n] of Object.entries(r.errorCodes)) codes[c] = (codes[c] ?? 0) + n;
    const list = Object.entries(codes).sort((a, b) => b[1] - a[1]);
    if (list.length > 0) lines.push(`  errors of ${t.target}: ${list.map(([c, n]) => `${c} ×${n}`).join(", ")}`);
  }
  return lines;
}

function countersNote(r: BenchResults): string {
  switch (r.counters) {
    case "pg_stat_statements":
      return "on replicas: share of the statements the servers ran, from pg_stat_statements on each node (exact)";
    case "pg_stat_database":
      return "on replicas: share of the transactions the servers counted in pg_stat_database (approximate: counts are published up to 10 s late)";
    case null:
      return "on replicas: not measured (no nodes known, or --no-counters)";
  }
}

/** The whole text report. */
export function renderTable(r: BenchResults): string {
  const s = r.settings;
  const out: string[] = [];
  for (const sc of r.scenarios) {
    out.push(
      `${sc.id} — ${s.clients} client(s), ${s.rounds} round(s) × ${s.durationS} s, median (min–max) over rounds`,
      "",
      alignTable(scenarioRows(sc), new Set([0, 1])),
      ...errorLines(sc),
      "",
    );
  }
  out.push(countersNote(r));
  const hasDirect = r.targets.some((t) => t.kind === "direct");
  out.push(hasDirect ? "vs direct: median tps over the direct target's median tps" : "vs direct: no --direct target in this run");
  return out.join("\n");
}
