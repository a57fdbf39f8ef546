/**
 * `pgroute check lag`'s report of a cluster snapshot: the verdict (healthy, or what is wrong), a table for people
 * (coloured by health on a TTY) and a JSON document for scripts. Pure: a snapshot in, text out.
 */
import pc from "picocolors";

const { createColors } = pc;
import { formatBytes, formatSeconds } from "../cluster/plan.ts";
import type { ClusterSnapshot, NodeSnapshot } from "../cluster/state.ts";

/** Healthy means: the primary answers, and when there are replicas, at least one of them would take reads. */
export interface Verdict {
  readonly ok: boolean;
  readonly problems: readonly string[];
}

export function verdict(s: ClusterSnapshot): Verdict {
  const problems: string[] = [];
  const primary = s.nodes.find((n) => n.name === s.primary);
  // No primary elected: one that is down (failed checks), one that is not used (another timeline), or none at all.
  const claimants = s.nodes.filter((n) => n.role === "primary");
  const down = claimants.find((n) => !n.reachable);
  if (!primary && down) problems.push(`the primary (${down.name}) is unreachable: ${down.error ?? "no answer"}`);
  else if (!primary) problems.push(claimants.length === 0 ? "no primary: no node is configured as one or reports being one" : `no primary: ${claimants.map((n) => `${n.name}: ${n.excludedBecause ?? "not used"}`).join("; ")}`);
  else if (!primary.reachable) problems.push(`the primary (${primary.name}) is unreachable: ${primary.error ?? "no answer"}`);
  const replicas = s.nodes.filter((n) => n.role === "replica" || n.node.role === "replica");
  if (replicas.length > 0 && !replicas.some((n) => n.readable)) {
    problems.push(`no replica would take reads (${replicas.map((r) => `${r.name}: ${r.excludedBecause ?? "not a replica"}`).join("; ")})`);
  }
  return { ok: problems.length === 0, problems };
}

/** The JSON document of `--json`: the verdict, then the snapshot as published. */
export function reportJson(s: ClusterSnapshot): string {
  const v = verdict(s);
  return JSON.stringify({ ok: v.ok, problems: v.problems, at: new Date(s.at).toISOString(), version: s.version, primary: s.primary, nodes: s.nodes });
}

const ms = (v: number | null) => (v === null ? "-" : v < 10 ? `${v.toFixed(2)} ms` : `${Math.round(v)} ms`);

/** What the reads column says of a node. */
function reads(n: NodeSnapshot): string {
  if (n.role === "primary") return n.readable ? "fallback" : n.reachable ? "no (replicas)" : "no";
  return n.readable ? "yes" : "no";
}

type Paint = (s: string) => string;
type Colors = ReturnType<typeof pc.createColors>;

/** Green when all is well, yellow when degraded (low score, half-open, the primary taking reads), red when out. */
function paintOf(pc: Colors, n: NodeSnapshot): Paint {
  if (!n.reachable && n.checkedAt === null && n.error === null) return pc.dim;
  if (!n.reachable || n.breaker.state === "open" || (n.role === "replica" && !n.readable)) return pc.red;
  if (n.breaker.state === "half-open" || n.score < 70 || (n.role === "primary" && n.readable)) return pc.yellow;
  return pc.green;
}

function breakdown(n: NodeSnapshot): string {
  const p = n.scoreParts;
  return `lag ${Math.round(p.lag)} lat ${Math.round(p.latency)} err ${Math.round(p.errors)} load ${Math.round(p.load)} queue ${Math.round(p.queue)} brk ${p.breaker}`;
}

/** The table: one row per node, then why excluded nodes are out, then the verdict. */
export function renderReport(s: ClusterSnapshot, tty: boolean): string {
  // Colours follow the caller's idea of a terminal, not picocolors' guess about this process's stdout.
  const pc = createColors(tty);
  const c = (f: Paint, text: string) => f(text);
  const head = ["node", "role", "zone", "reachable", "lag", "lag time", "active/conns", "p99", "score", "breakdown", "breaker", "reads"];
  const rows = s.nodes.map((n) => [
    n.name,
    n.role,
    n.zone || "-",
    n.reachable ? "yes" : n.checkedAt === null && n.error === null ? "?" : "no",
    n.lagBytes === null ? "-" : formatBytes(n.lagBytes),
    n.lagSeconds === null ? "-" : formatSeconds(n.lagSeconds),
    n.connections === null ? "-" : `${n.activeQueries}/${n.connections} of ${n.maxConnections}`,
    ms(n.observed.p99Ms ?? n.probeP99Ms),
    String(n.score),
    breakdown(n),
    n.breaker.state,
    reads(n),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd();
  const out = [c(pc.bold, line(head))];
  s.nodes.forEach((n, i) => out.push(c(paintOf(pc, n), line(rows[i]!))));
  // Why nodes are out (a primary that answers is not "out": it takes reads only when no replica can).
  const notes = s.nodes.filter((n) => n.error !== null || (n.excludedBecause !== null && !(n.role === "primary" && n.reachable)));
  if (notes.length > 0) out.push("");
  for (const n of notes) out.push(c(paintOf(pc, n), `${n.name}: ${n.excludedBecause ?? n.error}`));
  const v = verdict(s);
  out.push("");
  const readers = s.nodes.filter((n) => n.role === "replica" && n.readable).length;
  const replicas = s.nodes.filter((n) => n.role === "replica").length;
  const summary = `primary ${s.primary ?? "unknown"}, ${readers} of ${replicas} replicas take reads, checked ${new Date(s.at).toISOString()}`;
  out.push(v.ok ? c(pc.green, `OK: ${summary}`) : c(pc.red, `PROBLEM: ${v.problems.join("; ")}`));
  return out.join("\n");
}
