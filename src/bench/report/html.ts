/**
 * `--html report.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched) with, per
 * workload, the summary table, the latency distribution of each target and the throughput of each round.
 */
import type { BenchResults, ScenarioResult } from "../results.ts";
import { fmtMs, fmtShare } from "./format.ts";
import { esc, latencyChart, tpsChart } from "./svg.ts";
import { scenarioRows } from "./table.ts";

const CSS = `
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #18181b; margin: 2rem auto; max-width: 980px; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2.5rem; border-bottom: 1px solid #e4e4e7; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: .8rem 0; } th, td { padding: .25rem .6rem; border-bottom: 1px solid #f4f4f5; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.left, th.left { text-align: left; } th { font-weight: 600; background: #fafafa; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; } dt { color: #52525b; } dd { margin: 0; }
.chart { max-width: 100%; height: auto; display: block; margin: .5rem 0 1.2rem; } .note { color: #52525b; font-size: 12px; }
code { font-size: 12px; background: #f4f4f5; padding: .1rem .3rem; border-radius: 3px; }`;

function tableHtml(rows: readonly (readonly string[])[], cls: string): string {
  const [head, ...body] = rows;
  const th = head!.map((h) => `<th>${esc(h)}</th>`).join("");
  const trs = body.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join("")}</tr>`).join("\n");
  return `<table class="${cls}"><thead><tr>${th}</tr></thead><tbody>\n${trs}\n</tbody></table>`;
}

function roundsTable(s: ScenarioResult): string {
  const rows: string[][] = [["target", "round", "transactions", "statements", "errors", "tps", "p50 ms", "p99 ms", "on replicas", "per node"]];
  for (const t of s.targets) {
    for (const r of t.rounds) {
      const nodes = r.nodes ? Object.entries(r.nodes).map(([n, c]) => `${n} ${c}`).join(", ") : "-";
      const share = r.replicaShare === null ? null : { median: r.replicaShare, min: r.replicaShare, max: r.replicaShare };
      rows.push([t.target, String(r.round), String(r.transactions), String(r.statements), String(r.errors), r.tps.toFixed(0), fmtMs(r.latencyMs.p50), fmtMs(r.latencyMs.p99), fmtShare(share), nodes]);
    }
  }
  return tableHtml(rows, "rounds");
}

function scenarioSection(s: ScenarioResult, r: BenchResults): string {
  const scripts = s.scripts.map((x) => `${x.name}${s.scripts.length > 1 ? ` @${x.weight}` : ""}${x.readOnly ? " (read-only)" : ""}`).join(", ");
  return [
    `<section class="scenario" data-scenario="${esc(s.id)}">`,
    `<h2>${esc(s.id)}</h2>`,
    `<p class="note">scripts: ${esc(scripts)}; ${s.protocol} protocol${s.churn ? "; a new connection per transaction" : ""}; ${r.settings.clients} clients, ${r.settings.rounds} round(s) × ${r.settings.durationS} s; median (min–max) over rounds</p>`,
    tableHtml(scenarioRows(s), "summary"),
    `<h3>Latency distribution</h3>`,
    latencyChart(`${s.id}: latency distribution per target`, s.targets.map((t) => ({ name: t.target, bins: t.histogram }))),
    `<h3>Throughput per round</h3>`,
    tpsChart(`${s.id}: transactions per second per round`, s.targets.map((t) => ({ name: t.target, tps: t.rounds.map((x) => x.tps) }))),
    `<details><summary>Every round</summary>${roundsTable(s)}</details>`,
    "</section>",
  ].join("\n");
}

function countersText(r: BenchResults): string {
  switch (r.counters) {
    case "pg_stat_statements":
      return "statements counted by pg_stat_statements on each node (exact)";
    case "pg_stat_database":
      return "transactions counted in pg_stat_database on each node (approximate: published up to 10 s late)";
    case null:
      return "not measured";
  }
}

/** The whole report page. */
export function renderHtml(r: BenchResults): string {
  const m = r.machine;
  const facts: [string, string][] = [
    ["command", r.command],
    ["run", `${r.startedAt} → ${r.finishedAt}`],
    ["machine", `${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB, ${m.os}`],
    ["versions", `pgroute ${r.pgroute}, Bun ${m.bun}, PostgreSQL ${r.server.version ?? "?"}`],
    ["cluster", r.cluster.description],
    ...r.targets.map((t): [string, string] => [`target ${t.name}`, t.description]),
    ["data", r.dataset ? `pgbench tables, scale ${r.settings.scale} (${r.dataset.action})` : "custom script only: no data set prepared"],
    ["load", `${r.settings.clients} clients on ${r.settings.threads} thread(s), ${r.settings.warmupS} s warm-up per target, ${r.settings.rounds} round(s) × ${r.settings.durationS} s, seed ${r.settings.seed}`],
    ["on replicas", countersText(r)],
  ];
  return [
    "<!doctype html>",
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>pgroute bench — ${esc(r.scenarios.map((s) => s.id).join(", "))}</title>`,
    `<style>${CSS}</style></head><body>`,
    "<h1>pgroute bench</h1>",
    `<dl>${facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${k === "command" ? `<code>${esc(v)}</code>` : esc(v)}</dd>`).join("\n")}</dl>`,
    ...r.scenarios.map((s) => scenarioSection(s, r)),
    '<p class="note">Written by <code>pgroute bench --html</code>. Raw figures: <code>--json</code>.</p>',
    "</body></html>",
    "",
  ].join("\n");
}
